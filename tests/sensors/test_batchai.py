"""Sensors in real DAG runs: a job sensor that succeeds, one that fails with the job's stderr, a cluster sensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_dag, write_dag

SENSOR_DAG = """
from __future__ import annotations
from airflow.sdk import dag
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator
from airflow_batchai.sensors.batchai import BatchAIClusterSensor, BatchAIJobSensor


@dag(dag_id="{dag_id}", schedule=None, catchup=False)
def the_dag():
    cluster = BatchAICreateClusterOperator(task_id="cluster", cluster_name="c", spec={{"scaleSettings": {{"manual": {{"targetNodeCount": 2}}}}}})
    ready = BatchAIClusterSensor(task_id="cluster_ready", cluster_name="c", min_idle_nodes=2, poke_interval=0.5, timeout=60, deferrable={deferrable})
    submit = BatchAISubmitJobOperator(
        task_id="submit", cluster_name="c", job_name="sensed", wait_for_completion=False,
        spec={{"nodeCount": 1, "customToolkitSettings": {{"commandLine": {command!r}}}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR"}},
    )
    wait = BatchAIJobSensor(task_id="wait", job_name="sensed", poke_interval=0.5, timeout=120, deferrable={deferrable})
    cluster >> ready >> submit >> wait


the_dag()
"""


@pytest.mark.parametrize("deferrable", [False, True], ids=["poking", "deferrable"])
def test_job_sensor_waits_for_success(airflow_env: dict[str, str], tmp_path: Path, home: Path, deferrable: bool) -> None:
    dag_id = f"sensor_ok_{deferrable}".lower()
    command = "echo step-1; sleep 1.5; echo step-2 >&2; sleep 1; echo done"
    dags = write_dag(tmp_path / "dags", dag_id, SENSOR_DAG.format(dag_id=dag_id, command=command, deferrable=deferrable))
    result = run_dag(airflow_env, dags, dag_id, home)
    assert result.state == "success", result.output[-3000:]
    assert "job sensed is running" in result.output or "job sensed is queued" in result.output or deferrable
    assert "job sensed succeeded" in result.output
    for line in ("[stdout.txt] step-1", "[stderr.txt] step-2", "[stdout.txt] done"):  # the job's output, followed by the sensor
        assert result.output.count(line) == 1, (line, result.output[-3000:])


def test_job_sensor_fails_with_the_job_error_and_stderr_tail(airflow_env: dict[str, str], tmp_path: Path, home: Path) -> None:
    source = SENSOR_DAG.format(dag_id="sensor_failed", command="echo 'CUDA error: out of memory' >&2; exit 2", deferrable=False)
    result = run_dag(airflow_env, write_dag(tmp_path / "dags", "sensor_failed", source), "sensor_failed", home)
    assert result.state == "failed"
    assert "Batch AI job sensed failed: JobFailed" in result.output and "(exit code 2)" in result.output
    assert "[stderr.txt] CUDA error: out of memory" in result.output


def test_a_poke_while_storage_is_frozen_is_not_an_answer_and_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection points at a listener that never answers (Azurite under SIGSTOP): each store call gives
    up within its deadline, and the poke says "not yet" so the sensor's own timeout bounds the wait."""
    import json
    import socket
    import time

    from airflow_batchai.sensors.batchai import BatchAIJobSensor
    from tests.azurite import KEY

    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)
        endpoint = f"http://127.0.0.1:{frozen.getsockname()[1]}/devstoreaccount1"
        extra = {
            "storage_connection_string": f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint={endpoint};"
        }
        monkeypatch.setenv("AIRFLOW_CONN_FROZEN_STORAGE", json.dumps({"conn_type": "batchai", "extra": extra}))
        sensor = BatchAIJobSensor(task_id="wait", job_name="j", batchai_conn_id="frozen_storage", poke_interval=1, timeout=60)
        started = time.monotonic()
        answer = sensor.poke({})  # type: ignore[arg-type]
    assert answer.is_done is False and time.monotonic() - started < 16


def test_a_sensor_started_from_the_trigger_refuses_a_job_name_the_triggerer_cannot_render() -> None:
    from airflow_batchai.sensors.batchai import BatchAIJobSensor

    with pytest.raises(ValueError, match=r"wait: job_name .* pulls an XCom, which the triggerer cannot render"):
        BatchAIJobSensor(task_id="wait", job_name="{{ ti.xcom_pull(task_ids='submit')['name'] }}", deferrable=True, start_from_trigger=True)
    with pytest.raises(ValueError, match="start_from_trigger needs deferrable=True"):
        BatchAIJobSensor(task_id="wait", job_name="j", start_from_trigger=True)
    sensor = BatchAIJobSensor(task_id="wait", job_name="j-{{ params.tag }}", deferrable=True, start_from_trigger=True, timeout=60)
    args = sensor.start_trigger_args
    assert (
        args.trigger_cls == "airflow_batchai.triggers.batchai.BatchAIJobTrigger" and args.trigger_kwargs["job_name"] == "j-{{ params.tag }}"
    )
    assert args.timeout.total_seconds() == 60 and BatchAIJobSensor.start_trigger_args.trigger_cls == "", "the class default is untouched"
