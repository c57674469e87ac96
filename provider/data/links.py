"""A job's or a cluster's volumes as links under a mount root: the local folder, remote volume or mount command behind each.

The data stores turn ``mountVolumes`` into these (data/local.py, data/azure.py); the plans
the agents get carry them as ``node.protocol.LinkPlan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..agent.protocol import LinkPlan
from ..errors import BatchAIError, ErrorCode


@dataclass(frozen=True)
class RemoteVolume:
    """A blob container (or file share) the node reaches over the network, not through a local folder."""

    account: str
    container: str
    url: str  # without any SAS
    kind: str = "blob"

    @property
    def label(self) -> str:
        return f"{self.account}/{self.container}"


@dataclass(frozen=True)
class Link:
    """A volume made visible at ``relative_mount_path`` under a mount root.

    Local folders become symlinks to ``source``; a ``remote`` volume is a real folder the agent
    stages or mounts (see staging.py); a ``mount_command`` is run by the agent on the node.
    """

    relative_mount_path: str
    source: str
    remote: RemoteVolume | None = None
    modes: tuple[str, str] | None = None  # (fileMode, directoryMode) of a share mounted over SMB
    mount_command: str | None = None  # unmanagedFileSystems: the node mounts it with this command

    @property
    def local_folder(self) -> bool:
        """A folder of this machine (the embedded default's storage), linked rather than mounted or staged."""
        return self.remote is None and self.mount_command is None

    def plan_entry(self, path: str, unlink_at_end: bool) -> LinkPlan:
        if self.mount_command is not None:
            return LinkPlan(path, mount_command=self.mount_command, unlink_at_end=unlink_at_end)
        if self.remote is not None:
            return LinkPlan(path, stage=True, unlink_at_end=unlink_at_end)
        return LinkPlan(path, source=self.source, unlink_at_end=unlink_at_end)


def node_mounted_links(volumes: Any, where: str) -> list[Link]:
    """``unmanagedFileSystems`` as links the node mounts itself; ``fileServers`` (Batch AI's managed NFS
    VMs) have no counterpart and are refused, pointing at the way to mount one's own NFS server."""
    if volumes is None:
        return []
    if volumes.file_servers:
        raise BatchAIError(
            ErrorCode.UNSUPPORTED_MOUNT,
            f"{where}.fileServers[0]: Batch AI file servers do not exist here; mount your NFS server with"
            " unmanagedFileSystems, e.g. mountCommand 'mount -t nfs 10.0.0.4:/export'",
            f"{where}.fileServers[0]",
        )
    return [Link(m.relative_mount_path.strip("/"), "", mount_command=m.mount_command) for m in volumes.unmanaged_file_systems or []]
