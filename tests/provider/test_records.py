"""Every state change goes through one function per record type; illegal ones raise."""

from __future__ import annotations

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.records import JOB_TRANSITIONS, ExecutionState, JobRecord, NodeRecord, NodeState, move_job, move_node, utc_now


def a_job(state: ExecutionState = ExecutionState.QUEUED) -> JobRecord:
    now = utc_now()
    return JobRecord(
        workspace="ws", experiment="e", name="j", uuid="u", cluster="c", spec={}, spec_hash="h",
        creation_time=now, execution_state=state, execution_state_transition_time=now, segment="s",
    )  # fmt: skip


def test_a_job_runs_then_succeeds_with_start_and_end_times() -> None:
    running = move_job(a_job(), ExecutionState.RUNNING)
    assert running.start_time is not None and running.end_time is None
    done = move_job(running, ExecutionState.SUCCEEDED, exit_code=0)
    assert done.end_time is not None and done.exit_code == 0


@pytest.mark.parametrize("state", list(ExecutionState))
def test_every_illegal_job_transition_raises(state: ExecutionState) -> None:
    for target in ExecutionState:
        if target == state or target in JOB_TRANSITIONS[state]:
            move_job(a_job(state), target)
        else:
            with pytest.raises(BatchAIError, match=f"cannot go from {state.value} to {target.value}"):
                move_job(a_job(state), target)


def test_finished_jobs_never_move_again() -> None:
    for final in (ExecutionState.SUCCEEDED, ExecutionState.FAILED):
        assert JOB_TRANSITIONS[final] == set()


def test_terminating_only_ends_in_failed() -> None:
    terminating = move_job(move_job(a_job(), ExecutionState.RUNNING), ExecutionState.TERMINATING)
    with pytest.raises(BatchAIError):
        move_job(terminating, ExecutionState.SUCCEEDED)
    assert move_job(terminating, ExecutionState.FAILED).execution_state == ExecutionState.FAILED


def test_a_node_returning_to_the_pool_forgets_its_cluster_and_job() -> None:
    node = NodeRecord(node_id="n", address="127.0.0.1", root="/r", state_transition_time=utc_now())
    node = move_node(node, NodeState.PREPARING, cluster="ws/c")
    node = move_node(node, NodeState.IDLE)
    assert node.idle_since is not None
    node = move_node(node, NodeState.RUNNING, job="jobs/ws/e/j")
    with pytest.raises(BatchAIError, match="cannot go from running to free"):
        move_node(node, NodeState.FREE)
    node = move_node(move_node(node, NodeState.LEAVING), NodeState.FREE)
    assert (node.cluster, node.job, node.idle_since) == (None, None, None)


def test_a_spec_stored_before_todays_limits_still_loads_and_one_that_cannot_names_itself() -> None:
    """Records outlive releases: names and durations accepted when a job was stored stay readable."""
    from airflow_batchai.errors import BatchAIError
    from airflow_batchai.records import JobRecord, spec_hash

    def stored(spec: dict) -> JobRecord:
        now = "2026-01-01T00:00:00+00:00"
        fields = {"workspace": "w", "experiment": "e", "name": "old", "uuid": "u", "cluster": "c", "segment": "s"}
        return JobRecord.model_validate(
            {**fields, "spec": spec, "spec_hash": spec_hash(spec), "creation_time": now, "execution_state_transition_time": now}
        )

    old = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "true"},
        "stdOutErrPathPrefix": "/x",
        "environmentVariables": [{"name": "MY-VAR", "value": "1"}],
        "constraints": {"maxWallClockTime": "P1000D"},
        "secrets": [{"name": "TOKEN"}],  # its value lives in the vault, not the record
    }
    assert stored(old).parsed_spec().environment_variables[0].name == "MY-VAR"
    with pytest.raises(BatchAIError, match="stored spec no longer loads: nodeCount") as raised:
        stored({**old, "nodeCount": 5000}).parsed_spec()
    assert raised.value.code == "InvalidSpec"  # the planner skips this job alone; the rest of its cluster moves on
