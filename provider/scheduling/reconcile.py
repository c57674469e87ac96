"""One reconcile pass over a cluster: observe its agents, decide (decisions.py), act, publish.

Runs only under the cluster's lease, and is safe to run twice: every write is a
compare-and-swap against the ETag the snapshot read (or this pass last wrote), so a record
someone else moved is never overwritten blind; the pass then stops with StaleRecord and the
caller runs it again on a fresh snapshot. It works on narrow interfaces (store, vault, node
pool, data store) and knows nothing of the Service.

At the end it publishes into the cluster record what readers need: the member nodes' states,
the allocation state and a digest of the jobs on nodes or changed lately, so ``cluster show``
and every waiter answer from that one record.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from ..agent.protocol import REGISTRY_PASSWORD_KEY, AgentPlan
from ..control import ControlStore, Lease, SecretVault
from ..data import DataStore
from ..data.links import Link
from ..data.staging import read_texts, written
from ..errors import BatchAIError, ErrorCode, RecordExists, StaleRecord
from ..launch import JobContext, NodeSlot, job_plans, setup_plan
from ..layout import NodeLayout, cluster_setup_segment, stdouterr_template
from ..pools import NodePool, eligible
from ..records import (
    AllocationState,
    ClusterRecord,
    ExecutionState,
    JobDigest,
    JobRecord,
    NodeRecord,
    NodeState,
    NodeSummary,
    move_cluster,
    move_job,
    move_node,
    utc_now,
)
from ..settings import Settings
from ..transport.clusterkeys import ClusterKey, PeerSSH
from ..transport.handle import NodeHandle
from .decisions import (
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
    Observed,
    Plan,
    ProbeNode,
    ReleaseNode,
    RemoveNode,
    RequestNodes,
    StopRuns,
    node_lost_error,
    plan_pass,
)
from .snapshot import Snapshot

log = logging.getLogger(__name__)

RECENT = timedelta(minutes=5)  # a job that changed stays in the digest this long, so every waiter sees the change
DIGEST_MAX_RECENT = 2000  # and at most this many of them (a waiter whose job fell out re-reads it)
JOB_FAILING_CODES = (
    ErrorCode.INVALID_SPEC,
    ErrorCode.SECRETS_UNREADABLE,
    ErrorCode.INVALID_PATH,
)  # a job that can never launch fails, naming why
PARALLEL_READS = 4  # more agent statuses than this are read in parallel


INSUFFICIENT_NODES = ErrorCode.INSUFFICIENT_NODES


def insufficient_nodes(target: int, shortfall: int, vm_size: str | None) -> dict[str, str]:
    labels = f" labelled {vm_size!r} (or unlabelled)" if vm_size else ""
    message = f"the cluster wants {target} node(s) and the pool has {shortfall} too few hosts{labels}: add hosts, or lower the target"
    return {"code": INSUFFICIENT_NODES, "message": message}


def setup_run_id(cluster: ClusterRecord) -> str:
    return f"setup-{cluster.uuid}"


@dataclass
class PassOutcome:
    plan: Plan
    stopped: bool  # runs were stopped: one more pass sees them end at once


class Reconciler:
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
        self._cluster_key: ClusterKey | bool | None = False  # False: not read yet
        self._existing_clusters: list[str] | None = None

    @property
    def limits(self) -> Limits:
        settings = self.settings
        fence = settings.fence_s if self.controlled else None
        return Limits(settings.heartbeat_timeout_s, settings.launch_timeout_s, settings.heal_probe_interval_s, fence)

    def handle(self, node: NodeRecord) -> NodeHandle:
        return NodeHandle(node.node_id, self.pool.transport(node.node_id), NodeLayout(node.root))

    # -- the pass -------------------------------------------------------------------------------
    def run(self, terminations: dict[str, dict[str, Any]] | None = None) -> PassOutcome:
        self.record_joined()
        runs, setups = self.observe()
        self.seen_done: dict[str, set[str]] = {}
        for (node_id, run), seen in runs.items():
            if seen.final:
                self.seen_done.setdefault(run, set()).add(node_id)
        plan = plan_pass(self.snapshot, runs, setups, utc_now(), self.limits, terminations)
        for key, why in plan.skipped:
            log.error("pass over cluster %s left job %s alone: %s", self.member, key, why)
        try:
            for action in plan.actions:
                self.apply(action)
            self.drop_stale_live_entries()
        finally:  # what was done is published even when the pass stopped halfway (readers must not see it undone)
            try:
                self.publish(plan.target, plan.shortfall)
            except Exception as error:
                log.warning("could not publish cluster %s: %s", self.member, error)
        stopped = any(isinstance(a, StopRuns) for a in plan.actions)
        return PassOutcome(plan, stopped)

    def observe(self) -> tuple[dict[tuple[str, str], Observed], dict[str, Observed]]:
        """Every agent the plan depends on: the runs of jobs on nodes, the setup of nodes being prepared."""
        wanted: list[tuple[str, str, bool]] = []  # (node id, run id, is setup)
        for job in self.snapshot.jobs.values():
            if job.execution_state.on_nodes:
                wanted += [(node_id, job.run_id, False) for node_id in job.nodes if node_id in self.snapshot.nodes]
            elif job.fence:  # a requeued job whose lost attempt was not yet seen stopped
                wanted += [(node_id, job.fence["run"], False) for node_id in job.fence["nodes"] if node_id in self.snapshot.nodes]
        wanted += [(n.node_id, setup_run_id(self.cluster), True) for n in self.snapshot.members() if n.state == NodeState.PREPARING]

        def read(item: tuple[str, str, bool]) -> Observed:
            node_id, run, _ = item
            handle = self.handle(self.snapshot.nodes[node_id])
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

    def apply(self, action: Action) -> None:
        if self.lease is not None:
            self.lease.check()
        node = self.snapshot.nodes.get(getattr(action, "node_id", ""))
        if isinstance(action, NodeReady) and node:
            self.write_node(move_node(node, NodeState.IDLE))
        elif isinstance(action, NodeUnusable) and node:
            log.warning(action.error["message"])
            self.write_node(move_node(node, NodeState.UNUSABLE, errors=[action.error], job=None, unreachable_since=None))
        elif isinstance(action, NodeUnreachable) and node:
            log.warning("node %s (%s) unreachable", node.node_id, node.address)
            self.write_node(node.model_copy(update={"unreachable_since": utc_now()}))
        elif isinstance(action, NodeReachable) and node:
            self.write_node(node.model_copy(update={"unreachable_since": None}))
        elif isinstance(action, ReleaseNode) and node and node.state == NodeState.RUNNING:
            self.write_node(move_node(node, NodeState.IDLE, job=None))
        elif isinstance(action, DrainNode) and node:
            self.write_node(move_node(node, NodeState.LEAVING))
        elif isinstance(action, RemoveNode) and node:
            self.remove_node(node)
        elif isinstance(action, ClaimNode) and node:
            self.claim(node)
        elif isinstance(action, ProbeNode) and node:
            self.probe(node)
        elif isinstance(action, StopRuns):
            self.stop_runs(action)
        elif isinstance(action, EndJob):
            self.end_job(action)
        elif isinstance(action, LaunchJob):
            self.launch(action)
        elif isinstance(action, RequestNodes):
            self.request_nodes(action)

    # -- writes ---------------------------------------------------------------------------------
    def write_node(self, node: NodeRecord) -> NodeRecord:
        """Compare-and-swap against what this pass knows; StaleRecord when someone else moved first."""
        self.snapshot.etags[node.key] = self.store.replace(node.key, node.to_doc(), self.snapshot.etags[node.key])
        self.snapshot.nodes[node.node_id] = node
        return node

    def write_job(self, job: JobRecord) -> JobRecord:
        etag = self.store.replace(job.key, job.to_doc(), self.snapshot.etags[job.key])
        self.snapshot.etags[job.key] = etag
        self.changed[job.key] = digest_of(job, etag)
        if job.execution_state.finished:
            self.snapshot.jobs.pop(job.key, None)
            self.vault.delete(f"job-{job.uuid}")
            self.store.delete(job.live_key)
            log.info("job %s %s (exit code %s)", job.key, job.execution_state.value, job.exit_code)
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
            log.info("job %s requeued (attempt %d)", moved.key, moved.attempt)

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
    def claim(self, node: NodeRecord) -> None:
        """free → preparing for this cluster, then find its GPUs, give it the cluster's key, start its setup."""
        if node.state != NodeState.FREE:
            return
        try:
            claimed = self.write_node(move_node(node, NodeState.PREPARING, cluster=self.member, errors=[]))
        except StaleRecord:  # another cluster's pass claimed it first; the next pass grows again
            return
        try:
            gpus = self.handle(claimed).discover_gpus() if claimed.gpus == 0 else claimed.gpus
            if gpus != claimed.gpus:
                claimed = self.write_node(claimed.model_copy(update={"gpus": gpus}))
            self.install_cluster_key(claimed)
        except (OSError, BatchAIError) as error:
            self.mark_lost(claimed, str(getattr(error, "message", error)))
            return
        self.start_setup(claimed)

    def probe(self, node: NodeRecord) -> None:
        """unusable → preparing when a lost node answers again: its agent deployed anew (if it was
        gone), whatever still ran there stopped, its setup run as for a new node."""
        if node.state != NodeState.UNUSABLE:
            return
        try:
            self.handle(node).stop_all_runs()  # deploys the agent first: the round trip that proves the node is back
        except (OSError, BatchAIError) as error:
            log.info("lost node %s (%s) still does not answer: %s", node.node_id, node.address, getattr(error, "message", error))
            self.write_node(node.model_copy(update={"probed_at": utc_now()}))
            return
        log.warning("lost node %s (%s) answers again: setting it up anew", node.node_id, node.address)
        healed = self.write_node(move_node(node, NodeState.PREPARING, errors=[], probed_at=None, unreachable_since=None))
        try:
            self.install_cluster_key(healed)
        except (OSError, BatchAIError) as error:
            self.mark_lost(healed, str(getattr(error, "message", error)))
            return
        self.start_setup(healed)

    def cluster_key(self) -> ClusterKey | None:
        """Read from the vault at most once per pass (a GET and a decrypt on blob), never without cluster SSH."""
        if not self.pool.cluster_ssh:
            return None
        if self._cluster_key is False:
            stored = self.vault.get(f"cluster-{self.cluster.uuid}").get("ssh_key")
            self._cluster_key = ClusterKey(stored["private"], stored["public"]) if stored else None
        return self._cluster_key  # type: ignore[return-value]

    def existing_clusters(self) -> list[str]:
        """The uuids of every cluster, read once per pass and only when a host's keys are edited (a pass that
        grows or shrinks by eight nodes reads the clusters once, not eight times)."""
        if self._existing_clusters is None:
            self._existing_clusters = [found.data["uuid"] for _, found in self.store.read_many("clusters/")]
        return self._existing_clusters

    def install_cluster_key(self, node: NodeRecord) -> None:
        key = self.cluster_key()
        if key is not None:
            where = self.pool.authorized_keys_file(node.node_id)
            self.handle(node).install_cluster_key(self.cluster.uuid, key, where, self.existing_clusters())

    def remove_cluster_key(self, node: NodeRecord) -> None:
        if self.cluster_key() is None:
            return
        try:
            where = self.pool.authorized_keys_file(node.node_id)
            self.handle(node).remove_cluster_key(self.cluster.uuid, where, self.existing_clusters())
        except (OSError, BatchAIError) as error:  # the host may be gone for good; it must still leave the cluster
            log.warning("could not remove cluster %s's key from node %s: %s", self.member, node.node_id, error)

    def start_setup(self, node: NodeRecord) -> None:
        setup = self.spec.node_setup
        task = setup.setup_task if setup else None
        links = self.cluster_links()
        segment = cluster_setup_segment(
            self.settings.subscription, self.settings.resource_group, self.cluster.workspace, self.cluster.name, self.cluster.uuid
        )
        env = {v.name: v.value for v in (task.environment_variables or [])} if task else {}
        try:
            self.data.ensure(links)
            plan = setup_plan(
                NodeSlot(node.node_id, node.address, node.root, node.gpus),
                setup_command=task.command_line if task else None,
                setup_env=env,
                stdouterr_template_path=stdouterr_template(task.std_out_err_path_prefix, segment).rsplit("/", 1)[0] if task else None,
                cluster_links=links,
            )
            plan = replace(plan, inherit_env=list(self.settings.job_env_allow))
            secrets = self.vault.get(f"cluster-{self.cluster.uuid}").get("env", {})
            if task:  # a setup task on staged volumes: fetch what its command names, upload its logs
                reads = [task.command_line, *env.values()]
                staging, sas = self.data.stage_plan(reads, [(plan.expand_env[0][1], True)], {"cluster": links}, timedelta(days=1))
                plan = staging.apply(plan)
                secrets = {**secrets, **sas}
            self.handle(node).start_run(setup_run_id(self.cluster), plan, secrets)
        except (OSError, BatchAIError) as error:
            self.mark_lost(node, f"cannot start node setup: {getattr(error, 'message', error)}")

    def record_joined(self) -> None:
        """Machines an elastic pool started since the last pass get their free record, claimable in this pass."""
        vm_size = self.spec.vm_size
        for node_id, address, root, gpus in self.snapshot.joined:
            record = NodeRecord(node_id=node_id, address=address, root=root, gpus=gpus, state_transition_time=utc_now())
            try:
                self.snapshot.etags[record.key] = self.store.create(record.key, record.to_doc())
            except RecordExists:
                continue  # another pass recorded it first: the next snapshot has it
            self.snapshot.nodes[node_id] = record
            if eligible(self.pool.labels(node_id), vm_size):
                self.snapshot.eligible = self.snapshot.eligible | {node_id}

    def request_nodes(self, action: RequestNodes) -> None:
        starting = self.pool.grow(action.count, action.vm_size)
        if starting:
            log.info("cluster %s: %d node(s) starting for it: %s", self.member, len(starting), ", ".join(starting))

    def remove_node(self, node: NodeRecord) -> None:
        """Leave the cluster: stop its setup, take back the cluster's key, clean the node, free it."""
        if node.state != NodeState.LEAVING:
            node = self.write_node(move_node(node, NodeState.LEAVING))
        handle = self.handle(node)
        try:
            status = handle.status(setup_run_id(self.cluster))
            if status and not status.final:
                handle.terminate(setup_run_id(self.cluster))
        except BatchAIError as error:
            log.warning("could not stop node setup on %s: %s", node.node_id, error.message)
        self.remove_cluster_key(node)
        try:
            handle.clean()
        except BatchAIError as error:  # something stayed mounted (or the node is gone): the record says why
            log.warning("node %s left cluster %s uncleaned: %s", node.node_id, self.member, error.message)
            self.write_node(move_node(node, NodeState.FREE, errors=[error.to_json()]))
        else:
            self.write_node(move_node(node, NodeState.FREE, errors=[]))
        self.pool.release(node.node_id)  # an elastic pool may stop the machine; a fixed one keeps it

    # -- jobs -----------------------------------------------------------------------------------
    def stop_runs(self, action: StopRuns) -> None:
        handles = [self.handle(self.snapshot.nodes[nid]) for nid in action.node_ids if nid in self.snapshot.nodes]

        def stop(handle: NodeHandle) -> None:
            try:
                handle.terminate(action.run)
            except BatchAIError as error:  # an unreachable node is reported by the status pass
                log.warning("could not stop job %s on node %s: %s", action.job, handle.node_id, error.message)

        if handles:
            with ThreadPoolExecutor(max_workers=len(handles)) as executor:
                list(executor.map(stop, handles))

    def launch(self, action: LaunchJob) -> None:
        job = self.snapshot.jobs.get(action.job)
        nodes = [self.snapshot.nodes[nid] for nid in action.node_ids]
        if job is None or job.execution_state != ExecutionState.QUEUED or any(n.state != NodeState.IDLE for n in nodes):
            return
        try:
            built = self.build_runs(job, nodes)
        except BatchAIError as error:
            if error.code not in JOB_FAILING_CODES:
                raise
            log.warning("job %s cannot start: %s", job.key, error.message)
            self.write_job(move_job(job, ExecutionState.FAILED, errors=[error.to_json()], exit_code=None))
            return
        if built is None:
            return  # a node was lost while preparing the launch; the job waits for the next pass
        plans, secrets = built
        taken: list[NodeRecord] = []
        try:
            for node in nodes:
                taken.append(self.write_node(move_node(node, NodeState.RUNNING, job=job.key)))
            job = self.write_job(move_job(job, ExecutionState.RUNNING, nodes=[n.node_id for n in nodes], errors=[], start_time=utc_now()))
        except StaleRecord:
            for node in taken:  # undo: the job (or a node) moved meanwhile; the next pass decides again
                self.write_node(move_node(node, NodeState.IDLE, job=None))
            raise
        for node, plan in zip(nodes, plans, strict=True):
            try:
                self.handle(node).start_run(job.run_id, plan, secrets)
            except (OSError, BatchAIError) as error:
                self.mark_lost(node, f"cannot start the job's agent: {getattr(error, 'message', error)}")
        log.info("job %s running on %s", job.key, ", ".join(action.node_ids))

    def build_runs(self, job: JobRecord, nodes: list[NodeRecord]) -> tuple[list[AgentPlan], dict[str, str]] | None:
        """Per-node plans and the secrets the agents get; None when a peer's SSH details cannot be had."""
        spec = job.parsed_spec()
        secrets = self.vault.get(f"job-{job.uuid}")
        links = self.data.links(spec.mount_volumes, "mountVolumes")
        self.data.ensure(links)
        key = self.cluster_key() if len({n.address for n in nodes}) > 1 else None
        peers = []
        for node in nodes[1:] if key else []:
            try:
                peers.append(self.pool.peer_ssh(node.node_id))
            except BatchAIError as error:
                self.mark_lost(node, error.message)
                return None
        slots = [NodeSlot(n.node_id, n.address, n.root, n.gpus) for n in nodes]
        key_path = NodeLayout(nodes[0].root).cluster_key_path(self.cluster.uuid) if key else None
        return self.plans_for(job, slots, secrets, links, peers, key_path)

    def plans_for(
        self,
        job: JobRecord,
        slots: list[NodeSlot],
        secrets: dict[str, Any],
        links: list[Link],
        peers: list[PeerSSH] | None = None,
        key_path: str | None = None,
    ) -> tuple[list[AgentPlan], dict[str, str]]:
        """The plans for these node slots, staged, and what their agents get as secrets."""
        spec = job.parsed_spec()
        ctx = JobContext(
            job.workspace,
            job.experiment,
            job.name,
            job.uuid,
            job.segment,
            job.run_id,
            links,
            self.pool.shared_folder(job.run_id),
            ssh_peers=peers or [],
            cluster_key=key_path,
        )
        allow, user, contact = list(self.settings.job_env_allow), self.settings.job_user, self.settings.contact_fence_s
        built = job_plans(spec, slots, ctx, list(secrets.get("env", {})))
        plans = [replace(plan, inherit_env=allow, job_user=user, contact_fence_s=contact) for plan in built]
        mounts = {"job": links, "cluster": self.cluster_links()}
        staging, sas = self.data.stage_plan(read_texts(spec), written(spec, job.segment), mounts, spec.max_wall_clock)
        return [staging.apply(plan) for plan in plans], {**run_secrets(secrets), **sas}

    def cluster_links(self) -> list[Link]:
        setup = self.spec.node_setup
        return self.data.links(setup.mount_volumes if setup else None, "nodeSetup.mountVolumes")

    # -- publishing -----------------------------------------------------------------------------
    def publish(self, target: int, shortfall: int = 0, nodes: list[NodeSummary] | None = None) -> None:
        """Write what readers see into the cluster record, if it changed; a user's resize meanwhile is kept.

        A target the pool cannot meet is said in the cluster's errors (``InsufficientNodes``), not
        left for the user to notice from a count.
        """
        members = self.snapshot.members()
        summary = nodes
        if summary is None:
            summary = [
                NodeSummary(
                    node_id=n.node_id, address=n.address, state=n.state, errors=n.errors, unreachable=n.unreachable_since is not None
                )
                for n in members
            ]
            current = [n for n in members if n.state != NodeState.LEAVING]
            moving = any(n.state in (NodeState.PREPARING, NodeState.LEAVING) for n in members) or len(current) != target
        else:  # nodes someone else schedules (Slurm): they are as they are
            moving = False
        allocation = AllocationState.RESIZING if moving else AllocationState.STEADY
        key = self.cluster.key
        record, etag = self.cluster, self.snapshot.etags[key]
        for _ in range(10):
            jobs = self.digest(record.jobs)
            errors = [e for e in record.errors if e.get("code") != INSUFFICIENT_NODES]
            if shortfall:
                errors.append(insufficient_nodes(target, shortfall, self.spec.vm_size))
            new = move_cluster(
                record, allocation, nodes=summary, jobs=jobs, live_index=record.live_index or self.snapshot.backfilled, errors=errors
            )
            if new == record:
                return
            try:
                self.snapshot.etags[key] = self.store.replace(key, new.to_doc(), etag)
                self.snapshot.cluster = self.cluster = new
                return
            except StaleRecord:
                found = self.store.read(key)
                if found is None:
                    return  # deleted meanwhile
                record, etag = ClusterRecord.model_validate(found.data), found.etag
        raise StaleRecord(key)

    def digest(self, previous: dict[str, JobDigest]) -> dict[str, JobDigest]:
        now = utc_now()
        on_nodes = {
            key: digest_of(job, self.snapshot.etags[key], self.seen_done.get(job.run_id))
            for key, job in self.snapshot.jobs.items()
            if job.execution_state.on_nodes
        }
        recent = {key: d for key, d in previous.items() if key not in on_nodes and now - d.changed < RECENT and not d.state.on_nodes}
        recent.update({key: d for key, d in self.changed.items() if key not in on_nodes})
        if len(recent) > DIGEST_MAX_RECENT:
            recent = dict(sorted(recent.items(), key=lambda item: item[1].changed)[-DIGEST_MAX_RECENT:])
        return {**dict(sorted(recent.items())), **on_nodes}

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


def digest_of(job: JobRecord, etag: str, done_nodes: set[str] | None = None) -> JobDigest:
    on_nodes = job.execution_state.on_nodes
    return JobDigest(
        state=job.execution_state,
        etag=etag,
        changed=job.execution_state_transition_time,
        nodes=job.nodes if on_nodes else [],
        run=job.run_id if on_nodes else None,
        done_nodes=sorted(done_nodes or ()) if on_nodes else [],
    )


def run_secrets(secrets: dict[str, Any]) -> dict[str, str]:
    """What a node's agent gets: the job's secret variables, and the registry password for docker login."""
    values = dict(secrets.get("env", {}))
    if secrets.get("registry_password"):
        values[REGISTRY_PASSWORD_KEY] = secrets["registry_password"]
    return values
