"""Which storage a job reads and writes, named as OpenLineage names datasets (no OpenLineage import here).

Inputs are the job's and its cluster's mounted blob containers and file shares; outputs are
its output directories (and the stdout/stderr folder) where they lie on one of those mounts,
down to the job's own folder. Azure Blob uses OpenLineage's ``wasbs://container@account.blob.
core.windows.net`` namespace; Azure Files, which the naming spec leaves out, the same form
with ``file.core.windows.net``. A folder that only lives on a node is no dataset.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from .errors import BatchAIError
from .layout import output_template, stdouterr_template
from .records import read_cluster, read_job
from .spec import ClusterSpec, JobSpec, MountVolumes
from .store import ControlStore

MOUNT_ROOTS = ("$AZ_BATCHAI_JOB_MOUNT_ROOT", "${AZ_BATCHAI_JOB_MOUNT_ROOT}", "$AZ_BATCHAI_MOUNT_ROOT", "${AZ_BATCHAI_MOUNT_ROOT}")


@dataclass(frozen=True)
class DatasetName:
    namespace: str
    name: str


@dataclass(frozen=True)
class _Volume:
    mount: str  # relativeMountPath
    namespace: str
    root: str  # path inside the container or share


def _share(url: str) -> tuple[str, str]:
    """``https://account.file.core.windows.net/share/dir`` → (share, dir)."""
    path = url.split("://", 1)[-1].split("/", 1)[1] if "/" in url.split("://", 1)[-1] else ""
    share, _, inside = path.strip("/").partition("/")
    return share, inside


def _volumes(volumes: MountVolumes | None) -> list[_Volume]:
    found = []
    for blob in (volumes.azure_blob_file_systems if volumes else None) or []:
        found.append(
            _Volume(blob.relative_mount_path.strip("/"), f"wasbs://{blob.container_name}@{blob.account_name}.blob.core.windows.net", "")
        )
    for files in (volumes.azure_file_shares if volumes else None) or []:
        share, inside = _share(files.azure_file_url)
        found.append(_Volume(files.relative_mount_path.strip("/"), f"wasbs://{share}@{files.account_name}.file.core.windows.net", inside))
    return found


def _on_volume(template: str, volumes: list[_Volume]) -> DatasetName | None:
    for root in MOUNT_ROOTS:
        if template.startswith(root + "/"):
            relative = template[len(root) + 1 :].strip("/")
            for volume in sorted(volumes, key=lambda v: -len(v.mount)):
                if relative == volume.mount or relative.startswith(volume.mount + "/"):
                    inside = relative[len(volume.mount) :].strip("/")
                    return DatasetName(volume.namespace, posixpath.join(volume.root, inside).strip("/") or "/")
    return None


def job_datasets(spec: JobSpec, segment: str, cluster: ClusterSpec | None = None) -> tuple[list[DatasetName], list[DatasetName]]:
    """(inputs, outputs) of a job whose output folders are named with ``segment``."""
    volumes = _volumes(spec.mount_volumes) + _volumes(cluster.node_setup.mount_volumes if cluster and cluster.node_setup else None)
    templates = [output_template(d.path_prefix, segment, d.path_suffix, d.create_new) for d in spec.output_directories or []]
    if spec.std_out_err_path_prefix:
        templates.append(stdouterr_template(spec.std_out_err_path_prefix, segment))
    written = {template: _on_volume(template, volumes) for template in templates}
    outputs = list(dict.fromkeys(found for found in written.values() if found is not None))
    # what the job runs (toolkit settings, command lines, environment), without where its outputs go
    mentioned = json.dumps(
        {k: v for k, v in spec.to_json().items() if k not in ("mountVolumes", "outputDirectories", "stdOutErrPathPrefix")}
    )
    output_namespaces = {found.namespace for found in outputs}
    inputs = [
        DatasetName(v.namespace, v.root or "/")
        for v in volumes
        if v.namespace not in output_namespaces or f"/{v.mount}" in mentioned  # a share only written to is no input
    ]
    return list(dict.fromkeys(inputs)), outputs


def lineage_of(store: ControlStore, workspace: str, experiment: str, name: str) -> tuple[list[DatasetName], list[DatasetName]]:
    """A submitted job's datasets, from its record and its cluster's (two record reads)."""
    job, _ = read_job(store, workspace, experiment, name)
    try:
        cluster: ClusterSpec | None = read_cluster(store, workspace, job.cluster)[0].parsed_spec()
    except BatchAIError:
        cluster = None  # deleted since: the job's own mounts still say most
    return job_datasets(job.parsed_spec(), job.segment, cluster)
