"""Observing a cluster's agents: the status of every run a pass's decisions depend on.

Read in parallel past a few nodes; a node that cannot be read is reported as such, for the
decisions (decisions.py) to weigh, never raised.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import BatchAIError
from ..records import (
    NodeState,
)
from .decisions import (
    Observed,
)
from .scaling import setup_run_id

if TYPE_CHECKING:
    from .reconcile import Reconciler

PARALLEL_READS = 4  # more agent statuses than this are read in parallel


def observe(p: Reconciler) -> tuple[dict[tuple[str, str], Observed], dict[str, Observed]]:
    """Every agent the plan depends on: the runs of jobs on nodes, the setup of nodes being prepared."""
    wanted: list[tuple[str, str, bool]] = []  # (node id, run id, is setup)
    for job in p.snapshot.jobs.values():
        if job.execution_state.on_nodes:
            wanted += [(node_id, job.run_id, False) for node_id in job.nodes if node_id in p.snapshot.nodes]
        elif job.fence:  # a requeued job whose lost attempt was not yet seen stopped
            wanted += [(node_id, job.fence["run"], False) for node_id in job.fence["nodes"] if node_id in p.snapshot.nodes]
    wanted += [(n.node_id, setup_run_id(p.cluster), True) for n in p.snapshot.members() if n.state == NodeState.PREPARING]

    def read(item: tuple[str, str, bool]) -> Observed:
        node_id, run, _ = item
        handle = p.handle(p.snapshot.nodes[node_id])
        try:
            status = handle.status(run)
            return Observed(status=status, planned=status is not None or handle.planned(run))
        except BatchAIError as error:
            return Observed(unreachable=error.message)

    if len(wanted) > PARALLEL_READS:
        with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as executor:
            seen = list(executor.map(read, wanted))
    else:
        seen = [read(item) for item in wanted]
    runs = {(node_id, run): found for (node_id, run, setup), found in zip(wanted, seen, strict=True) if not setup}
    setups = {node_id: found for (node_id, _, setup), found in zip(wanted, seen, strict=True) if setup}
    return runs, setups
