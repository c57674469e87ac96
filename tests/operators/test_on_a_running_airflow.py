"""The submit operator in a whole Airflow deployment (scheduler, LocalExecutor, triggerer, api-server):
what ``dags test`` cannot do. A worker SIGKILLed mid-job, a task cleared after it succeeded, a
deferred task whose job writes to the log as it runs, and one a user marks failed while deferred.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from airflow_batchai.service import Service
from tests.conftest import pid_alive, wait_until

DURABLE_DAG = """
from datetime import timedelta
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAIDeleteClusterOperator, BatchAISubmitJobOperator

@dag(dag_id="live_durable", schedule=None, catchup=False)
def live_durable():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="durable", spec={{"scaleSettings": {{"manual": {{"targetNodeCount": 1}}}}}})
    submit = BatchAISubmitJobOperator(
        task_id="submit", cluster_name="durable", experiment="durable", poll_interval=0.5,
        retries=2, retry_delay=timedelta(seconds=1),
        spec={{"nodeCount": 1, "customToolkitSettings": {{"commandLine": "echo started >> {runs}; sleep 10; echo finished"}},
               "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"}},
    )
    cluster >> submit

live_durable()
"""

DEFERRED_DAG = """
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator

@dag(dag_id="live_deferred", schedule=None, catchup=False)
def live_deferred():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="deferred", spec={"scaleSettings": {"manual": {"targetNodeCount": 2}}})
    talk = BatchAISubmitJobOperator(
        task_id="talk", cluster_name="deferred", experiment="deferred", deferrable=True, poll_interval=0.5,
        spec={"nodeCount": 1, "customToolkitSettings": {"commandLine": "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.8; done; echo oops >&2"},
              "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"},
    )
    hang = BatchAISubmitJobOperator(
        task_id="hang", cluster_name="deferred", experiment="deferred", deferrable=True, poll_interval=0.5,
        spec={"nodeCount": 1, "customToolkitSettings": {"commandLine": "sleep 300 & echo $! > {pid}; wait"},
              "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"},
    )
    cluster >> [talk, hang]

live_deferred()
"""


def stack_service(stack: Any) -> Service:
    return Service.embedded(Path(stack.env["BATCHAI_HOME"]), nodes=4)


def task_processes(ti_id: str) -> list[int]:
    """The task runner of a task instance: the process Airflow titles ``airflow worker -- <ti id>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"airflow worker -- {ti_id}".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def messages(records: list[dict[str, Any]], logger: str | None = None) -> list[str]:
    return [str(r.get("event")) for r in records if logger is None or r.get("logger") == logger]


def test_a_worker_killed_mid_job_is_retried_onto_the_same_job_and_a_clear_starts_a_new_one(airflow_stack: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    airflow_stack.add_dag("live_durable", DURABLE_DAG.format(runs=runs))
    run_id = airflow_stack.trigger("live_durable")
    running = airflow_stack.wait_for_task("live_durable", run_id, "submit", ("running",))
    wait_until(lambda: runs.exists(), 60, 0.2, what="the job started")
    victims = wait_until(lambda: task_processes(running["id"]), 10, 0.2, what="the task's worker process")
    for pid in victims:
        os.kill(pid, signal.SIGKILL)

    assert airflow_stack.wait_for_run("live_durable", run_id) == "success"
    assert runs.read_text() == "started\n", "the job ran once: the retry did not submit a second one"
    service = stack_service(airflow_stack)
    [job] = service.list_jobs("durable")
    assert job.execution_state == "succeeded"
    assert airflow_stack.task("live_durable", run_id, "submit")["try_number"] == 2
    retry_log = messages(airflow_stack.task_log("live_durable", run_id, "submit", 2))
    assert any(f"re-attached to job {job.name}" in m and "task state store" in m for m in retry_log), retry_log[-20:]

    airflow_stack.api(
        "POST",
        "/api/v2/dags/live_durable/clearTaskInstances",
        {"dag_run_id": run_id, "task_ids": ["submit"], "dry_run": False, "only_failed": False},
    )
    wait_until(lambda: airflow_stack.task("live_durable", run_id, "submit")["try_number"] == 3, 60, 0.5, what="the cleared task ran again")
    assert airflow_stack.wait_for_run("live_durable", run_id) == "success"
    names = sorted(j.name for j in service.list_jobs("durable"))
    assert names == [job.name, job.name + "-g1"], "a clear starts a new job; the first one stays to be looked at"
    assert runs.read_text() == "started\nstarted\n"
    service.resize_cluster("durable", 0)


def test_a_deferred_task_shows_its_jobs_output_once_and_marking_one_failed_terminates_its_job(airflow_stack: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "hang.pid"
    airflow_stack.add_dag("live_deferred", DEFERRED_DAG.replace("{pid}", str(pid_file)))
    run_id = airflow_stack.trigger("live_deferred")
    airflow_stack.wait_for_task("live_deferred", run_id, "hang", ("deferred",))
    job_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, 0.2, what="the hanging job started"))
    wait_until(lambda: airflow_stack.trigger_started("live_deferred", run_id, "hang"), 60, 0.2, what="the triggerer runs the wait")
    airflow_stack.api("PATCH", f"{airflow_stack.run_path('live_deferred', run_id)}/taskInstances/hang", {"new_state": "failed"})

    service = stack_service(airflow_stack)
    hang = wait_until(
        lambda: next((j for j in service.list_jobs("deferred") if j.execution_state == "failed"), None), 45, 0.5, what="job terminated"
    )
    assert hang.execution_info.errors and hang.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not pid_alive(job_pid), 20, what="the hanging job's process gone")

    assert airflow_stack.wait_for_task("live_deferred", run_id, "talk", ("success", "failed"))["state"] == "success"
    records = airflow_stack.task_log("live_deferred", run_id, "talk")
    lines = messages(records, "airflow_batchai.job_output")
    assert Counter(lines) == Counter([f"[stdout.txt] line-{i}" for i in range(1, 9)] + ["[stderr.txt] oops"]), lines
    assert [r["level"] for r in records if r.get("event") == "[stderr.txt] oops"] == ["info"], "named for its file, not a warning"
    service.resize_cluster("deferred", 0)


SENSOR_DAG = """
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator
from airflow_batchai.sensors.batchai import BatchAIJobSensor

@dag(dag_id="live_sensor", schedule=None, catchup=False, params={"tag": "first"})
def live_sensor():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="sensed", spec={"scaleSettings": {"manual": {"targetNodeCount": 1}}})
    submit = BatchAISubmitJobOperator(
        task_id="submit", cluster_name="sensed", experiment="sensed", job_name="sensed-{{ params.tag }}", wait_for_completion=False,
        spec={"nodeCount": 1, "customToolkitSettings": {"commandLine": "sleep 2; echo epoch-1; sleep 2; echo epoch-2"},
              "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"},
    )
    wait = BatchAIJobSensor(
        task_id="wait", job_name="sensed-{{ params.tag }}", experiment="sensed",
        deferrable=True, start_from_trigger=True, poke_interval=0.5, timeout=120,
    )
    cluster >> submit >> wait

live_sensor()
"""


def test_a_sensor_started_from_the_trigger_waits_in_the_triggerer_and_logs_the_jobs_output(airflow_stack: Any) -> None:
    """``start_from_trigger``: the scheduler hands the wait straight to the triggerer (which renders the
    templated job name); a worker runs only once, after the wait, for ``execute_complete``."""
    airflow_stack.add_dag("live_sensor", SENSOR_DAG)
    run_id = airflow_stack.trigger("live_sensor")
    assert airflow_stack.wait_for_run("live_sensor", run_id) == "success"
    records = airflow_stack.task_log("live_sensor", run_id, "wait")
    assert messages(records, "airflow_batchai.job_output") == ["[stdout.txt] epoch-1", "[stdout.txt] epoch-2"]
    started = [r["timestamp"] for r in records if "trigger" in str(r.get("event")) and "starting" in str(r.get("event"))]
    workers = [r["timestamp"] for r in records if r.get("event") == "Worker startup parse complete"]
    assert len(started) == 1 and len(workers) == 1 and started[0] < workers[0], "the wait began in the triggerer, not on a worker"
    stack_service(airflow_stack).resize_cluster("sensed", 0)
