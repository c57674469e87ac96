"""Clusters share one pool of nodes. Without a controller, a cluster's passes run only when someone looks
at it, so an autoscale cluster whose idle time is up keeps its nodes until then; a job elsewhere that
waits for nodes must not wait forever for a look nobody takes."""

from __future__ import annotations

from pathlib import Path

from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job

AUTOSCALE = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1, "initialNodeCount": 0, "idleSecondsBeforeScaledown": 1}}


def test_a_job_short_of_nodes_gets_those_that_other_clusters_keep_idle_past_their_time(home: Path) -> None:
    service = Service.embedded(home, nodes=2)
    for name in ("scoring", "retrain"):  # as the example DAGs leave them: one idle node each, the whole pool
        service.create_cluster(name, load_cluster_spec({"scaleSettings": AUTOSCALE}, environ={}))
        service.create_job(name, f"{name}-job", load_job_spec({"properties": custom_job("true")}, environ={}), "e")
        assert service.wait_job(f"{name}-job", "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    assert {n.cluster for n in service.pool_nodes()} == {"default/scoring", "default/retrain"}

    service.create_cluster("nc6", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("nc6", "quickstart", load_job_spec({"properties": custom_job("true")}, environ={}), "e")
    assert service.wait_job("quickstart", "e", timeout_s=45, poll_s=0.2).execution_state == "succeeded"
