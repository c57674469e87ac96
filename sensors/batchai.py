"""Sensors: a job's executionState, a cluster's allocation. Both can defer to a trigger."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from airflow_batchai.errors import TRANSIENT_CODES, BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.operators.batchai import failure_message
from airflow_batchai.records import ExecutionState
from airflow_batchai.service import DEFAULT_EXPERIMENT, DEFAULT_WORKSPACE
from airflow_batchai.triggers.batchai import BatchAIClusterTrigger, BatchAIJobTrigger, cluster_ready

POKE_INTERVAL_S = 1.0


class _BatchAISensor(BaseSensorOperator):
    def __init__(
        self,
        *,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        workspace: str = DEFAULT_WORKSPACE,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("mode", "poke") == "poke":  # a poke is one record read: look every second unless told otherwise
            kwargs.setdefault("poke_interval", POKE_INTERVAL_S)
        super().__init__(**kwargs)
        self.batchai_conn_id = batchai_conn_id
        self.workspace = workspace
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> BatchAIHook:
        return BatchAIHook(self.batchai_conn_id)

    def end_time(self) -> float:
        return time.time() + float(self.timeout)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        self.defer(trigger=self.trigger(), method_name="execute_complete")

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
        self, *, job_name: str, experiment: str = DEFAULT_EXPERIMENT, target_states: Sequence[str] = ("succeeded",), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.experiment = experiment
        self.target_states = list(target_states)

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            view = self.hook.service.show_job(self.job_name, self.experiment, self.workspace)
        except BatchAIError as error:
            if error.code in TRANSIENT_CODES:  # storage down: not an answer; the sensor's timeout bounds the wait
                self.log.warning("job %s: %s (poking again)", self.job_name, error.message)
                return PokeReturnValue(is_done=False)
            raise AirflowException(f"{error.code}: {error.message}") from error
        state = view["executionState"]
        self.log.info("job %s is %s", self.job_name, state)
        if state in self.target_states:
            return PokeReturnValue(is_done=True, xcom_value=view)
        if state == ExecutionState.FAILED:
            raise AirflowException(failure_message(self.hook.service, view, self.experiment, self.workspace))
        if state == ExecutionState.SUCCEEDED:
            raise AirflowException(f"job {self.job_name} succeeded, which is not one of {self.target_states}")
        return PokeReturnValue(is_done=False)

    def trigger(self) -> BatchAIJobTrigger:
        return BatchAIJobTrigger(
            self.job_name, self.experiment, self.workspace, self.batchai_conn_id, self.poke_interval, self.end_time(), self.target_states
        )


class BatchAIClusterSensor(_BatchAISensor):
    """Wait until the cluster is steady with at least ``min_idle_nodes`` idle nodes."""

    template_fields: Sequence[str] = ("cluster_name", "workspace")

    def __init__(self, *, cluster_name: str, min_idle_nodes: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.min_idle_nodes = min_idle_nodes

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            view = self.hook.service.show_cluster(self.cluster_name, self.workspace)
        except BatchAIError as error:
            if error.code in TRANSIENT_CODES:
                self.log.warning("cluster %s: %s (poking again)", self.cluster_name, error.message)
                return PokeReturnValue(is_done=False)
            raise AirflowException(f"{error.code}: {error.message}") from error
        self.log.info("cluster %s: %s, %s", self.cluster_name, view["allocationState"], view["nodeStateCounts"])
        return PokeReturnValue(is_done=cluster_ready(view, self.min_idle_nodes), xcom_value=view)

    def trigger(self) -> BatchAIClusterTrigger:
        return BatchAIClusterTrigger(
            self.cluster_name, self.workspace, self.min_idle_nodes, self.batchai_conn_id, self.poke_interval, self.end_time()
        )
