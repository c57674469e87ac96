"""The embedded default's pool: N local nodes, each a folder of this machine standing in for one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import BatchAIError, ErrorCode
from ..transport.clusterkeys import PeerSSH
from ..transport.local import LOCAL_ADDRESS, LocalTransport
from . import FixedPool, labelled_vm_size_problem

SSH_PORT = 22


class LocalNodePool(FixedPool):
    """N local nodes, ``local-0`` … ``local-{N-1}``, each rooted at ``$BATCHAI_HOME/nodes/<id>``.

    They share this machine's file system, so a job's nodes can share a folder for
    ``$AZ_BATCHAI_SHARED_JOB_TEMP`` (and file-based PyTorch rendezvous), as Batch AI's NFS did.
    """

    def __init__(self, home: str | os.PathLike[str], count: int = 2, python: str | None = None, env_allow: tuple[str, ...] = ()) -> None:
        self.home = Path(home)
        self.count = count
        self._transport = LocalTransport(LOCAL_ADDRESS, python, env_allow)

    def inventory(self) -> list[tuple[str, str, str, int]]:
        """(node_id, address, root, gpus) for each node of the pool."""
        return [(f"local-{i}", LOCAL_ADDRESS, str(self.home / "nodes" / f"local-{i}"), 0) for i in range(self.count)]

    cluster_ssh = False  # every node is this machine: mpirun needs no ssh
    beside_control_plane = True

    def transport(self, node_id: str) -> LocalTransport:
        return self._transport

    def node_root(self, node_id: str) -> str | None:
        return next((root for nid, _, root, _ in self.inventory() if nid == node_id), None)

    def labels(self, node_id: str) -> tuple[str, ...]:
        return ()

    def login_port(self, node_id: str) -> int:
        return SSH_PORT

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        return self.count

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        return labelled_vm_size_problem(self, vm_size)

    def peer_ssh(self, node_id: str) -> PeerSSH:
        raise BatchAIError(ErrorCode.NOT_SUPPORTED, "local nodes are not reached over ssh", node_id)

    def authorized_keys_file(self, node_id: str) -> str:
        raise BatchAIError(ErrorCode.NOT_SUPPORTED, "local nodes are not reached over ssh", node_id)

    def shared_folder(self, run_id: str) -> str | None:
        return str(self.home / "shared" / run_id)

    def release_shared(self, run_id: str) -> None:
        shutil.rmtree(self.home / "shared" / run_id, ignore_errors=True)
