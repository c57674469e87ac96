"""What the Batch AI view shows, from the embedded default's records."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batchai import overview as view
from airflow_batchai.reading.outputs import OutputFiles
from airflow_batchai.records import JobOrigin
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.ui import pages
from tests.conftest import custom_job, kill_agents_under, wait_until
from tests.provider.test_gpu_watchdog import service_with_one_node


def test_the_overview_has_clusters_nodes_and_jobs_newest_first_and_a_job_has_its_stream_files(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.create_cluster(
        "c", load_cluster_spec({"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={})
    )
    for name in ("first", "second"):
        service.create_job("c", name, load_job_spec({"properties": custom_job(f"echo {name}")}, environ={}), "e")
        assert service.wait_job(name, "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    reads: list[str] = []
    read_many = service.store.read_many
    monkeypatch.setattr(service.store, "read_many", lambda prefix: reads.append(prefix) or read_many(prefix))
    data = view.overview(service)
    assert reads == ["clusters/", "pool/", "jobs/"], "three listings, however many records"
    [cluster] = data["clusters"]
    assert (cluster["name"], cluster["vmSize"], cluster["targetNodeCount"], cluster["workspace"]) == ("c", "STANDARD_NC6", 1, "default")
    assert cluster["nodeStateCounts"]["idleNodeCount"] == 1
    assert sorted(n["nodeId"] for n in data["nodes"]) == ["local-0", "local-1"]
    assert [j["name"] for j in data["jobs"]] == ["second", "first"] and data["jobCount"] == 2
    assert data["jobs"][0]["executionState"] == "succeeded" and data["jobs"][0]["exitCode"] == 0

    details = view.job_details(service, "default", "e", "first")
    assert details["job"]["name"] == "first"
    assert [f["name"] for f in details["files"]] == ["execution.log", "stderr.txt", "stdout.txt"]


def test_jobs_come_in_pages_newest_first_filtered_by_experiment_cluster_and_state(service: Service) -> None:
    for name in ("c", "d"):
        service.create_cluster(name, load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
    for index in range(5):
        service.create_job("c", f"j{index}", load_job_spec({"properties": custom_job("true")}, environ={}), "e")
    service.create_job("d", "other", load_job_spec({"properties": custom_job("true")}, environ={}), "f")
    service.terminate_job("j0", "e")
    first = view.overview(service, limit=3)
    assert [j["name"] for j in first["jobs"]] == ["other", "j4", "j3"] and first["jobCount"] == 6
    second = view.overview(service, offset=3, limit=3)
    assert [j["name"] for j in second["jobs"]] == ["j2", "j1", "j0"], "the page after the newest"
    assert [j["name"] for j in view.overview(service, experiment="f")["jobs"]] == ["other"]
    assert [j["name"] for j in view.overview(service, cluster="c", limit=2)["jobs"]] == ["j4", "j3"]
    failed = view.overview(service, state="failed")
    assert [j["name"] for j in failed["jobs"]] == ["j0"] and failed["jobCount"] == 1
    assert first["choices"]["experiment"] == ["e", "f"] and first["choices"]["cluster"] == ["c", "d"]
    assert "queued" in first["choices"]["state"]


def test_opening_the_view_on_an_empty_home_creates_nothing(home: Path) -> None:
    reader = Service.embedded(home, nodes=2)
    data = view.overview(reader)
    assert data["clusters"] == [] and data["jobs"] == [] and data["jobCount"] == 0
    assert not home.exists(), f"the read-only view wrote {sorted(str(p) for p in home.rglob('*'))}"


def test_a_running_jobs_gpus_show_on_the_overview_as_last_sampled(gpus: Path, tmp_path: Path) -> None:
    gpus.write_text("87, 4000, 16160\n41, 2000, 16160\n")  # the stand-in nvidia-smi (no GPU here)
    service = service_with_one_node(tmp_path / "home")
    try:
        service.create_job("gpu", "busy", load_job_spec({"properties": custom_job("sleep 60")}, environ={}), "e")
        wait_until(lambda: view.overview(service)["jobs"][0]["gpuNow"] == [87.0, 41.0], 30, 0.3, what="the job's GPUs sampled")
        html = pages.overview_page(view.overview(service))
        assert 'title="GPU 0: 87%, GPU 1: 41%">64%</span>' in html, "the mean, every GPU on hover"
        service.terminate_job("busy", "e")
        assert service.wait_job("busy", "e", timeout_s=30, poll_s=0.2).execution_state == "failed"
        assert view.overview(service)["jobs"][0]["gpuNow"] is None, "only running jobs are sampled"
    finally:
        kill_agents_under(tmp_path / "home")


def test_a_failed_jobs_page_has_its_stderr_tail_outputs_command_and_the_task_that_submitted_it(service: Service, tmp_path: Path) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    command = "mkdir -p $AZ_BATCHAI_OUTPUT_MODEL/ckpt && echo weights > $AZ_BATCHAI_OUTPUT_MODEL/model.bin && echo 'ValueError: bad shape' >&2 && exit 3"
    outputs = {"outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}]}
    origin = JobOrigin(dag_id="train_dag", run_id="manual__2026-12-07T10:00:00+00:00", task_id="submit", try_number=2)
    spec = load_job_spec({"properties": custom_job(command, **outputs)}, environ={})
    service.create_job("c", "broken", spec, "e", origin=origin)
    assert service.wait_job("broken", "e", timeout_s=60, poll_s=0.2).execution_state == "failed"
    details = view.job_details(service, "default", "e", "broken")
    assert "ValueError: bad shape" in details["stderrTail"]
    [model] = details["outputs"]
    assert model["id"] == "MODEL" and {(f["name"], f["type"]) for f in model["files"]} == {("ckpt", "directory"), ("model.bin", "file")}
    assert details["toolkit"] == {"commandLine": command} and details["nodes"] and details["attempts"] == []
    assert details["origin"]["dag_id"] == "train_dag" and details["origin"]["try_number"] == 2
    found = service.job_of_task("train_dag", "manual__2026-12-07T10:00:00+00:00", "submit")
    assert found is not None and found.name == "broken", "the task instance's view finds the job it submitted"
    assert service.job_of_task("train_dag", "manual__2026-12-07T10:00:00+00:00", "other_task") is None
    retry = origin.model_copy(update={"try_number": 3})  # a later try submitted a job of its own
    service.create_job("c", "broken-again", spec, "e", origin=retry)
    found = service.job_of_task("train_dag", "manual__2026-12-07T10:00:00+00:00", "submit")
    assert found is not None and found.name == "broken-again", "the newest try's job"

    html = pages.job_page(details, "default", "e", terminate=None)
    assert "ValueError: bad shape" in html and "model.bin" in html and "Terminate" not in html
    assert 'href="/dags/train_dag/runs/manual__2026-12-07T10%3A00%3A00%2B00%3A00/tasks/submit"' in html


def test_a_long_ended_jobs_page_reads_its_curves_and_samples_once(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("c", "done", load_job_spec({"properties": custom_job("sleep 1")}, environ={}), "e")
    assert service.wait_job("done", "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    monkeypatch.setattr(view, "SETTLE_S", 0.0)  # as if it ended minutes ago: all its files are in storage
    first = view.job_details(service, "default", "e", "done")
    assert first["resources"] and first["resources"][0]["points"]
    reads: list[str] = []
    monkeypatch.setattr(OutputFiles, "read", lambda self, output, path, *rest: reads.append(path) or b"{}")
    records: list[str] = []
    read_record = service.store.read
    monkeypatch.setattr(service.store, "read", lambda key: records.append(key) or read_record(key))
    again = view.job_details(service, "default", "e", "done")
    assert again["resources"] == first["resources"] and reads == [], "nothing read again but what the page lists"
    assert records.count("jobs/default/e/done") == 1, f"the job's record is read once: {records}"
