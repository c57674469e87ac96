"""Following a job's stdout and stderr while it runs, as the operator does for the task log."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.logtail import JobLogFollower
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under

# Lines trickle out; "tail" is printed without a newline at the very end.
TRICKLE = (
    "for i in 1 2 3 4 5 6; do echo out $i; echo err $i >&2; sleep 0.2; done; printf 'half a '; sleep 0.3; printf 'line\\n'; printf tail"
)


def follow(follower: JobLogFollower, service: Service, job: str, timeout_s: float = 60) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines += follower.poll()
        if service.show_job(job).execution_state in ("succeeded", "failed"):
            return lines + follower.poll(final=True)
        time.sleep(0.1)
    raise AssertionError(f"{job} did not finish in {timeout_s} s; followed so far: {lines}")


def test_following_hands_out_whole_lines_of_each_stream_in_order(service: Service) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    follower = JobLogFollower(service, "trickle", "default", "default")
    assert follower.poll() == []  # before the job exists: nothing, no error
    service.create_job("c", "trickle", load_job_spec({"properties": custom_job(TRICKLE)}, environ={}))
    lines = follow(follower, service, "trickle")
    stdout = [line for name, line in lines if name == "stdout.txt"]
    stderr = [line for name, line in lines if name == "stderr.txt"]
    assert stdout == [f"out {i}" for i in range(1, 7)] + ["half a line", "tail"]  # never split, the unterminated rest last
    assert stderr == [f"err {i}" for i in range(1, 7)]


def test_following_on_azure_storage_reads_no_records_after_the_first_poll(azurite: Any, home: Path) -> None:
    """Each poll is one listing plus one range read per grown file: the job's location is kept."""
    config = ProviderConfig(
        storage_connection_string=azurite.connection_string, control_container=f"tail-{uuid.uuid4().hex[:8]}", home=str(home)
    )
    service = service_from_config(config)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    body = custom_job(TRICKLE)
    body["mountVolumes"] = {
        "azureBlobFileSystems": [{"accountName": "devstoreaccount1", "containerName": "logs", "relativeMountPath": "logs"}]
    }
    try:
        service.create_job("c", "tail", load_job_spec({"properties": body}, environ={}))
        follower = JobLogFollower(service, "tail", "default", "default")
        follower.poll()
        reads: list[str] = []
        polling = [False]
        original = service.store.read
        follower_thread = threading.get_ident()  # background passes read records in threads of their own

        def counted(key: str) -> Any:
            if polling[0] and threading.get_ident() == follower_thread:
                reads.append(key)
            return original(key)

        service.store.read = counted  # type: ignore[method-assign]
        lines: list[tuple[str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = service.show_job("tail").execution_state  # the operator's own poll: one record read
            polling[0] = True
            lines += follower.poll(final=state in ("succeeded", "failed"))
            polling[0] = False
            if state in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        service.store.read = original  # type: ignore[method-assign]
        assert reads == []
        assert [line for name, line in lines if name == "stdout.txt"][-2:] == ["half a line", "tail"]
    finally:
        kill_agents_under(home)


def test_a_jobs_stderr_lines_are_info_records_named_for_their_file_not_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Progress bars write to stderr: a successful job's log must not read as 22 warnings."""
    from airflow_batchai.logtail import JOB_OUTPUT_LOGGER, log_job_lines

    with caplog.at_level(logging.INFO, logger=JOB_OUTPUT_LOGGER):
        log_job_lines([("stdout.txt", "epoch 1"), ("stderr-1.txt", "100%|#####| 10/10")])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "[stdout.txt] epoch 1"),
        (logging.INFO, "[stderr-1.txt] 100%|#####| 10/10"),
    ]
