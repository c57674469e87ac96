"""The Transport contract (run and copy on one node) and the node pool that hands them out.

A node is a machine (or, in the embedded default, a folder on this machine standing in for
one). Everything of ours on a node lives under its ``root``; ``layout.NodeLayout`` names the
folders. The local transport (subprocess) and the SSH transport (paramiko) implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .clusterkeys import PeerSSH


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


class NodePool(Protocol):
    """The machines the provider may put into clusters."""

    cluster_ssh: bool  # nodes are separate hosts that must log in to each other for MPI
    beside_control_plane: bool  # jobs run on the machine of the process that runs them (its user could read our secrets)

    def labels(self, node_id: str) -> tuple[str, ...]:
        """The machine's labels; a cluster whose vmSize is one of them may use it (none: any cluster)."""

    def peer_ssh(self, node_id: str) -> PeerSSH:
        """How the other nodes reach this one over ssh (only asked when ``cluster_ssh``)."""

    def authorized_keys_file(self, node_id: str) -> str: ...

    def inventory(self) -> list[tuple[str, str, str, int]]:
        """(node_id, address, root, gpus) per machine; gpus 0 = discover when the node joins."""

    def transport(self, node_id: str) -> Transport: ...

    def node_root(self, node_id: str) -> str | None:
        """The folder under which everything of ours lives on that node; None for a node it does not know."""

    def shared_folder(self, run_id: str) -> str | None:
        """A folder all nodes of a job see at the same path, or None when they share none."""

    def release_shared(self, run_id: str) -> None: ...

    def login_port(self, node_id: str) -> int:
        """The port ``ssh`` reaches the node on (Batch AI's remote login information)."""

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        """How many nodes a cluster of ``vm_size`` can ever have here (an answer ``max_age_s`` old will do)."""

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        """Why no node here can serve ``vm_size``, or None when some can."""


def labelled_vm_size_problem(pool: NodePool, vm_size: str | None) -> str | None:
    """vm_size_problem for pools whose hosts carry labels (local and SSH)."""
    if any(eligible(pool.labels(node_id), vm_size) for node_id, *_ in pool.inventory()):
        return None
    return f"no host of the pool serves vmSize {vm_size!r}: label a host with it, or leave a host without labels"


def eligible(labels: tuple[str, ...], vm_size: str | None) -> bool:
    """Whether a host with these labels may join a cluster of this ``vmSize``.

    Labels are how a pool of mixed machines stands in for Azure's VM sizes: a labelled host
    serves only clusters whose vmSize is one of its labels (case does not matter, as in
    Azure); a host without labels, or a cluster without a vmSize, matches anything.
    """
    return not labels or vm_size is None or vm_size.lower() in {label.lower() for label in labels}
