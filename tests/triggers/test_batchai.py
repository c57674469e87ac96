"""Triggers serialise by class path and report a job's or cluster's state without changing it."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path

import pytest

from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, wait_until

pytest.importorskip("airflow")

from airflow_batchai.triggers.batchai import BatchAIClusterTrigger, BatchAIJobTrigger


def roundtrip(trigger: object) -> object:
    path, kwargs = trigger.serialize()  # type: ignore[attr-defined]
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)


async def first_event(trigger: object, timeout_s: float = 60) -> dict:
    async def first() -> dict:
        async for event in trigger.run():  # type: ignore[attr-defined]
            return event.payload
        raise AssertionError("trigger ended without an event")

    return await asyncio.wait_for(first(), timeout_s)


def test_job_trigger_reports_the_final_state(service: Service, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "j", load_job_spec({"properties": custom_job("sleep 1; exit 4")}, environ={}))
    trigger = roundtrip(BatchAIJobTrigger("j", "default", "default", poll_interval=0.2, end_time=time.time() + 60))
    assert asyncio.run(first_event(trigger)) == {"status": "failed", "job_name": "j"}


def test_job_trigger_stops_at_its_deadline(service: Service, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "slow", load_job_spec({"properties": custom_job("sleep 30")}, environ={}))
    event = asyncio.run(first_event(BatchAIJobTrigger("slow", "default", "default", poll_interval=0.2, end_time=time.time() + 1)))
    assert event["status"] == "timeout" and event["state"] in ("queued", "running")
    service.terminate_job("slow")


def test_cluster_trigger_fires_when_enough_nodes_are_idle(service: Service, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={}))
    trigger = roundtrip(BatchAIClusterTrigger("c", "default", min_idle_nodes=2, poll_interval=0.2, end_time=time.time() + 60))
    assert asyncio.run(first_event(trigger)) == {"status": "ready", "cluster_name": "c"}
    wait_until(lambda: service.show_cluster("c")["nodeStateCounts"]["idleNodeCount"] == 2, what="idle nodes")
