"""Sensors: a job's executionState, a cluster's allocation.

Both can defer to a trigger (``deferrable=True``), and can start in the triggerer without ever
taking a worker slot (``start_from_trigger=True``, with ``deferrable``): the worker then only
runs ``execute_complete`` once the wait is over. The job sensor copies the job's stdout/stderr
into the task log as it waits (``follow_logs``, on by default), in every mode, each line once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import StartTriggerArgs

from airflow_batchai.errors import TRANSIENT_CODES, BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook, settles
from airflow_batchai.logtail import JobLogFollower, log_job_lines
from airflow_batchai.service import DEFAULT_EXPERIMENT, DEFAULT_WORKSPACE
from airflow_batchai.taskjobs import JobWait, WaitFailed, cluster_ready, state_said
from airflow_batchai.triggers.batchai import BatchAIClusterTrigger, BatchAIJobTrigger, class_path

POKE_INTERVAL_S = 1.0
LOG_OFFSETS_KEY = "batchai_log_offsets"  # task state store: how far a rescheduled sensor copied the job's output


class _BatchAISensor(BaseSensorOperator):
    start_trigger_args = StartTriggerArgs(trigger_cls="", next_method="execute_complete", trigger_kwargs={})
    start_from_trigger = False

    def __init__(
        self,
        *,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        workspace: str = DEFAULT_WORKSPACE,
        deferrable: bool = False,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("mode", "poke") == "poke":  # a poke is one record read: look every second unless told otherwise
            kwargs.setdefault("poke_interval", POKE_INTERVAL_S)
        super().__init__(**kwargs)
        self.batchai_conn_id = batchai_conn_id
        self.workspace = workspace
        self.deferrable = deferrable
        if start_from_trigger and not deferrable:
            raise ValueError(f"{self.task_id}: start_from_trigger needs deferrable=True")
        self.start_from_trigger = start_from_trigger

    def start_in_triggerer(self, trigger_cls: type, **trigger_kwargs: Any) -> None:
        """Deferred from the start: the scheduler hands the trigger straight to the triggerer, which renders
        the templated kwargs (the trigger's attributes share the sensor's template field names)."""
        if self.start_from_trigger:  # replaced, not mutated: it is a class attribute
            self.start_trigger_args = dataclasses.replace(
                self.start_trigger_args,
                trigger_cls=class_path(trigger_cls),
                trigger_kwargs=trigger_kwargs,
                timeout=timedelta(seconds=float(self.timeout)),
            )

    @cached_property
    def hook(self) -> BatchAIHook:
        return BatchAIHook(self.batchai_conn_id)

    def end_time(self) -> float:
        return time.time() + float(self.timeout)

    @settles
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        self.defer(trigger=self.trigger(), method_name="execute_complete")

    @settles
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Re-read the state (nothing is taken from the deferral's kwargs) and finish like a poke."""
        if event and event.get("status") == "error":
            raise AirflowException(f"{self.task_id}: waiting failed: {event.get('code')}: {event.get('message')}")
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        raise AirflowException(f"{self.task_id}: the wait ended ({(event or {}).get('status')}) before the target state")

    def trigger(self) -> Any:
        raise NotImplementedError


class BatchAIJobSensor(_BatchAISensor):
    """Wait until a job's ``executionState`` is one of ``target_states``; fail when it failed."""

    template_fields: Sequence[str] = ("job_name", "experiment", "workspace")

    def __init__(
        self,
        *,
        job_name: str,
        experiment: str = DEFAULT_EXPERIMENT,
        target_states: Sequence[str] = ("succeeded",),
        follow_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.experiment = experiment
        self.target_states = list(target_states)
        self.follow_logs = follow_logs
        self.follower: JobLogFollower | None = None
        if self.start_from_trigger and "xcom_pull" in str(job_name):
            raise ValueError(
                f"{self.task_id}: job_name {job_name!r} pulls an XCom, which the triggerer cannot render for start_from_trigger; "
                "give the submit task a job_name (a template of params or the run) and use the same here, or leave start_from_trigger off"
            )
        self.last_said: str | None = None
        self.start_in_triggerer(
            BatchAIJobTrigger,
            job_name=job_name,
            experiment=experiment,
            workspace=self.workspace,
            batchai_conn_id=self.batchai_conn_id,
            poll_interval=self.poke_interval,
            target_states=self.target_states,
            follow_logs=follow_logs,
        )

    def job_wait(self, context: Context) -> JobWait:
        """The wait the sensor's pokes share (taskjobs.JobWait, as the operator waits). Its follower lives as
        long as the poking process; a sensor in reschedule mode keeps the offsets in the task state store."""
        if self.follow_logs and self.follower is None:
            store = context.get("task_state_store")
            saved = store.get(LOG_OFFSETS_KEY) if store is not None else None
            offsets = {str(k): int(v) for k, v in saved.items() if isinstance(v, int)} if isinstance(saved, dict) else None
            self.follower = JobLogFollower(self.hook.service, self.job_name, self.experiment, self.workspace, offsets)
        return JobWait(self.hook.service, self.job_name, self.experiment, self.workspace, self.target_states, self.follower)

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            wait = self.job_wait(context)  # the first one reaches storage too
            before = self.follower.position() if self.follower is not None else None
            view, lines = wait.look()
        except BatchAIError as error:
            if error.code in TRANSIENT_CODES:  # storage down: not an answer; the sensor's timeout bounds the wait
                self.log.warning("job %s: %s (poking again)", self.job_name, error.message)
                return PokeReturnValue(is_done=False)
            raise AirflowException(f"{error.code}: {error.message}") from error
        said = state_said(self.job_name, view.execution_state.value, view.execution_info.queue_reason)
        if said != self.last_said:  # a line per change, not per poke: the job's own output is what the log is for
            self.log.info("%s", said)
            self.last_said = said
        log_job_lines(lines)
        store = context.get("task_state_store")
        if store is not None and self.mode == "reschedule" and self.follower is not None and self.follower.position() != before:
            store.set(LOG_OFFSETS_KEY, dict[str, Any](self.follower.position()))
        try:
            done = wait.over(view)
        except WaitFailed as failure:
            raise AirflowException(str(failure)) from None
        return PokeReturnValue(is_done=done, xcom_value=view.to_json() if done else None)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """The trigger copied the output up to its offsets; the rest is copied from there."""
        offsets = (event or {}).get("log_offsets")
        if isinstance(offsets, dict) and self.follower is None:
            self.follower = JobLogFollower(self.hook.service, self.job_name, self.experiment, self.workspace, offsets)
        return super().execute_complete(context, event)

    def trigger(self) -> BatchAIJobTrigger:
        return BatchAIJobTrigger(
            self.job_name,
            self.experiment,
            self.workspace,
            self.batchai_conn_id,
            self.poke_interval,
            self.end_time(),
            self.target_states,
            follow_logs=self.follow_logs,
            log_offsets=self.follower.position() if self.follower else None,
        )


class BatchAIClusterSensor(_BatchAISensor):
    """Wait until the cluster is steady with at least ``min_idle_nodes`` idle nodes."""

    template_fields: Sequence[str] = ("cluster_name", "workspace")

    def __init__(self, *, cluster_name: str, min_idle_nodes: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.min_idle_nodes = min_idle_nodes
        self.start_in_triggerer(
            BatchAIClusterTrigger,
            cluster_name=cluster_name,
            workspace=self.workspace,
            min_idle_nodes=min_idle_nodes,
            batchai_conn_id=self.batchai_conn_id,
            poll_interval=self.poke_interval,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            view = self.hook.service.show_cluster(self.cluster_name, self.workspace)
        except BatchAIError as error:
            if error.code in TRANSIENT_CODES:
                self.log.warning("cluster %s: %s (poking again)", self.cluster_name, error.message)
                return PokeReturnValue(is_done=False)
            raise AirflowException(f"{error.code}: {error.message}") from error
        self.log.info("cluster %s: %s, %s", self.cluster_name, view.allocation_state.value, view.node_state_counts.to_json())
        return PokeReturnValue(is_done=cluster_ready(view, self.min_idle_nodes), xcom_value=view.to_json())

    def trigger(self) -> BatchAIClusterTrigger:
        return BatchAIClusterTrigger(
            self.cluster_name, self.workspace, self.min_idle_nodes, self.batchai_conn_id, self.poke_interval, self.end_time()
        )
