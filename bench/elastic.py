"""Elastic capacity benchmark: a cluster of VM scale set instances that starts from zero and returns to it.

    .venv/bin/pip install -e '.[test]' && .venv/bin/python bench/elastic.py [--boot-s 5] [--idle-s 20]

Runs the ARM stand-in (tests/armcompute.py: instances that take ``--boot-s`` to start, each a real sshd
host in a network namespace; run as root) and `batchai controller`'s loop in this process over an
autoscale cluster (min 0, max 2, idleSecondsBeforeScaledown ``--idle-s``), with the pool's real polling
intervals. The schedule: a 1-node job, a quiet gap longer than the idle time, a 2-node job, then
quiet again. Measured:

- from zero, queued → running, against the instances' own boot time;
- idle → deallocated, against the idle time the cluster asks for;
- node-hours billed (an instance is billed from its start until it is deallocated) against an
  always-on cluster of 2 nodes over the same window, and the jobs' own node-hours;
- ARM requests in all, and per hour while the cluster sits at zero.

The last line is ``elastic: from zero queued->running X s (boot B s); idle->deallocated Y s (idle Z s);
node-hours billed A vs always-on C; ARM requests R``; results go to bench/results/elastic.json.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azure.core.credentials import AccessToken, AccessTokenInfo  # noqa: E402

from airflow_batchai.controller import Controller  # noqa: E402
from airflow_batchai.pools.arm import AzureVMSettings  # noqa: E402
from airflow_batchai.pools.azurevms import AzureVMPool  # noqa: E402
from airflow_batchai.records import ExecutionState  # noqa: E402
from airflow_batchai.service import Service, Settings  # noqa: E402
from airflow_batchai.spec import load_cluster_spec, load_job_spec  # noqa: E402
from airflow_batchai.transport.ssh import SSHAuth  # noqa: E402
from tests import armcompute  # noqa: E402

BILLED = ("starting", "running", "stopping", "deallocating")  # Azure bills a VM from its start until it is deallocated
JOB_S = 10.0
MAX_NODES = 2


class StaticToken:
    """Entra ID has no local stand-in: a static bearer token, as the tests use."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("bench-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("bench-token", int(time.time()) + 3600)


class Meter:
    """Samples the stand-in's instance states: billed node-seconds, and when each instance was last deallocated."""

    def __init__(self, arm: armcompute.StandIn) -> None:
        self.arm = arm
        self.billed_s = 0.0
        self.deallocated_at: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        last = time.time()
        while not self.stop.is_set():
            state = self.arm.state()["instances"]
            now = time.time()
            self.billed_s += (now - last) * sum(1 for i in state.values() if i["power"] in BILLED)
            for instance_id, instance in state.items():
                if instance["power"] == "deallocated":
                    self.deallocated_at.setdefault(instance_id, now)
                else:
                    self.deallocated_at.pop(instance_id, None)
            last = now
            self.stop.wait(0.25)


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def run_job(service: Service, name: str, nodes: int) -> tuple[float, float, float]:
    """(seconds from queued to running, seconds it ran, when it ended: its record's endTime, epoch seconds)."""
    body = {
        "nodeCount": nodes,
        "customToolkitSettings": {"commandLine": f"sleep {JOB_S}"},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
    }
    submitted = time.monotonic()
    service.create_job("gpu", name, load_job_spec({"properties": body}, environ={}))
    wait(lambda: service.show_job(name).execution_state != ExecutionState.QUEUED, 600, f"{name} running")
    running = time.monotonic()
    done = wait(lambda: (j := service.show_job(name)).finished and j, 600, f"{name} done")
    if done.execution_state != ExecutionState.SUCCEEDED:
        raise RuntimeError(f"{name}: {done.execution_info}")
    info = done.execution_info
    assert info.start_time and info.end_time
    return running - submitted, (info.end_time - info.start_time).total_seconds(), info.end_time.timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boot-s", type=float, default=5.0)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument(
        "--quiet-s", type=float, default=310.0, help="the cluster at zero, measured for ARM requests (longer than the pool's 300 s listing)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchai-bench-elastic-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    arm = armcompute.start(work / "arm", "--boot-s", str(args.boot_s), "--instances", str(MAX_NODES))
    meter = Meter(arm)
    controller: Controller | None = None
    try:
        fields = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "scale_set": "gpu-vmss", "max_nodes": MAX_NODES}
        settings = AzureVMSettings(**fields, arm_endpoint=arm.url, arm_ca_bundle=arm.ca)
        auth = SSHAuth(user="root", key_file=str(arm.folder / "hosts" / "client_key"), allow_agent=False)
        pool = AzureVMPool(
            settings, auth, root=str(work / "nodes"), python=sys.executable, credential=StaticToken(), authorized_keys=str(work / "keys")
        )
        service = Service.embedded(work / "home", pool=pool, settings=Settings(), kind="controller")
        scale = {
            "minimumNodeCount": 0,
            "maximumNodeCount": MAX_NODES,
            "initialNodeCount": 0,
            "idleSecondsBeforeScaledown": int(args.idle_s),
        }
        service.create_cluster("gpu", load_cluster_spec({"vmSize": "STANDARD_NC6S_V3", "scaleSettings": {"autoScale": scale}}, environ={}))
        controller = Controller(service)
        threading.Thread(target=controller.run, daemon=True).start()
        started = time.monotonic()
        meter.thread.start()

        cold: list[float] = []
        job_node_s = 0.0
        to_zero: list[float] = []
        for name, nodes in (("first", 1), ("second", 2)):
            queued_s, ran_s, ended = run_job(service, name, nodes)
            cold.append(queued_s)
            job_node_s += ran_s * nodes
            at_zero = lambda n=nodes, e=ended: len(meter.deallocated_at) >= n and all(t > e for t in meter.deallocated_at.values())  # noqa: E731
            wait(at_zero, 600, "deallocated")
            to_zero.append(max(meter.deallocated_at.values()) - ended)
        before = pool.arm.total
        quiet_from = time.monotonic()
        time.sleep(args.quiet_s)
        idle_requests = pool.arm.total - before
        per_idle_hour = idle_requests * 3600 / (time.monotonic() - quiet_from)
        window_s = time.monotonic() - started
    finally:
        if controller is not None:
            controller.stop.set()
        meter.stop.set()
        arm.stop()
    x, y = max(cold), max(to_zero)
    billed_h, always_on_h, jobs_h = meter.billed_s / 3600, window_s * MAX_NODES / 3600, job_node_s / 3600
    results = {
        "queued_to_running_from_zero_s": [round(c, 2) for c in cold],
        "boot_s": args.boot_s,
        "idle_to_deallocated_s": [round(t, 2) for t in to_zero],
        "idle_s": args.idle_s,
        "node_hours_billed": round(billed_h, 4),
        "node_hours_always_on": round(always_on_h, 4),
        "node_hours_of_jobs": round(jobs_h, 4),
        "arm_requests": pool.arm.total,
        "arm_requests_by_kind": dict(pool.arm.requests),
        "arm_requests_per_idle_hour": round(per_idle_hour, 1),
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "elastic.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"jobs' own node-hours {jobs_h:.4f}; ARM requests per hour at zero {per_idle_hour:.0f}")
    print(
        f"elastic: from zero queued->running {x:.1f} s (boot {args.boot_s:.0f} s); idle->deallocated {y:.1f} s (idle {args.idle_s:.0f} s); "
        f"node-hours billed {billed_h:.4f} vs always-on {always_on_h:.4f}; ARM requests {pool.arm.total} ({per_idle_hour:.0f}/h idle)"
    )


if __name__ == "__main__":
    main()
