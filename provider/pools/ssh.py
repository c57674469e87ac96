"""The connection's SSH hosts as a node pool: the user's own machines, a fixed set."""

from __future__ import annotations

import posixpath
import shutil
import threading
from pathlib import Path

from ..errors import BatchAIError, ErrorCode
from ..layout import NodeLayout
from ..transport.clusterkeys import DEFAULT_AUTHORIZED_KEYS, PeerSSH
from ..transport.ssh import CONNECT_TIMEOUT_S, DEFAULT_ROOT, SFTP_TIMEOUT_S, HostSpec, SSHAuth, SSHTransport
from . import FixedPool, labelled_vm_size_problem


class SSHNodePool(FixedPool):
    """The connection's hosts as a node pool. Connections are opened lazily and kept per process."""

    def __init__(
        self,
        hosts: list[HostSpec],
        auth: SSHAuth,
        root: str = DEFAULT_ROOT,
        python: str = "python3",
        shared_folder_root: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        io_timeout_s: float = SFTP_TIMEOUT_S,
        cluster_ssh: bool = True,
        authorized_keys: str = DEFAULT_AUTHORIZED_KEYS,
    ) -> None:
        """``cluster_ssh``: give each cluster a key pair so its nodes log in to each other (mpirun needs it)."""
        if not hosts:
            raise BatchAIError(ErrorCode.INVALID_POOL, "an SSH node pool needs at least one host", "hosts")
        ids = [h.node_id for h in hosts]
        if len(set(ids)) != len(ids):
            raise BatchAIError(ErrorCode.INVALID_POOL, f"hosts must be distinct, got {ids}", "hosts")
        self.hosts = {h.node_id: h for h in hosts}
        self.auth = auth
        self.root = root
        self.python = python
        self.shared_folder_root = shared_folder_root
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.cluster_ssh = cluster_ssh
        self.beside_control_plane = False
        self.authorized_keys = authorized_keys
        self._transports: dict[str, SSHTransport] = {}
        self._lock = threading.Lock()

    def inventory(self) -> list[tuple[str, str, str, int]]:
        return [(h.node_id, h.host, h.root or posixpath.join(self.root, h.node_id), h.gpus or 0) for h in self.hosts.values()]

    def login_port(self, node_id: str) -> int:
        """The port ``ssh`` reaches the node on (Batch AI's remote login information)."""
        host = self.hosts.get(node_id)
        return host.port if host is not None else 22

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        return len(self.hosts)

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        return labelled_vm_size_problem(self, vm_size)

    def transport(self, node_id: str) -> SSHTransport:
        with self._lock:
            if node_id not in self._transports:
                if node_id not in self.hosts:
                    raise BatchAIError(ErrorCode.NODE_NOT_FOUND, f"node {node_id} is not in the SSH pool", node_id)
                from ..transport.handle import AGENT_FILES, AGENT_HASH  # handle.py imports the transport package

                root = next(r for nid, _, r, _ in self.inventory() if nid == node_id)
                server = (AGENT_FILES, NodeLayout(root).agent_path(AGENT_HASH))
                self._transports[node_id] = SSHTransport(
                    self.hosts[node_id], self.auth, self.python, self.connect_timeout_s, self.io_timeout_s, command_server=server
                )
            return self._transports[node_id]

    def node_root(self, node_id: str) -> str | None:
        return next((root for nid, _, root, _ in self.inventory() if nid == node_id), None)

    def labels(self, node_id: str) -> tuple[str, ...]:
        return self.hosts[node_id].labels

    def peer_ssh(self, node_id: str) -> PeerSSH:
        spec = self.hosts[node_id]
        return PeerSSH(node_id, spec.host, spec.port, spec.user or self.auth.user, self.transport(node_id).host_key())

    def authorized_keys_file(self, node_id: str) -> str:
        return self.hosts[node_id].authorized_keys or self.authorized_keys

    def shared_folder(self, run_id: str) -> str | None:
        """A folder every node sees (an NFS mount at the same path) when configured; else none."""
        return posixpath.join(self.shared_folder_root, run_id) if self.shared_folder_root else None

    def release_shared(self, run_id: str) -> None:
        if self.shared_folder_root:
            shutil.rmtree(Path(self.shared_folder_root, run_id), ignore_errors=True)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
