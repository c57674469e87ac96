"""A task's job without Airflow: its name, whether a try re-attaches to it, and how its failure reads.

The Airflow operator and sensor only carry Airflow's context into these; the end-to-end tries
(a retry, a clear, a killed worker) are in tests/operators.
"""

from __future__ import annotations

import time

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.logtail import JobLogFollower
from airflow_batchai.reading.readmodels import JobView
from airflow_batchai.records import AllocationState
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.taskjobs import (
    MAX_NAME,
    JobWait,
    WaitFailed,
    cluster_ready,
    failed_earlier,
    failure_message,
    generation_name,
    job_name_for,
    reattach,
)
from tests.conftest import custom_job


def test_a_derived_job_name_keeps_the_map_index_when_shortened() -> None:
    long_run = "manual__2026-12-02T01:31:18.123456+00:00_" + "x" * 40
    names = [job_name_for("a_dag_with_a_long_name", "score_slices", long_run, index) for index in (3, 13)]
    assert all(len(name) <= 64 for name in names) and names[0].endswith("-3") and names[1].endswith("-13")
    assert names[0] != names[1] and job_name_for("d", "t", "r", -1) == "d-t-r" and job_name_for("d", "t", "r", 0) == "d-t-r-0"


def test_a_derived_job_name_keeps_the_runs_date_whole() -> None:
    """Shortened names cut the DAG and task ids, never the run's date; runs a microsecond apart stay apart."""
    first = job_name_for("batchai_quickstart", "submit_job", "manual__2026-12-02T01:31:18.123456+00:00")
    again = job_name_for("batchai_quickstart", "submit_job", "manual__2026-12-02T01:31:18.123457+00:00")
    assert first.startswith("batchai_quickstart-submit_job-manual_20261202T013118-") and first != again
    long = job_name_for("d" * 80, "t" * 80, "scheduled__2026-12-02T00:00:00+00:00", 7)
    assert len(long) <= 64 and "scheduled_20261202T000000-" in long and long.endswith("-7")
    run = "manual__2026-12-02T01:31:18.123456+00:00"
    assert job_name_for("batchai_distributed_pytorch", "train", run).startswith("batchai_distributed-train-manual_20261202T013118-")
    words = job_name_for("batchai_distributed_pytorch", "train_distributed_data_parallel", run)
    assert words.startswith("batchai_distributed-train-manual_20261202T013118-"), "shortened at whole words, never mid-word"


def test_a_cleared_task_runs_new_generations_whose_names_stay_short_and_distinct() -> None:
    base = job_name_for("d", "t", "manual__2026-12-02T01:31:18+00:00")
    assert generation_name(base, 0) == base and generation_name(base, 2) == base + "-g2"
    long = "x" * MAX_NAME
    names = {generation_name(long, generation) for generation in (1, 2, 12)}
    assert len(names) == 3 and all(len(name) <= MAX_NAME and name.endswith(("-g1", "-g2", "-g12")) for name in names)


@pytest.fixture
def one_job(service: Service) -> dict[str, object]:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    view = service.create_job("c", "j", load_job_spec({"properties": custom_job("echo boom >&2; exit 3")}, environ={}), "e")
    service.wait_job("j", "e", timeout_s=30, poll_s=0.1)
    return {"name": "j", "experiment": "e", "workspace": "default", "segment": view.job_output_directory_path_segment, "maxTries": 2}


def test_a_retry_reattaches_to_its_job_and_a_clear_or_a_replaced_job_starts_a_new_generation(
    service: Service, one_job: dict[str, object]
) -> None:
    assert reattach(None, 2, service.show_job, "e", "default") == reattach({}, 2, service.show_job, "e", "default")
    assert reattach(None, 2, service.show_job, "e", "default").saved is None
    retry = reattach({**one_job, "generation": 1}, 2, service.show_job, "other", "default")
    assert retry.saved == {**one_job, "generation": 1} and retry.generation == 1 and retry.reason is None
    cleared = reattach(one_job, 3, service.show_job, "e", "default")
    assert (cleared.saved, cleared.generation) == (None, 1) and "cleared" in (cleared.reason or "")
    replaced = reattach({**one_job, "segment": "elsewhere"}, 2, service.show_job, "e", "default")
    assert (replaced.saved, replaced.generation) == (None, 1) and "created again" in (replaced.reason or "")
    service.delete_job("j", "e")
    gone = reattach(one_job, 2, service.show_job, "e", "default")
    assert (gone.saved, gone.generation) == (None, 1) and "no longer exists" in (gone.reason or "")


def test_a_store_that_cannot_answer_is_not_taken_for_a_missing_job(one_job: dict[str, object]) -> None:
    def storage_down(name: str, experiment: str, workspace: str) -> JobView:
        raise BatchAIError("StorageUnavailable", "the control container did not answer", "records")

    with pytest.raises(BatchAIError, match="StorageUnavailable"):
        reattach(one_job, 2, storage_down, "e", "default")


def test_a_failed_job_is_run_again_by_a_retry_and_its_failure_names_code_exit_code_and_stderr(
    service: Service, one_job: dict[str, object]
) -> None:
    view = service.show_job("j", "e")
    message = failure_message(service, view, "e", "default")
    assert message.splitlines()[0] == "Batch AI job j failed: JobFailed: " + view.execution_info.errors[0].message + " (exit code 3)"
    assert message.splitlines()[1:] == ["last lines of stderr:", "[stderr.txt] boom"]
    assert failed_earlier(service, "j", "e", "default", try_number=1) is not None  # the first try: it is this try's own job
    assert failed_earlier(service, "j", "e", "default", try_number=2) is None
    with pytest.raises(BatchAIError, match="JobNotFound"):
        service.show_job("j", "e")
    assert failed_earlier(service, "never", "e", "default", try_number=2) is None


def test_a_wait_reads_the_state_and_each_new_line_once_and_ends_on_its_target_or_says_why_not(service: Service) -> None:
    """The one wait the blocking operator, the sensor's pokes and a resumed deferrable task share."""
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job(
        "c", "talks", load_job_spec({"properties": custom_job("echo one; sleep 1; echo two; printf three")}, environ={}), "e"
    )
    wait = JobWait(service, "talks", "e", "default", follower=JobLogFollower(service, "talks", "e", "default"))
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    while True:
        view, lines = wait.look(refresh=True)
        seen += lines
        if wait.over(view) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert view.execution_state == "succeeded"
    assert seen == [("stdout.txt", "one"), ("stdout.txt", "two"), ("stdout.txt", "three")]  # the unterminated last line too, once
    assert wait.look() == (view, [])

    failing = JobWait(service, "j", "e", "default")
    service.create_job("c", "j", load_job_spec({"properties": custom_job("echo boom >&2; exit 3")}, environ={}), "e")
    service.wait_job("j", "e", timeout_s=30, poll_s=0.1)
    with pytest.raises(
        WaitFailed, match=r"Batch AI job j failed: JobFailed: .*\(exit code 3\)\nlast lines of stderr:\n\[stderr.txt\] boom"
    ):
        failing.over(failing.look()[0])
    running_only = JobWait(service, "talks", "e", "default", targets=("running",))
    with pytest.raises(WaitFailed, match=r"job talks succeeded, which is not one of \['running'\]"):
        running_only.over(running_only.look()[0])


def test_a_cluster_is_ready_for_a_waiting_task_when_steady_with_enough_idle_nodes(service: Service) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={}))
    view = service.show_cluster("c")
    counts = view.node_state_counts.model_copy(update={"idle_node_count": 2})
    steady = view.model_copy(update={"allocation_state": AllocationState.STEADY, "node_state_counts": counts})
    assert cluster_ready(steady, 2) and not cluster_ready(steady, 3)
    assert not cluster_ready(steady.model_copy(update={"allocation_state": AllocationState.RESIZING}), 1)
