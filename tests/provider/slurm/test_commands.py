"""Slurm's commands against a real Slurm cluster (Debian's slurmctld, slurmd, munge), and their parsing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.records import ExecutionState
from airflow_batchai.slurm.commands import SbatchOptions, Slurm, SlurmJob, SlurmNode, expand_hostlist, parse_job, parse_node
from airflow_batchai.slurm.states import execution_state, node_state_counts, queue_reason
from airflow_batchai.transport.local import LocalTransport
from tests.conftest import pid_alive, put_stand_in_on_path, wait_until


def slurm_of(cluster: Any) -> Slurm:
    return Slurm(LocalTransport(), env=cluster.env)


def finished(slurm: Slurm, job_id: str, timeout_s: float = 30) -> SlurmJob:
    def done() -> SlurmJob | None:
        job = slurm.jobs([job_id]).get(job_id)
        return job if job is not None and execution_state(job)[0].finished else None

    return wait_until(done, timeout_s, 0.2, what=f"Slurm job {job_id} to end")


def test_a_partition_is_seen_as_node_state_counts(slurm_cluster: Any) -> None:
    nodes = slurm_of(slurm_cluster).partition_nodes("gpu")
    assert sorted(n.name for n in nodes) == ["node1", "node2"] and all(n.features == ["STANDARD_NC6"] for n in nodes)
    assert node_state_counts(nodes)["idleNodeCount"] == 2


def test_a_two_node_batch_job_runs_its_script_from_stdin_and_succeeds(slurm_cluster: Any, tmp_path: Path) -> None:
    slurm = slurm_of(slurm_cluster)
    out = tmp_path / "out.txt"
    script = "#!/bin/sh\nsrun --ntasks-per-node=1 sh -c 'echo rank-$SLURM_PROCID on $SLURMD_NODENAME'\n"
    started = time.monotonic()
    job_id = slurm.submit(script, SbatchOptions(partition="gpu", job_name="batchai-two", nodes=2, output=str(out), time_minutes=5))
    job = finished(slurm, job_id)
    assert execution_state(job) == (ExecutionState.SUCCEEDED, None) and job.exit_code == 0
    assert job.nodes == ["node1", "node2"] and job.name == "batchai-two"
    assert sorted(out.read_text().split("\n")[:-1]) == ["rank-0 on node1", "rank-1 on node2"]
    assert time.monotonic() - started < 15


def test_a_failing_job_says_slurms_state_and_exit_code(slurm_cluster: Any) -> None:
    slurm = slurm_of(slurm_cluster)
    job = finished(slurm, slurm.submit("#!/bin/sh\nexit 3\n", SbatchOptions(partition="gpu", job_name="fails", nodes=1)))
    state, error = execution_state(job)
    assert state == ExecutionState.FAILED and error is not None
    assert error["code"] == "JobFailed" and f"Slurm job {job.job_id} ended FAILED" in error["message"] and "exit code 3" in error["message"]


def test_cancel_ends_the_whole_allocation_with_no_process_left(slurm_cluster: Any, tmp_path: Path) -> None:
    slurm = slurm_of(slurm_cluster)
    pids = tmp_path / "pids"
    script = f"#!/bin/sh\nsrun --ntasks-per-node=1 sh -c 'sleep 300 & echo $! >> {pids}; wait'\n"
    job_id = slurm.submit(script, SbatchOptions(partition="gpu", job_name="hangs", nodes=2))
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 20, 0.2, what="both ranks started")
    slurm.cancel(job_id)
    job = finished(slurm, job_id)
    assert execution_state(job)[1]["code"] == "JobTerminated"  # type: ignore[index]
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: not pid_alive(pid), 15, what=f"rank process {pid} gone")


def test_a_slurm_command_that_hangs_or_fails_says_which_and_why(
    slurm_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BatchAIError) as failed:
        slurm_of(slurm_cluster).submit("#!/bin/sh\ntrue\n", SbatchOptions(partition="no-such-partition", job_name="x", nodes=1))
    assert failed.value.code == "SlurmError" and "sbatch" in failed.value.message and "partition" in failed.value.message.lower()
    put_stand_in_on_path(monkeypatch, tmp_path / "bin", "sinfo", "#!/bin/sh\nsleep 30\n")  # a controller that never answers
    with pytest.raises(BatchAIError) as hung:
        Slurm(LocalTransport(), env=slurm_cluster.env, timeout_s=1).partition_nodes("gpu")
    assert hung.value.code == "SlurmUnavailable" and "sinfo did not answer" in hung.value.message


def test_scontrol_and_sinfo_lines_are_read_into_models() -> None:
    line = (
        "JobId=42 JobName=train-1 UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15 "
        "RunTime=00:01:00 StartTime=2026-12-02T06:00:00 EndTime=2026-12-02T06:01:00 NodeList=gpu[01-02],cpu7 BatchHost=gpu01"
    )
    job = parse_job(line)
    assert (job.job_id, job.name, job.state, job.reason, job.exit_code, job.signal) == ("42", "train-1", "TIMEOUT", "TimeLimit", 0, 15)
    assert job.nodes == ["gpu01", "gpu02", "cpu7"]
    assert execution_state(job)[1] == {"code": "JobTimedOut", "message": "Slurm job 42 ended TIMEOUT, reason TimeLimit, signal 15"}
    assert execution_state(parse_job("JobId=7 JobName=x JobState=PENDING Reason=Resources NodeList=(null)"))[0] == ExecutionState.QUEUED
    nodes = [
        parse_node(text)
        for text in ("a|idle|STANDARD_NC6|gpu:tesla:2|8", "b|mixed|(null)|(null)|8", "c|down*|||8", "d|idle~|||8", "e|drained|||4")
    ]
    assert nodes[0] == SlurmNode(name="a", state="idle", features=["STANDARD_NC6"], gpus=2, cpus=8, address="a")
    assert node_state_counts(nodes) == {
        "idleNodeCount": 1,
        "runningNodeCount": 1,
        "preparingNodeCount": 0,
        "unusableNodeCount": 2,
        "leavingNodeCount": 0,
    }, "d is powered down: not one of the cluster's nodes until a job wakes it"
    assert expand_hostlist("n[1-3,10],login") == ["n1", "n2", "n3", "n10", "login"] and expand_hostlist("gpu[08-10]") == [
        "gpu08",
        "gpu09",
        "gpu10",
    ]


def test_a_power_saving_partition_shows_nodes_waking_and_sleeping_and_why_a_job_waits() -> None:
    """A cloud Slurm partition powers idle nodes down (``idle~``: no node of the cluster, as a deallocated
    VM), up when a job asks (``~`` with a job, then ``#``), and down again (``%``): Batch AI's preparing and
    leaving, and a job that waits says why."""
    texts = ("a|idle~|||8", "b|allocated#|||8", "c|powering_down|||8", "d|idle|||8", "e|mixed~|||8", "f|idle%|||8")
    assert node_state_counts([parse_node(text) for text in texts]) == {
        "idleNodeCount": 1,
        "runningNodeCount": 0,
        "preparingNodeCount": 2,
        "unusableNodeCount": 0,
        "leavingNodeCount": 2,
    }
    waking = parse_job("JobId=8 JobName=x JobState=CONFIGURING Reason=None NodeList=b")
    assert execution_state(waking)[0] == ExecutionState.QUEUED
    assert queue_reason(waking) == "Slurm job 8 has its nodes and waits for them to power up"
    waiting = parse_job("JobId=9 JobName=y JobState=PENDING Reason=Resources NodeList=(null)")
    assert queue_reason(waiting) == "Slurm job 9 is PENDING: Resources"
