"""Launching a job on its nodes, and stopping its runs: plans built per node, staged, started.

A part of one reconcile pass (reconcile.py): it acts through the pass's compare-and-swap writes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..agent.protocol import REGISTRY_PASSWORD_KEY, AgentPlan
from ..data.links import Link
from ..data.staging import read_texts, written
from ..errors import BatchAIError, ErrorCode, StaleRecord
from ..launch import JobContext, NodeSlot, job_plans
from ..layout import NodeLayout
from ..records import (
    ExecutionState,
    JobRecord,
    NodeRecord,
    NodeState,
    move_job,
    move_node,
    utc_now,
)
from ..spec.job import UtilizationPolicy
from ..transport.clusterkeys import PeerSSH
from ..transport.handle import NodeHandle
from .decisions import (
    LaunchJob,
    StopRuns,
)

if TYPE_CHECKING:
    from .reconcile import Reconciler

log = logging.getLogger(__name__)

JOB_FAILING_CODES = (
    ErrorCode.INVALID_SPEC,
    ErrorCode.SECRETS_UNREADABLE,
    ErrorCode.INVALID_PATH,
)  # a job that can never launch fails, naming why


def run_secrets(secrets: dict[str, Any]) -> dict[str, str]:
    """What a node's agent gets: the job's secret variables, and the registry password for docker login."""
    values = dict(secrets.get("env", {}))
    if secrets.get("registry_password"):
        values[REGISTRY_PASSWORD_KEY] = secrets["registry_password"]
    return values


class Launching:
    def __init__(self, p: Reconciler) -> None:
        self.p = p

    def stop_runs(self, action: StopRuns) -> None:
        handles = [self.p.handle(self.p.snapshot.nodes[nid]) for nid in action.node_ids if nid in self.p.snapshot.nodes]

        def stop(handle: NodeHandle) -> None:
            try:
                handle.terminate(action.run)
            except BatchAIError as error:  # an unreachable node is reported by the status pass
                log.warning("could not stop job %s on node %s: %s", action.job, handle.node_id, error.message)

        if handles:
            with ThreadPoolExecutor(max_workers=len(handles)) as executor:
                list(executor.map(stop, handles))

    def launch(self, action: LaunchJob) -> None:
        job = self.p.snapshot.jobs.get(action.job)
        nodes = [self.p.snapshot.nodes[nid] for nid in action.node_ids]
        if job is None or job.execution_state != ExecutionState.QUEUED or any(n.state != NodeState.IDLE for n in nodes):
            return
        try:
            built = self.build_runs(job, nodes)
        except BatchAIError as error:
            if error.code not in JOB_FAILING_CODES:
                raise
            log.warning("job %s cannot start: %s", job.shown, error.message)
            self.p.write_job(move_job(job, ExecutionState.FAILED, errors=[error.to_json()], exit_code=None))
            return
        if built is None:
            return  # a node was lost while preparing the launch; the job waits for the next pass
        plans, secrets = built
        taken: list[NodeRecord] = []
        try:
            for node in nodes:
                taken.append(self.p.write_node(move_node(node, NodeState.RUNNING, job=job.key)))
            ids = [n.node_id for n in nodes]
            started = move_job(
                job,
                ExecutionState.RUNNING,
                nodes=ids,
                errors=[],
                start_time=utc_now(),
                gpus=sum(n.gpus for n in nodes),
                rate=self.p.rate(ids).to_json(),
            )
            job = self.p.write_job(started)
        except StaleRecord:
            for node in taken:  # undo: the job (or a node) moved meanwhile; the next pass decides again
                self.p.write_node(move_node(node, NodeState.IDLE, job=None))
            raise
        for node, plan in zip(nodes, plans, strict=True):
            try:
                self.p.handle(node).start_run(job.run_id, plan, secrets)
            except (OSError, BatchAIError) as error:
                self.p.mark_lost(node, f"cannot start the job's agent: {getattr(error, 'message', error)}")
        log.info("job %s running on %s", job.shown, ", ".join(action.node_ids))

    def build_runs(self, job: JobRecord, nodes: list[NodeRecord]) -> tuple[list[AgentPlan], dict[str, str]] | None:
        """Per-node plans and the secrets the agents get; None when a peer's SSH details cannot be had."""
        spec = job.parsed_spec()
        secrets = self.p.vault.get(f"job-{job.uuid}")
        links = self.p.data.links(spec.mount_volumes, "mountVolumes")
        self.p.data.ensure(links)
        key = self.p.scaling.cluster_key() if len({n.address for n in nodes}) > 1 else None
        peers = []
        for node in nodes[1:] if key else []:
            try:
                peers.append(self.p.pool.peer_ssh(node.node_id))
            except BatchAIError as error:
                self.p.mark_lost(node, error.message)
                return None
        slots = [NodeSlot(n.node_id, n.address, n.root, n.gpus) for n in nodes]
        key_path = NodeLayout(nodes[0].root).cluster_key_path(self.p.cluster.uuid) if key else None
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
            self.p.pool.shared_folder(job.run_id),
            ssh_peers=peers or [],
            cluster_key=key_path,
        )
        allow, user, contact = list(self.p.settings.job_env_allow), self.p.settings.job_user, self.p.settings.contact_fence_s
        if spec.utilization_policy is None and self.p.settings.utilization_policy:  # the connection's, for jobs that name none
            spec = spec.model_copy(update={"utilization_policy": UtilizationPolicy.model_validate(self.p.settings.utilization_policy)})
        built = job_plans(spec, slots, ctx, list(secrets.get("env", {})))
        sample_s = self.p.settings.resource_sample_s
        plans = [replace(plan, inherit_env=allow, job_user=user, contact_fence_s=contact, resource_sample_s=sample_s) for plan in built]
        mounts = {"job": links, "cluster": self.p.cluster_links()}
        staging, sas = self.p.data.stage_plan(read_texts(spec), written(spec, job.segment), mounts, spec.max_wall_clock)
        return [staging.apply(plan) for plan in plans], {**run_secrets(secrets), **sas}
