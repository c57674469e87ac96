"""What one reconcile pass decides: a snapshot and what the agents report in, actions out.

Pure: no store, no node, no clock of its own, so every scheduling rule is tested from a
snapshot (tests/provider/test_decisions.py). The steps, in order, each seeing what the earlier
ones decided:
  0. user terminations: queued → failed at once; running → terminating, its runs stopped;
  1. nodes being prepared → idle when setup succeeded, unusable when it failed or never reported;
  2. running jobs: finished → exit code and errors, nodes released; a node whose agent stopped
     reporting (or that stays unreachable) → unusable, its job requeued or failed;
  3. scale: manual target, or autoScale by what queued + running jobs need; claim free pool
     nodes (also to replace unusable members), or remove surplus per ``nodeDeallocationOption``
     (unusable ones first, idle ones only after ``idleSecondsBeforeScaledown``); then try lost
     members again, every ``probe_interval_s``: one that answers is set up anew;
  4. queued jobs by priority, then age: start one when ``nodeCount`` nodes are idle (gang
     scheduling, strictly in order so a big job is not starved by small ones).
The executor (reconcile.py) carries the actions out and publishes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..agent.protocol import AgentStatus, RunState
from ..errors import BatchAIError, ErrorCode
from ..launch import MPI_TOOLKITS
from ..records import ExecutionState, JobRecord, NodeRecord, NodeState, move_job, move_node, next_attempt
from ..spec import DeallocationOption
from ..spec.job import UtilizationPolicy, format_duration
from .snapshot import Snapshot


@dataclass(frozen=True)
class Observed:
    """One agent run as the pass saw it: its status document, None when it wrote none (yet), or why the node could not be read."""

    status: AgentStatus | None = None
    unreachable: str | None = None
    planned: bool = True  # with no status: whether the run's plan reached the node (False: its launch died before)

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.final


@dataclass(frozen=True)
class Limits:
    heartbeat_timeout_s: float
    launch_timeout_s: float
    probe_interval_s: float = 15.0
    fence_s: float | None = 180.0  # None: no controller renews contacts, so only a lost run seen stopped lifts a fence
    hold: str | None = None  # why no queued job may start now (the cluster's daily budget is spent): they wait, and ask no node
    gpu_policy: UtilizationPolicy | None = None  # the connection's idle-GPU policy, for jobs that name none


# -- actions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeReady:
    node_id: str


@dataclass(frozen=True)
class NodeUnusable:
    node_id: str
    error: dict[str, Any]


@dataclass(frozen=True)
class NodeUnreachable:
    """First failed contact in a row: remembered, so that only a lasting silence makes the node lost."""

    node_id: str


@dataclass(frozen=True)
class NodeReachable:
    node_id: str


@dataclass(frozen=True)
class StopRuns:
    job: str
    run: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseNode:
    """running → idle: its job ended or left it."""

    node_id: str


@dataclass(frozen=True)
class EndJob:
    """Move the job to ``state`` with ``changes`` (finished, requeued or terminating)."""

    job: str
    state: ExecutionState
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimNode:
    node_id: str


@dataclass(frozen=True)
class RemoveNode:
    node_id: str


@dataclass(frozen=True)
class StopMachine:
    """An elastic pool's free machine that the cluster, at its target, does not need: the pool stops paying for it."""

    node_id: str


@dataclass(frozen=True)
class RequestNodes:
    """An elastic pool starts ``count`` more nodes of ``vm_size``; a later pass claims them once they answer."""

    count: int
    vm_size: str | None


@dataclass(frozen=True)
class ProbeNode:
    """Try a lost member again: when it answers, its agent is deployed anew and it goes through node setup."""

    node_id: str


@dataclass(frozen=True)
class DrainNode:
    """running → leaving: it leaves once its job is done (waitforjobcompletion)."""

    node_id: str


@dataclass(frozen=True)
class LaunchJob:
    job: str
    node_ids: tuple[str, ...]


Action = (
    NodeReady
    | NodeUnusable
    | NodeUnreachable
    | NodeReachable
    | StopRuns
    | ReleaseNode
    | EndJob
    | ClaimNode
    | RemoveNode
    | ProbeNode
    | DrainNode
    | LaunchJob
    | RequestNodes
    | StopMachine
)


@dataclass
class Plan:
    actions: list[Action]
    target: int  # the node count the cluster is heading for
    next_due_s: float | None  # seconds until a timer of its own needs a pass (idle scale-down), if sooner than usual
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (job key, why): jobs this pass could not decide on
    shortfall: int = 0  # nodes the target wants beyond every eligible node of the pool
    held_elsewhere: list[str] = field(default_factory=list)  # clusters (members) holding idle nodes this one wants now
    waiting: tuple[str, str] | None = None  # (job key, why): the head of the queue, waiting for its gang of nodes


def node_lost_error(node: NodeRecord, why: str) -> dict[str, Any]:
    return {"code": ErrorCode.NODE_LOST, "message": f"node {node.node_id} ({node.address}) is unusable: {why}"}


def is_lost(node: NodeRecord) -> bool:
    """Unusable because it went silent or its machine was taken away (not because its setup task failed)."""
    lost_codes = (ErrorCode.NODE_LOST, ErrorCode.NODE_EVICTED)
    return node.state == NodeState.UNUSABLE and any(error.get("code") in lost_codes for error in node.errors)


def job_helpers(job: JobRecord) -> list[str]:
    """Nodes that only reserve capacity for the job (custom/MPI toolkits' non-first nodes)."""
    return job.nodes[1:] if job.parsed_spec().tool_type in ("custom", *MPI_TOOLKITS) else []


class Planner:
    """Decides one pass on working copies of the snapshot's records, so later steps see earlier decisions."""

    def __init__(
        self,
        snapshot: Snapshot,
        runs: dict[tuple[str, str], Observed],
        setups: dict[str, Observed],
        now: datetime,
        limits: Limits,
        terminations: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """``runs``: (node id, run id) → what its agent reports; ``setups``: node id → its setup agent."""
        self.snapshot = snapshot
        self.spec = snapshot.cluster.parsed_spec()
        self.member = snapshot.member
        self.runs = runs
        self.setups = setups
        self.now = now
        self.epoch = now.timestamp()
        self.limits = limits
        self.terminations = terminations or {}
        self.nodes = dict(snapshot.nodes)
        self.jobs = dict(snapshot.jobs)
        self.actions: list[Action] = []
        self.skipped: list[tuple[str, str]] = []
        self.shortfall = 0
        self.held_elsewhere: list[str] = []
        self.elsewhere = ""  # how the pool's other eligible nodes are held, when this cluster is short of them
        self.waiting: tuple[str, str] | None = None

    def plan(self) -> Plan:
        for key, error in sorted(self.terminations.items()):
            if key in self.jobs:
                self.guarded(key, self.terminate, self.jobs[key], error)
        self.observe_preparing_nodes()
        for key in sorted(self.jobs):
            job = self.jobs[key]
            if job.execution_state.on_nodes:
                self.guarded(key, self.observe_job, job)
        self.release_orphans()
        self.lose_idle_machines()
        target = self.scale()
        self.probe_lost_nodes()
        self.schedule()
        return Plan(self.actions, target, self.idle_timer(), self.skipped, self.shortfall, self.held_elsewhere, self.waiting)

    def guarded(self, key: str, step: Any, *args: Any) -> bool:
        """One job's decisions, all or nothing: a job in a state no rule expects is left for a person, never the cluster's stop."""
        actions, nodes, jobs = list(self.actions), dict(self.nodes), dict(self.jobs)
        try:
            step(*args)
            return True
        except BatchAIError as error:
            self.actions, self.nodes, self.jobs = actions, nodes, jobs
            self.skipped.append((key, error.message))
            return False

    # -- bookkeeping on the working copies -----------------------------------------------------
    def members(self, *, leaving: bool = True) -> list[NodeRecord]:
        found = (n for n in self.nodes.values() if n.cluster == self.member and (leaving or n.state != NodeState.LEAVING))
        return sorted(found, key=lambda n: n.node_id)

    def move_node(self, node: NodeRecord, state: NodeState, **changes: Any) -> NodeRecord:
        moved = self.nodes[node.node_id] = move_node(node, state, **changes)
        return moved

    def end_job(self, job: JobRecord, state: ExecutionState, **changes: Any) -> JobRecord:
        moved = move_job(job, state, **changes)  # checks the transition
        self.actions.append(EndJob(job.key, state, changes))
        if moved.execution_state.finished:
            self.jobs.pop(job.key, None)
        else:
            self.jobs[job.key] = moved
        return moved

    def mark_lost(self, node: NodeRecord, why: str) -> None:
        self.node_unusable(node, node_lost_error(node, why))

    def node_unusable(self, node: NodeRecord, error: dict[str, Any]) -> None:
        self.actions.append(NodeUnusable(node.node_id, error))
        self.move_node(node, NodeState.UNUSABLE, errors=[error], job=None, unreachable_since=None)

    def release(self, node_ids: list[str]) -> None:
        """The job's nodes are free again: idle, or gone when they were only waiting to leave."""
        for node_id in node_ids:
            node = self.nodes.get(node_id)
            if node and node.state == NodeState.RUNNING:
                self.actions.append(ReleaseNode(node_id))
                self.move_node(node, NodeState.IDLE, job=None)
            elif node and node.state == NodeState.LEAVING:
                self.remove(node)

    def remove(self, node: NodeRecord) -> None:
        self.actions.append(RemoveNode(node.node_id))
        if node.state != NodeState.LEAVING:
            node = self.move_node(node, NodeState.LEAVING)
        self.move_node(node, NodeState.FREE, errors=[])

    def stop(self, job: JobRecord, node_ids: list[str]) -> None:
        if node_ids:
            self.actions.append(StopRuns(job.key, job.run_id, tuple(node_ids)))

    def deallocation_option(self) -> DeallocationOption:
        return self.spec.scale_settings.deallocation_option

    # -- 0. user terminations -------------------------------------------------------------------
    def terminate(self, job: JobRecord, error: dict[str, Any]) -> None:
        if job.execution_state == ExecutionState.QUEUED:
            self.end_job(job, ExecutionState.FAILED, errors=[error], exit_code=None)
            return
        if job.execution_state == ExecutionState.RUNNING:
            job = self.end_job(job, ExecutionState.TERMINATING, errors=[error])
        self.stop(job, job.nodes)

    # -- 1. nodes being prepared ----------------------------------------------------------------
    def observe_preparing_nodes(self) -> None:
        for node in self.members():
            if node.state != NodeState.PREPARING:
                continue
            seen = self.setups.get(node.node_id, Observed())
            if seen.unreachable is not None:
                self.unreachable(node, seen.unreachable)
                continue
            if node.unreachable_since is not None:
                self.actions.append(NodeReachable(node.node_id))
                node = self.nodes[node.node_id] = node.model_copy(update={"unreachable_since": None})
            state = seen.status.state if seen.status else None
            if state == RunState.SUCCEEDED:
                self.actions.append(NodeReady(node.node_id))
                self.move_node(node, NodeState.IDLE)
            elif seen.final:
                error = seen.status.error or {}  # type: ignore[union-attr]
                message = f"node setup failed on {node.node_id} ({node.address}): {error.get('message', 'unknown error')}"
                self.node_unusable(node, {"code": error.get("code", ErrorCode.NODE_SETUP_FAILED), "message": message})
            elif seen.status is None and self.silent_since(node.state_transition_time):
                self.mark_lost(node, "its setup agent never reported")

    def silent_since(self, since: datetime) -> bool:
        return (self.now - since).total_seconds() > self.limits.launch_timeout_s

    def stale(self, status: AgentStatus) -> bool:
        return self.epoch - status.heartbeat > self.limits.heartbeat_timeout_s

    def unreachable(self, node: NodeRecord, why: str) -> bool:
        """Remember the first failed contact; True once the node has stayed unreachable too long (it is then lost)."""
        if node.unreachable_since is None:
            self.actions.append(NodeUnreachable(node.node_id))
            self.nodes[node.node_id] = node.model_copy(update={"unreachable_since": self.now})
            return False
        if (self.now - node.unreachable_since).total_seconds() > self.limits.heartbeat_timeout_s:
            if node.state == NodeState.PREPARING:
                self.mark_lost(node, why)
            return True
        return False

    # -- 2. running jobs ------------------------------------------------------------------------
    def observe_job(self, job: JobRecord) -> None:
        statuses: dict[str, AgentStatus | None] = {}
        lost: list[tuple[str, str]] = []
        unlaunched = False
        for node_id in job.nodes:
            node = self.nodes.get(node_id)
            seen = self.runs.get((node_id, job.run_id), Observed())
            if node_id in self.snapshot.lost:  # its machine is gone (evicted): nothing to wait for
                lost.append((node_id, self.snapshot.lost[node_id]["message"]))
                continue
            if node is None:
                statuses[node_id] = None
                continue
            if seen.unreachable is not None:  # not heard from: neither ended nor silent yet
                if self.unreachable(node, seen.unreachable):
                    lost.append((node_id, seen.unreachable))
                continue
            if node.unreachable_since is not None:
                self.actions.append(NodeReachable(node_id))
                self.nodes[node_id] = node.model_copy(update={"unreachable_since": None})
            statuses[node_id] = seen.status
            unlaunched = unlaunched or (seen.status is None and not seen.planned)
        for node_id, status in statuses.items():
            if any(node_id == lost_id for lost_id, _ in lost):
                continue
            if status is None and self.silent_since(job.execution_state_transition_time) and not unlaunched:
                lost.append((node_id, "its agent never started"))
            elif status is not None and not status.final and self.stale(status):
                lost.append((node_id, f"no heartbeat for {self.limits.heartbeat_timeout_s:.0f} s"))
        if lost:
            self.lose_nodes(job, lost)
            return
        if unlaunched and self.silent_since(job.execution_state_transition_time):  # the launch died before its plan got there
            self.stop(job, job.nodes)
            self.release(job.nodes)
            if job.execution_state == ExecutionState.RUNNING:
                self.requeue(job, {"code": ErrorCode.LAUNCH_FAILED, "message": "the job's launch ended before its plan reached the nodes"})
            else:  # terminated meanwhile: nothing runs it, so it has ended
                self.end_job(job, ExecutionState.FAILED, exit_code=-1, errors=job.errors)
            return
        finals = {nid: s for nid, s in statuses.items() if s and s.final}
        failed = [(nid, s) for nid, s in finals.items() if s.state != RunState.SUCCEEDED]
        workers = [nid for nid in job.nodes if nid not in job_helpers(job)]
        if job.execution_state == ExecutionState.TERMINATING:
            if len(finals) == len(job.nodes):
                self.finish(job, ExecutionState.FAILED, -1, job.errors)
            return
        idle = None if finals else self.gpus_idle(job, statuses)
        if idle is not None:  # the idle-GPU watchdog: stopped, and failed with why
            self.stop(job, job.nodes)
            self.finish(job, ExecutionState.FAILED, -1, [idle])
            return
        if failed:
            node_id, status = failed[0]
            error = status.error or {"code": ErrorCode.JOB_FAILED, "message": "the job failed"}
            if error.get("code") == ErrorCode.JOB_FAILED:
                error = {"code": ErrorCode.JOB_FAILED, "message": f"Job failed with non-zero exit code on node {node_id}"}
            self.stop(job, [nid for nid in job.nodes if nid not in finals])
            self.finish(job, ExecutionState.FAILED, status.exit_code if status.exit_code is not None else -1, [error])
            for full_id, full in failed:  # a disk the job filled and the agent could not free: no job goes there
                stuck = (full.error or {}).get("nodeFull")
                if stuck and (full_node := self.nodes.get(full_id)) is not None and full_node.state == NodeState.IDLE:
                    self.node_unusable(full_node, {"code": ErrorCode.DISK_FULL, "message": f"node {full_id}: {stuck}"})
        elif all(nid in finals for nid in workers):
            self.stop(job, [nid for nid in job.nodes if nid not in finals])  # release reserved nodes
            self.finish(job, ExecutionState.SUCCEEDED, 0, [])

    def gpus_idle(self, job: JobRecord, statuses: dict[str, AgentStatus | None]) -> dict[str, Any] | None:
        """GpuUnderutilized when every GPU on every node of the job has been below the job's
        utilizationPolicy threshold for its whole window (each agent samples its node's; a node that
        could not read its GPUs never counts as idle)."""
        policy = job.parsed_spec().utilization_policy or self.limits.gpu_policy
        if policy is None or len(statuses) != len(job.nodes):
            return None
        samples = [(status.gpu or {}) if status is not None else {} for status in statuses.values()]
        if not samples or any(sample.get("low_since") is None for sample in samples):
            return None
        window = policy.time_window.total_seconds()
        if self.epoch - max(float(sample["low_since"]) for sample in samples) < window:
            return None
        peak = max(float(sample.get("peak") or 0) for sample in samples)
        message = (
            f"every GPU of the job stayed below {policy.min_gpu_utilization:g}% utilization for {format_duration(policy.time_window)} "
            f"(utilizationPolicy; the highest seen in that time: {peak:g}%): stopped"
        )
        return {"code": ErrorCode.GPU_UNDERUTILIZED, "message": message}

    def release_orphans(self) -> None:
        """Nodes booked for a job that does not run on them: a pass died between booking and launching."""
        for node in self.members():
            if node.state not in (NodeState.RUNNING, NodeState.LEAVING):
                continue
            job = self.jobs.get(node.job or "")
            if job is None or not job.execution_state.on_nodes or node.node_id not in job.nodes:
                if node.state == NodeState.RUNNING:
                    self.actions.append(ReleaseNode(node.node_id))
                    self.move_node(node, NodeState.IDLE, job=None)
                else:
                    self.remove(node)

    def finish(self, job: JobRecord, state: ExecutionState, exit_code: int, errors: list[dict[str, Any]]) -> None:
        self.release(job.nodes)
        self.end_job(job, state, exit_code=exit_code, errors=errors)

    def lose_nodes(self, job: JobRecord, lost: list[tuple[str, str]]) -> None:
        lost_ids = [node_id for node_id, _ in lost]
        for node_id, why in lost:
            node = self.nodes.get(node_id)
            if node and node.state != NodeState.UNUSABLE:
                self.node_unusable(node, self.snapshot.lost.get(node_id) or node_lost_error(node, why))
        alive = [nid for nid in job.nodes if nid not in lost_ids]
        self.stop(job, alive + [nid for nid in lost_ids if nid not in self.snapshot.lost])  # a silent node may still run it
        self.release(alive)
        node_id, why = lost[0]
        error = {"code": ErrorCode.NODE_LOST, "message": f"node {node_id} became unusable while running the job: {why}"}
        if node_id in self.snapshot.lost:  # Batch AI's own words for a taken-away machine (NodeEvicted), kept
            error = {"code": self.snapshot.lost[node_id]["code"], "message": f"node {node_id}: {why}"}
        if self.deallocation_option() == DeallocationOption.REQUEUE and job.execution_state == ExecutionState.RUNNING:
            until = self.now + timedelta(seconds=self.limits.fence_s) if self.limits.fence_s is not None else None
            fenced = [nid for nid in job.nodes if nid not in self.snapshot.lost]  # an evicted VM runs nothing any more
            fence = {"run": job.run_id, "nodes": fenced, "until": until.isoformat() if until else None} if fenced else None
            self.requeue(job, error, errors=[error], fence=fence)
        else:
            self.end_job(job, ExecutionState.FAILED, nodes=[], errors=[error], exit_code=-1)

    def lose_idle_machines(self) -> None:
        """Members whose machine the pool lost (evicted) leave the cluster at once: there is nothing to probe,
        and the pool may start the same VM again for the capacity the cluster now asks for."""
        for node_id, error in sorted(self.snapshot.lost.items()):
            node = self.nodes.get(node_id)
            if node is None or node.cluster != self.member or node.job is not None:
                continue  # a job's node is lost with its job (observe_job), then leaves here in the next pass
            if node.state in (NodeState.IDLE, NodeState.PREPARING):
                self.node_unusable(node, error)
                node = self.nodes[node_id]
            if node.state in (NodeState.UNUSABLE, NodeState.LEAVING):
                self.remove(node)

    def requeue(self, job: JobRecord, why: dict[str, Any], **changes: Any) -> None:
        """Back to queued for a fresh attempt; the attempt that ends here stays in the job's history."""
        self.end_job(job, ExecutionState.QUEUED, **next_attempt(job, why, self.now), **changes)

    # -- 3. scale -------------------------------------------------------------------------------
    def target(self) -> int:
        auto = self.spec.scale_settings.auto_scale
        if auto is None:
            return self.snapshot.cluster.target_node_count
        active = (
            j
            for j in self.jobs.values()
            if not j.execution_state.finished and not (self.limits.hold and j.execution_state == ExecutionState.QUEUED)
        )
        needed = sum(job.parsed_spec().node_count for job in active)
        wanted = min(max(needed, auto.minimum_node_count), auto.maximum_node_count)
        members = self.members(leaving=False)
        if wanted < len(members):  # scale down only nodes idle long enough
            idle_for = timedelta(seconds=auto.idle_seconds_before_scaledown)
            lingering = [n for n in members if n.state == NodeState.IDLE and n.idle_since and self.now - n.idle_since >= idle_for]
            removable = len(lingering) + sum(1 for n in members if n.state == NodeState.UNUSABLE)
            wanted = max(wanted, len(members) - removable)
        return wanted

    def scale(self) -> int:
        """Toward the target: lost members are replaced from the pool when it has free nodes, and then
        leave as the surplus (unusable ones go first). A node whose setup task failed is not replaced:
        the same task would fail on the next node too, so it stays unusable, as in Batch AI."""
        target = self.target()
        counted = [n for n in self.members(leaving=False) if not is_lost(n)]
        if len(counted) < target:
            self.grow(target - len(counted))
            # said only when the pool can never meet it: nodes busy elsewhere, draining or cooling down come back,
            # and an elastic pool's nodes it is starting or could start count as the pool's
            could = len(self.snapshot.eligible) + self.snapshot.coming + self.snapshot.startable
            self.shortfall = max(0, target - could)
        members = self.members(leaving=False)
        if len(members) > target:
            self.shrink(members, len(members) - target)
        elif self.snapshot.elastic and len(members) >= target:
            self.stop_spare_machines()
        return target

    def stop_spare_machines(self) -> None:
        """Free machines of an elastic pool (one that joined after its job went elsewhere, one a cluster
        left with an error) cost money while nobody needs them: they are stopped, not kept."""
        for node in sorted(self.nodes.values(), key=lambda n: n.node_id):
            if node.state == NodeState.FREE and node.node_id in self.snapshot.eligible and node.node_id not in self.snapshot.lost:
                self.actions.append(StopMachine(node.node_id))

    def grow(self, count: int) -> None:
        """Claim free pool nodes: clean ones first; one that left a cluster with an error only after a
        while, so a dead machine is not claimed and lost again on every pass."""
        retry_after = timedelta(seconds=self.limits.probe_interval_s * 4)

        def claimable(node: NodeRecord) -> bool:
            eligible = node.state == NodeState.FREE and node.node_id in self.snapshot.eligible and node.node_id not in self.snapshot.lost
            return eligible and (not node.errors or self.now - node.state_transition_time >= retry_after)

        free = sorted((n for n in self.nodes.values() if claimable(n)), key=lambda n: (bool(n.errors), n.node_id))
        for node in free[:count]:
            self.actions.append(ClaimNode(node.node_id))
            self.move_node(node, NodeState.PREPARING, cluster=self.member, errors=[])
        missing = min(count - len(free[:count]) - self.snapshot.coming, self.snapshot.startable)  # those starting will come
        if missing > 0:
            self.actions.append(RequestNodes(missing, self.spec.vm_size))
        if count - len(free[:count]) - self.snapshot.coming - max(missing, 0) > 0:
            # still short: clusters keeping idle nodes this one could use are looked at (an autoscale cluster whose
            # idle time is up gives its nodes back in its own pass, which nobody may run without a controller)
            others = [n for n in self.nodes.values() if n.cluster and n.cluster != self.member and n.node_id in self.snapshot.eligible]
            self.held_elsewhere = sorted({n.cluster for n in others if n.state == NodeState.IDLE and n.cluster})
            self.elsewhere = held_by(others)

    def probe_lost_nodes(self) -> None:
        """Members lost to silence (not to a failed setup task, which would fail again) are tried
        again every ``probe_interval_s``; the executor sets up anew one that answers."""
        every = timedelta(seconds=self.limits.probe_interval_s)
        for node in self.members(leaving=False):
            if is_lost(node) and self.now - (node.probed_at or node.state_transition_time) >= every:
                self.actions.append(ProbeNode(node.node_id))

    def shrink(self, members: list[NodeRecord], count: int) -> None:
        order = {NodeState.UNUSABLE: 0, NodeState.PREPARING: 1, NodeState.IDLE: 2, NodeState.RUNNING: 3}
        longest_idle_first = sorted(members, key=lambda n: (order.get(n.state, 9), n.idle_since or self.now, n.node_id))
        for node in longest_idle_first[:count]:
            node = self.nodes[node.node_id]
            if node.state != NodeState.RUNNING:
                self.remove(node)
                continue
            job = self.jobs.get(node.job or "")
            option = self.deallocation_option()
            if job is None:
                self.remove(node)
            elif option == DeallocationOption.WAIT_FOR_JOB_COMPLETION:
                self.actions.append(DrainNode(node.node_id))
                self.move_node(node, NodeState.LEAVING)
            elif self.guarded(job.key, self.evict, job, option):
                freed = self.nodes[node.node_id]
                if freed.cluster == self.member:
                    self.remove(freed)

    def evict(self, job: JobRecord, option: DeallocationOption) -> None:
        """A running job loses a node to scale-down: requeue it (run again from scratch) or fail it."""
        self.stop(job, job.nodes)
        self.release(job.nodes)
        if option == DeallocationOption.REQUEUE and job.execution_state == ExecutionState.RUNNING:
            self.requeue(job, {"code": ErrorCode.JOB_REQUEUED, "message": "a node of the job left the cluster (scale-down)"})
        else:
            error = {"code": ErrorCode.JOB_TERMINATED, "message": "The job was terminated because its node left the cluster"}
            self.end_job(job, ExecutionState.FAILED, nodes=[], errors=[error], exit_code=-1)

    def idle_timer(self) -> float | None:
        """Seconds until an idle node's scale-down delay runs out (a pass is due then even with nothing else to do)."""
        auto = self.spec.scale_settings.auto_scale
        if auto is None:
            return None
        idle_for = timedelta(seconds=auto.idle_seconds_before_scaledown)
        waits = [(n.idle_since + idle_for - self.now).total_seconds() for n in self.members() if n.state == NodeState.IDLE and n.idle_since]
        return max(0.0, min(waits)) if waits else None

    def fence_lifted(self, job: JobRecord) -> bool:
        """Whether the lost attempt is over: each of its runs seen final (stopped, its strays killed),
        or its fence time passed while a controller renews the agents' contact (so they stop
        themselves sooner: protocol.AGENT_CONTACT_FENCE_S). Without a controller nothing would stop
        a run on a node that cannot be reached: the job waits for the node, or for a user."""
        fence = job.fence or {}
        until = fence.get("until")
        if until is not None and self.limits.fence_s is not None and self.now >= datetime.fromisoformat(until):
            return True
        for node_id in fence.get("nodes", []):
            seen = self.runs.get((node_id, fence.get("run", "")))
            if seen is None or seen.unreachable is not None:
                return False
            if seen.status is None and seen.planned:
                return False
            if seen.status is not None and not seen.status.final:
                return False
        return True

    # -- 4. schedule ----------------------------------------------------------------------------
    def schedule(self) -> None:
        if self.limits.hold:
            return  # running jobs go on; the queued ones wait for the budget (the executor tells them why)
        queued = sorted(
            (j for j in self.jobs.values() if j.execution_state == ExecutionState.QUEUED), key=lambda j: (-j.priority, j.creation_time)
        )
        idle = [n for n in self.members() if n.state == NodeState.IDLE]
        for job in queued:
            if job.fence and not self.fence_lifted(job):
                continue  # its lost attempt may still run: it waits, the jobs behind it need not
            count = job.parsed_spec().node_count
            if len(idle) < count:
                self.waiting = (job.key, self.why_waiting(count, len(idle)))
                return  # strict order: the head job waits for its gang, nothing jumps ahead
            chosen, idle = idle[:count], idle[count:]
            self.actions.append(LaunchJob(job.key, tuple(n.node_id for n in chosen)))
            for node in chosen:
                self.move_node(node, NodeState.RUNNING, job=job.key)
            self.jobs[job.key] = move_job(
                job, ExecutionState.RUNNING, nodes=[n.node_id for n in chosen], errors=[], start_time=self.now, fence=None
            )

    def why_waiting(self, count: int, idle: int) -> str:
        """What the head of the queue waits for, in a user's words: its cluster's nodes, and who holds the pool's others."""
        members = self.members(leaving=False)
        preparing = sum(1 for n in members if n.state == NodeState.PREPARING)
        busy = sum(1 for n in members if n.state == NodeState.RUNNING)
        said = [f"{idle} idle"] + ([f"{preparing} being set up"] if preparing else []) + ([f"{busy} running jobs"] if busy else [])
        why = f"{NODE_WAIT_PREFIX}{count} idle node(s) of cluster {self.snapshot.cluster.name}, which has {', '.join(said)}"
        if self.elsewhere:
            why += f"; the pool's other nodes are held by {self.elsewhere}"
        if self.shortfall:
            why += f"; the pool has {self.shortfall} node(s) too few for the cluster's target"
        return why


NODE_WAIT_PREFIX = "waits for "  # a queue reason of our own (tell_held_jobs may replace it; Slurm's reasons it leaves alone)


def held_by(nodes: list[NodeRecord]) -> str:
    """``cluster default/retrain (1 idle), cluster default/scoring (2 running)``."""
    counts: dict[str, dict[str, int]] = {}
    for node in nodes:
        states = counts.setdefault(node.cluster or "", {})
        states[node.state.value] = states.get(node.state.value, 0) + 1
    return ", ".join(
        f"cluster {cluster} ({', '.join(f'{n} {state}' for state, n in sorted(states.items()))})"
        for cluster, states in sorted(counts.items())
    )


def plan_pass(
    snapshot: Snapshot,
    runs: dict[tuple[str, str], Observed],
    setups: dict[str, Observed],
    now: datetime,
    limits: Limits,
    terminations: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    return Planner(snapshot, runs, setups, now, limits, terminations).plan()
