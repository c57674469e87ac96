"""Read models: typed attributes for callers, and to_json() is the JSON Batch AI returned."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_batchai.reading.readmodels import cluster_view, job_view
from airflow_batchai.records import AllocationState, ClusterRecord, ExecutionState, JobRecord, NodeState, NodeSummary, spec_hash
from airflow_batchai.secretfields import split_cluster_secrets, split_job_secrets
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)


def job_record(**changes: object) -> JobRecord:
    body = {**custom_job("python train.py"), "secrets": [{"name": "TOKEN", "value": "s3cr3t"}]}
    stored, _ = split_job_secrets(load_job_spec({"properties": body}, environ={}))
    fields = {"workspace": "ws", "experiment": "exp", "name": "train", "uuid": "u-1", "cluster": "gpu", "spec": stored}
    fields |= {
        "spec_hash": spec_hash(stored),
        "creation_time": NOW,
        "execution_state_transition_time": NOW,
        "segment": "sub/rg/ws/exp/train/u-1",
    }
    return JobRecord.model_validate({**fields, **changes})


def test_a_job_reads_as_attributes_and_dumps_as_batch_ai_json() -> None:
    error = {"code": "JobFailed", "message": "exit code 3", "details": [{"name": "node", "value": "n0"}]}
    view = job_view(job_record(execution_state="failed", exit_code=3, errors=[error], end_time=NOW), "sub", "rg")
    assert view.execution_state == ExecutionState.FAILED and view.finished
    assert view.execution_info.exit_code == 3 and view.execution_info.errors and view.execution_info.errors[0].code == "JobFailed"
    assert view.cluster_name == "gpu" and view.node_count == 1 and view.tool_type == "custom"
    shown = view.to_json()
    assert shown["id"] == "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/experiments/exp/jobs/train"
    assert shown["executionState"] == "failed" and shown["creationTime"] == "2026-12-07T08:00:00Z"
    assert shown["executionInfo"] == {
        "startTime": None,  # Batch AI's nulls stay: the SDK reads them as None
        "endTime": "2026-12-07T08:00:00Z",
        "exitCode": 3,
        "errors": [error],  # an error's details as it had them
        "attempts": None,
    }
    assert shown["secrets"] == [{"name": "TOKEN"}] and "s3cr3t" not in str(shown)  # the spec as submitted, its values removed
    assert "containerSettings" not in shown, "a spec field nobody set stays out"


def test_a_cluster_counts_its_nodes_by_state_and_names_its_errors() -> None:
    stored, _ = split_cluster_secrets(load_cluster_spec({"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 2}}}))
    nodes = [
        NodeSummary(node_id="n0", address="10.0.0.4", state=NodeState.IDLE),
        NodeSummary(node_id="n1", address="10.0.0.5", state=NodeState.UNUSABLE, errors=[{"code": "NodeSetupFailed", "message": "exit 9"}]),
        NodeSummary(node_id="n2", address="10.0.0.6", state=NodeState.LEAVING),
    ]
    record = ClusterRecord(
        workspace="ws",
        name="gpu",
        uuid="c-1",
        spec=stored,
        spec_hash=spec_hash(stored),
        creation_time=NOW,
        provisioning_state_transition_time=NOW,
        allocation_state=AllocationState.RESIZING,
        allocation_state_transition_time=NOW,
        nodes=nodes,
    )
    view = cluster_view(record, "sub", "rg")
    assert view.allocation_state == AllocationState.RESIZING and view.current_node_count == 2  # a leaving node no longer counts
    assert (view.node_state_counts.idle_node_count, view.node_state_counts.unusable_node_count) == (1, 1)
    assert view.errors and [e.code for e in view.errors] == ["NodeSetupFailed"] and view.vm_size == "STANDARD_NC6"
    assert (view.nodes[0].node_id, view.nodes[0].ip_address, view.nodes[0].state) == ("n0", "10.0.0.4", NodeState.IDLE)
    shown = view.to_json()
    assert shown["nodeStateCounts"]["leavingNodeCount"] == 1 and shown["scaleSettings"]["manual"]["targetNodeCount"] == 2
    assert shown["nodes"][1] == {"nodeId": "n1", "ipAddress": "10.0.0.5", "state": "unusable"}


def test_a_queued_job_says_why_it_waits_where_its_scheduler_says_and_a_running_one_does_not() -> None:
    waiting = job_view(job_record(queue_reason="Slurm job 9 is PENDING: Resources"), "sub", "rg")
    assert waiting.execution_info.queue_reason == "Slurm job 9 is PENDING: Resources"
    assert waiting.to_json()["executionInfo"]["queueReason"] == "Slurm job 9 is PENDING: Resources"  # an extra property the SDK ignores
    running = job_view(job_record(queue_reason="stale", execution_state="running", start_time=NOW), "sub", "rg")
    assert running.execution_info.queue_reason is None and "queueReason" not in running.to_json()["executionInfo"]
