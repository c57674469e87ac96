"""Where a cluster's nodes come from: the NodePool contract and the helpers its kinds share.

A pool hands out machines (local slots, the connection's SSH hosts, a Slurm partition) and a
Transport to each; the scheduler places jobs on them. Each kind is one module beside this one,
and ``config.backends`` is the one place that picks a kind for a connection.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Protocol

from ..errors import ErrorCode
from ..prices import PriceSettings, Rate, rate_for

if TYPE_CHECKING:
    from ..control import ControlStore
    from ..records import ClusterRecord
    from ..transport import Transport
    from ..transport.clusterkeys import PeerSSH


class NodePool(Protocol):
    """The machines the provider may put into clusters."""

    cluster_ssh: bool  # nodes are separate hosts that must log in to each other for MPI
    elastic: bool  # machines start on demand (grow) and stop when released; False: they are simply there
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

    def priority_problem(self, vm_priority: str | None) -> str | None:
        """Why the nodes cannot be of ``vm_priority`` (dedicated, lowpriority = Spot), or None."""

    # -- elastic capacity: a pool whose machines start and stop (cloud VMs) answers these; a fixed
    #    pool (local slots, SSH hosts, a Slurm partition) has nothing to start or stop and says so.

    def grow(self, count: int, vm_size: str | None) -> list[str]:
        """Start ``count`` more nodes of ``vm_size``; the ids of those now starting (they join the
        inventory once they answer). The scheduler asks for what free nodes and those already
        starting (``changing``) cannot give, so a pool starts exactly ``count``."""

    def release(self, node_id: str) -> None:
        """The node left its cluster and is free: an elastic pool may stop paying for it."""

    def changing(self) -> dict[str, NodeChange]:
        """Nodes on their way in (starting) or out (leaving), by id."""

    def price_label(self, node_id: str) -> str | None:
        """What the node is billed as (a VM size in a region, say), for usage and cost; None: not billed."""

    def lost(self) -> dict[str, dict[str, str]]:
        """Machines the pool lost on its own (a Spot instance evicted, a VM stopped by hand): node id → the
        error its node and job get. They stay in the inventory until released."""

    def problems(self) -> list[dict[str, str]]:
        """Why capacity could not be had lately ({code, message}: AllocationFailed, QuotaExceeded...), for
        the cluster's errors; empty once it came. Codes among CAPACITY_CODES."""

    def boot_seconds(self, node_id: str) -> float:
        """How long the machine took from being asked to start to answering (a VM's boot, billed); 0 for
        machines that are simply there."""

    def remember_in(self, store: ControlStore) -> None:
        """Where the pool keeps what every process of the provider should not learn again (an elastic
        pool's host keys, read through ARM once per disk); the Service hands it its store."""


CAPACITY_CODES = frozenset(
    {
        ErrorCode.ALLOCATION_FAILED,
        ErrorCode.SKU_NOT_AVAILABLE,
        ErrorCode.QUOTA_EXCEEDED,
        ErrorCode.OVERCONSTRAINED_ALLOCATION_REQUEST,
        ErrorCode.ARM_THROTTLED,
        ErrorCode.ARM_UNAVAILABLE,
        ErrorCode.ARM_ACCESS_DENIED,
        ErrorCode.NODE_BOOT_TIMEOUT,
        ErrorCode.INVALID_POOL,
    }
)  # what a pool says in problems(): the cluster's errors of these codes are the pool's to set and clear


class NodeChange(str, Enum):
    STARTING = "starting"
    LEAVING = "leaving"


class FixedPool:
    """The elastic half of NodePool for pools whose machines are simply there."""

    elastic = False

    def grow(self, count: int, vm_size: str | None) -> list[str]:
        return []

    def release(self, node_id: str) -> None:
        return None

    def changing(self) -> dict[str, NodeChange]:
        return {}

    def price_label(self, node_id: str) -> str | None:
        return None

    def lost(self) -> dict[str, dict[str, str]]:
        return {}

    def priority_problem(self, vm_priority: str | None) -> str | None:
        return None  # machines that are simply there are not taken back: any priority will do

    def problems(self) -> list[dict[str, str]]:
        return []

    def boot_seconds(self, node_id: str) -> float:
        return 0.0

    def remember_in(self, store: ControlStore) -> None:
        return None  # nothing learned that the configuration does not already say


def node_hour_rate(pool: NodePool, cluster: ClusterRecord, prices: PriceSettings | None, node_ids: list[str]) -> Rate:
    """What one of the cluster's node-hours costs: its vmSize, or for Azure VMs the size its nodes really
    are (the pool's label of one of ``node_ids``); Spot's price for lowpriority."""
    spec = cluster.parsed_spec()
    size = next((labels[0] for node_id in node_ids if (labels := pool.labels(node_id))), None) if pool.elastic else None
    return rate_for(prices, size or spec.vm_size, pool.elastic, (spec.vm_priority or "").lower() == "lowpriority")


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
