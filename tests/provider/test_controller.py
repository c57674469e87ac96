"""``batchai controller``: clusters move with nobody reading; several controllers, one acting per cluster.

The controllers are real ``batchai controller`` processes on the embedded default, the jobs
real agents on local nodes. The test itself never reads through a Service while it checks
(that would kick passes of its own): it reads the record files, as a person would.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.records import ExecutionState, lease_name
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until

BATCHAI = str(Path(sys.executable).with_name("batchai"))
PASS_LINE = re.compile(r"pass (\S+) seq (\w+) by (\S+) (started|ended) at ([\d.]+)")
EXCLUSIVE = 'mkdir "$AZ_BATCHAI_JOB_TEMP_DIR/busy" || exit 3; sleep 0.05; rmdir "$AZ_BATCHAI_JOB_TEMP_DIR/busy"'


def start_controller(home: Path, log: Path, interval: float = 0.5) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BATCHAI_LOCAL_NODES": "4"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [BATCHAI, "controller", "--home", str(home), "--interval", str(interval), "--verbose"], stdout=out, stderr=out, env=env
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def record(home: Path, key: str) -> dict[str, Any] | None:
    path = home / "control" / "records" / f"{key}.json"
    try:
        return json.loads(path.read_text())["data"]
    except (FileNotFoundError, ValueError):
        return None


def quiet_service(home: Path) -> Service:
    """A Service that only writes: it kicks no pass, so whatever moves is the controller's doing."""
    service = Service.embedded(home, nodes=4)
    service.passes.kick = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return service


def test_autoscale_grows_runs_and_shrinks_to_zero_with_only_the_controller(tmp_path: Path) -> None:
    home = tmp_path / "home"
    service = quiet_service(home)
    auto = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 2, "initialNodeCount": 0, "idleSecondsBeforeScaledown": 1}}
    service.create_cluster("auto", load_cluster_spec({"scaleSettings": auto}, environ={}))
    controller = start_controller(home, tmp_path / "controller.log")
    try:
        for name in ("a", "b"):
            service.create_job("auto", name, load_job_spec({"properties": custom_job("sleep 1")}, environ={}))
        grown = wait_until(lambda: (c := record(home, "clusters/default/auto")) and len(c["nodes"]) == 2 and c, 30, 0.05, what="2 nodes")
        assert {n["state"] for n in grown["nodes"]} <= {"preparing", "idle", "running"}
        for name in ("a", "b"):
            wait_until(lambda n=name: record(home, f"jobs/default/default/{n}")["execution_state"] == "succeeded", 30, 0.05, what=name)
        shrunk = wait_until(lambda: (c := record(home, "clusters/default/auto")) and not c["nodes"] and c, 30, 0.1, what="zero nodes")
        assert shrunk["allocation_state"] == "steady"
        assert all(record(home, f"pool/local-{i}")["state"] == "free" for i in range(4))
    finally:
        assert stop(controller) == 0, (tmp_path / "controller.log").read_text()
        kill_agents_under(home)


def test_a_jobs_end_reaches_its_record_within_a_second(tmp_path: Path) -> None:
    home = tmp_path / "home"
    service = quiet_service(home)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    controller = start_controller(home, tmp_path / "controller.log", interval=5)
    try:
        marker = tmp_path / "ended"
        service.create_job("c", "quick", load_job_spec({"properties": custom_job(f"sleep 1; touch {marker}")}, environ={}))
        wait_until(marker.exists, 30, 0.01, what="the job's last command")
        ended = time.time()
        wait_until(lambda: record(home, "jobs/default/default/quick")["execution_state"] == "succeeded", 10, 0.01, what="succeeded")
        assert time.time() - ended < 1.0
    finally:
        assert stop(controller) == 0
        kill_agents_under(home)


def passes_of(log: Path) -> list[tuple[str, str, float, float]]:
    """(holder, seq, started, ended) of every complete pass a controller logged."""
    started: dict[tuple[str, str], float] = {}
    done = []
    for _cluster, seq, holder, what, at in PASS_LINE.findall(log.read_text()):
        if what == "started":
            started[(holder, seq)] = float(at)
        elif (holder, seq) in started:
            done.append((holder, seq, started.pop((holder, seq)), float(at)))
    return done


def test_two_controllers_act_one_at_a_time_and_one_killed_mid_pass_is_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    service = quiet_service(home)
    service.create_cluster("race", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 4}}}, environ={}))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    controllers = [start_controller(home, log, interval=0.3) for log in logs]
    try:
        spec = load_job_spec({"properties": custom_job(EXCLUSIVE)}, environ={})
        for index in range(40):
            service.create_job("race", f"job-{index:02d}", spec)
        note_path = home / "control" / "locks" / "cluster__default__race.note"
        victim, mid_pass = None, False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # catch a controller inside a pass
            try:
                note = json.loads(note_path.read_text())
            except (FileNotFoundError, ValueError):
                continue
            pid = int(note.get("holder", "::0").split(":")[1])
            if "started" in note and "ended" not in note and pid in {c.pid for c in controllers}:
                victim, mid_pass = next(c for c in controllers if c.pid == pid), True
                break
        victim = victim or controllers[0]
        victim.kill()
        victim.wait(timeout=10)
        killed_at = time.time()
        survivor = next(c for c in controllers if c is not victim)

        def all_done() -> bool:
            return all(
                (r := record(home, f"jobs/default/default/job-{i:02d}")) and r["execution_state"] in ("succeeded", "failed")
                for i in range(40)
            )

        wait_until(all_done, 120, 0.2, what="every job to end")
        jobs = [record(home, f"jobs/default/default/job-{i:02d}") for i in range(40)]
        assert [j["name"] for j in jobs if j["execution_state"] != "succeeded"] == []  # none lost, none on a busy node (exit 3)
        wait_until(lambda: all(record(home, f"pool/local-{i}")["state"] == "idle" for i in range(4)), 60, 0.2, what="nodes idle")
        later = [p for p in passes_of(logs[controllers.index(survivor)]) if p[2] > killed_at]
        assert later and later[0][2] - killed_at < 5, "the other controller took over within a lease (file locks end with their holder)"
        everything = sorted((p for log in logs for p in passes_of(log)), key=lambda p: p[2])
        for (holder, _, _, ended), (other, _, started, _) in itertools.pairwise(everything):
            assert holder == other or started >= ended, f"{holder} and {other} ran passes at once"
        print(f"victim killed {'inside' if mid_pass else 'between'} passes; {len(everything)} passes in all")
    finally:
        for controller in controllers:
            if controller.poll() is None:
                assert stop(controller) == 0
        kill_agents_under(home)


def test_a_controller_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Service.embedded(home).create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    controller = start_controller(home, tmp_path / "controller.log")
    wait_until(lambda: "interval" in (tmp_path / "controller.log").read_text(), 60, 0.1, what="the controller to start its loop")
    started = time.monotonic()
    assert stop(controller) == 0
    assert time.monotonic() - started < 10
    assert "stopped" in (tmp_path / "controller.log").read_text()


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_a_controller_refuses_a_bad_interval(tmp_path: Path, interval: str) -> None:
    result = subprocess.run(
        [BATCHAI, "controller", "--home", str(tmp_path), "--interval", interval], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--interval" in result.stderr


def test_with_a_controller_it_launches_every_job_and_without_one_the_submitter_does(tmp_path: Path) -> None:
    """passes.launcher: the controller runs the launching pass while it lives (the submitter only marks
    the cluster due on the lease note); once it is gone, the submitting process runs it again, at once."""
    home = tmp_path / "home"
    service = Service.embedded(home, nodes=4)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    controller = start_controller(home, tmp_path / "controller.log")
    lease = lease_name("default", "c")
    try:
        wait_until(
            lambda: service.store.lease_note(lease).get("controller") == f"{socket.gethostname()}:{controller.pid}:controller", 30, 0.05
        )
        passes_here: list[object] = []
        service.passes.listeners.append(passes_here.append)
        job = load_job_spec({"properties": custom_job("echo hi")}, environ={})
        for name in ("a", "b"):
            service.create_job("c", name, job)
            service.passes.drain()
            wait_until(lambda n=name: record(home, f"jobs/default/default/{n}")["execution_state"] == "succeeded", 30, 0.05, what=name)
        assert passes_here == [], "the submitter ran no pass of its own"
        controller.kill()
        controller.wait(timeout=10)
        service.create_job("c", "after", job)
        # its note still names the controller for CONTROLLER_GRACE_S: then a waiting reader passes itself
        assert service.wait_job("after", timeout_s=30, poll_s=0.1).execution_state == ExecutionState.SUCCEEDED
        assert passes_here, "with the controller gone, this process ran the passes"
    finally:
        if controller.poll() is None:
            stop(controller)
        kill_agents_under(home)
