"""Finding a job's output and stdout/stderr files, as Batch AI's listOutputFiles did.

A folder template such as ``$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/<segment>/stdouterr`` is resolved
to storage when it lies on one of the job's (or the cluster's) mounts, so files stay listable
after the job and its nodes are gone. Otherwise it is read on the job's first node, where it
was written (Batch AI refused that case; being able to read node-local logs is friendlier).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from ..agent.protocol import expand
from ..control import ControlStore
from ..data import DataStore, OutputFile, file_object
from ..data.links import Link
from ..data.staging import Located, locate
from ..errors import BatchAIError, ErrorCode
from ..launch import JobContext, NodeSlot, job_environment
from ..layout import output_template, stdouterr_template
from ..pools import NodePool
from ..records import JobRecord, read_cluster, read_job, read_node
from ..transport import Transport
from ..transport.local import LocalTransport


def _safe_join(base: str, relative: str, what: str) -> str:
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if relative.startswith("/") or ".." in parts:
        raise BatchAIError(ErrorCode.INVALID_PATH, f"{what} {relative!r} must stay inside the output directory", what)
    return posixpath.join(base, *parts)


class OutputFiles:
    """One job's output folders. Keep one while following a job: where each folder lives is
    worked out once (two record reads), so a poll costs only the listing or the byte range."""

    def __init__(self, store: ControlStore, pool: NodePool, data: DataStore, job: JobRecord) -> None:
        self.store = store
        self.pool = pool
        self.data = data
        self.job = job
        self.spec = job.parsed_spec()
        self._located: dict[str, Located | None] = {}

    def template(self, output_id: str) -> str:
        if output_id.lower() == "stdouterr":
            return stdouterr_template(self.spec.std_out_err_path_prefix, self.job.segment)
        for directory in self.spec.output_directories or []:
            if directory.id == output_id:
                return output_template(directory.path_prefix, self.job.segment, directory.path_suffix, directory.create_new)
        known = ", ".join(["stdouterr", *(d.id for d in self.spec.output_directories or [])])
        raise BatchAIError(
            ErrorCode.OUTPUT_DIRECTORY_NOT_FOUND, f"job {self.job.name} has no output directory {output_id!r} (it has {known})", output_id
        )

    def _on_storage(self, template: str) -> Located | None:
        """Where the folder lies in storage; None for node-local folders and the node's own mounts."""
        if template not in self._located:
            located = self._locate(template)
            self._located[template] = None if located is not None and located.link.mount_command is not None else located
        return self._located[template]

    def _locate(self, template: str) -> Located | None:
        mounts: dict[str, list[Link]] = {"job": self.data.links(self.spec.mount_volumes, "mountVolumes")}
        try:
            cluster, _ = read_cluster(self.store, self.job.workspace, self.job.cluster)
            setup = cluster.parsed_spec().node_setup
            mounts["cluster"] = self.data.links(setup.mount_volumes if setup else None, "nodeSetup.mountVolumes")
        except BatchAIError:
            mounts["cluster"] = []
        return locate(template, mounts)

    def _on_node(self, template: str) -> tuple[Transport, str, str] | None:
        """(transport, the node's root, the folder's path below it): the root is ours, the rest the job's."""
        if not self.job.nodes:  # not scheduled when we last looked: maybe it is now
            self.job = read_job(self.store, self.job.workspace, self.job.experiment, self.job.name)[0]
        if not self.job.nodes:
            return None
        node = read_node(self.store, self.job.nodes[0])
        if node is not None:
            slot = NodeSlot(node.node_id, node.address, node.root, node.gpus)
        else:  # a node our pool does not hold (Slurm's): its root is the pool's to say
            root = self.pool.node_root(self.job.nodes[0])
            if root is None:
                return None
            slot = NodeSlot(self.job.nodes[0], self.job.nodes[0], root)
        ctx = JobContext(self.job.workspace, self.job.experiment, self.job.name, self.job.uuid, self.job.segment, "")
        env, _ = job_environment(self.spec, slot, [slot], ctx)
        path = posixpath.normpath(expand(template, env))
        root = posixpath.normpath(slot.root)
        if not path.startswith(root + "/"):
            return None
        return self.pool.transport(slot.node_id), root, path[len(root) + 1 :]

    def list(self, output_id: str, directory: str = ".", expiry_minutes: int = 60, urls: bool = True) -> list[OutputFile]:
        """``urls`` False leaves out download URLs (and the signing they cost) for callers that only read."""
        template = self.template(output_id)
        located = self._on_storage(template)
        if located is not None:
            return self.data.list_files(located.link, _safe_join(located.inside, directory, "directory"), expiry_minutes, urls=urls)
        on_node = self._on_node(template)
        if on_node is None:
            raise BatchAIError(
                ErrorCode.OUTPUT_DIRECTORY_NOT_FOUND,
                f"The specified outputDirectoryId {output_id} is not present on a mount root",
                output_id,
            )
        transport, root, path = on_node
        inside = _safe_join(path, directory, "directory")
        infos = transport.list_inside(root, inside) or []
        local = isinstance(transport, LocalTransport)
        return [file_object(i, Path(root, inside, i.name).as_uri() if local and urls else None) for i in infos]

    def read(self, output_id: str, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        template = self.template(output_id)
        located = self._on_storage(template)
        if located is not None:
            return self.data.read(located.link, _safe_join(located.inside, path, "path"), offset, length)
        on_node = self._on_node(template)
        if on_node is None:
            return None
        transport, root, base = on_node
        return transport.read_inside(root, _safe_join(base, path, "path"), offset, length)
