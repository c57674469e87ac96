"""One level-triggered pass over a cluster: observe nodes and jobs, take one step, write back.

Runs under the cluster's lock and is safe to run twice. The steps, in order:
  1. nodes being prepared → idle when setup succeeded, unusable when it failed;
  2. running jobs: read every node's agent status; finished → exit code and errors, nodes freed;
     a node whose agent stopped reporting → unusable, its job requeued or failed;
  3. scale: manual target or autoScale by what queued + running jobs need; add pool nodes,
     remove surplus per ``nodeDeallocationOption``;
  4. queued jobs by priority, then age: start one when ``nodeCount`` nodes are idle (gang
     scheduling, strictly in order so a big job is not starved by small ones);
  5. the cluster's allocation state: steady when nothing is joining or leaving.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_batchai.agent import REGISTRY_PASSWORD_KEY
from airflow_batchai.clusterkeys import ClusterKey
from airflow_batchai.errors import BatchAIError
from airflow_batchai.launch import MPI_TOOLKITS, JobContext, Link, NodeSlot, job_plans, setup_plan
from airflow_batchai.layout import NodeLayout, cluster_setup_segment, stdouterr_template
from airflow_batchai.nodeops import FINAL_STATES
from airflow_batchai.nodes import eligible
from airflow_batchai.records import (
    AllocationState,
    ClusterRecord,
    ExecutionState,
    JobRecord,
    NodeRecord,
    NodeState,
    move_cluster,
    move_job,
    move_node,
    utc_now,
)
from airflow_batchai.spec import ClusterSpec, DeallocationOption, JobSpec
from airflow_batchai.staging import read_texts, written
from airflow_batchai.store import update

if TYPE_CHECKING:
    from airflow_batchai.service import Service

log = logging.getLogger(__name__)


def run_id(job: JobRecord) -> str:
    return f"{job.uuid}-{job.attempt}"


def setup_run_id(cluster: ClusterRecord) -> str:
    return f"setup-{cluster.uuid}"


_UNREAD = object()


class Reconciler:
    def __init__(self, service: Service, cluster: ClusterRecord) -> None:
        self.service = service
        self.cluster = cluster
        self.spec = ClusterSpec.model_validate(cluster.spec)
        self.member = f"{cluster.workspace}/{cluster.name}"
        self._cluster_key: ClusterKey | object | None = _UNREAD

    # -- helpers ------------------------------------------------------------------------
    def nodes(self) -> list[NodeRecord]:
        return self.service.cluster_nodes(self.cluster.workspace, self.cluster.name)

    def jobs(self) -> list[JobRecord]:
        return self.service.cluster_jobs(self.cluster.workspace, self.cluster.name)

    def node(self, node_id: str) -> NodeRecord | None:
        return self.service.node_record(node_id)

    def set_node(self, node: NodeRecord, state: NodeState, **changes: Any) -> NodeRecord:
        moved = move_node(node, state, **changes)
        self.service.save_node(moved)
        return moved

    def set_job(self, job: JobRecord, state: ExecutionState, **changes: Any) -> JobRecord:
        moved = move_job(job, state, **changes)
        self.service.save_job(moved)
        if moved.execution_state.finished:
            self.service.vault.delete(f"job-{moved.uuid}")
            log.info("job %s %s (exit code %s)", moved.key, moved.execution_state.value, moved.exit_code)
        return moved

    # -- the pass -----------------------------------------------------------------------
    def run(self) -> None:
        self.observe_preparing_nodes()
        for job in self.jobs():
            if job.execution_state in (ExecutionState.RUNNING, ExecutionState.TERMINATING):
                self.observe_job(job)
        self.scale()
        self.schedule()
        self.settle_allocation()

    def observe_preparing_nodes(self) -> None:
        for node in self.nodes():
            if node.state != NodeState.PREPARING:
                continue
            status = self.service.node_handle(node).status(setup_run_id(self.cluster))
            if status and status.get("state") == "succeeded":
                self.set_node(node, NodeState.IDLE)
            elif status and status.get("state") in FINAL_STATES:
                error = status.get("error") or {}
                message = f"node setup failed on {node.node_id} ({node.address}): {error.get('message', 'unknown error')}"
                self.set_node(node, NodeState.UNUSABLE, errors=[{"code": error.get("code", "NodeSetupFailed"), "message": message}])
            elif status is None and self._silent_since(node.state_transition_time):
                self.mark_lost(node, "its setup agent never reported")

    def _silent_since(self, since: Any) -> bool:
        return (utc_now() - since).total_seconds() > self.service.settings.launch_timeout_s

    def _stale(self, status: dict[str, Any]) -> bool:
        return time.time() - float(status.get("heartbeat", 0)) > self.service.settings.heartbeat_timeout_s

    def unreachable_too_long(self, node: NodeRecord, error: BatchAIError) -> bool:
        if node.unreachable_since is None:
            log.warning("node %s (%s) unreachable: %s", node.node_id, node.address, error.message)
            self.service.save_node(node.model_copy(update={"unreachable_since": utc_now()}))
            return False
        return (utc_now() - node.unreachable_since).total_seconds() > self.service.settings.heartbeat_timeout_s

    def mark_lost(self, node: NodeRecord, why: str) -> None:
        error = {"code": "NodeLost", "message": f"node {node.node_id} ({node.address}) is unusable: {why}"}
        log.warning(error["message"])
        self.set_node(node, NodeState.UNUSABLE, errors=[error], job=None, unreachable_since=None)

    def observe_job(self, job: JobRecord) -> None:
        """Read each node's agent status and move the job on when it has an outcome."""
        statuses: dict[str, dict[str, Any] | None] = {}
        lost = []
        for node_id in job.nodes:
            node = self.node(node_id)
            try:
                statuses[node_id] = self.service.node_handle(node).status(run_id(job)) if node else None
            except BatchAIError as error:  # unreachable: lost only once it stays so
                statuses[node_id] = {"state": "unknown", "heartbeat": time.time()}
                if node and self.unreachable_too_long(node, error):
                    lost.append((node_id, error.message))
                continue
            if node and node.unreachable_since:
                self.service.save_node(node.model_copy(update={"unreachable_since": None}))
        for node_id, status in statuses.items():
            if any(node_id == nid for nid, _ in lost):
                continue
            if status is None and self._silent_since(job.execution_state_transition_time):
                lost.append((node_id, "its agent never started"))
            elif status is not None and status.get("state") not in FINAL_STATES and self._stale(status):
                lost.append((node_id, f"no heartbeat for {self.service.settings.heartbeat_timeout_s:.0f} s"))
        if lost:
            self.handle_lost_nodes(job, lost)
            return
        finals = {nid: s for nid, s in statuses.items() if s and s.get("state") in FINAL_STATES}
        failed = [(nid, s) for nid, s in finals.items() if s["state"] != "succeeded"]
        workers = [nid for nid in job.nodes if nid not in job_helpers(job)]
        if job.execution_state == ExecutionState.TERMINATING:
            if len(finals) == len(job.nodes):
                self.finish(job, ExecutionState.FAILED, -1, job.errors)
            return
        if failed:
            node_id, status = failed[0]
            error = status.get("error") or {"code": "JobFailed", "message": "the job failed"}
            if error.get("code") == "JobFailed":
                error = {"code": "JobFailed", "message": f"Job failed with non-zero exit code on node {node_id}"}
            self.stop_runs(job, [nid for nid in job.nodes if nid not in finals])
            self.finish(job, ExecutionState.FAILED, int(status.get("exit_code", -1)), [error])
        elif all(nid in finals for nid in workers):
            self.stop_runs(job, [nid for nid in job.nodes if nid not in finals])  # release reserved nodes
            self.finish(job, ExecutionState.SUCCEEDED, 0, [])

    def handle_lost_nodes(self, job: JobRecord, lost: list[tuple[str, str]]) -> None:
        for node_id, why in lost:
            node = self.node(node_id)
            if node and node.state != NodeState.UNUSABLE:
                self.mark_lost(node, why)
        alive = [nid for nid in job.nodes if nid not in {nid for nid, _ in lost}]
        self.stop_runs(job, alive)
        self.stop_runs(job, [node_id for node_id, _ in lost])  # best effort: a silent node may still run it
        self.free_nodes(alive)
        node_id, why = lost[0]
        error = {"code": "NodeLost", "message": f"node {node_id} became unusable while running the job: {why}"}
        if self.deallocation_option() == DeallocationOption.REQUEUE and job.execution_state == ExecutionState.RUNNING:
            self.set_job(job, ExecutionState.QUEUED, nodes=[], errors=[error], attempt=job.attempt + 1, start_time=None)
        else:
            self.set_job(job, ExecutionState.FAILED, nodes=[], errors=[error], exit_code=-1)

    def deallocation_option(self) -> DeallocationOption:
        manual = self.spec.scale_settings.manual
        return manual.node_deallocation_option if manual else DeallocationOption.REQUEUE

    def stop_runs(self, job: JobRecord, node_ids: list[str]) -> None:
        handles = [self.service.node_handle(n) for n in (self.node(nid) for nid in node_ids) if n]

        def stop(handle: Any) -> None:
            try:
                handle.terminate(run_id(job))
            except BatchAIError as error:  # an unreachable node is reported by the status pass
                log.warning("could not stop job %s on node %s: %s", job.key, handle.node_id, error.message)

        if handles:
            with ThreadPoolExecutor(max_workers=len(handles)) as executor:
                list(executor.map(stop, handles))

    def free_nodes(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            node = self.node(node_id)
            if node and node.state == NodeState.RUNNING:
                self.set_node(node, NodeState.IDLE, job=None)
            elif node and node.state == NodeState.LEAVING:
                self.remove_node(node)

    def finish(self, job: JobRecord, state: ExecutionState, exit_code: int, errors: list[dict[str, Any]]) -> None:
        self.free_nodes(job.nodes)
        self.service.pool.release_shared(run_id(job))
        self.set_job(job, state, exit_code=exit_code, errors=errors)

    def terminate(self, job: JobRecord, error: dict[str, Any]) -> None:
        """User terminate: queued → failed at once; running → terminating, stop all runs, → failed."""
        if job.execution_state == ExecutionState.QUEUED:
            self.set_job(job, ExecutionState.FAILED, errors=[error], exit_code=None)
            return
        if job.execution_state == ExecutionState.RUNNING:
            job = self.set_job(job, ExecutionState.TERMINATING, errors=[error])
        self.stop_runs(job, job.nodes)
        self.observe_job(job)

    # -- scaling ------------------------------------------------------------------------
    def target(self, nodes: list[NodeRecord]) -> int:
        auto = self.spec.scale_settings.auto_scale
        if auto is None:
            return self.cluster.target_node_count
        active = [
            j for j in self.jobs() if j.execution_state in (ExecutionState.QUEUED, ExecutionState.RUNNING, ExecutionState.TERMINATING)
        ]
        needed = sum(JobSpec.model_validate(j.spec).node_count for j in active)
        wanted = min(max(needed, auto.minimum_node_count), auto.maximum_node_count)
        members = [n for n in nodes if n.state != NodeState.LEAVING]
        if wanted < len(members):  # scale down only nodes idle long enough
            idle_for = timedelta(seconds=auto.idle_seconds_before_scaledown)
            lingering = [n for n in members if n.state == NodeState.IDLE and n.idle_since and utc_now() - n.idle_since >= idle_for]
            removable = len(lingering) + sum(1 for n in members if n.state == NodeState.UNUSABLE)
            wanted = max(wanted, len(members) - removable)
        return wanted

    def scale(self) -> None:
        nodes = self.nodes()
        members = [n for n in nodes if n.state != NodeState.LEAVING]
        target = self.target(nodes)
        if len(members) < target:
            self.grow(target - len(members))
        elif len(members) > target:
            self.shrink(members, len(members) - target)

    def grow(self, count: int) -> None:
        for node in self.service.pool_nodes():
            if count == 0:
                return
            if node.state != NodeState.FREE or not eligible(self.service.pool.labels(node.node_id), self.spec.vm_size):
                continue
            claimed = move_node(node, NodeState.PREPARING, cluster=self.member, errors=[])

            def claim(doc: dict[str, Any], claimed: NodeRecord = claimed) -> dict[str, Any]:
                if doc["state"] != NodeState.FREE.value:
                    raise BatchAIError("NodeTaken", "node claimed by another cluster", doc["node_id"])
                return claimed.to_doc()

            try:
                update(self.service.store, node.key, claim)
            except BatchAIError as error:
                if error.code == "NodeTaken":
                    continue
                raise
            count -= 1
            try:
                gpus = self.service.node_handle(claimed).discover_gpus() if claimed.gpus == 0 else claimed.gpus
            except BatchAIError as error:
                self.mark_lost(claimed, error.message)
                continue
            if gpus != claimed.gpus:
                claimed = claimed.model_copy(update={"gpus": gpus})
                self.service.save_node(claimed)
            try:
                self.install_cluster_key(claimed)
            except (OSError, BatchAIError) as error:
                self.mark_lost(claimed, str(getattr(error, "message", error)))
                continue
            self.start_setup(claimed)

    def cluster_key(self) -> ClusterKey | None:
        """Read from the vault at most once per pass (a GET and a decrypt on blob), never without cluster SSH."""
        if not self.service.pool.cluster_ssh:
            return None
        if self._cluster_key is _UNREAD:
            stored = self.service.vault.get(f"cluster-{self.cluster.uuid}").get("ssh_key")
            self._cluster_key = ClusterKey(stored["private"], stored["public"]) if stored else None
        return self._cluster_key  # type: ignore[return-value]

    def install_cluster_key(self, node: NodeRecord) -> None:
        key = self.cluster_key()
        if key is not None:
            authorized_keys = self.service.pool.authorized_keys_file(node.node_id)
            self.service.node_handle(node).install_cluster_key(self.cluster.uuid, key, authorized_keys)

    def remove_cluster_key(self, node: NodeRecord) -> None:
        if self.cluster_key() is None:
            return
        try:
            self.service.node_handle(node).remove_cluster_key(self.cluster.uuid, self.service.pool.authorized_keys_file(node.node_id))
        except (OSError, BatchAIError) as error:  # the host may be gone for good; it must still leave the cluster
            log.warning("could not remove cluster %s's key from node %s: %s", self.member, node.node_id, error)

    def start_setup(self, node: NodeRecord) -> None:
        setup = self.spec.node_setup
        task = setup.setup_task if setup else None
        links = self.service.data.links(setup.mount_volumes if setup else None, "nodeSetup.mountVolumes")
        self.service.data.ensure(links)
        segment = cluster_setup_segment(
            self.service.settings.subscription,
            self.service.settings.resource_group,
            self.cluster.workspace,
            self.cluster.name,
            self.cluster.uuid,
        )
        env = {v.name: v.value for v in (task.environment_variables or [])} if task else {}
        plan = setup_plan(
            NodeSlot(node.node_id, node.address, node.root, node.gpus),
            setup_command=task.command_line if task else None,
            setup_env=env,
            stdouterr_template_path=stdouterr_template(task.std_out_err_path_prefix, segment).rsplit("/", 1)[0] if task else None,
            cluster_links=links,
        )
        secrets = self.service.vault.get(f"cluster-{self.cluster.uuid}").get("env", {})
        if task:  # a setup task on staged volumes: fetch what its command names, upload its logs
            reads = [task.command_line, *env.values()]
            staging, sas = self.service.data.stage_plan(reads, [(plan["expand_env"][0][1], True)], {"cluster": links}, timedelta(days=1))
            plan.update(staging)
            secrets = {**secrets, **sas}
        try:
            self.service.node_handle(node).start_run(setup_run_id(self.cluster), plan, secrets)
        except (OSError, BatchAIError) as error:
            self.mark_lost(node, f"cannot start node setup: {error}")

    def shrink(self, members: list[NodeRecord], count: int) -> None:
        order = {NodeState.UNUSABLE: 0, NodeState.PREPARING: 1, NodeState.IDLE: 2, NodeState.RUNNING: 3}
        for node in sorted(members, key=lambda n: (order.get(n.state, 9), n.node_id))[:count]:
            if node.state != NodeState.RUNNING:
                self.remove_node(node)
                continue
            job = next((j for j in self.jobs() if j.key == node.job), None)
            option = self.deallocation_option()
            if job is None:
                self.remove_node(node)
            elif option == DeallocationOption.WAIT_FOR_JOB_COMPLETION:
                self.set_node(node, NodeState.LEAVING)
            else:
                self.evict(job, option)
                freed = self.node(node.node_id)
                if freed and freed.cluster == self.member:
                    self.remove_node(freed)

    def evict(self, job: JobRecord, option: DeallocationOption) -> None:
        """A running job loses a node to scale-down: requeue it (run again from scratch) or fail it."""
        self.stop_runs(job, job.nodes)
        self.free_nodes(job.nodes)
        if option == DeallocationOption.REQUEUE:
            self.set_job(job, ExecutionState.QUEUED, nodes=[], attempt=job.attempt + 1, start_time=None)
        else:
            error = {"code": "JobTerminated", "message": "The job was terminated because its node left the cluster"}
            self.set_job(job, ExecutionState.FAILED, nodes=[], errors=[error], exit_code=-1)

    def remove_node(self, node: NodeRecord) -> None:
        if node.state != NodeState.LEAVING:
            node = self.set_node(node, NodeState.LEAVING)
        handle = self.service.node_handle(node)
        if node.state == NodeState.LEAVING:
            status = handle.status(setup_run_id(self.cluster))
            if status and status.get("state") not in FINAL_STATES:
                handle.terminate(setup_run_id(self.cluster))
        self.remove_cluster_key(node)
        try:
            handle.clean()
        except BatchAIError as error:  # something stayed mounted: its root stays too, and the record says why
            log.warning("node %s left cluster %s uncleaned: %s", node.node_id, self.member, error.message)
            self.set_node(node, NodeState.FREE, errors=[error.to_json()])
            return
        self.set_node(node, NodeState.FREE, errors=[])

    def delete_everything(self) -> None:
        error = {"code": "ClusterDeleted", "message": f"cluster {self.cluster.name} was deleted"}
        for job in self.jobs():
            if job.execution_state == ExecutionState.QUEUED:
                self.set_job(job, ExecutionState.FAILED, errors=[error])
            elif job.execution_state in (ExecutionState.RUNNING, ExecutionState.TERMINATING):
                self.stop_runs(job, job.nodes)
                self.free_nodes(job.nodes)
                if job.execution_state == ExecutionState.RUNNING:
                    job = self.set_job(job, ExecutionState.TERMINATING)
                self.set_job(job, ExecutionState.FAILED, errors=[error], exit_code=-1)
        for node in self.nodes():
            self.remove_node(node)

    # -- scheduling ---------------------------------------------------------------------
    def schedule(self) -> None:
        queued = sorted(
            (j for j in self.jobs() if j.execution_state == ExecutionState.QUEUED), key=lambda j: (-j.priority, j.creation_time)
        )
        for job in queued:
            idle = sorted((n for n in self.nodes() if n.state == NodeState.IDLE), key=lambda n: n.node_id)
            spec = JobSpec.model_validate(job.spec)
            if len(idle) < spec.node_count:
                return  # strict order: the head job waits for its gang, nothing jumps ahead
            self.launch(job, spec, idle[: spec.node_count])

    def launch(self, job: JobRecord, spec: JobSpec, nodes: list[NodeRecord]) -> None:
        slots = [NodeSlot(n.node_id, n.address, n.root, n.gpus) for n in nodes]
        secrets = self.service.vault.get(f"job-{job.uuid}")
        links = self.service.data.links(spec.mount_volumes, "mountVolumes")
        self.service.data.ensure(links)
        the_run = run_id(job)
        key = self.cluster_key() if len({n.address for n in nodes}) > 1 else None
        peers = []
        for node in nodes[1:] if key else []:
            try:
                peers.append(self.service.pool.peer_ssh(node.node_id))
            except BatchAIError as error:  # the job stays queued for the next pass
                self.mark_lost(node, error.message)
                return
        ctx = JobContext(
            job.workspace,
            job.experiment,
            job.name,
            job.uuid,
            job.segment,
            the_run,
            links,
            self.service.pool.shared_folder(the_run),
            ssh_peers=peers,
            cluster_key=NodeLayout(nodes[0].root).cluster_key_path(self.cluster.uuid) if key else None,
        )
        plans = job_plans(spec, slots, ctx, list(secrets.get("env", {})))
        mounts = {"job": links, "cluster": self.cluster_links()}
        staging, sas = self.service.data.stage_plan(read_texts(spec), written(spec, job.segment), mounts, spec.max_wall_clock)
        for plan in plans:
            plan.update(staging)
        for node in nodes:
            self.set_node(node, NodeState.RUNNING, job=job.key)
        job = self.set_job(job, ExecutionState.RUNNING, nodes=[n.node_id for n in nodes], errors=[], start_time=utc_now())
        for node, plan in zip(nodes, plans, strict=True):
            try:
                self.service.node_handle(node).start_run(the_run, plan, {**run_secrets(secrets), **sas})
            except (OSError, BatchAIError) as error:
                self.mark_lost(node, f"cannot start the job's agent: {error}")
        log.info("job %s running on %s", job.key, ", ".join(n.node_id for n in nodes))

    def cluster_links(self) -> list[Link]:
        setup = self.spec.node_setup
        return self.service.data.links(setup.mount_volumes if setup else None, "nodeSetup.mountVolumes")

    def settle_allocation(self) -> None:
        nodes = self.nodes()
        members = [n for n in nodes if n.state != NodeState.LEAVING]
        moving = any(n.state in (NodeState.PREPARING, NodeState.LEAVING) for n in nodes) or len(members) != self.target(nodes)
        wanted = AllocationState.RESIZING if moving else AllocationState.STEADY
        current = ClusterRecord.model_validate(self.service.store.read(self.cluster.key).data)  # type: ignore[union-attr]
        if current.allocation_state != wanted:
            moved = move_cluster(current, wanted)
            update(self.service.store, self.cluster.key, lambda _: moved.to_doc())


def run_secrets(secrets: dict[str, Any]) -> dict[str, str]:
    """What a node's agent gets: the job's secret variables, and the registry password for docker login."""
    values = dict(secrets.get("env", {}))
    if secrets.get("registry_password"):
        values[REGISTRY_PASSWORD_KEY] = secrets["registry_password"]
    return values


def job_helpers(job: JobRecord) -> list[str]:
    """Nodes that only reserve capacity for the job (custom/MPI toolkits' non-first nodes)."""
    return job.nodes[1:] if JobSpec.model_validate(job.spec).tool_type in ("custom", *MPI_TOOLKITS) else []
