"""The plan and status documents round-trip exactly through the protocol's classes, or are refused by name."""

from __future__ import annotations

import json

import pytest

from airflow_batchai.agent.protocol import AgentPlan, AgentStatus, ProtocolError, RunState
from airflow_batchai.data.links import Link
from airflow_batchai.launch import JobContext, NodeSlot, job_plans, setup_plan
from airflow_batchai.spec import load_job_spec
from tests.conftest import DATA

NODES = [NodeSlot("n0", "10.0.0.4", "/r/n0", 1), NodeSlot("n1", "10.0.0.5", "/r/n1", 1)]


@pytest.mark.parametrize("path", sorted(p.name for p in (DATA / "recipes").glob("*job.json")))
def test_every_recipes_plans_round_trip_through_json(path: str) -> None:
    spec = load_job_spec(json.loads((DATA / "recipes" / path).read_text()), storage_account_name="acct", environ={})
    nodes = [NodeSlot(f"n{i}", f"10.0.0.{i + 4}", f"/r/n{i}", 1) for i in range(spec.node_count)]
    job_uuid = "0f0f0f0f-1111-2222-3333-444444444444"
    ctx = JobContext("ws", "exp", "job", job_uuid, "seg", f"{job_uuid}-0", [Link("logs", "/storage/logs")], f"/shared/{job_uuid}-0")
    for plan in job_plans(spec, nodes, ctx):
        assert AgentPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_a_setup_plan_round_trips_too() -> None:
    plan = setup_plan(NODES[0], setup_command="echo hi", setup_env={"A": "1"}, stdouterr_template_path=None, cluster_links=[])
    assert AgentPlan.from_json(plan.to_json()) == plan and plan.tasks[0].name == "setup task"


def test_a_document_with_a_field_no_class_knows_or_without_a_required_one_is_refused() -> None:
    plan = setup_plan(NODES[0], setup_command="true", setup_env={}, stdouterr_template_path=None, cluster_links=[]).to_json()
    with pytest.raises(ProtocolError, match=r"AgentPlan.tasks\[0\]: unknown field\(s\) error_code"):
        AgentPlan.from_json({**plan, "tasks": [{**plan["tasks"][0], "error_code": "X"}]})
    with pytest.raises(ProtocolError, match=r"AgentPlan.node_id: missing"):
        AgentPlan.from_json({key: value for key, value in plan.items() if key != "node_id"})
    with pytest.raises(ProtocolError, match=r"AgentPlan.hostfile: expected an object"):
        AgentPlan.from_json({**plan, "hostfile": ["not", "an", "object"]})


def test_a_status_knows_whether_it_is_final() -> None:
    running = AgentStatus.from_json({"state": "running", "pid": 7, "heartbeat": 1.0, "start_time": 1.0, "pgids": [7]})
    ended = AgentStatus.from_json({**running.to_json(), "state": "terminated", "exit_code": -1, "end_time": 2.0})
    assert not running.final and ended.final and ended.state == RunState.TERMINATED
    assert [state.value for state in RunState if state.is_final] == ["succeeded", "failed", "terminated"]
