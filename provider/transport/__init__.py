"""The Transport contract: run commands and copy files on one node.

A node is a machine (or, in the embedded default, a folder on this machine standing in for
one). Everything of ours on a node lives under its ``root``; ``layout.NodeLayout`` names the
folders. The local transport (subprocess) and the SSH transport (paramiko) implement it; pools
(``pools/``) hand them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class FileInfo:
    name: str
    is_dir: bool
    size: int
    mtime: float


class Transport(Protocol):
    address: str
    python: str  # interpreter that runs the agent on the node

    def run(self, argv: list[str], *, timeout_s: float = 60.0, stdin: bytes | None = None) -> CommandResult: ...

    def start_detached(self, argv: list[str], *, log_path: str) -> None:
        """Start ``argv`` so that it outlives us (own session, stdin from /dev/null); return at once."""

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes of ``path`` from ``offset``; None if the file does not exist."""

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write atomically, creating parent folders."""

    def list_dir(self, path: str) -> list[FileInfo] | None:
        """Entries of a folder (not recursive); None if it does not exist."""

    def read_inside(self, base: str, relative: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """read_file for a job's file: None unless ``base``/``relative`` is the file itself, with no
        symlink on the way (a job may make its files links to anywhere)."""

    def list_inside(self, base: str, relative: str) -> list[FileInfo] | None:
        """list_dir for a job's folder under the same rule; links in it are left out."""

    def remove_tree(self, path: str) -> None: ...
