"""Clusters share one pool of nodes. Without a controller, a cluster's passes run only when someone looks
at it, so an autoscale cluster whose idle time is up keeps its nodes until then; a job elsewhere that
waits for nodes must not wait forever for a look nobody takes."""

from __future__ import annotations

from pathlib import Path

from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, wait_until

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


def test_the_head_of_the_queue_says_what_it_waits_for_and_who_holds_the_nodes(home: Path) -> None:
    service = Service.embedded(home, nodes=1)
    service.create_cluster("busy", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    service.create_job("busy", "long", load_job_spec({"properties": custom_job("sleep 60")}, environ={}), "e")
    wait_until(lambda: service.show_job("long", "e").execution_state == "running", 60, 0.2, what="the pool's one node busy")
    service.create_cluster("nc6", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    for name in ("first", "second"):
        service.create_job("nc6", name, load_job_spec({"properties": custom_job("true")}, environ={}), "e")
    why = wait_until(lambda: service.show_job("first", "e").execution_info.queue_reason, 30, 0.2, what="the head's reason")
    assert (
        why
        == "waits for 1 idle node(s) of cluster nc6, which has 0 idle; the pool's other nodes are held by cluster default/busy (1 running)"
    )
    assert service.show_job("second", "e").execution_info.queue_reason is None, "one write, for the head only: the rest wait behind it"
    service.terminate_job("long", "e")
    service.resize_cluster("busy", 0)  # its node goes back to the pool
    assert service.wait_job("first", "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    assert service.show_job("first", "e").execution_info.queue_reason is None, "shown only while it waits"
