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

from ..agent.protocol import job_base_environment, open_inside
from ..atomicfiles import write_atomically
from . import CommandResult, FileInfo

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
