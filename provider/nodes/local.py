"""Local nodes: processes on this machine, each node a folder standing in for a machine.

The embedded default's pool is N of these (default 2), all at 127.0.0.1. They share this
machine's file system, which is what lets local storage folders be "mounted" by symlink.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ..atomicfiles import write_atomically
from ..errors import BatchAIError
from ..node.protocol import job_base_environment, open_inside
from . import CommandResult, FileInfo, labelled_vm_size_problem
from .clusterkeys import PeerSSH

LOCAL_ADDRESS = "127.0.0.1"
SSH_PORT = 22


def node_environment(allow: tuple[str, ...] = ()) -> dict[str, str]:
    """What a local node's commands and agents start with: the basics a job may inherit (and the
    admin's ``allow`` list), not this process's environment, which may hold the control plane's
    secrets (Airflow's JWT secret and connections, the REST API's token, Azure credentials)."""
    return job_base_environment(os.environ, allow)


class LocalTransport:
    """Runs commands with subprocess; files are plain files of this machine."""

    def __init__(self, address: str = LOCAL_ADDRESS, python: str | None = None, env_allow: tuple[str, ...] = ()) -> None:
        self.address = address
        self.python = python or sys.executable
        self.env_allow = env_allow

    def run(self, argv: list[str], *, timeout_s: float = 60.0, stdin: bytes | None = None) -> CommandResult:
        completed = subprocess.run(
            argv, input=stdin, capture_output=True, timeout=timeout_s, check=False, env=node_environment(self.env_allow)
        )
        return CommandResult(completed.returncode, completed.stdout, completed.stderr)

    def start_detached(self, argv: list[str], *, log_path: str) -> None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env=node_environment(self.env_allow),
            )
        # Reap it when it ends so it never lingers as a zombie of a long-lived caller; the
        # process keeps running whether or not we are still here (own session).
        _reapers.append(process)
        _reap_finished()

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_inside(self, base: str, relative: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Like read_file, for a file a job wrote: None unless it really lies at ``base``/``relative``."""
        fd = open_inside(base, relative, os.O_RDONLY)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            handle.seek(offset)
            return handle.read() if length is None else handle.read(length)

    def list_inside(self, base: str, relative: str) -> list[FileInfo] | None:
        """Like list_dir, for a job's folder: its links are left out, never followed."""
        fd = open_inside(base, relative, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            return None
        try:
            infos = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    found = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(found.st_mode) or stat.S_ISREG(found.st_mode):
                        is_dir = stat.S_ISDIR(found.st_mode)
                        infos.append(FileInfo(entry.name, is_dir, 0 if is_dir else found.st_size, found.st_mtime))
            return sorted(infos, key=lambda info: info.name)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        write_atomically(Path(path), data, mode)

    def list_dir(self, path: str) -> list[FileInfo] | None:
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        infos = []
        for entry in entries:
            stat = entry.stat()
            infos.append(FileInfo(entry.name, entry.is_dir(), 0 if entry.is_dir() else stat.st_size, stat.st_mtime))
        return sorted(infos, key=lambda info: info.name)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


_reapers: list[subprocess.Popen[bytes]] = []


def _reap_finished() -> None:
    _reapers[:] = [process for process in _reapers if process.poll() is None]


class LocalNodePool:
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
        raise BatchAIError("NotSupported", "local nodes are not reached over ssh", node_id)

    def authorized_keys_file(self, node_id: str) -> str:
        raise BatchAIError("NotSupported", "local nodes are not reached over ssh", node_id)

    def shared_folder(self, run_id: str) -> str | None:
        return str(self.home / "shared" / run_id)

    def release_shared(self, run_id: str) -> None:
        shutil.rmtree(self.home / "shared" / run_id, ignore_errors=True)
