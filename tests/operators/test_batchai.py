"""Operators through real `airflow dags test` runs on the embedded default: no mocked hooks.

The job's secret comes from an Airflow Variable whose name Airflow does not treat as sensitive,
so only our own masking keeps it out of rendered fields, task logs and XCom.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_batchai.operators.batchai import BatchAISubmitJobOperator
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import AIRFLOW, DATA, pid_alive, run_dag, wait_until, write_dag

SECRET = "Sup3r-s3cret-T0ken-4821"
STORAGE_KEY = "c3RvcmFnZS1hY2NvdW50LWtleS0xMjM0NTY3OA=="
VARIABLES = {"AIRFLOW_VAR_TRAINING_VALUE": SECRET, "AIRFLOW_VAR_STORAGE_VALUE": STORAGE_KEY}

JOB_DAG = """
from __future__ import annotations
import json
from datetime import timedelta
from airflow.sdk import dag, task
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator

COMMAND = {command!r}


@dag(dag_id={dag_id!r}, schedule=None, catchup=False, default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=0)}})
def the_dag():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="c", spec={{"scaleSettings": {{"manual": {{"targetNodeCount": 1}}}}}})
    submit = BatchAISubmitJobOperator(
        task_id="submit",
        cluster_name="c",
        experiment="e",
        poll_interval=0.5,
        timeout={timeout},
        spec={{
            "nodeCount": 1,
            "customToolkitSettings": {{"commandLine": COMMAND}},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "secrets": [{{"name": "API_TOKEN", "value": "{{{{ var.value.training_value }}}}"}}],
            "mountVolumes": {{
                "azureFileShares": [{{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}}],
                "azureBlobFileSystems": [{{
                    "accountName": "local", "containerName": "data", "relativeMountPath": "data",
                    "credentials": {{"accountKey": "{{{{ var.value.storage_value }}}}"}},
                }}],
            }},
        }},
    )

    @task
    def record(view, path={record!r}):
        with open(path, "w") as handle:
            json.dump(view, handle)

    cluster >> submit
    record(submit.output)


the_dag()
"""


def job_dag(tmp_path: Path, dag_id: str, command: str, retries: int = 0, timeout: float | None = None) -> tuple[Path, Path]:
    record = tmp_path / "xcom.json"
    source = JOB_DAG.format(dag_id=dag_id, command=command, retries=retries, timeout=timeout, record=str(record))
    return write_dag(tmp_path / "dags", dag_id, source), record


def test_submit_streams_job_output_into_the_task_log_and_returns_the_job(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    command = 'for i in 1 2 3; do echo "epoch $i done"; sleep 0.3; done; test -n "$API_TOKEN" && echo token-present'
    dags, record = job_dag(tmp_path, "op_success", command)
    result = run_dag({**airflow_env, **VARIABLES}, dags, "op_success", home)
    assert result.state == "success", result.output[-3000:]
    for line in ("[stdout.txt] epoch 1 done", "[stdout.txt] epoch 3 done", "[stdout.txt] token-present"):
        assert line in result.output
    view = json.loads(record.read_text())
    assert view["executionState"] == "succeeded" and view["secrets"] == [{"name": "API_TOKEN"}]
    usage = view["usage"]  # the job's usage in XCom: ~1 s on one node (no prices in this connection: unknown, and why)
    assert (
        0.5 < usage["nodeSeconds"] < 30
        and usage["estimatedCost"]["amount"] is None
        and "prices.node_hour" in usage["estimatedCost"]["reason"]
    )
    for secret in (SECRET, STORAGE_KEY):
        assert secret not in record.read_text() and secret not in result.output
        for path in [*Path(airflow_env["AIRFLOW_HOME"]).rglob("*"), *home.rglob("*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_a_failing_job_fails_the_task_with_its_error_code_exit_code_and_stderr(
    airflow_env: dict[str, str], tmp_path: Path, home: Path
) -> None:
    dags, _ = job_dag(tmp_path, "op_failure", "echo 'loading data'; echo 'ValueError: bad shape (3, 4)' >&2; exit 3")
    result = run_dag({**airflow_env, **VARIABLES}, dags, "op_failure", home)
    assert result.state == "failed"
    assert "JobFailed: Job failed with non-zero exit code on node local-0 (exit code 3)" in result.output
    assert "last lines of stderr:" in result.output and "[stderr.txt] ValueError: bad shape (3, 4)" in result.output


def test_a_retried_task_reattaches_to_its_job_instead_of_submitting_again(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    runs = tmp_path / "runs.txt"
    dags, record = job_dag(tmp_path, "op_retry", f"echo started >> {runs}; sleep 5; echo finished", retries=3, timeout=2.5)
    result = run_dag({**airflow_env, **VARIABLES}, dags, "op_retry", home)
    assert result.state == "success", result.output[-3000:]
    assert "still running after 2.5 s" in result.output
    assert "re-attached to job" in result.output
    assert runs.read_text() == "started\n", "the job ran once"
    assert [j.name for j in Service.embedded(home).list_jobs("e")] == [json.loads(record.read_text())["name"]]


def running_jobs(home: Path) -> int:
    """Jobs whose record says running, read from the files (no pass is kicked by looking)."""
    records = [json.loads(path.read_text()) for path in home.glob("control/records/jobs/*/*/*.json")]
    return sum(1 for found in records if found["data"]["execution_state"] == "running")


def test_killing_the_task_terminates_the_job_and_its_processes(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    pid_file = tmp_path / "job.pid"
    dags, _ = job_dag(tmp_path, "op_kill", f"sleep 300 & echo $! > {pid_file}; wait")
    env = {**airflow_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "BATCHAI_HOME": str(home), **VARIABLES}
    runner = subprocess.Popen([AIRFLOW, "dags", "test", "op_kill"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 120, 0.2, what="job started"))
        wait_until(lambda: running_jobs(home) == 1, 30, 0.1, what="the job's record to say running (the task is waiting on it)")
        os.kill(runner.pid, signal.SIGTERM)
        output, _ = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert "task killed: terminating job" in output
    [job] = Service.embedded(home).list_jobs("e")
    assert job.execution_state == "failed" and job.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not pid_alive(job_pid), 15, what="job process gone")


def test_deferrable_submit_waits_through_the_trigger(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    dag_source = """
from __future__ import annotations
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator

@dag(dag_id="op_deferrable", schedule=None, catchup=False)
def the_dag():
    BatchAICreateClusterOperator(task_id="cluster", cluster_name="c", spec={"scaleSettings": {"manual": {"targetNodeCount": 1}}}) >> BatchAISubmitJobOperator(
        task_id="submit", cluster_name="c", deferrable=True, poll_interval=0.5,
        spec={"nodeCount": 1, "customToolkitSettings": {"commandLine": "sleep 2; echo deferred-done"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"},
    )

the_dag()
"""
    result = run_dag(airflow_env, write_dag(tmp_path / "dags", "op_deferrable", dag_source), "op_deferrable", home)
    assert result.state == "success", result.output[-3000:]
    assert "[stdout.txt] deferred-done" in result.output


def test_terminate_and_delete_operators_end_the_job_and_the_cluster(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    dag_source = """
from __future__ import annotations
from airflow.sdk import dag
from airflow_batchai.operators.batchai import (
    BatchAICreateClusterOperator, BatchAIDeleteClusterOperator, BatchAISubmitJobOperator, BatchAITerminateJobOperator,
)

@dag(dag_id="op_terminate", schedule=None, catchup=False)
def the_dag():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="c", spec={"scaleSettings": {"manual": {"targetNodeCount": 1}}})
    submit = BatchAISubmitJobOperator(
        task_id="submit", cluster_name="c", job_name="endless", wait_for_completion=False,
        spec={"nodeCount": 1, "customToolkitSettings": {"commandLine": "sleep 300"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"},
    )
    stop = BatchAITerminateJobOperator(task_id="terminate", job_name="endless")
    cluster >> submit >> stop >> BatchAIDeleteClusterOperator(task_id="delete", cluster_name="c")

the_dag()
"""
    result = run_dag(airflow_env, write_dag(tmp_path / "dags", "op_terminate", dag_source), "op_terminate", home)
    assert result.state == "success", result.output[-3000:]
    assert "job endless failed" in result.output and "cluster c deleted" in result.output
    service = Service.embedded(home)
    assert service.show_job("endless").execution_info.errors[0].code == "JobTerminated"
    assert service.list_clusters() == [] and not list((home / "nodes").glob("*/*"))


def test_a_wait_that_ended_in_an_error_event_fails_the_task_naming_the_error() -> None:
    """What the trigger yields when the store stayed unreachable until its deadline (tests/triggers)."""
    operator = BatchAISubmitJobOperator(task_id="submit", cluster_name="c", job_name="j", spec={})
    event = {"status": "error", "code": "ControlStoreUnavailable", "message": "control container did not answer", "job_name": "j"}
    with pytest.raises(AirflowException, match="waiting for job j failed: ControlStoreUnavailable: control container did not answer"):
        operator.execute_complete({}, event)


MAPPED_DAG = """
from __future__ import annotations
from datetime import timedelta
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator


def spec(index, seconds=0):
    command = f"echo started {{index}} >> {runs}; sleep {{seconds}}; echo slice {{index}}"
    return {{
        "nodeCount": 1,
        "customToolkitSettings": {{"commandLine": command}},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {{"azureFileShares": [{{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}}]}},
    }}


@dag(dag_id="op_mapped", schedule=None, catchup=False, default_args={{"retries": 2, "retry_delay": timedelta(seconds=0)}})
def the_dag():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="c", spec={{"scaleSettings": {{"manual": {{"targetNodeCount": 2}}}}}})
    derived = BatchAISubmitJobOperator.partial(task_id="score", cluster_name="c", experiment="e", poll_interval=0.2, timeout=2.5).expand(
        spec=[spec(0), spec(1, seconds=4), spec(2)]
    )
    templated = BatchAISubmitJobOperator.partial(
        task_id="named", cluster_name="c", experiment="e", poll_interval=0.2, job_name="slice-{{{{ ti.map_index }}}}"
    ).expand_kwargs([{{"spec": spec(10)}}, {{"spec": spec(11)}}])
    cluster >> [derived, templated]


the_dag()
"""


def test_mapped_submits_give_one_job_per_map_index_and_each_retry_reattaches_to_its_own(
    airflow_env: dict[str, str], tmp_path: Path, home: Path
) -> None:
    runs = tmp_path / "runs.txt"
    dags = write_dag(tmp_path / "dags", "op_mapped", MAPPED_DAG.format(runs=str(runs)))
    result = run_dag(airflow_env, dags, "op_mapped", home)
    assert result.state == "success", result.output[-3000:]
    jobs = {j.name: j for j in Service.embedded(home).list_jobs("e")}
    derived = sorted((name for name in jobs if name.startswith("op_mapped-score-")), key=lambda name: int(name.rsplit("-", 1)[1]))
    assert [name.rsplit("-", 1)[1] for name in derived] == ["0", "1", "2"], sorted(jobs)
    assert {"slice-0", "slice-1"} <= set(jobs)
    assert all(job.execution_state == "succeeded" for job in jobs.values())
    assert "still running after 2.5 s" in result.output and "re-attached to job" in result.output  # slice 1's retry
    assert sorted(runs.read_text().splitlines()) == ["started 0", "started 1", "started 10", "started 11", "started 2"]  # each ran once
    service = Service.embedded(home)
    assert service.read_output_file(derived[1], "stdout.txt", "e") == b"slice 1\n"


def test_openlineage_facets_name_the_storage_the_job_read_and_wrote(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service = Service.embedded(home)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
    spec = load_job_spec(DATA / "seed_002_quickstart_job.json", cluster="c", storage_account_name="local", environ={})
    view = service.create_job("c", "lineage", spec, "e")
    operator = BatchAISubmitJobOperator(task_id="submit", cluster_name="c", experiment="e", spec={})
    assert operator.get_openlineage_facets_on_complete(None).inputs == [], "nothing submitted, nothing to say"
    operator.submitted = "lineage"
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("wasbs://data@local.blob.core.windows.net", "/"),
        ("wasbs://scripts@local.file.core.windows.net", "/"),
    ]
    segment = view.job_output_directory_path_segment
    assert [d.name for d in lineage.outputs] == [f"{segment}/outputs", f"{segment}/stdouterr"]


CLUSTER_DAG = """
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator

@dag(dag_id="op_cluster_secrets", schedule=None, catchup=False)
def the_dag():
    BatchAICreateClusterOperator(
        task_id="cluster", cluster_name="secretive",
        spec={
            "scaleSettings": {"manual": {"targetNodeCount": 0}},
            "userAccountSettings": {"adminUserName": "admin", "adminUserPassword": "{{ var.value.training_value }}"},
            "nodeSetup": {
                "setupTask": {"commandLine": "true", "secrets": [{"name": "TOKEN", "value": "{{ var.value.training_value }}"}],
                              "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/logs"},
                "mountVolumes": {
                    "azureFileShares": [{"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"}],
                    "azureBlobFileSystems": [{"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "data", "relativeMountPath": "data",
                                              "credentials": {"accountKey": "{{ var.value.storage_value }}"}}],
                },
            },
        },
    ) >> BatchAISubmitJobOperator(
        task_id="submit", cluster_name="secretive", job_name="in-a-container", wait_for_completion=False,
        spec={
            "nodeCount": 1, "customToolkitSettings": {"commandLine": "true"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
            "containerSettings": {"imageSourceRegistry": {
                "serverUrl": "registry.example.com", "image": "registry.example.com/team/train:1",
                "credentials": {"username": "team", "password": "{{ var.value.training_value }}"},
            }},
        },
    )

the_dag()
"""


def test_a_cluster_spec_gets_its_storage_account_from_the_connection_and_no_secret_of_it_or_a_job_reaches_anything(
    airflow_env: dict[str, str], tmp_path: Path, home: Path
) -> None:
    dags = write_dag(tmp_path / "dags", "op_cluster_secrets", CLUSTER_DAG)
    result = run_dag({**airflow_env, **VARIABLES}, dags, "op_cluster_secrets", home)
    assert result.state == "success", result.output[-3000:]
    cluster = Service.embedded(home).show_cluster("secretive")
    mounts = cluster.to_json()["nodeSetup"]["mountVolumes"]
    assert mounts["azureBlobFileSystems"][0]["accountName"] == "local", "the placeholder is filled from the connection"
    assert mounts["azureFileShares"][0]["accountName"] == "local"
    vault = home / "secrets"  # where the embedded default keeps them for new nodes' setup, readable by its owner only
    assert {oct(path.stat().st_mode & 0o777) for path in vault.iterdir()} == {"0o600"}
    for secret in (SECRET, STORAGE_KEY):
        assert secret not in result.output and secret not in json.dumps(cluster.to_json())
        for path in [*Path(airflow_env["AIRFLOW_HOME"]).rglob("*"), *home.rglob("*")]:
            if path.is_file() and vault not in path.parents:
                assert secret.encode() not in path.read_bytes(), path


def test_follow_logs_off_waits_without_reading_the_jobs_files(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BATCHAI_HOME", str(home))
    service = Service.embedded(home)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    spec = {"nodeCount": 1, "customToolkitSettings": {"commandLine": "echo hello"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"}
    service.create_job("c", "quiet", load_job_spec(spec, environ={}), "e")
    for follow_logs, expected in ((False, []), (True, ["[stdout.txt] hello"])):
        operator = BatchAISubmitJobOperator(
            task_id="submit", cluster_name="c", experiment="e", spec={}, follow_logs=follow_logs, poll_interval=0.2
        )
        caplog.clear()
        with caplog.at_level("INFO", logger="airflow_batchai.job_output"):
            assert operator.follow("quiet")["executionState"] == "succeeded"
        assert [r.getMessage() for r in caplog.records if r.name == "airflow_batchai.job_output"] == expected
