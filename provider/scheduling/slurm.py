"""One pass over a cluster that Slurm schedules: submit what is queued, map what Slurm says.

The same lease, snapshot, compare-and-swap writes and published cluster record as our own
reconcile (scheduling/reconcile.py), so every reader, waiter and watch works unchanged; only
the deciding differs. Per pass: one ``sinfo`` (the partition's nodes, published as the
cluster's nodes), one ``scontrol show job`` for every submitted live job, and for running
jobs one status.json read per node. No node is claimed or set up: Slurm owns them.

A queued job is submitted at once (Slurm queues it) while the cluster's bound allows: the
scale settings bound how many nodes its jobs hold at once (manual target, or autoScale's
maximum); a job that would pass it waits in our queue, in priority order, as it would have
waited for Batch AI to grow the cluster.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from typing import Any

from ..agent.protocol import SLURM_PLANS_FILE, AgentStatus, RunState
from ..errors import BatchAIError, ErrorCode, StaleRecord
from ..launch import NodeSlot, process_count
from ..layout import NodeLayout
from ..pools.slurm import SlurmPool
from ..records import ExecutionState, JobRecord, NodeSummary, move_job, next_attempt, utc_now
from ..slurm.commands import SbatchOptions, SlurmJob, SlurmNode
from ..slurm.states import execution_state, lost_its_nodes, node_state, queue_reason
from ..spec import DeallocationOption
from ..transport.handle import NodeHandle
from .decisions import Plan
from .reconcile import PassOutcome, Reconciler

log = logging.getLogger(__name__)

TERMINATED = {"code": ErrorCode.JOB_TERMINATED, "message": "The job was terminated by the user"}
WALL_CLOCK_SLACK_MIN = 1  # Slurm's --time is a backstop: the agent ends the job at maxWallClockTime itself


class SlurmReconciler(Reconciler):
    pool: SlurmPool
    counts_jobs = True  # a partition's nodes run other users' jobs too: this cluster's usage is its jobs' running time

    def run(self, terminations: dict[str, dict[str, Any]] | None = None) -> PassOutcome:
        terminations = terminations or {}
        self.seen_done: dict[str, set[str]] = {}  # run -> nodes whose agent ended (the watch reads those no more)
        partition = self.pool.nodes()
        self.gpus_of = {n.name: n.gpus for n in partition}
        eligible = self.eligible(partition)
        jobs = sorted(self.snapshot.jobs.values(), key=lambda j: (-j.priority, j.creation_time, j.key))
        known = self.pool.slurm.jobs([j.slurm_job_id for j in jobs if j.slurm_job_id])
        cancelled = False
        for job in jobs:
            if job.key in terminations:
                cancelled |= self.terminate(job, terminations[job.key])
            elif job.slurm_job_id:
                self.follow(job, known.get(job.slurm_job_id))
        hold = self.budget_hold()
        if not hold:
            self.submit_queued(eligible)
        self.tell_held_jobs(hold)
        self.drop_stale_live_entries()
        states = {n.name: node_state(n) for n in eligible}
        summary = [NodeSummary(node_id=n.name, address=n.address, state=state) for n in eligible if (state := states[n.name]) is not None]
        self.publish(self.bound(), 0, summary)
        pending = any(j.slurm_job_id and j.execution_state == ExecutionState.QUEUED for j in self.snapshot.jobs.values())
        # a job pending in Slurm starts without any agent of ours to notice: look again soon (one scontrol)
        return PassOutcome(Plan([], self.bound(), self.settings.watch_interval_s if pending else None), cancelled)

    def eligible(self, partition: list[SlurmNode]) -> list[SlurmNode]:
        vm_size = self.spec.vm_size
        if vm_size is None:
            return partition
        return [n for n in partition if vm_size.lower() in {f.lower() for f in n.features}]

    def bound(self) -> int:
        scale = self.spec.scale_settings
        if scale.manual is not None:
            return self.cluster.target_node_count
        assert scale.auto_scale is not None
        return scale.auto_scale.maximum_node_count

    def write_job(self, job: JobRecord) -> JobRecord:
        """As ever; a job that ended also loses the secrets files no agent took (cancelled while pending, a node that never started)."""
        written = super().write_job(job)
        if job.execution_state.finished and job.slurm_job_id:
            self.pool.login_transport.remove_tree(self.pool.secrets_folder(job.run_id))
        return written

    # -- following submitted jobs ---------------------------------------------------------------
    def statuses(self, job: JobRecord) -> list[AgentStatus | None]:
        """What each node's agent last wrote (None: nothing yet, or unreadable)."""
        found: list[AgentStatus | None] = []
        for host in job.nodes:
            root = self.pool.node_root(host)
            assert root is not None
            try:
                found.append(NodeHandle(host, self.pool.login_transport, NodeLayout(root)).status(job.run_id))
            except BatchAIError as error:
                log.warning("reading job %s's status on %s: %s", job.key, host, error.message)
                found.append(None)
        return found

    def follow(self, job: JobRecord, slurm: SlurmJob | None) -> None:
        error: dict[str, Any] | None
        if slurm is None:
            state, error = (
                ExecutionState.FAILED,
                {
                    "code": ErrorCode.JOB_LOST,
                    "message": f"Slurm no longer knows job {job.slurm_job_id} (it ended longer ago than its MinJobAge)",
                },
            )
        else:
            state, error = execution_state(slurm)
        if state == ExecutionState.QUEUED:
            assert slurm is not None
            why = queue_reason(slurm)
            if job.queue_reason != why:  # written when it changes, not every pass
                self.write_job(job.model_copy(update={"queue_reason": why}))
            return
        if job.execution_state == ExecutionState.QUEUED:
            nodes = slurm.nodes if slurm is not None else []
            if not nodes:  # ended before it ran (cancelled while pending, or refused)
                self.write_job(
                    move_job(job, ExecutionState.FAILED, errors=[error or {"code": ErrorCode.JOB_FAILED, "message": "no nodes"}])
                )
                return
            gpus = sum(self.gpus_of.get(node, 0) for node in nodes)
            running = move_job(
                job, ExecutionState.RUNNING, nodes=nodes, errors=[], queue_reason=None, gpus=gpus, rate=self.rate().to_json()
            )
            job = self.write_job(running)
        statuses = self.statuses(job)
        self.seen_done[job.run_id] = {host for host, s in zip(job.nodes, statuses, strict=True) if s is not None and s.final}
        everyone_done = bool(statuses) and all(s is not None and s.final for s in statuses)
        if state == ExecutionState.RUNNING and not everyone_done:
            return
        if job.execution_state == ExecutionState.TERMINATING:
            self.write_job(move_job(job, ExecutionState.FAILED, errors=[TERMINATED], exit_code=-1))
            return
        succeeded = everyone_done and all(s is not None and s.state == RunState.SUCCEEDED.value for s in statuses)
        if slurm is not None and lost_its_nodes(slurm) and not succeeded:  # Slurm's word, not the killed agents'
            lost = error or {"code": ErrorCode.NODE_FAILED, "message": f"Slurm job {slurm.job_id} lost its nodes"}
            if self.spec.scale_settings.deallocation_option == DeallocationOption.REQUEUE:
                self.requeue(job, lost)
            else:
                self.write_job(move_job(job, ExecutionState.FAILED, errors=[lost], exit_code=-1))
            return
        self.write_job(self.outcome(job, statuses, error))

    def requeue(self, job: JobRecord, why: dict[str, Any]) -> None:
        """Node failure or preemption under ``requeue``: the job runs again from scratch, as a new Slurm job
        (we submit with --no-requeue, so Slurm never restarts one behind our back)."""
        moved = self.write_job(move_job(job, ExecutionState.QUEUED, slurm_job_id=None, **next_attempt(job, why, utc_now())))
        self.pool.login_transport.remove_tree(self.pool.secrets_folder(job.run_id))  # a node that never started left its file
        log.info("job %s requeued after %s: attempt %d", moved.shown, why["message"], moved.attempt + 1)

    def outcome(self, job: JobRecord, statuses: list[AgentStatus | None], slurm_error: dict[str, Any] | None) -> JobRecord:
        """The agents' word where they said it (their exit code, their error); Slurm's where they could not."""
        failed = [s for s in statuses if s is not None and s.final and s.state != RunState.SUCCEEDED.value]
        if failed:
            first = failed[0]
            error = first.error or {"code": ErrorCode.JOB_FAILED, "message": f"exit code {first.exit_code}"}
            return move_job(job, ExecutionState.FAILED, errors=[error], exit_code=first.exit_code)
        if statuses and all(s is not None and s.final for s in statuses):
            return move_job(job, ExecutionState.SUCCEEDED, errors=[], exit_code=0)
        error = slurm_error or {
            "code": ErrorCode.JOB_FAILED,
            "message": f"Slurm job {job.slurm_job_id} ended before every node's agent did",
        }
        return move_job(job, ExecutionState.FAILED, errors=[error], exit_code=-1)

    def terminate(self, job: JobRecord, why: dict[str, Any]) -> bool:
        """``scancel``: the whole allocation ends, every node's processes with it. True when one was sent."""
        if job.slurm_job_id:
            self.pool.slurm.cancel(job.slurm_job_id)
        if job.execution_state == ExecutionState.QUEUED:
            self.write_job(move_job(job, ExecutionState.FAILED, errors=[why]))
        elif job.execution_state == ExecutionState.RUNNING:
            self.write_job(move_job(job, ExecutionState.TERMINATING))
        return job.slurm_job_id is not None

    # -- submitting -----------------------------------------------------------------------------
    def submit_queued(self, eligible: list[SlurmNode]) -> None:
        live = [j for j in self.snapshot.jobs.values() if j.slurm_job_id]
        held = sum(j.parsed_spec().node_count for j in live)
        waiting = sorted(
            (j for j in self.snapshot.jobs.values() if j.execution_state == ExecutionState.QUEUED and not j.slurm_job_id),
            key=lambda j: (-j.priority, j.creation_time, j.key),
        )
        for job in waiting:
            count = job.parsed_spec().node_count
            if held + count > self.bound():
                return  # strictly in order: a big job is not passed by small ones
            if count > len(eligible):
                error = {
                    "code": ErrorCode.INSUFFICIENT_NODES,
                    "message": f"nodeCount {count} exceeds the partition's {len(eligible)} node(s)",
                }
                self.write_job(move_job(job, ExecutionState.FAILED, errors=[error]))
                continue
            try:
                self.submit(job, eligible)
            except BatchAIError as error:
                if error.code not in (ErrorCode.SLURM_ERROR, ErrorCode.INVALID_SPEC, ErrorCode.INVALID_PATH, ErrorCode.SECRETS_UNREADABLE):
                    raise
                log.warning("job %s cannot be submitted: %s", job.shown, error.message)
                self.write_job(move_job(job, ExecutionState.FAILED, errors=[error.to_json()]))
                continue
            held += count

    def submit(self, job: JobRecord, eligible: list[SlurmNode]) -> None:
        spec = job.parsed_spec()
        count = spec.node_count
        gpus = min((n.gpus for n in eligible), default=0)
        slots = [NodeSlot(f"@@HOST{i}@@", f"@@ADDR{i}@@", self.pool.node_root(f"@@HOST{i}@@") or "", gpus) for i in range(count)]
        secrets = self.vault.get(f"job-{job.uuid}")
        links = self.data.links(spec.mount_volumes, "mountVolumes")
        self.data.ensure(links)
        plans, run_secrets = self.launching.plans_for(job, slots, secrets, links)
        transport = self.pool.login_transport
        NodeHandle("login", transport, NodeLayout(self.pool.root)).deploy_agent()
        base = self.pool.run_base(job.run_id)
        transport.remove_tree(base)
        document = {
            "plans": [plan.to_json() for plan in plans],
            "run_dirs": [slot.layout.run_dir(job.run_id) for slot in slots],
            "addresses": {n.name: n.address for n in eligible},
        }
        if run_secrets:
            for index in range(count):
                path = posixpath.join(self.pool.secrets_folder(job.run_id), f"{index}.json")
                transport.write_file(path, json.dumps(run_secrets).encode(), 0o600)
        transport.write_file(posixpath.join(base, SLURM_PLANS_FILE), json.dumps(document).encode(), 0o600)
        settings = self.pool.settings
        limit = spec.constraints.max_wall_clock_time if spec.constraints else None
        options = SbatchOptions(
            partition=settings.partition,
            job_name=job.name,
            nodes=count,
            ntasks_per_node=math.ceil(process_count(spec) / count),
            gpus_per_node=gpus,
            time_minutes=math.ceil(limit.total_seconds() / 60) + WALL_CLOCK_SLACK_MIN if limit else None,
            constraint=self.spec.vm_size,
            account=settings.account,
            qos=settings.qos,
            nice=-job.priority if job.priority < 0 else None,
            output=posixpath.join(base, "slurm-%j.out"),
            extra=(*settings.sbatch_args, "--no-requeue"),
        )
        try:
            slurm_id = self.pool.slurm.submit(self.pool.batch_script(job.run_id, count, gpus), options)
        except BaseException:
            transport.remove_tree(self.pool.secrets_folder(job.run_id))
            raise
        try:
            self.write_job(job.model_copy(update={"slurm_job_id": slurm_id}))
        except StaleRecord:  # the job moved meanwhile (terminated, deleted): its batch job must not run
            self.pool.slurm.cancel(slurm_id)
            transport.remove_tree(self.pool.secrets_folder(job.run_id))
            raise
        log.info("job %s submitted to Slurm as job %s", job.shown, slurm_id)

    # -- cluster deletion -----------------------------------------------------------------------
    def delete_everything(self) -> None:
        error = {"code": ErrorCode.CLUSTER_DELETED, "message": f"cluster {self.cluster.name} was deleted"}
        for job in list(self.snapshot.jobs.values()):
            if job.slurm_job_id:
                self.pool.slurm.cancel(job.slurm_job_id)
            if job.execution_state == ExecutionState.RUNNING:
                job = self.write_job(move_job(job, ExecutionState.TERMINATING))
            self.write_job(move_job(job, ExecutionState.FAILED, errors=[error], exit_code=-1 if job.nodes else None))
        self.drop_stale_live_entries()
