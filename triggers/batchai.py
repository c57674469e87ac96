"""Async waits for deferrable operators and sensors. They only read, and report.

Each trigger takes an absolute deadline (``end_time``, epoch seconds) and serialises by class
path, so the triggerer can run it anywhere and run it twice. All triggers of one connection in
a triggerer process share one Service (its connections and caches) and, for jobs, one poller
(provider/waiting.py): 1,000 deferred waits on one cluster cost about one record read per
interval, not 1,000. A store that does not answer is retried with backoff until the deadline;
then the trigger ends with an ``error`` event that the operator turns into a clear failure.
Nothing here writes a record or touches a node (the poller may start a background pass, which
runs under the cluster's lease and is harmless twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_batchai.errors import BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.records import ExecutionState
from airflow_batchai.scheduling.waiting import JobUpdate
from airflow_batchai.service import Service
from airflow_batchai.settings import WAIT_POLL_S

FINAL = tuple(state.value for state in ExecutionState if state.finished)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0


def _path(trigger: BaseTrigger) -> str:
    return f"{type(trigger).__module__}.{type(trigger).__qualname__}"


async def _shared_service(conn_id: str, end_time: float | None) -> Service | BatchAIError:
    """The process's Service for the connection; transient failures are retried until ``end_time``."""
    delay = RETRY_FIRST_S
    while True:
        try:
            return await asyncio.to_thread(BatchAIHook.shared_service, conn_id)
        except BatchAIError as error:
            if error.code in ("InvalidConnection", "InvalidStorageCredential", "InvalidPool") or (
                end_time is not None and time.time() + delay > end_time
            ):
                return error
        except Exception as error:  # e.g. the connection lookup itself failed
            if end_time is not None and time.time() + delay > end_time:
                return BatchAIError("ConnectionUnavailable", f"connection {conn_id}: {type(error).__name__}: {error}", conn_id)
        await asyncio.sleep(delay)
        delay = min(RETRY_MAX_S, delay * 2)


def _error_event(error: BatchAIError, **fields: Any) -> TriggerEvent:
    return TriggerEvent({"status": "error", "code": error.code, "message": error.message, **fields})


class BatchAIJobTrigger(BaseTrigger):
    def __init__(
        self,
        job_name: str,
        experiment: str,
        workspace: str,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = WAIT_POLL_S,
        end_time: float | None = None,
        target_states: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.experiment = experiment
        self.workspace = workspace
        self.batchai_conn_id = batchai_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.target_states = list(target_states or FINAL)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _path(self),
            {
                "job_name": self.job_name,
                "experiment": self.experiment,
                "workspace": self.workspace,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "target_states": self.target_states,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await _shared_service(self.batchai_conn_id, self.end_time)
        if isinstance(service, BatchAIError):
            yield _error_event(service, job_name=self.job_name)
            return
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[JobUpdate] = asyncio.Queue()

        def notify(update: JobUpdate) -> None:  # called in the poller's thread
            loop.call_soon_threadsafe(updates.put_nowait, update)

        subscription = service.waiters.subscribe(self.workspace, self.experiment, self.job_name, notify, self.poll_interval)
        state, error = None, None
        try:
            while True:
                remaining = None if self.end_time is None else self.end_time - time.time()
                if remaining is not None and remaining <= 0:
                    if error is not None:
                        yield _error_event(error, job_name=self.job_name)
                    else:
                        yield TriggerEvent({"status": "timeout", "job_name": self.job_name, "state": state})
                    return
                try:
                    update = await asyncio.wait_for(updates.get(), remaining)
                except asyncio.TimeoutError:
                    continue
                if update.error is not None:
                    if error is None:
                        self.log.warning("job %s: %s (retrying)", self.job_name, update.error.message)
                    error = update.error
                    continue
                error = None
                if update.record is None:
                    message = f"The specified job {self.job_name} is not found in experiment {self.experiment}"
                    yield _error_event(BatchAIError("JobNotFound", message, self.job_name), job_name=self.job_name)
                    return
                state = update.record.execution_state.value
                if state in self.target_states or state in FINAL:
                    yield TriggerEvent({"status": state, "job_name": self.job_name})
                    return
        finally:
            service.waiters.unsubscribe(subscription)


class BatchAIClusterTrigger(BaseTrigger):
    def __init__(
        self,
        cluster_name: str,
        workspace: str,
        min_idle_nodes: int = 1,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = WAIT_POLL_S,
        end_time: float | None = None,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.workspace = workspace
        self.min_idle_nodes = min_idle_nodes
        self.batchai_conn_id = batchai_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _path(self),
            {
                "cluster_name": self.cluster_name,
                "workspace": self.workspace,
                "min_idle_nodes": self.min_idle_nodes,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await _shared_service(self.batchai_conn_id, self.end_time)
        if isinstance(service, BatchAIError):
            yield _error_event(service, cluster_name=self.cluster_name)
            return
        delay, error = self.poll_interval, None
        while True:
            try:
                view = await asyncio.to_thread(service.show_cluster, self.cluster_name, self.workspace)
                error, delay = None, self.poll_interval
                if cluster_ready(view, self.min_idle_nodes):
                    yield TriggerEvent({"status": "ready", "cluster_name": self.cluster_name})
                    return
            except BatchAIError as failure:
                if failure.code == "ClusterNotFound":
                    yield _error_event(failure, cluster_name=self.cluster_name)
                    return
                error, delay = failure, min(RETRY_MAX_S, max(self.poll_interval, delay * 2))
            remaining = None if self.end_time is None else self.end_time - time.time()
            if remaining is not None and remaining <= 0:
                if error is not None:
                    yield _error_event(error, cluster_name=self.cluster_name)
                else:
                    yield TriggerEvent({"status": "timeout", "cluster_name": self.cluster_name})
                return
            await asyncio.sleep(delay if remaining is None else min(delay, remaining))


def cluster_ready(view: dict[str, Any], min_idle_nodes: int) -> bool:
    return view["allocationState"] == "steady" and view["nodeStateCounts"]["idleNodeCount"] >= min_idle_nodes
