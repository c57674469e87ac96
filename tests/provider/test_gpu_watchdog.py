"""The idle-GPU watchdog (``properties.utilizationPolicy``, ours): a job whose GPUs all stay below the threshold for
the window fails GpuUnderutilized; one that uses them runs on. There is no GPU here: a stand-in ``nvidia-smi`` first on
PATH answers the two queries the provider makes (node discovery's GPU list, the agent's utilization samples) in
nvidia-smi's CSV format, with the utilization a test writes into a file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.settings import Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until


def watched(command: str, minimum: float, window: str) -> object:
    policy = {"minGpuUtilization": minimum, "timeWindow": window}
    return load_job_spec({"properties": custom_job(command, utilizationPolicy=policy)}, environ={})


def service_with_one_node(home: Path) -> Service:
    service = Service.embedded(home, nodes=1)
    service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
    wait_until(lambda: service.show_cluster("gpu").idle_nodes() == 1, 60, 0.1, what="the node set up")
    return service


def test_a_job_whose_gpus_stay_idle_for_the_window_fails_gpu_underutilized(gpus: Path, tmp_path: Path) -> None:
    gpus.write_text("3\n0\n")
    service = service_with_one_node(tmp_path / "home")
    try:
        assert [n.gpus for n in service.pool_nodes()] == [2], "node discovery found the stand-in's two GPUs"
        service.create_job("gpu", "idle", watched("sleep 60", 10, "PT3S"), "e")  # type: ignore[arg-type]
        done = service.wait_job("idle", "e", timeout_s=30, poll_s=0.2)
        assert done.execution_state == "failed"
        [error] = done.execution_info.errors or []
        assert error.code == "GpuUnderutilized"
        assert "below 10% utilization for PT3S" in error.message and "the highest seen in that time: 3%" in error.message
        ran_s = (done.execution_info.end_time - done.execution_info.start_time).total_seconds()  # type: ignore[operator]
        assert 3 <= ran_s <= 3 + 2 + 3, "within the window plus a sample and a pass"
    finally:
        kill_agents_under(tmp_path / "home")


def test_the_connections_policy_watches_jobs_that_set_none(gpus: Path, tmp_path: Path) -> None:
    from airflow_batchai.config import connection_config, service_from_config

    gpus.write_text("0\n0\n")
    extras = {"home": str(tmp_path / "home"), "local_nodes": 1, "utilization_policy": {"min_gpu_utilization": 5, "time_window": "PT2S"}}
    service = service_from_config(connection_config(extras, "connection c"))
    try:
        service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
        service.create_job("gpu", "forgot", load_job_spec({"properties": custom_job("sleep 60")}, environ={}), "e")
        done = service.wait_job("forgot", "e", timeout_s=60, poll_s=0.2)
        assert done.execution_state == "failed" and (done.execution_info.errors or [])[0].code == "GpuUnderutilized"
        with pytest.raises(BatchAIError, match=r"field utilization_policy\.time_window"):
            connection_config({**extras, "utilization_policy": {"min_gpu_utilization": 5, "time_window": "never"}}, "connection c")
    finally:
        kill_agents_under(tmp_path / "home")


def test_a_job_that_uses_its_gpus_runs_on(gpus: Path, tmp_path: Path) -> None:
    gpus.write_text("80\n5\n")  # one busy GPU is enough: not every GPU is idle
    service = service_with_one_node(tmp_path / "home")
    try:
        service.create_job("gpu", "busy", watched("sleep 5", 10, "PT2S"), "e")  # type: ignore[arg-type]
        done = service.wait_job("busy", "e", timeout_s=60, poll_s=0.2)
        assert done.execution_state == "succeeded", done.execution_info
    finally:
        kill_agents_under(tmp_path / "home")


def test_a_policy_on_nodes_without_gpus_is_refused_at_submit_and_a_bad_one_names_its_field(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has GPUs")
    service = service_with_one_node(tmp_path / "home")
    try:
        with pytest.raises(BatchAIError, match=r"nodes have no GPUs .*\(at properties\.utilizationPolicy\)"):
            service.create_job("gpu", "j", watched("true", 10, "PT1M"), "e")  # type: ignore[arg-type]
        service.create_job("gpu", "plain", load_job_spec({"properties": custom_job("true")}, environ={}), "e")  # no policy: runs
        assert service.wait_job("plain", "e", timeout_s=60, poll_s=0.1).execution_state == "succeeded"  # and ends before the test
        for bad, said in [(150, "less than or equal to 100"), ("ten", "must be a number of percent")]:
            with pytest.raises(BatchAIError, match=f"utilizationPolicy.minGpuUtilization.*{said}"):
                watched("true", bad, "PT1M")  # type: ignore[arg-type]
        with pytest.raises(BatchAIError, match=r"utilizationPolicy.timeWindow.*not a duration"):
            watched("true", 10, "soon")
    finally:
        kill_agents_under(tmp_path / "home")


def test_the_agent_samples_a_jobs_gpus_cpu_memory_and_disk_into_curves_the_job_page_draws(gpus: Path, tmp_path: Path) -> None:
    from airflow_batchai.overview import job_details
    from airflow_batchai.service import Settings
    from airflow_batchai.ui import pages

    gpus.write_text("42, 1000, 16000\n7, 8000, 16000\n")
    service = Service.embedded(tmp_path / "home", nodes=1, settings=Settings(resource_sample_s=0.3))
    try:
        service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
        service.create_job(
            "gpu", "curves", load_job_spec({"properties": custom_job("head -c 3000000 /dev/zero > big; sleep 2")}, environ={}), "e"
        )
        assert service.wait_job("curves", "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
        [series] = job_details(service, "default", "e", "curves")["resources"]
        points = series["points"]
        assert series["node"] == "local-0" and len(points) >= 3, series
        assert points[-1]["gpu"] == [42.0, 7.0] and points[-1]["gpuMem"] == [6.2, 50.0]
        assert all(0 <= p["cpu"] <= 100 and 0 < p["mem"] < 100 for p in points[1:]) and max(p["disk"] for p in points) >= 3_000_000
        html = pages.job_page(job_details(service, "default", "e", "curves"), "default", "e")
        assert "<svg" in html and "GPU utilization (%)" in html and "local-0 GPU 1: 7 % at" in html and "Job folder (MiB)" in html
    finally:
        kill_agents_under(tmp_path / "home")


def test_the_watchdog_and_the_resource_curves_share_one_nvidia_smi_query(gpus: Path, tmp_path: Path) -> None:
    gpus.write_text("80\n5\n")
    service = Service.embedded(tmp_path / "home", nodes=1, settings=Settings(resource_sample_s=1.0))
    try:
        service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
        service.create_job("gpu", "both", watched("sleep 5", 10, "PT4S"), "e")  # type: ignore[arg-type]  # samples every 1 s
        assert service.wait_job("both", "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
        raw = service.read_output_file("both", "resources-local-0.json", "e") or b"{}"
        points = len(json.loads(raw)["points"])
        queries = len((gpus.parent / "queries").read_text().splitlines())
        assert points >= 4 and queries <= points + 2, f"{queries} nvidia-smi queries for {points} samples: the watchdog asked again"
    finally:
        kill_agents_under(tmp_path / "home")
