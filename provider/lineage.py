"""Which storage a job reads and writes, named as OpenLineage names datasets (no OpenLineage import here).

Inputs are the job's and its cluster's mounted blob containers and file shares; outputs are
its output directories (and the stdout/stderr folder) where they lie on one of those mounts,
down to the job's own folder. Azure Blob uses OpenLineage's ``wasbs://container@account.blob.
core.windows.net`` namespace; Azure Files, which the naming spec leaves out, the same form
with ``file.core.windows.net`` (the share is the URL's last part, as everywhere else here). A
folder that only lives on a node is no dataset.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .control import ControlStore
from .data.staging import ROOT_VARIABLES, read_texts, references, strip_root, written
from .errors import BatchAIError
from .records import read_cluster, read_job
from .spec import ClusterSpec, JobSpec, MountVolumes


@dataclass(frozen=True)
class DatasetName:
    namespace: str
    name: str


@dataclass(frozen=True)
class _Volume:
    mount: str  # relativeMountPath
    namespace: str


def _volumes(volumes: MountVolumes | None) -> list[_Volume]:
    found = []
    for blob in (volumes.azure_blob_file_systems if volumes else None) or []:
        found.append(
            _Volume(blob.relative_mount_path.strip("/"), f"wasbs://{blob.container_name}@{blob.account_name}.blob.core.windows.net")
        )
    for files in (volumes.azure_file_shares if volumes else None) or []:
        found.append(
            _Volume(files.relative_mount_path.strip("/"), f"wasbs://{files.share_name}@{files.account_name}.file.core.windows.net")
        )
    return found


def _on_volume(template: str, volumes: dict[str, list[_Volume]]) -> tuple[_Volume, str] | None:
    """The volume a path template lies on and the path inside it: the rule staging.locate applies to links."""
    for scope, scoped in volumes.items():
        rest = strip_root(posixpath.normpath(template), ROOT_VARIABLES[scope])
        if rest is None:
            continue
        for volume in scoped:
            if rest == volume.mount or rest.startswith(volume.mount + "/"):
                return volume, rest[len(volume.mount) :].strip("/")
    return None


def job_datasets(spec: JobSpec, segment: str, cluster: ClusterSpec | None = None) -> tuple[list[DatasetName], list[DatasetName]]:
    """(inputs, outputs) of a job whose output folders are named with ``segment``.

    What it writes and what it reads are found as the agent's staging finds them (``written``,
    ``references`` of ``read_texts``); a volume that holds outputs and that nothing the job runs
    points at is no input.
    """
    volumes = {
        "job": _volumes(spec.mount_volumes),
        "cluster": _volumes(cluster.node_setup.mount_volumes if cluster and cluster.node_setup else None),
    }
    outputs = [
        found for template, _ in sorted(written(spec, segment), key=lambda w: w[1]) if (found := _on_volume(template, volumes)) is not None
    ]
    read = {found[0] for reference in references(read_texts(spec)) if (found := _on_volume(reference, volumes)) is not None}
    holding_outputs = {volume for volume, _ in outputs}
    inputs = [DatasetName(v.namespace, "/") for scoped in volumes.values() for v in scoped if v in read or v not in holding_outputs]
    return list(dict.fromkeys(inputs)), list(dict.fromkeys(DatasetName(v.namespace, inside or "/") for v, inside in outputs))


def lineage_of(store: ControlStore, workspace: str, experiment: str, name: str) -> tuple[list[DatasetName], list[DatasetName]]:
    """A submitted job's datasets, from its record and its cluster's (two record reads)."""
    job, _ = read_job(store, workspace, experiment, name)
    try:
        cluster: ClusterSpec | None = read_cluster(store, workspace, job.cluster)[0].parsed_spec()
    except BatchAIError:
        cluster = None  # deleted since: the job's own mounts still say most
    return job_datasets(job.parsed_spec(), job.segment, cluster)
