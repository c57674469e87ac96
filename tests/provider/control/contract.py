"""The ControlStore contract, written once for every backend.

A backend's test module subclasses ``ControlStoreContract`` and provides a ``store_factory``
fixture: a picklable zero-argument callable returning a store on the same backing state
(separate processes call it to race each other).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_batchai.control import ControlStore, Versioned, lock, update
from airflow_batchai.control.local import LocalSecretVault
from airflow_batchai.data.local import LocalDataStore
from airflow_batchai.errors import BatchAIError, RecordExists, StaleRecord
from airflow_batchai.pools.local import LocalNodePool
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until

LEASE_BOUND_S = 25  # blob leases last 15 s; file locks end with their holder
RACERS = 6
INCREMENTS = 25
SUBMITTERS = 8
JOBS = 100
NODES = 4
# Fails (exit 3) if another job holds the node: two jobs on one node at once would both need the folder.
EXCLUSIVE = 'mkdir "$AZ_BATCHAI_JOB_TEMP_DIR/busy" || exit 3; sleep 0.02; rmdir "$AZ_BATCHAI_JOB_TEMP_DIR/busy"'


def _race_service(factory: Callable[[], ControlStore], home: Path) -> Service:
    return Service(factory(), LocalSecretVault(home / "secrets"), LocalNodePool(home, NODES), LocalDataStore(home / "storage"))


def _submit_jobs(factory: Callable[[], ControlStore], home: Path, who: int) -> None:
    service = _race_service(factory, home)
    spec = load_job_spec({"properties": custom_job(EXCLUSIVE)}, environ={})
    for index in range(who, JOBS, SUBMITTERS):
        service.create_job("race", f"job-{index:03d}", spec)
    service.passes.drain()  # a forked child ends with os._exit, which would cut a background pass short


def _increment_many(factory: Callable[[], ControlStore], key: str, count: int) -> None:
    store = factory()
    for _ in range(count):
        update(store, key, lambda doc: {**doc, "n": doc["n"] + 1})


def _create_once(factory: Callable[[], ControlStore], key: str, who: int, results: multiprocessing.Queue) -> None:
    try:
        factory().create(key, {"owner": who})
        results.put(who)
    except RecordExists:
        results.put(None)


def _hold_lock(factory: Callable[[], ControlStore], trace: str, who: int) -> None:
    store = factory()
    for _ in range(5):
        with lock(store, "cluster/ws/c", timeout_s=30), open(trace, "a") as handle:
            handle.write(f"in {who}\n")
            handle.flush()
            time.sleep(0.005)
            handle.write(f"out {who}\n")


def _hold_lease_forever(factory: Callable[[], ControlStore], ready: str) -> None:
    with factory().try_lease("cluster/ws/killed") as lease:
        assert lease is not None
        Path(ready).touch()
        time.sleep(300)


def store_read_after_write(store: ControlStore, key: str) -> Versioned | None:
    return store.read(key)


def _run_all(targets: list[tuple[Callable[..., None], tuple]]) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=target, args=args) for target, args in targets]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0


class ControlStoreContract:
    @pytest.fixture
    def store(self, store_factory: Callable[[], ControlStore]) -> ControlStore:
        return store_factory()

    def test_create_then_read_returns_the_document_and_its_etag(self, store: ControlStore) -> None:
        etag = store.create("jobs/ws/exp/a", {"x": 1})
        found = store.read("jobs/ws/exp/a")
        assert found is not None and found.data == {"x": 1} and found.etag == etag

    def test_read_of_a_missing_key_is_none(self, store: ControlStore) -> None:
        assert store.read("jobs/ws/exp/nothing") is None

    def test_create_refuses_an_existing_key(self, store: ControlStore) -> None:
        store.create("clusters/ws/c", {"v": 1})
        with pytest.raises(RecordExists):
            store.create("clusters/ws/c", {"v": 2})
        assert store.read("clusters/ws/c").data == {"v": 1}

    def test_replace_with_the_current_etag_succeeds_and_moves_the_etag(self, store: ControlStore) -> None:
        first = store.create("pool/n1", {"state": "free"})
        second = store.replace("pool/n1", {"state": "idle"}, first)
        assert second != first
        assert store.read("pool/n1").data == {"state": "idle"}

    def test_replace_with_a_stale_etag_fails_and_keeps_the_newer_write(self, store: ControlStore) -> None:
        first = store.create("pool/n1", {"state": "free"})
        store.replace("pool/n1", {"state": "idle"}, first)
        with pytest.raises(StaleRecord):
            store.replace("pool/n1", {"state": "running"}, first)
        assert store.read("pool/n1").data == {"state": "idle"}

    def test_replace_of_a_deleted_record_fails(self, store: ControlStore) -> None:
        etag = store.create("pool/n1", {})
        assert store.delete("pool/n1") is True
        with pytest.raises(StaleRecord):
            store.replace("pool/n1", {}, etag)

    def test_conditional_delete_respects_the_etag(self, store: ControlStore) -> None:
        etag = store.create("pool/n1", {"a": 1})
        store.replace("pool/n1", {"a": 2}, etag)
        with pytest.raises(StaleRecord):
            store.delete("pool/n1", etag)
        assert store.delete("pool/n1") is True
        assert store.delete("pool/n1") is False

    def test_list_returns_sorted_keys_under_a_prefix(self, store: ControlStore) -> None:
        for key in ("jobs/ws/b/j2", "jobs/ws/a/j1", "jobs/other/a/j3", "clusters/ws/c"):
            store.create(key, {})
        assert store.list("jobs/ws/") == ["jobs/ws/a/j1", "jobs/ws/b/j2"]
        assert store.list("jobs/ws/a/") == ["jobs/ws/a/j1"]

    def test_update_helper_retries_until_its_change_lands(self, store: ControlStore) -> None:
        store.create("counter", {"n": 0})
        assert update(store, "counter", lambda doc: {"n": doc["n"] + 1}) == {"n": 1}
        assert update(store, "missing", lambda doc: doc) is None

    def test_concurrent_increments_from_processes_lose_nothing(self, store_factory: Callable[[], ControlStore]) -> None:
        store_factory().create("counter", {"n": 0})
        _run_all([(_increment_many, (store_factory, "counter", INCREMENTS)) for _ in range(RACERS)])
        assert store_factory().read("counter").data == {"n": RACERS * INCREMENTS}

    def test_exactly_one_of_racing_creators_wins(self, store_factory: Callable[[], ControlStore]) -> None:
        results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
        _run_all([(_create_once, (store_factory, "jobs/ws/e/same", who, results)) for who in range(RACERS)])
        outcomes = [results.get(timeout=10) for _ in range(RACERS)]
        winners = [who for who in outcomes if who is not None]
        assert len(winners) == 1
        assert store_factory().read("jobs/ws/e/same").data == {"owner": winners[0]}

    def test_lock_excludes_other_processes(self, store_factory: Callable[[], ControlStore], tmp_path: Path) -> None:
        trace = tmp_path / "trace"
        _run_all([(_hold_lock, (store_factory, str(trace), who)) for who in range(4)])
        lines = trace.read_text().splitlines()
        assert len(lines) == 4 * 5 * 2
        for enter, leave in zip(lines[::2], lines[1::2], strict=True):
            assert enter.startswith("in ") and leave == "out " + enter[3:]

    def test_lock_times_out_with_a_clear_error(self, store: ControlStore, store_factory: Callable[[], ControlStore]) -> None:
        other = store_factory()
        with lock(store, "cluster/ws/busy"):
            started = time.monotonic()
            with pytest.raises(BatchAIError, match="LockTimeout"), lock(other, "cluster/ws/busy", timeout_s=0.3):
                pass
            assert time.monotonic() - started < 5

    def test_try_lease_never_waits_and_one_holder_at_a_time(self, store: ControlStore, store_factory: Callable[[], ControlStore]) -> None:
        other = store_factory()
        with store.try_lease("cluster/ws/owned") as mine:
            assert mine is not None
            started = time.monotonic()
            with other.try_lease("cluster/ws/owned") as theirs:
                assert theirs is None
            assert time.monotonic() - started < 2
            mine.check()
        with other.try_lease("cluster/ws/owned") as theirs:
            assert theirs is not None  # released: the next one gets it at once

    def test_a_lease_note_is_read_by_anyone_without_taking_the_lease(
        self, store: ControlStore, store_factory: Callable[[], ControlStore]
    ) -> None:
        reader = store_factory()
        assert reader.lease_note("cluster/ws/noted") == {}
        with store.try_lease("cluster/ws/noted") as lease:
            assert lease is not None
            lease.note({"seq": "1", "holder": "me"})
            assert reader.lease_note("cluster/ws/noted") == {"seq": "1", "holder": "me"}
            lease.note({"seq": "2", "holder": "me"})
        assert reader.lease_note("cluster/ws/noted") == {"seq": "2", "holder": "me"}

    def test_a_lease_holder_killed_with_sigkill_frees_it(self, store_factory: Callable[[], ControlStore], tmp_path: Path) -> None:
        ready = tmp_path / "held"
        process = multiprocessing.get_context("fork").Process(target=_hold_lease_forever, args=(store_factory, str(ready)))
        process.start()
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, "the holder never took the lease"
                time.sleep(0.01)
            with store_factory().try_lease("cluster/ws/killed") as lease:
                assert lease is None
            os.kill(process.pid, signal.SIGKILL)
            process.join(timeout=10)
            started = time.monotonic()
            with lock(store_factory(), "cluster/ws/killed", timeout_s=LEASE_BOUND_S) as lease:
                assert lease is not None
            assert time.monotonic() - started <= LEASE_BOUND_S
        finally:
            if process.is_alive():
                process.kill()

    def test_a_second_read_of_an_unchanged_record_returns_the_same_document(self, store: ControlStore) -> None:
        store.create("clusters/ws/same", {"n": 1, "nested": {"a": [1, 2]}})
        first = store.read("clusters/ws/same")
        first.data["nested"]["a"].append(3)  # a caller changing its copy changes nothing stored
        again = store.read("clusters/ws/same")
        assert again == Versioned(data={"n": 1, "nested": {"a": [1, 2]}}, etag=first.etag)
        etag = store.replace("clusters/ws/same", {"n": 2}, again.etag)
        assert store_read_after_write(store, "clusters/ws/same") == Versioned(data={"n": 2}, etag=etag)

    def test_list_of_a_prefix_sees_only_what_lies_under_it(self, store: ControlStore) -> None:
        store.create("live/ws/a/e/j1", {})
        store.create("live/ws/ab/e/j2", {})
        store.create("jobs/ws/e/j1", {})
        assert store.list("live/ws/a/") == ["live/ws/a/e/j1"]
        assert store.list("live/ws/a") == ["live/ws/a/e/j1", "live/ws/ab/e/j2"]
        assert store.list("live/ws/none/") == []

    def test_read_many_returns_every_record_under_a_prefix_with_its_etag(self, store: ControlStore) -> None:
        first = store.create("jobs/ws/a/j1", {"n": 1})
        store.create("jobs/ws/b/j2", {"n": 2})
        store.create("clusters/ws/c", {})
        store.replace("jobs/ws/a/j1", {"n": 10}, first)
        again = store.read_many("jobs/ws/")  # a second read must see the same (cached or not)
        assert [(k, v.data) for k, v in store.read_many("jobs/ws/")] == [("jobs/ws/a/j1", {"n": 10}), ("jobs/ws/b/j2", {"n": 2})]
        assert [v.etag for _, v in again] == [store.read("jobs/ws/a/j1").etag, store.read("jobs/ws/b/j2").etag]
        store.delete("jobs/ws/b/j2")
        assert [k for k, _ in store.read_many("jobs/ws/")] == ["jobs/ws/a/j1"]

    def test_racing_submitters_lose_no_job_and_never_double_book_a_node(
        self, store_factory: Callable[[], ControlStore], tmp_path: Path
    ) -> None:
        """8 processes submit 100 jobs onto 4 nodes; every job must run, alone on its node, and succeed."""
        home = tmp_path / "race"
        service = _race_service(store_factory, home)
        service.create_cluster("race", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": NODES}}}, environ={}))
        try:
            _run_all([(_submit_jobs, (store_factory, home, who)) for who in range(SUBMITTERS)])

            def finished() -> bool:
                service.reconcile_cluster("default", "race")
                return all(j.execution_state in ("succeeded", "failed") for j in service.list_jobs())

            wait_until(finished, 300, 0.2, what=f"{JOBS} racing jobs to finish")
            jobs = service.list_jobs()
            assert len(jobs) == JOBS
            failed = [(j.name, j.execution_info) for j in jobs if j.execution_state != "succeeded"]
            assert failed == []
            nodes = service.pool_nodes()
            assert len(nodes) == NODES and all(n.state.value == "idle" and n.job is None for n in nodes)
        finally:
            kill_agents_under(home)
