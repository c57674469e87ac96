"""Where things live: folders on a node, and Batch AI's output path segments.

Pure path arithmetic, shared by launch (which puts paths into plans), the service (which
reads status files) and storage (which lists outputs). On a real Batch AI node the roots were
``/mnt/batch/tasks/shared/LS_root/...``; ours hang off the node's ``root``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "batchai"
STDOUTERR = "stdouterr"
OUTPUTS = "outputs"


@dataclass(frozen=True)
class NodeLayout:
    root: str

    @property
    def mount_root(self) -> str:
        """``$AZ_BATCHAI_MOUNT_ROOT``: cluster-level mounts."""
        return posixpath.join(self.root, "mounts")

    @property
    def job_temp_dir(self) -> str:
        """``$AZ_BATCHAI_JOB_TEMP_DIR``: parent of every job's temp folder on this node."""
        return posixpath.join(self.root, "jobs")

    @property
    def agent_dir(self) -> str:
        return posixpath.join(self.root, "batchai")

    @property
    def contact_path(self) -> str:
        """What a controller renews while the node runs jobs (agent/protocol.py: CONTACT_FILE)."""
        return posixpath.join(self.agent_dir, "contact")

    def agent_path(self, content_hash: str) -> str:
        """One folder per agent version: agent.py and the other modules of node/ it imports."""
        return posixpath.join(self.agent_dir, f"agent-{content_hash[:16]}", "agent.py")

    def cluster_key_path(self, cluster_uuid: str) -> str:
        """The cluster's private SSH key on this node (clusterkeys.py); removed with the node root."""
        return posixpath.join(self.agent_dir, "cluster-keys", cluster_uuid, "id_ed25519")

    def run_dir(self, run_id: str) -> str:
        """Where the agent keeps plan.json, status.json and its own log for one run."""
        return posixpath.join(self.agent_dir, "runs", run_id)

    def job_temp(self, workspace: str, experiment: str, job: str) -> str:
        """``$AZ_BATCHAI_JOB_TEMP``; job mounts, ``shared`` and ``hostfile`` live inside it."""
        return posixpath.join(self.job_temp_dir, workspace, experiment, job)

    def job_mount_root(self, workspace: str, experiment: str, job: str) -> str:
        return posixpath.join(self.job_temp(workspace, experiment, job), "mounts")


def job_output_segment(subscription: str, resource_group: str, workspace: str, experiment: str, job: str, job_uuid: str) -> str:
    """``jobOutputDirectoryPathSegment`` of the 2018-05-01 API."""
    return f"{subscription}/{resource_group}/workspaces/{workspace}/experiments/{experiment}/jobs/{job}/{job_uuid}"


def cluster_setup_segment(subscription: str, resource_group: str, workspace: str, cluster: str, cluster_uuid: str) -> str:
    """``stdOutErrPathSuffix`` of a cluster's setup task."""
    return f"{subscription}/{resource_group}/workspaces/{workspace}/clusters/{cluster}/{cluster_uuid}"


def stdouterr_template(prefix: str, segment: str) -> str:
    return posixpath.join(prefix, segment, STDOUTERR)


def output_template(path_prefix: str, segment: str, path_suffix: str | None, create_new: bool | None = None) -> str:
    """``AZ_BATCHAI_OUTPUT_<id>`` before $VAR expansion; 2018-03-01 ``createNew: false`` uses the prefix as given."""
    if create_new is False:
        return posixpath.join(path_prefix, path_suffix) if path_suffix else path_prefix
    base = posixpath.join(path_prefix, segment, OUTPUTS)
    return posixpath.join(base, path_suffix) if path_suffix else base
