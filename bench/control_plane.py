"""Control-plane benchmark: waits, submits, job overhead and pass cost, next to their peers, in one run.

    .venv/bin/pip install -e '.[test,bench]' && .venv/bin/python bench/control_plane.py [--only waits,submits,overhead,blob]

1. 1,000 deferred waits (BatchAIJobTrigger with its defaults, all in one asyncio loop as the
   triggerer runs them) on jobs queued behind a running one: CPU and polls on time. Peer: the
   usual provider trigger, one record read per waiter per interval (what Databricks' or the SSH
   provider's triggers do), on the same records.
2. 1,000 submits to one cluster whose node is busy: total, first and last 100. Peer: the floor,
   the same three record writes per job done directly.
3. A DAG task running ``sleep 2`` with each operator's defaults, blocking and deferrable, and
   ``SSHRemoteJobOperator`` against sshd on loopback, in the same ``airflow dags test`` runs:
   task time over 2 s, and job end → task end.
4. One pass on the blob store (Azurite) with 200 queued jobs, before and after 5,000 finished
   ones land in the workspace: time and requests, by the owner that ran the last pass and by a
   new owner. Peer: reading the workspace's job records, as the pass did before.
Prints a table with ratios and writes bench/results/control_plane.json. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import itertools
import json
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORK = Path(tempfile.mkdtemp(prefix="batchai-bench-cp-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
os.environ.setdefault("AIRFLOW_HOME", str(WORK / "airflow-inproc"))

from airflow_batchai.control.blob import BlobControlStore, BlobSecretVault  # noqa: E402
from airflow_batchai.data.azure import AzureDataStore  # noqa: E402
from airflow_batchai.pools.local import LocalNodePool  # noqa: E402
from airflow_batchai.records import ExecutionState, JobRecord, spec_hash, utc_now  # noqa: E402
from airflow_batchai.service import Service, Settings  # noqa: E402
from airflow_batchai.spec import load_cluster_spec, load_job_spec  # noqa: E402

WAITS = 1000
WAIT_S = 20.0
SUBMITS = 1000
OVERHEAD_RUNS = 3
QUEUED = 200
FINISHED = 5000
ROWS: list[tuple[str, str, str, str, str]] = []  # (measure, batchai, peer, ratio, target)
RESULTS: dict[str, Any] = {}


def row(measure: str, ours: float, peer: float | None, unit: str, target: str, better: str = "lower") -> None:
    ratio = "" if not peer else f"{(peer / ours if better == 'lower' else ours / peer):.1f}x" if ours else "inf"
    ROWS.append((measure, f"{ours:.3g} {unit}", "" if peer is None else f"{peer:.3g} {unit}", ratio, target))
    RESULTS[measure] = {"batchai": ours, "peer": peer, "unit": unit, "target": target}


def job_spec(command: str) -> Any:
    body = {"nodeCount": 1, "customToolkitSettings": {"commandLine": command}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"}
    return load_job_spec({"properties": body}, environ={})


def busy_cluster(home: Path) -> tuple[Service, Path]:
    """One node, held by a job that waits for a gate file (opened at the end)."""
    service = Service.embedded(home, nodes=1)
    service.create_cluster("bench", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    gate = home / "gate"
    service.create_job("bench", "blocker", job_spec(f"for i in $(seq 3000); do test -e {gate} && break; sleep 0.1; done"))
    deadline = time.monotonic() + 30
    while service.refresh_job("blocker").execution_state != ExecutionState.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError("the blocking job never started")
        time.sleep(0.05)
    return service, gate


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- 1. waits ------------------------------------------------------------------------------------
def waits() -> None:
    home = WORK / "waits"
    service, gate = busy_cluster(home)
    for index in range(WAITS):
        service.create_job("bench", f"q{index:04d}", job_spec("true"))
    service.passes.drain()
    os.environ["BATCHAI_HOME"] = str(home)
    from airflow_batchai.hooks.batchai import BatchAIHook
    from airflow_batchai.triggers.batchai import BatchAIJobTrigger

    triggers = [BatchAIJobTrigger(f"q{i:04d}", "default", "default", end_time=time.time() + WAIT_S) for i in range(WAITS)]

    async def ours() -> list[Any]:
        async def first(trigger: BatchAIJobTrigger) -> Any:
            async for event in trigger.run():
                return event.payload

        return await asyncio.gather(*(first(t) for t in triggers))

    shared = BatchAIHook.shared_service()
    started_cpu, started = cpu_s(), time.monotonic()
    events = asyncio.run(ours())
    our_cores = (cpu_s() - started_cpu) / (time.monotonic() - started)
    stats = shared.waiters.stats
    our_on_time = 100 * (1 - stats.late_ticks / max(1, stats.ticks))
    assert {e["status"] for e in events} == {"timeout"}, {e["status"] for e in events}

    store, interval = service.store, triggers[0].poll_interval
    polls: list[list[float]] = [[] for _ in range(WAITS)]

    async def peer() -> None:
        async def poll(index: int) -> None:
            deadline = time.time() + WAIT_S
            while time.time() < deadline:
                polls[index].append(time.monotonic())
                await asyncio.to_thread(store.read, f"jobs/default/default/q{index:04d}")
                await asyncio.sleep(interval)

        await asyncio.gather(*(poll(i) for i in range(WAITS)))

    started_cpu, started = cpu_s(), time.monotonic()
    asyncio.run(peer())
    peer_cores = (cpu_s() - started_cpu) / (time.monotonic() - started)
    gaps = [b - a for times in polls for a, b in itertools.pairwise(times)]
    peer_on_time = 100 * sum(1 for g in gaps if g <= interval * 1.5) / max(1, len(gaps))
    expected = WAITS * WAIT_S / interval
    peer_made = 100 * sum(len(t) for t in polls) / expected
    gate.touch()  # the queued jobs stay queued in this bench's home: nothing runs them once it exits
    row(f"{WAITS} waits: CPU", our_cores, peer_cores, "cores", "<= 0.25")
    row(f"{WAITS} waits: polls on time", our_on_time, peer_on_time, "%", ">= 90", better="higher")
    row(f"{WAITS} waits: polls made (of due)", 100.0, peer_made, "%", "", better="higher")
    RESULTS["waits_detail"] = {"ticks": stats.ticks, "cluster_reads": stats.cluster_reads, "job_reads": stats.job_reads}


# -- 2. submits ----------------------------------------------------------------------------------
def submits() -> None:
    home = WORK / "submits"
    service, gate = busy_cluster(home)
    spec = job_spec("true")
    batches = []
    started = time.monotonic()
    for batch in range(SUBMITS // 100):
        at = time.monotonic()
        for index in range(batch * 100, batch * 100 + 100):
            service.create_job("bench", f"s{index:04d}", spec)
        batches.append(time.monotonic() - at)
    total = time.monotonic() - started
    service.passes.drain()
    drained = time.monotonic() - started
    floor_home = WORK / "floor"
    floor = Service.embedded(floor_home, nodes=1)
    record = JobRecord.model_validate(service.store.read("jobs/default/default/s0000").data)
    at = time.monotonic()
    for index in range(SUBMITS):
        name = f"s{index:04d}"
        floor.store.create(f"live/default/bench/default/{name}", {"created": utc_now().isoformat()})
        floor.vault.put(f"job-{index}", {"env": {}})
        floor.store.create(f"jobs/default/default/{name}", record.model_copy(update={"name": name}).to_doc())
    floor_total = time.monotonic() - at
    gate.touch()
    row(f"{SUBMITS} submits to one cluster (peer: bare writes)", total, floor_total, "s", "<= 15")
    row("submits: last 100 / first 100", batches[-1] / batches[0], None, "x", "<= 2")
    RESULTS["submit_batches_s"] = batches
    RESULTS["submit_drained_s"] = drained


# -- 3. overhead ---------------------------------------------------------------------------------
DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.ssh.operators.ssh_remote_job import SSHRemoteJobOperator
from airflow_batchai.operators.batchai import BatchAISubmitJobOperator

MARKERS = "{markers}"

def spec(task):
    command = f"sleep 2; (date +%s.%N >> {{MARKERS}}/{{task}})"
    return {{"nodeCount": 1, "customToolkitSettings": {{"commandLine": command}}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"}}

with DAG("bench_overhead", schedule=None, catchup=False):
    blocking = BatchAISubmitJobOperator(task_id="blocking", cluster_name="bench", spec=spec("blocking"))
    deferrable = BatchAISubmitJobOperator(task_id="deferrable", cluster_name="bench", spec=spec("deferrable"), deferrable=True)
    remote = SSHRemoteJobOperator(
        task_id="ssh_remote_job",
        ssh_conn_id="bench_ssh",
        command=f"sleep 2; (date +%s.%N >> {{MARKERS}}/ssh_remote_job)",
        remote_base_dir="{remote_jobs}",  # the peer's default is /tmp/airflow-ssh-jobs: keep it in this run's folder
    )
    # the first task of a `dags test` run pays for starting Airflow's in-process API (about 2 s): not any operator's cost
    warmup = EmptyOperator(task_id="warmup")
    warmup >> blocking >> deferrable >> remote
"""


def overhead() -> None:
    from tests import sshhosts

    airflow = str(Path(sys.executable).with_name("airflow"))
    home, markers, dags = WORK / "overhead", WORK / "markers", WORK / "dags"
    for folder in (markers, dags):
        folder.mkdir(parents=True, exist_ok=True)
    (dags / "bench_overhead.py").write_text(textwrap.dedent(DAG.format(markers=markers, remote_jobs=WORK / "remote-jobs")))
    Service.embedded(home, nodes=1).create_cluster(
        "bench", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={})
    )
    hosts = sshhosts.start(WORK / "sshd", 1, "bcp", use_namespaces=False)
    host = hosts.hosts[0]
    ssh = {"conn_type": "ssh", "host": host.address, "port": host.port, "login": "root"}
    ssh["extra"] = {"key_file": str(hosts.client_key), "no_host_key_check": True}
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_BENCH_SSH": json.dumps(ssh),
        "BATCHAI_HOME": str(home),
    }
    try:
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
        for _ in range(OVERHEAD_RUNS):
            done = subprocess.run([airflow, "dags", "test", "bench_overhead"], env=env, capture_output=True, text=True, timeout=600)
            if "state=success" not in done.stdout + done.stderr:
                raise RuntimeError((done.stdout + done.stderr)[-3000:])
    finally:
        sshhosts.teardown(hosts)
    with sqlite3.connect(WORK / "airflow" / "airflow.db") as db:
        rows = db.execute(
            "select task_id, start_date, end_date from task_instance where dag_id = 'bench_overhead' order by start_date"
        ).fetchall()
    spans: dict[str, list[tuple[float, float]]] = {}
    for task_id, start, end in rows:
        spans.setdefault(task_id, []).append((datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp()))
    over, lag = {}, {}
    spans.pop("warmup", None)
    for task, times in spans.items():
        ends = [float(line) for line in (markers / task).read_text().split()]
        over[task] = statistics.median(end - start - 2 for start, end in times)
        lag[task] = statistics.median(end - job_end for (_, end), job_end in zip(times, ends, strict=True))
    peer = over["ssh_remote_job"]
    row("task over a 2 s job, blocking (p50)", over["blocking"], peer, "s", "<= 0.5")
    row("task over a 2 s job, deferrable (p50)", over["deferrable"], peer, "s", "<= 0.5")
    ours_lag = statistics.median([*(lag["blocking"], lag["deferrable"])])
    row("job end -> task end (p50)", ours_lag, lag["ssh_remote_job"], "s", "<= 1")
    RESULTS["overhead_detail"] = {"over_s": over, "end_to_task_end_s": lag}


# -- 4. pass cost on blob ------------------------------------------------------------------------
def blob_pass() -> None:
    from tests import azurite as emulator

    logging.getLogger("azure").setLevel(logging.WARNING)  # Airflow's logging config, imported by the waits, logs every request

    server = emulator.start()
    requests = [0]
    try:
        credential = server.credential()
        counted = credential.service(raw_response_hook=lambda _: requests.__setitem__(0, requests[0] + 1))
        container = "bench-control"

        def service_on_blob(service_client: Any = None) -> Service:
            store = BlobControlStore(credential, container, service=service_client or credential.service())
            vault = BlobSecretVault(store, "bench")
            data = AzureDataStore(credential, True, "stage", "stage")
            return Service(store, vault, LocalNodePool(WORK / "blob-home", 1), data, Settings())

        owner = service_on_blob(counted)
        owner.create_cluster("bench", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
        owner.create_job("bench", "blocker", job_spec("sleep 600"))
        for index in range(QUEUED):
            owner.create_job("bench", f"q{index:03d}", job_spec("true"))
        owner.passes.drain()
        owner.reconcile_cluster("default", "bench")

        def measure(service: Service, passes: int = 5) -> tuple[float, float]:
            times, counts = [], []
            for _ in range(passes):
                requests[0] = 0
                at = time.perf_counter()
                service.reconcile_cluster("default", "bench")
                times.append(time.perf_counter() - at)
                counts.append(requests[0])
            return statistics.median(times), statistics.median(counts)

        def history_read() -> tuple[float, float]:
            reader = service_on_blob(counted)
            requests[0] = 0
            at = time.perf_counter()
            reader.store.read_many("jobs/default/")
            return time.perf_counter() - at, requests[0]

        before = measure(owner)
        newcomer_before = measure(service_on_blob(counted), passes=1)
        old_before = history_read()
        finished = JobRecord.model_validate(owner.store.read("jobs/default/default/q000").data).model_copy(
            update={"execution_state": ExecutionState.SUCCEEDED, "experiment": "history"}
        )
        spec_digest = spec_hash(finished.spec)

        def put(index: int) -> None:
            done = finished.model_copy(update={"name": f"h{index:04d}", "spec_hash": spec_digest})
            owner.store.create(done.key, done.to_doc())

        with ThreadPoolExecutor(max_workers=16) as executor:
            list(executor.map(put, range(FINISHED)))
        after = measure(owner)
        newcomer_after = measure(service_on_blob(counted), passes=1)
        old_after = history_read()
        row(f"pass, owner, {QUEUED} queued, 0 finished", before[0], old_before[0], "s", "")
        row(f"pass, owner, {QUEUED} queued, {FINISHED} finished", after[0], old_after[0], "s", "not growing")
        row("  requests per pass, 0 finished", before[1], old_before[1], "req", "")
        row(f"  requests per pass, {FINISHED} finished", after[1], old_after[1], "req", "not growing")
        row(f"pass, new owner, {QUEUED} queued, 0 finished", newcomer_before[0], None, "s", "")
        row(f"pass, new owner, {QUEUED} queued, {FINISHED} finished", newcomer_after[0], None, "s", "not growing")
        row(f"  new owner requests, {FINISHED} finished", newcomer_after[1], None, "req", "")
        owner.terminate_job("blocker")
    finally:
        emulator.stop(server)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="waits,submits,overhead,blob")
    chosen = parser.parse_args().only.split(",")
    for name, part in (("waits", waits), ("submits", submits), ("overhead", overhead), ("blob", blob_pass)):
        if name in chosen:
            print(f"... {name}", file=sys.stderr, flush=True)
            part()
            threading.Event().wait(0.5)
    print(f"{'measure':48} {'batchai':>14} {'peer':>14} {'ratio':>7}  target")
    for measure, ours, peer, ratio, target in ROWS:
        print(f"{measure:48} {ours:>14} {peer:>14} {ratio:>7}  {target}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / "control_plane.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **RESULTS}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
