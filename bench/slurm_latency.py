"""Latency we add on Slurm: ours (a Batch AI job: sbatch + srun of our agent per node) against raw
``sbatch --wrap`` on the same real Slurm (tests/slurmcluster.py), idle nodes, one run, ratios.

    .venv/bin/python bench/slurm_latency.py [--runs 5]

Per run and job: submit → running (ours: executionState running as a waiter sees it; raw: the
job's command has started, by a file it writes) and job end → seen done (ours: ``wait_job``
returns after the job's command ended; raw: ``scontrol`` reports COMPLETED). The goal: ours
within 0.5 s of raw Slurm on each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_batchai.config import connection_config, service_from_config
from airflow_batchai.records import ExecutionState
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests import slurmcluster


def wait_for(predicate, timeout_s: float = 60, poll_s: float = 0.01) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError("benchmark step timed out")


def raw(env: dict[str, str], folder: Path, index: int) -> tuple[float, float]:
    started, ended = folder / f"raw-{index}.start", folder / f"raw-{index}.end"
    command = f"date +%s.%N > {started}; sleep 1; date +%s.%N > {ended}"
    t0 = time.monotonic()
    job_id = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--partition=gpu",
            "--nodes=2",
            "--output=/dev/null",
            f"--wrap=srun --ntasks-per-node=1 sh -c 'test $SLURM_NODEID = 0 && ({command}) || true'",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    running = wait_for(started.exists)
    wait_for(lambda: ended.exists() and ended.stat().st_size > 0)
    end_wall = float(ended.read_text())
    done_at = wait_for(
        lambda: "JobState=COMPLETED" in subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    )
    done_wall = time.time() - (time.monotonic() - done_at)
    return running - t0, done_wall - end_wall


def ours(service, folder: Path, index: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    ended = folder / f"ours-{index}.end"
    spec = load_job_spec(
        {
            "properties": {
                "nodeCount": 2,
                "customToolkitSettings": {"commandLine": f"sleep 1; date +%s.%N > {ended}"},
                "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            }
        },
        environ={},
    )
    t0 = time.monotonic()
    service.create_job("gpu", f"bench-{index}", spec)
    running = wait_for(lambda: service.refresh_job(f"bench-{index}").execution_state != ExecutionState.QUEUED, poll_s=0.05)
    service.wait_job(f"bench-{index}", timeout_s=60, poll_s=0.05)
    done_wall = time.time()
    return running - t0, done_wall - float(ended.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP", "/work/tmp" if Path("/work/tmp").is_dir() else None)) as tmp:
        folder = Path(tmp)
        cluster = slurmcluster.start(folder / "slurm", nodes=("node1", "node2"))
        try:
            env = {**os.environ, **cluster.env}
            os.environ.update(cluster.env)
            service = service_from_config(connection_config(cluster.connection(folder), "bench"))
            service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}))
            results = {"raw": [raw(env, folder, i) for i in range(args.runs)], "ours": [ours(service, folder, i) for i in range(args.runs)]}
        finally:
            slurmcluster.stop(cluster)
    print(f"{'median of ' + str(args.runs):<22}{'raw sbatch':>12}{'ours':>10}{'added':>10}{'ratio':>8}")
    for column, label in ((0, "submit -> running"), (1, "job end -> seen done")):
        raw_s = statistics.median(r[column] for r in results["raw"])
        ours_s = statistics.median(r[column] for r in results["ours"])
        print(f"{label:<22}{raw_s:>11.3f}s{ours_s:>9.3f}s{ours_s - raw_s:>9.3f}s{ours_s / raw_s if raw_s else float('inf'):>8.2f}")


if __name__ == "__main__":
    main()
