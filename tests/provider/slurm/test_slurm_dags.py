"""Airflow DAGs on a Slurm connection (real `airflow dags test`, real Slurm): the same DAG files as on
the embedded default, with only the ``batchai_default`` connection changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import connection_config, service_from_config
from tests.conftest import REPO, run_dag
from tests.operators.test_batchai import VARIABLES, job_dag


def on_slurm(airflow_env: dict[str, str], slurm_cluster: Any, home: Path) -> dict[str, str]:
    """Airflow's environment with ``batchai_default`` on the test partition, records and node roots under ``home``."""
    extra = {**slurm_cluster.connection(home.parent / "slurm"), "home": str(home)}
    connection = json.dumps({"conn_type": "batchai", "extra": extra})
    return {**airflow_env, **slurm_cluster.env, **VARIABLES, "AIRFLOW_CONN_BATCHAI_DEFAULT": connection}


def test_a_failing_job_on_slurm_fails_the_task_with_its_exit_code_and_stderr_tail(
    airflow_env: dict[str, str], slurm_cluster: Any, tmp_path: Path, home: Path
) -> None:
    dags, _ = job_dag(tmp_path, "slurm_failure", "echo 'loading data'; echo 'ValueError: bad shape (3, 4)' >&2; exit 3")
    result = run_dag(on_slurm(airflow_env, slurm_cluster, home), dags, "slurm_failure", home)
    assert result.state == "failed", result.output[-3000:]
    assert "JobFailed" in result.output and "(exit code 3)" in result.output, result.output[-3000:]
    assert "last lines of stderr:" in result.output and "[stderr.txt] ValueError: bad shape (3, 4)" in result.output
    for secret in VARIABLES.values():
        assert secret not in result.output


@pytest.mark.slow
def test_the_distributed_example_dag_runs_across_two_hosts_through_a_login_node(
    airflow_env: dict[str, str], slurm_on_hosts: Any, home: Path
) -> None:
    """The DDP example DAG, its two ranks on slurmds in two network namespaces, sbatch over SSH."""
    pytest.importorskip("torch")
    extra = {**slurm_on_hosts.connection(home.parent / "slurm"), "home": str(home)}
    env = {k: v for k, v in airflow_env.items() if k != "SLURM_CONF"}  # Slurm's commands run on the login host only
    env["AIRFLOW_CONN_BATCHAI_DEFAULT"] = json.dumps({"conn_type": "batchai", "extra": extra})
    result = run_dag(env, REPO / "dags", "batchai_distributed_pytorch", home, conf={"nodes": 2, "epochs": 1})
    assert result.state == "success", result.output[-4000:]
    for rank in (0, 1):
        assert f"[stdout-{rank}.txt] rank {rank}: all_reduce sum = 3 (expected 3)" in result.output
    service = service_from_config(connection_config(extra, "connection"))
    [job] = service.list_jobs("ddp", "distributed")
    record = service.store.read(f"jobs/distributed/ddp/{job.name}")
    assert record is not None and record.data["slurm_job_id"] and record.data["nodes"] == ["node1", "node2"]
