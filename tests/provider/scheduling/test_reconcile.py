"""The executor of a pass: compare-and-swap writes, what it publishes, and what it reads.

No servers and no agents: records live in a LocalControlStore under tmp_path, agents' status
files are written by the test where the pass reads them, and agent starts and stops are only
recorded (RecordingPool), so every effect of a pass is visible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.agent.protocol import AgentStatus
from airflow_batchai.control import Versioned
from airflow_batchai.control.local import LocalControlStore, LocalSecretVault
from airflow_batchai.data.local import LocalDataStore
from airflow_batchai.errors import BatchAIError, StaleRecord
from airflow_batchai.layout import NodeLayout
from airflow_batchai.pools.local import LocalNodePool
from airflow_batchai.records import ClusterRecord, ExecutionState, JobRecord, NodeRecord, NodeState, live_key, spec_hash, utc_now
from airflow_batchai.scheduling.reconcile import Reconciler
from airflow_batchai.scheduling.snapshot import read_snapshot
from airflow_batchai.settings import Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.transport import CommandResult
from airflow_batchai.transport.local import LocalTransport


class RecordingTransport(LocalTransport):
    """Local files for real; agent starts and commands (terminate, clean) only recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[list[str]] = []
        self.commands: list[list[str]] = []

    def start_detached(self, argv: list[str], *, log_path: str) -> None:
        self.started.append(argv)

    def run(self, argv: list[str], *, timeout_s: float = 60.0, stdin: bytes | None = None) -> CommandResult:
        self.commands.append(argv)
        return CommandResult(0, b"", b"")


class RecordingPool(LocalNodePool):
    def __init__(self, home: Path, count: int) -> None:
        super().__init__(home, count)
        self._transport = RecordingTransport()


class CountingStore(LocalControlStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, key: str) -> Versioned | None:
        self.reads.append(key)
        return super().read(key)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    store = CountingStore(tmp_path / "control")
    pool = RecordingPool(tmp_path, 2)
    for node_id, address, root, _ in pool.inventory():
        record = NodeRecord(
            node_id=node_id, address=address, root=root, gpus=1, state=NodeState.IDLE, cluster="default/c", state_transition_time=utc_now()
        )
        store.create(record.key, record.to_doc())
    spec = load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={}).to_json()
    now = utc_now()
    cluster = ClusterRecord(
        workspace="default",
        name="c",
        uuid="cu",
        spec=spec,
        spec_hash=spec_hash(spec),
        creation_time=now,
        provisioning_state_transition_time=now,
        allocation_state_transition_time=now,
        target_node_count=2,
        live_index=True,
    )
    store.create(cluster.key, cluster.to_doc())
    return {"store": store, "pool": pool, "vault": LocalSecretVault(tmp_path / "secrets"), "data": LocalDataStore(tmp_path / "storage")}


def submit(world: dict[str, Any], name: str, count: int = 1, secret: str | None = None) -> JobRecord:
    body: dict[str, Any] = {
        "nodeCount": count,
        "customToolkitSettings": {"commandLine": "true"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
    }
    spec = load_job_spec({"properties": body}, environ={}).to_json()
    now = utc_now()
    job = JobRecord(
        workspace="default",
        experiment="e",
        name=name,
        uuid=f"{name}-uuid",
        cluster="c",
        spec=spec,
        spec_hash=spec_hash(spec),
        creation_time=now,
        execution_state_transition_time=now,
        segment=f"seg/{name}",
    )
    world["vault"].put(f"job-{job.uuid}", {"env": {"TOKEN": secret} if secret else {}})
    world["store"].create(job.key, job.to_doc())  # as Service.create_job: the record, then its live entry
    world["store"].create(live_key("default", "c", "e", name), {"created": now.isoformat()})
    return job


def reconciler(world: dict[str, Any], known: dict | None = None, also: list[str] | None = None) -> Reconciler:
    snapshot = read_snapshot(world["store"], world["pool"], "default", "c", known, also or ())
    return Reconciler(world["store"], world["vault"], world["pool"], world["data"], Settings(), snapshot)


def stored(world: dict[str, Any], key: str) -> dict[str, Any]:
    return world["store"].read(key).data


def report(world: dict[str, Any], node_id: str, run: str, state: str, exit_code: int | None = None) -> None:
    root = dict((n, r) for n, _, r, _ in world["pool"].inventory())[node_id]
    path = Path(NodeLayout(root).run_dir(run)) / "status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = utc_now().timestamp()
    path.write_text(json.dumps(AgentStatus(state=state, pid=100, heartbeat=now, start_time=now, exit_code=exit_code).to_json()))


def test_a_launch_books_the_nodes_then_the_job_then_starts_one_agent_per_node_and_publishes(world: dict[str, Any]) -> None:
    job = submit(world, "gang", count=2, secret="s3cr3t-token")
    reconciler(world).run()
    record = stored(world, job.key)
    assert record["execution_state"] == "running" and record["nodes"] == ["local-0", "local-1"]
    assert [stored(world, f"pool/local-{i}")["job"] for i in range(2)] == [job.key, job.key]
    started = world["pool"]._transport.started
    assert len(started) == 2 and all(argv[-2] == "run" for argv in started)
    assert all("s3cr3t-token" not in " ".join(argv) for argv in started)
    cluster = stored(world, "clusters/default/c")
    assert [n["state"] for n in cluster["nodes"]] == ["running", "running"]
    digest = cluster["jobs"][job.key]
    assert digest["state"] == "running" and digest["etag"] == world["store"].read(job.key).etag and digest["run"] == f"{job.uuid}-0"


def test_a_finished_job_leaves_its_live_entry_and_vault_and_stays_in_the_digest(world: dict[str, Any]) -> None:
    job = submit(world, "short", secret="gone-after")
    reconciler(world).run()
    report(world, "local-0", f"{job.uuid}-0", "succeeded", 0)
    reconciler(world).run()
    assert stored(world, job.key)["execution_state"] == "succeeded"
    assert world["store"].read(live_key("default", "c", "e", "short")) is None
    assert world["vault"].get(f"job-{job.uuid}") == {}
    digest = stored(world, "clusters/default/c")["jobs"][job.key]
    assert digest == {**digest, "state": "succeeded", "etag": world["store"].read(job.key).etag, "run": None}
    assert stored(world, "pool/local-0")["state"] == "idle"


def test_a_job_changed_meanwhile_is_not_launched_and_its_nodes_are_given_back(world: dict[str, Any]) -> None:
    job = submit(world, "moved")
    stale = reconciler(world)
    current = world["store"].read(job.key)
    world["store"].replace(job.key, {**current.data, "priority": 5}, current.etag)  # someone wrote it after the snapshot
    with pytest.raises(StaleRecord):
        stale.run()
    assert stored(world, job.key)["execution_state"] == "queued"
    assert {stored(world, f"pool/local-{i}")["state"] for i in range(2)} == {"idle"}
    assert world["pool"]._transport.started == []
    reconciler(world).run()  # a fresh snapshot decides again
    assert stored(world, job.key)["execution_state"] == "running"


def test_publishing_keeps_a_resize_that_landed_during_the_pass(world: dict[str, Any]) -> None:
    submit(world, "any")
    during = reconciler(world)
    current = world["store"].read("clusters/default/c")
    world["store"].replace("clusters/default/c", {**current.data, "target_node_count": 1}, current.etag)
    during.run()
    cluster = stored(world, "clusters/default/c")
    assert cluster["target_node_count"] == 1 and cluster["nodes"] and cluster["jobs"]


def test_a_pass_of_the_same_owner_reads_only_job_records_it_has_not_seen(world: dict[str, Any]) -> None:
    jobs = [submit(world, f"q{i}", count=2) for i in range(20)]
    first = reconciler(world)
    first.run()
    known = first.snapshot.known_jobs()
    submit(world, "new", count=2)
    world["store"].reads.clear()
    reconciler(world, known).run()
    job_reads = [key for key in world["store"].reads if key.startswith("jobs/")]
    assert job_reads == ["jobs/default/e/new"], job_reads
    assert stored(world, jobs[0].key)["execution_state"] == "running"


def test_a_live_entry_without_its_job_is_removed_and_a_live_job_without_one_is_adopted(world: dict[str, Any]) -> None:
    store = world["store"]
    store.create(live_key("default", "c", "e", "deleted"), {"created": utc_now().isoformat()})  # its job was deleted
    lost = submit(world, "lost-entry")
    store.delete(lost.live_key)  # its submitter died between the record and the entry
    first = reconciler(world)
    first.run()
    assert store.list("live/default/c/") == []  # the deleted job's entry went; the lost one is not adopted yet: nothing named it
    assert stored(world, "pool/local-0")["job"] is None
    reconciler(world, also=[lost.key]).run()  # a terminate names it (a retried submit writes the entry itself)
    assert stored(world, lost.key)["execution_state"] == "running" and store.list("live/default/c/") == [lost.live_key]


def test_a_cluster_from_before_live_entries_gets_them_once(world: dict[str, Any]) -> None:
    store = world["store"]
    old = [submit(world, f"old{i}") for i in range(2)]
    for job in old:
        store.delete(job.live_key)
    current = store.read("clusters/default/c")
    store.replace("clusters/default/c", {key: value for key, value in current.data.items() if key != "live_index"}, current.etag)
    reconciler(world).run()
    assert sorted(store.list("live/default/c/")) == sorted(job.live_key for job in old)
    assert [stored(world, job.key)["execution_state"] for job in old] == ["running", "running"]
    assert stored(world, "clusters/default/c")["live_index"] is True
    store.reads.clear()
    reconciler(world).run()
    assert not [key for key in store.reads if key.startswith("jobs/") and key not in (old[0].key, old[1].key)]


class RotatedVault(LocalSecretVault):
    """The blob vault after its storage credential was rotated: sealed secrets no longer open."""

    def get(self, name: str) -> dict[str, str]:
        if name.startswith("job-"):
            raise BatchAIError("SecretsUnreadable", f"secrets {name} were sealed with another vault key", name)
        return super().get(name)


def test_a_job_that_can_never_launch_fails_naming_why_and_the_next_one_runs(world: dict[str, Any]) -> None:
    sealed = submit(world, "sealed")
    world["vault"] = RotatedVault(world["vault"].root)
    reconciler(world).run()
    record = stored(world, sealed.key)
    assert record["execution_state"] == ExecutionState.FAILED.value and record["errors"][0]["code"] == "SecretsUnreadable"
    assert {stored(world, f"pool/local-{i}")["state"] for i in range(2)} == {"idle"}  # nothing was booked for it
