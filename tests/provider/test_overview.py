"""What the Batch AI view shows, from the embedded default's records."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batchai import overview as view
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job


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


def test_a_page_of_many_jobs_shows_the_newest(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view, "MAX_JOBS_SHOWN", 3)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
    for index in range(5):
        service.create_job("c", f"j{index}", load_job_spec({"properties": custom_job("true")}, environ={}), "e")
    data = view.overview(service)
    assert [j["name"] for j in data["jobs"]] == ["j4", "j3", "j2"] and data["jobCount"] == 5


def test_opening_the_view_on_an_empty_home_creates_nothing(home: Path) -> None:
    reader = Service.embedded(home, nodes=2)
    data = view.overview(reader)
    assert data["clusters"] == [] and data["jobs"] == [] and data["jobCount"] == 0
    assert not home.exists(), f"the read-only view wrote {sorted(str(p) for p in home.rglob('*'))}"
