"""One reconcile pass over a cluster: observe its agents, decide (decisions.py), act, publish.

Runs only under the cluster's lease, and is safe to run twice: every write is a
compare-and-swap against the ETag the snapshot read (or this pass last wrote), so a record
someone else moved is never overwritten blind; the pass then stops with StaleRecord and the
caller runs it again on a fresh snapshot. It works on narrow interfaces (store, vault, node
pool, data store) and knows nothing of the Service.

The pass holds what it read and the writes; its parts hold what each does: observe.py reads
the agents, scaling.py claims, sets up, asks for and lets go of nodes, launching.py starts and
stops jobs' runs, publishing.py writes what readers see into the cluster record (the member
nodes' states, the allocation state and a digest of the jobs on nodes or changed lately, so
``cluster show`` and every waiter answer from that one record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..control import ControlStore, Lease, SecretVault
from ..data import DataStore
from ..data.links import Link
from ..errors import ErrorCode, StaleRecord
from ..layout import NodeLayout
from ..pools import NodePool, node_hour_rate
from ..prices import Rate
from ..records import (
    ExecutionState,
    JobDigest,
    JobRecord,
    NodeRecord,
    NodeState,
    NodeSummary,
    move_job,
    move_node,
    utc_now,
)
from ..settings import Settings
from ..spec.job import UtilizationPolicy
from ..transport.handle import DeferredTransport, NodeHandle
from ..usage import today_cost
from .decisions import (
    NODE_WAIT_PREFIX,
    Action,
    ClaimNode,
    DrainNode,
    EndJob,
    LaunchJob,
    Limits,
    NodeReachable,
    NodeReady,
    NodeUnreachable,
    NodeUnusable,
    Plan,
    ProbeNode,
    ReleaseNode,
    RemoveNode,
    RequestNodes,
    StopMachine,
    StopRuns,
    node_lost_error,
    plan_pass,
)
from .launching import Launching
from .observe import observe
from .publishing import Publishing, digest_of
from .scaling import Scaling
from .snapshot import Snapshot

log = logging.getLogger(__name__)


@dataclass
class PassOutcome:
    plan: Plan
    stopped: bool  # runs were stopped: one more pass sees them end at once


def money(amount: float) -> str:
    return f"{amount:.2f}" if amount >= 1 else f"{amount:.4f}"


class Reconciler:
    counts_jobs = False  # usage is the nodes' (accounting.py); a scheduler whose nodes are not ours counts its jobs'

    def __init__(
        self,
        store: ControlStore,
        vault: SecretVault,
        pool: NodePool,
        data: DataStore,
        settings: Settings,
        snapshot: Snapshot,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.pool = pool
        self.data = data
        self.settings = settings
        self.snapshot = snapshot
        self.lease = lease
        self.cluster = snapshot.cluster
        self.spec = self.cluster.parsed_spec()
        self.member = self.cluster.member
        self.changed: dict[str, JobDigest] = {}
        self.controlled = False  # a controller owns the cluster's passes (and renews its agents' contact)
        self.seen_done: dict[str, set[str]] = {}  # run id -> the nodes whose part of it has ended (for the digest)
        self.scaling = Scaling(self)
        self.launching = Launching(self)
        self.publishing = Publishing(self)
        self._node_changes: dict[type, Callable[[NodeRecord, Any], object]] = {
            NodeReady: lambda node, _: self.write_node(move_node(node, NodeState.IDLE)),
            NodeUnusable: self.node_unusable,
            NodeUnreachable: self.node_unreachable,
            NodeReachable: lambda node, _: self.write_node(node.model_copy(update={"unreachable_since": None})),
            ReleaseNode: self.release_node,
            DrainNode: lambda node, _: self.write_node(move_node(node, NodeState.LEAVING)),
            RemoveNode: lambda node, _: self.scaling.remove_node(node),
            ClaimNode: lambda node, _: self.scaling.claim(node),
            ProbeNode: lambda node, _: self.scaling.probe(node),
            StopMachine: lambda node, _: self.pool.release(node.node_id),
        }
        self._job_changes: dict[type, Callable[[Any], object]] = {
            StopRuns: self.launching.stop_runs,
            EndJob: self.end_job,
            LaunchJob: self.launching.launch,
            RequestNodes: self.scaling.request_nodes,
        }

    @property
    def limits(self) -> Limits:
        settings = self.settings
        fence = settings.fence_s if self.controlled else None
        default = UtilizationPolicy.model_validate(settings.utilization_policy) if settings.utilization_policy else None
        return Limits(
            settings.heartbeat_timeout_s, settings.launch_timeout_s, settings.heal_probe_interval_s, fence, self.budget_hold(), default
        )

    def budget_hold(self) -> str | None:
        """Why new jobs must wait: today's estimated cost (UTC) reached the cluster's daily budget. Counted from the
        cluster record as the last pass left it, its nodes' open intervals to now: no read of its own."""
        prices = self.settings.prices
        budget = prices.daily_budget(self.cluster.name) if prices else None
        if budget is None:
            return None
        rate = self.rate([n.node_id for n in self.snapshot.members()])
        spent = today_cost(self.cluster, rate, utc_now())
        if spent is None:
            log.warning("cluster %s has a daily budget but no price to hold it to: %s", self.member, rate.reason)
            return None
        if spent < budget:
            return None
        return (
            f"{ErrorCode.BUDGET_EXCEEDED}: cluster {self.cluster.name} has cost {money(spent)} {rate.currency} today (UTC), its daily "
            f"budget is {money(budget)}: new jobs wait for tomorrow or a larger budget (prices.daily_budgets); running ones go on"
        )

    def tell_held_jobs(self, hold: str | None) -> None:
        """A queued job says why it waits for the budget, and stops saying so once released (written when it changes)."""
        for job in list(self.snapshot.jobs.values()):
            if job.execution_state != ExecutionState.QUEUED:
                continue
            ours = (job.queue_reason or "").startswith(str(ErrorCode.BUDGET_EXCEEDED))
            if hold and ours:
                continue  # said once: the amount it names is when it was held (not a write per job every pass)
            wanted = hold if hold else (None if ours else job.queue_reason)
            if wanted != job.queue_reason:
                try:
                    self.write_job(job.model_copy(update={"queue_reason": wanted}))
                except StaleRecord:
                    pass  # moved meanwhile: the next pass says it

    def tell_waiting_job(self, key: str, why: str) -> None:
        """The head of the queue says what it waits for (one write when that changes, for that one job only:
        the jobs behind it wait for it)."""
        job = self.snapshot.jobs.get(key)
        if job is None or job.execution_state != ExecutionState.QUEUED or job.queue_reason == why:
            return
        if job.queue_reason and not job.queue_reason.startswith(NODE_WAIT_PREFIX):
            return  # another scheduler's reason (Slurm) or the budget's: theirs to change
        try:
            self.write_job(job.model_copy(update={"queue_reason": why}))
        except StaleRecord:
            pass  # moved meanwhile: the next pass says it

    def handle(self, node: NodeRecord) -> NodeHandle:
        """The node's transport is got at its first use: a machine that is gone (an evicted VM) then fails where
        every call to a node is already guarded, as an unreachable one does."""
        return NodeHandle(node.node_id, DeferredTransport(lambda: self.pool.transport(node.node_id)), NodeLayout(node.root))

    # -- the pass -------------------------------------------------------------------------------
    def run(self, terminations: dict[str, dict[str, Any]] | None = None) -> PassOutcome:
        self.scaling.record_joined()
        runs, setups = observe(self)
        self.seen_done = {}
        for (node_id, run), seen in runs.items():
            if seen.final:
                self.seen_done.setdefault(run, set()).add(node_id)
        limits = self.limits
        plan = plan_pass(self.snapshot, runs, setups, utc_now(), limits, terminations)
        for key, why in plan.skipped:
            log.error("pass over cluster %s left job %s alone: %s", self.member, key, why)
        try:
            for action in plan.actions:
                self.apply(action)
            self.tell_held_jobs(limits.hold)
            if plan.waiting is not None and not limits.hold:
                self.tell_waiting_job(*plan.waiting)
            self.drop_stale_live_entries()
        finally:  # what was done is published even when the pass stopped halfway (readers must not see it undone)
            try:
                self.publish(plan.target, plan.shortfall)
            except Exception as error:
                log.warning("could not publish cluster %s: %s", self.member, error)
        stopped = any(isinstance(a, StopRuns) for a in plan.actions)
        return PassOutcome(plan, stopped)

    def apply(self, action: Action) -> None:
        """Carry out one of the planner's actions (decisions.py says what each means); one on a node this
        pass does not know is dropped."""
        if self.lease is not None:
            self.lease.check()
        change = self._node_changes.get(type(action))
        if change is None:
            self._job_changes[type(action)](action)
            return
        node = self.snapshot.nodes.get(action.node_id)  # type: ignore[union-attr]
        if node is not None:
            change(node, action)

    def node_unusable(self, node: NodeRecord, action: NodeUnusable) -> None:
        log.warning(action.error["message"])
        self.write_node(move_node(node, NodeState.UNUSABLE, errors=[action.error], job=None, unreachable_since=None))

    def node_unreachable(self, node: NodeRecord, action: NodeUnreachable) -> None:
        log.warning("node %s (%s) unreachable", node.node_id, node.address)
        self.write_node(node.model_copy(update={"unreachable_since": utc_now()}))

    def release_node(self, node: NodeRecord, action: ReleaseNode) -> None:
        if node.state == NodeState.RUNNING:
            self.write_node(move_node(node, NodeState.IDLE, job=None))

    def cluster_links(self) -> list[Link]:
        setup = self.spec.node_setup
        return self.data.links(setup.mount_volumes if setup else None, "nodeSetup.mountVolumes")

    def publish(self, target: int, shortfall: int = 0, nodes: list[NodeSummary] | None = None) -> None:
        self.publishing.publish(target, shortfall, nodes)

    # -- writes ---------------------------------------------------------------------------------
    def rate(self, node_ids: list[str] | tuple[str, ...] = ()) -> Rate:
        """What one of this cluster's node-hours costs: for Azure VMs the size its nodes really are."""
        return node_hour_rate(self.pool, self.cluster, self.settings.prices, list(node_ids))

    def write_node(self, node: NodeRecord) -> NodeRecord:
        """Compare-and-swap against what this pass knows; StaleRecord when someone else moved first."""
        self.snapshot.etags[node.key] = self.store.replace(node.key, node.to_doc(), self.snapshot.etags[node.key])
        self.snapshot.nodes[node.node_id] = node
        return node

    def write_job(self, job: JobRecord) -> JobRecord:
        etag = self.store.replace(job.key, job.to_doc(), self.snapshot.etags[job.key])
        self.snapshot.etags[job.key] = etag
        self.changed[job.key] = digest_of(job, etag, with_usage=self.counts_jobs)
        if job.execution_state.finished:
            self.snapshot.jobs.pop(job.key, None)
            self.vault.delete(f"job-{job.uuid}")
            self.store.delete(job.live_key)
            code = f" with exit code {job.exit_code}" if job.exit_code else ""
            log.info("job %s %s%s", job.shown, job.execution_state.value, code if job.execution_state == ExecutionState.FAILED else "")
        else:
            self.snapshot.jobs[job.key] = job
        return job

    def end_job(self, action: EndJob) -> None:
        job = self.snapshot.jobs.get(action.job)
        if job is None:
            return
        moved = self.write_job(move_job(job, action.state, **action.changes))
        if action.state != ExecutionState.TERMINATING and job.execution_state.on_nodes:
            self.pool.release_shared(job.run_id)  # that run is over, whatever comes next
        if action.state == ExecutionState.QUEUED:
            log.info("job %s requeued: attempt %d", moved.shown, moved.attempt + 1)

    def drop_stale_live_entries(self) -> None:
        for name in self.snapshot.ended_secrets:  # normally gone already; not if a pass died between the two deletes
            self.vault.delete(name)
        for live in self.snapshot.stale_live:
            self.store.delete(live)
        self.snapshot.stale_live, self.snapshot.ended_secrets = [], []

    def mark_lost(self, node: NodeRecord, why: str) -> None:
        error = node_lost_error(node, why)
        log.warning(error["message"])
        current = self.snapshot.nodes[node.node_id]
        self.write_node(move_node(current, NodeState.UNUSABLE, errors=[error], job=None, unreachable_since=None))

    # -- nodes ----------------------------------------------------------------------------------
    # -- jobs -----------------------------------------------------------------------------------
    # -- publishing -----------------------------------------------------------------------------
    # -- cluster deletion -----------------------------------------------------------------------
    def delete_everything(self) -> None:
        """Fail every live job (``ClusterDeleted``), stopping its runs, and release every node."""
        error = {"code": ErrorCode.CLUSTER_DELETED, "message": f"cluster {self.cluster.name} was deleted"}
        for key, job in sorted(self.snapshot.jobs.items()):
            if job.execution_state == ExecutionState.QUEUED:
                self.apply(EndJob(key, ExecutionState.FAILED, {"errors": [error]}))
                continue
            self.apply(StopRuns(key, job.run_id, tuple(job.nodes)))
            for node_id in job.nodes:
                self.apply(ReleaseNode(node_id))
            if job.execution_state == ExecutionState.RUNNING:
                self.apply(EndJob(key, ExecutionState.TERMINATING))
            self.apply(EndJob(key, ExecutionState.FAILED, {"errors": [error], "exit_code": -1}))
        for node in self.snapshot.members():
            self.apply(RemoveNode(node.node_id))
        self.drop_stale_live_entries()
