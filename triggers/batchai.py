"""Async waits for deferrable operators and sensors. They only poll and report.

Each trigger takes an absolute deadline (``end_time``, epoch seconds) and serialises by class
path, so the triggerer can run it anywhere and run it twice. The Service calls are blocking
file or network I/O, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.service import Service

FINAL = ("succeeded", "failed")


class _ServiceOnce:
    """One Service per trigger run: polls reuse its connections (and, on blob, its record cache)."""

    batchai_conn_id: str

    @cached_property
    def service(self) -> Service:
        return BatchAIHook(self.batchai_conn_id).service


class BatchAIJobTrigger(_ServiceOnce, BaseTrigger):
    def __init__(
        self,
        job_name: str,
        experiment: str,
        workspace: str,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = 5.0,
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
            f"{type(self).__module__}.{type(self).__qualname__}",
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

    def _state(self) -> str:
        view = self.service.show_job(self.job_name, self.experiment, self.workspace)
        return view["executionState"]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            state = await asyncio.to_thread(self._state)
            if state in self.target_states or state in FINAL:
                yield TriggerEvent({"status": state, "job_name": self.job_name})
                return
            if self.end_time is not None and time.time() > self.end_time:
                yield TriggerEvent({"status": "timeout", "job_name": self.job_name, "state": state})
                return
            await asyncio.sleep(self.poll_interval)


class BatchAIClusterTrigger(_ServiceOnce, BaseTrigger):
    def __init__(
        self,
        cluster_name: str,
        workspace: str,
        min_idle_nodes: int = 1,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = 5.0,
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
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "cluster_name": self.cluster_name,
                "workspace": self.workspace,
                "min_idle_nodes": self.min_idle_nodes,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    def _ready(self) -> bool:
        view = self.service.show_cluster(self.cluster_name, self.workspace)
        return cluster_ready(view, self.min_idle_nodes)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            if await asyncio.to_thread(self._ready):
                yield TriggerEvent({"status": "ready", "cluster_name": self.cluster_name})
                return
            if self.end_time is not None and time.time() > self.end_time:
                yield TriggerEvent({"status": "timeout", "cluster_name": self.cluster_name})
                return
            await asyncio.sleep(self.poll_interval)


def cluster_ready(view: dict[str, Any], min_idle_nodes: int) -> bool:
    return view["allocationState"] == "steady" and view["nodeStateCounts"]["idleNodeCount"] >= min_idle_nodes
