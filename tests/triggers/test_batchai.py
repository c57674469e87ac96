"""Triggers serialise by class path and report a job's or cluster's state without changing it."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, wait_until

pytest.importorskip("airflow")

from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.triggers.batchai import BatchAIClusterTrigger, BatchAIJobTrigger, BatchAIStorageEventTrigger


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
    assert asyncio.run(first_event(trigger)) == {"status": "failed", "job_name": "j", "experiment": "default", "workspace": "default"}


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
    wait_until(lambda: service.show_cluster("c").node_state_counts.idle_node_count == 2, what="idle nodes")


def test_many_waits_on_one_cluster_share_one_service_and_one_read_per_interval(
    service: Service, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 deferred waits in one event loop, as the triggerer runs them, on jobs queued behind a running one."""
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "first", load_job_spec({"properties": custom_job(gate_command(home))}, environ={}))
    for index in range(200):
        service.create_job("c", f"q{index:03d}", load_job_spec({"properties": custom_job("true")}, environ={}))
    shared = BatchAIHook.shared_service()
    triggers = [BatchAIJobTrigger(f"q{i:03d}", "default", "default", poll_interval=0.2, end_time=time.time() + 3) for i in range(200)]

    async def all_of_them() -> list[dict]:
        return await asyncio.gather(*(first_event(trigger) for trigger in triggers))

    events = asyncio.run(all_of_them())
    assert {e["status"] for e in events} == {"timeout"} and {e["state"] for e in events} == {"queued"}
    stats = shared.waiters.stats
    assert shared is BatchAIHook.shared_service()
    assert stats.ticks >= 5 and stats.cluster_reads <= stats.ticks  # one read of the cluster record per round, not 200
    assert stats.job_reads <= 200 + stats.ticks  # each job read once when its wait began, then only if it moved
    (home / "gates" / "first").touch()


def test_a_store_that_does_not_answer_ends_the_wait_with_an_error_event_at_the_deadline(
    service: Service, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "j", load_job_spec({"properties": custom_job("sleep 30")}, environ={}))
    shared = BatchAIHook.shared_service()

    def unavailable(key: str) -> None:
        raise BatchAIError("ControlStoreUnavailable", "control container did not answer after 4 retries", "control_container")

    monkeypatch.setattr(shared.store, "read", unavailable)
    event = asyncio.run(first_event(BatchAIJobTrigger("j", "default", "default", poll_interval=0.2, end_time=time.time() + 2)))
    assert event == {
        "status": "error",
        "code": "ControlStoreUnavailable",
        "message": "control container did not answer after 4 retries",
        "job_name": "j",
    }
    monkeypatch.undo()
    service.terminate_job("j")


def test_a_wait_for_a_job_that_does_not_exist_ends_with_an_error_event(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    event = asyncio.run(first_event(BatchAIJobTrigger("nope", "exp", "default", poll_interval=0.2, end_time=time.time() + 30)))
    assert event["status"] == "error" and event["code"] == "JobNotFound" and "nope" in event["message"]


def test_a_trigger_run_twice_reports_the_same_end_twice(service: Service, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "twice", load_job_spec({"properties": custom_job("sleep 1")}, environ={}))
    trigger = BatchAIJobTrigger("twice", "default", "default", poll_interval=0.2, end_time=time.time() + 60)

    async def both() -> list[dict]:
        return await asyncio.gather(first_event(trigger), first_event(roundtrip(trigger)))

    assert asyncio.run(both()) == [{"status": "succeeded", "job_name": "twice", "experiment": "default", "workspace": "default"}] * 2
    assert len(service.list_jobs()) == 1 and service.show_job("twice").execution_info.exit_code == 0


def gate_command(home: Path) -> str:
    gate = home / "gates" / "first"
    gate.parent.mkdir(parents=True, exist_ok=True)
    return f"for i in $(seq 600); do test -e {gate} && break; sleep 0.1; done"


class DictStateStore:
    """Stands in for Airflow's asset state store, which only a running triggerer (with its API server) hands
    a watcher's trigger: the same two async calls, values kept as the JSON they would be stored as."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    async def aget(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    async def aset(self, key: str, value: object) -> None:
        self.values[key] = json.loads(json.dumps(value))


async def until(predicate: Callable[[], object], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def next_event(events: AsyncIterator[Any], timeout_s: float = 15) -> dict:
    return (await asyncio.wait_for(events.__anext__(), timeout_s)).payload


async def watch_scenario(put: Callable[[str, bytes], None], make: Callable[[], BatchAIStorageEventTrigger]) -> None:
    """What every storage backend must do: ignore what was there, report each new or changed match once,
    and after a restart report what landed while no triggerer ran, and nothing it had reported."""
    store = DictStateStore()
    put("batch/before.trigger", b"already there")
    trigger = make()
    trigger.asset_state_store = store  # type: ignore[assignment]
    events = trigger.run()
    pending = asyncio.ensure_future(next_event(events))
    await until(lambda: trigger.cursor_key in store.values)  # the first look is done (and saved)
    put("batch/notes.txt", b"not a trigger file")
    put("batch/one.trigger", b"1")
    first = await pending
    assert (first["name"], first["size"]) == ("batch/one.trigger", 1) and first["version"]
    put("batch/one.trigger", b"changed")
    changed = await next_event(events)
    assert changed["name"] == "batch/one.trigger" and changed["version"] != first["version"]
    pending = asyncio.ensure_future(next_event(events))  # the triggerer keeps pulling: the generator moves on
    await until(lambda: store.values[trigger.cursor_key]["recent"].get("batch/one.trigger") == changed["version"])  # type: ignore[index]
    pending.cancel()  # the triggerer stops
    await asyncio.gather(pending, return_exceptions=True)
    await events.aclose()
    put("batch/two.trigger", b"2")  # lands while nothing watches
    restarted = make()
    restarted.asset_state_store = store  # type: ignore[assignment]
    events = restarted.run()
    assert (await next_event(events))["name"] == "batch/two.trigger"
    with pytest.raises(asyncio.TimeoutError):
        await next_event(events, timeout_s=1.5)  # nothing reported twice
    await events.aclose()


def test_storage_event_trigger_on_the_embedded_default_folders(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    folder = home / "storage" / "local" / "incoming"

    def put(name: str, data: bytes) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    def make() -> BatchAIStorageEventTrigger:
        return roundtrip(BatchAIStorageEventTrigger("incoming", prefix="batch/", pattern="*.trigger", poll_interval=0.1))  # type: ignore[return-value]

    asyncio.run(watch_scenario(put, make))


def test_storage_event_trigger_on_azure_blob(azurite: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"storage_connection_string": azurite.connection_string, "control_container": f"control-{uuid.uuid4().hex[:10]}"}
    monkeypatch.setenv("AIRFLOW_CONN_BATCHAI_EVENTS", json.dumps({"conn_type": "batchai", "extra": extra}))
    container = azurite.credential().service().get_container_client(f"incoming-{uuid.uuid4().hex[:8]}")
    container.create_container()

    def put(name: str, data: bytes) -> None:
        container.upload_blob(name, data, overwrite=True)

    def make() -> BatchAIStorageEventTrigger:
        trigger = BatchAIStorageEventTrigger(
            container.container_name, prefix="batch/", pattern="*.trigger", batchai_conn_id="batchai_events", poll_interval=0.2
        )
        return roundtrip(trigger)  # type: ignore[return-value]

    asyncio.run(watch_scenario(put, make))


def test_a_storage_event_trigger_has_one_identity_for_what_it_watches() -> None:
    """AssetWatcher triggers are told apart by class path and kwargs: parsing the DAG again must not make a new one."""
    from airflow.triggers.base import BaseEventTrigger

    first, second = (BatchAIStorageEventTrigger("incoming", prefix="batch/", pattern="*.trigger") for _ in range(2))
    assert BaseEventTrigger.hash(*first.serialize()) == BaseEventTrigger.hash(*second.serialize())
    assert first.cursor_key == second.cursor_key != BatchAIStorageEventTrigger("incoming", prefix="other/").cursor_key
