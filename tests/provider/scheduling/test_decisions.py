"""The scheduling rules, decided from snapshots: no store, no node, no clock.

Each test builds a cluster as a pass would see it (records and what the agents report) and
checks the actions the planner takes, in order.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_batchai.agent.protocol import AgentStatus
from airflow_batchai.records import ClusterRecord, ExecutionState, JobRecord, NodeRecord, NodeState, spec_hash
from airflow_batchai.scheduling.decisions import (
    ClaimNode,
    DrainNode,
    EndJob,
    LaunchJob,
    Limits,
    NodeReady,
    NodeUnreachable,
    NodeUnusable,
    Observed,
    ProbeNode,
    ReleaseNode,
    RemoveNode,
    RequestNodes,
    StopMachine,
    StopRuns,
    plan_pass,
)
from airflow_batchai.scheduling.snapshot import Snapshot
from airflow_batchai.spec import load_cluster_spec, load_job_spec

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
LIMITS = Limits(heartbeat_timeout_s=30, launch_timeout_s=60)
MEMBER = "default/c"


def cluster(scale: dict[str, Any] | None = None, target: int = 2) -> ClusterRecord:
    spec = load_cluster_spec({"scaleSettings": scale or {"manual": {"targetNodeCount": target}}}, environ={}).to_json()
    return ClusterRecord(
        workspace="default",
        name="c",
        uuid="c-uuid",
        spec=spec,
        spec_hash=spec_hash(spec),
        creation_time=NOW - timedelta(hours=1),
        provisioning_state_transition_time=NOW,
        allocation_state_transition_time=NOW,
        target_node_count=target,
    )


def node(node_id: str, state: NodeState = NodeState.IDLE, job: str | None = None, **extra: Any) -> NodeRecord:
    member = None if state == NodeState.FREE else MEMBER
    return NodeRecord(
        node_id=node_id, address="10.0.0.1", root=f"/n/{node_id}", state=state, cluster=member, job=job, state_transition_time=NOW, **extra
    )


def job(
    name: str,
    state: ExecutionState = ExecutionState.QUEUED,
    nodes: list[str] | None = None,
    count: int = 1,
    age_s: float = 60,
    priority: str = "normal",
    toolkit: str = "pyTorchSettings",
) -> JobRecord:
    settings = {"pythonScriptFilePath": "train.py"} if toolkit == "pyTorchSettings" else {"commandLine": "true"}
    body = {"nodeCount": count, toolkit: settings, "stdOutErrPathPrefix": "/logs", "schedulingPriority": priority}
    spec = load_job_spec({"properties": body}, environ={})
    stored = spec.to_json()
    return JobRecord(
        workspace="default",
        experiment="e",
        name=name,
        uuid=f"{name}-uuid",
        cluster="c",
        spec=stored,
        spec_hash=spec_hash({"cluster": "c", **stored}),
        priority=spec.effective_priority,
        creation_time=NOW - timedelta(seconds=age_s),
        execution_state=state,
        execution_state_transition_time=NOW - timedelta(seconds=5),
        nodes=nodes or [],
        segment="seg",
    )


def snapshot(record: ClusterRecord, nodes: list[NodeRecord], jobs: list[JobRecord], eligible: set[str] | None = None) -> Snapshot:
    return Snapshot(
        cluster=record,
        nodes={n.node_id: n for n in nodes},
        jobs={j.key: j for j in jobs},
        eligible=frozenset(eligible if eligible is not None else {n.node_id for n in nodes}),
    )


def alive(state: str = "running", heartbeat_age_s: float = 1, **extra: Any) -> Observed:
    """What an agent reports: its status.json, last beaten ``heartbeat_age_s`` ago."""
    beat = NOW.timestamp() - heartbeat_age_s
    return Observed(status=AgentStatus(state=state, pid=100, heartbeat=beat, start_time=beat - 60, **extra))


def plan(snap: Snapshot, runs: dict | None = None, setups: dict | None = None, **kwargs: Any) -> Any:
    return plan_pass(snap, runs or {}, setups or {}, NOW, LIMITS, **kwargs)


def test_a_gang_job_waits_for_all_its_nodes_and_a_younger_small_job_does_not_jump_ahead() -> None:
    busy = job("busy", ExecutionState.RUNNING, ["n0"])
    big, small = job("big", count=2, age_s=120), job("small", age_s=10)
    snap = snapshot(cluster(), [node("n0", NodeState.RUNNING, busy.key), node("n1")], [busy, big, small])
    assert plan(snap, {("n0", busy.run_id): alive()}).actions == []


def test_higher_priority_goes_first_then_the_older_job() -> None:
    old, older, urgent = job("old", age_s=100), job("older", age_s=200), job("urgent", age_s=1, priority="high")
    actions = plan(snapshot(cluster(), [node("n0"), node("n1")], [old, older, urgent])).actions
    assert actions == [LaunchJob(urgent.key, ("n0",)), LaunchJob(older.key, ("n1",))]


def test_a_finished_run_frees_its_nodes_and_the_next_job_starts_in_the_same_pass() -> None:
    done = job("done", ExecutionState.RUNNING, ["n0", "n1"], count=2)
    waiting = job("waiting", count=2)
    snap = snapshot(cluster(), [node("n0", NodeState.RUNNING, done.key), node("n1", NodeState.RUNNING, done.key)], [done, waiting])
    runs = {("n0", done.run_id): alive("succeeded", exit_code=0), ("n1", done.run_id): alive("succeeded", exit_code=0)}
    actions = plan(snap, runs).actions
    assert actions == [
        ReleaseNode("n0"),
        ReleaseNode("n1"),
        EndJob(done.key, ExecutionState.SUCCEEDED, {"exit_code": 0, "errors": []}),
        LaunchJob(waiting.key, ("n0", "n1")),
    ]


def test_a_failed_rank_fails_the_job_with_its_exit_code_and_stops_the_other_ranks() -> None:
    training = job("training", ExecutionState.RUNNING, ["n0", "n1"], count=2)
    snap = snapshot(cluster(), [node("n0", NodeState.RUNNING, training.key), node("n1", NodeState.RUNNING, training.key)], [training])
    runs = {("n0", training.run_id): alive(), ("n1", training.run_id): alive("failed", exit_code=3)}
    actions = plan(snap, runs).actions
    assert actions[0] == StopRuns(training.key, training.run_id, ("n0",))
    end = actions[-1]
    assert isinstance(end, EndJob) and end.state == ExecutionState.FAILED and end.changes["exit_code"] == 3
    assert end.changes["errors"][0] == {"code": "JobFailed", "message": "Job failed with non-zero exit code on node n1"}


def test_a_silent_agent_makes_its_node_unusable_and_the_job_is_requeued() -> None:
    running = job("running", ExecutionState.RUNNING, ["n0"])
    snap = snapshot(cluster(), [node("n0", NodeState.RUNNING, running.key), node("n1")], [running])
    silent = alive(heartbeat_age_s=31)
    actions = plan(snap, {("n0", running.run_id): silent}).actions
    lost = actions[0]
    assert isinstance(lost, NodeUnusable) and lost.error["code"] == "NodeLost" and "no heartbeat for 30 s" in lost.error["message"]
    requeue = next(a for a in actions if isinstance(a, EndJob))
    assert requeue.state == ExecutionState.QUEUED and requeue.changes["attempt"] == 1 and requeue.changes["errors"][0]["code"] == "NodeLost"
    assert StopRuns(running.key, running.run_id, ("n0",)) in actions
    assert not any(isinstance(a, LaunchJob) for a in actions), "not beside the lost attempt, which may still run"
    fence = requeue.changes["fence"]
    assert fence["run"] == running.run_id and fence["nodes"] == ["n0"]
    queued = running.model_copy(update={"execution_state": ExecutionState.QUEUED, "nodes": [], "attempt": 1, "fence": fence})
    unusable = node("n0", NodeState.UNUSABLE, errors=[lost.error])
    snap = snapshot(cluster(), [unusable, node("n1")], [queued])
    assert plan(snap, {("n0", running.run_id): alive("terminated", exit_code=-1)}).actions[-1] == LaunchJob(running.key, ("n1",))


def test_a_lost_attempt_on_an_unreachable_node_holds_its_next_one_until_the_fence_time() -> None:
    """The stop cannot reach the node: only time says the lost run is over (its agent stops itself sooner)."""
    until = NOW + timedelta(seconds=LIMITS.fence_s)
    fenced = job("fenced").model_copy(update={"attempt": 1, "fence": {"run": "fenced-uuid-0", "nodes": ["n0"], "until": until.isoformat()}})
    other = job("other", age_s=1)
    snap = snapshot(cluster(), [node("n0", NodeState.UNUSABLE), node("n1")], [fenced, other])
    cut_off = {("n0", "fenced-uuid-0"): Observed(unreachable="connection refused")}
    assert plan(snap, cut_off).actions == [LaunchJob(other.key, ("n1",))], "the jobs behind it need not wait"
    later = plan_pass(snapshot(cluster(), [node("n0", NodeState.UNUSABLE), node("n1")], [fenced]), cut_off, {}, until, LIMITS)
    assert later.actions[-1] == LaunchJob(fenced.key, ("n1",))
    # With no controller renewing its agents' contact, nothing stops the lost run: no time lifts the fence.
    uncontrolled = Limits(heartbeat_timeout_s=30, launch_timeout_s=60, fence_s=None)
    much_later = until + timedelta(days=1)
    waiting = plan_pass(snapshot(cluster(), [node("n0", NodeState.UNUSABLE), node("n1")], [fenced]), cut_off, {}, much_later, uncontrolled)
    assert not any(isinstance(a, LaunchJob) for a in waiting.actions)
    seen_stopped = {("n0", "fenced-uuid-0"): alive("terminated", exit_code=-1)}
    back = plan_pass(
        snapshot(cluster(), [node("n0", NodeState.UNUSABLE), node("n1")], [fenced]), seen_stopped, {}, much_later, uncontrolled
    )
    assert back.actions[-1] == LaunchJob(fenced.key, ("n1",))


def test_with_deallocation_terminate_a_lost_node_fails_its_job() -> None:
    running = job("running", ExecutionState.RUNNING, ["n0"])
    record = cluster({"manual": {"targetNodeCount": 1, "nodeDeallocationOption": "terminate"}}, target=1)
    late = running.model_copy(update={"execution_state_transition_time": NOW - timedelta(seconds=61)})
    snap = snapshot(record, [node("n0", NodeState.RUNNING, late.key)], [late])
    actions = plan(snap, {("n0", late.run_id): Observed(status=None)}).actions
    end = next(a for a in actions if isinstance(a, EndJob))
    assert end.state == ExecutionState.FAILED and "its agent never started" in end.changes["errors"][0]["message"]


def test_an_unreachable_node_is_lost_only_once_it_stays_unreachable() -> None:
    running = job("running", ExecutionState.RUNNING, ["n0"])
    first = snapshot(cluster(target=1), [node("n0", NodeState.RUNNING, running.key)], [running])
    cut = {("n0", running.run_id): Observed(unreachable="cannot reach n0")}
    assert plan(first, cut).actions == [NodeUnreachable("n0")]
    still = node("n0", NodeState.RUNNING, running.key, unreachable_since=NOW - timedelta(seconds=31))
    actions = plan(snapshot(cluster(target=1), [still], [running]), cut).actions
    assert isinstance(actions[0], NodeUnusable) and "cannot reach n0" in actions[0].error["message"]


def test_autoscale_claims_eligible_free_nodes_for_what_is_queued_up_to_the_maximum() -> None:
    record = cluster({"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 2}}, target=0)
    free = [node(f"n{i}", NodeState.FREE) for i in range(4)]
    jobs = [job("a", count=2), job("b")]
    actions = plan(snapshot(record, free, jobs, eligible={"n1", "n2", "n3"})).actions
    assert actions == [ClaimNode("n1"), ClaimNode("n2")]


def test_autoscale_removes_idle_nodes_only_after_their_idle_time_down_to_zero() -> None:
    record = cluster({"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 2, "idleSecondsBeforeScaledown": 300}}, target=0)
    fresh = node("n0", idle_since=NOW - timedelta(seconds=100))
    lingering = node("n1", idle_since=NOW - timedelta(seconds=400))
    result = plan(snapshot(record, [fresh, lingering], []))
    assert result.actions == [RemoveNode("n1")] and result.target == 1
    assert result.next_due_s == 200  # a pass is due when n0's idle time runs out, with nobody reading
    later = plan(snapshot(record, [node("n0", idle_since=NOW - timedelta(seconds=301))], []))
    assert later.actions == [RemoveNode("n0")] and later.target == 0


def test_manual_scale_down_requeues_a_running_job_or_waits_for_it() -> None:
    running = job("running", ExecutionState.RUNNING, ["n0"])
    nodes = [node("n0", NodeState.RUNNING, running.key)]
    actions = plan(snapshot(cluster(target=0), nodes, [running]), {("n0", running.run_id): alive()}).actions
    assert actions[0] == StopRuns(running.key, running.run_id, ("n0",))
    requeue = next(a for a in actions if isinstance(a, EndJob))
    assert requeue.state == ExecutionState.QUEUED and actions[-1] == RemoveNode("n0")
    patient = cluster({"manual": {"targetNodeCount": 0, "nodeDeallocationOption": "waitforjobcompletion"}}, target=0)
    assert plan(snapshot(patient, nodes, [running]), {("n0", running.run_id): alive()}).actions == [DrainNode("n0")]
    leaving = [node("n0", NodeState.LEAVING, running.key)]
    done = {("n0", running.run_id): alive("succeeded", exit_code=0)}
    actions = plan(snapshot(patient, leaving, [running]), done).actions
    assert actions[0] == RemoveNode("n0") and actions[1].state == ExecutionState.SUCCEEDED  # type: ignore[union-attr]


def test_terminate_fails_a_queued_job_at_once_and_stops_a_running_one() -> None:
    queued, running = job("queued"), job("running", ExecutionState.RUNNING, ["n0"])
    error = {"code": "JobTerminated", "message": "by the user"}
    snap = snapshot(cluster(target=1), [node("n0", NodeState.RUNNING, running.key)], [queued, running])
    actions = plan(snap, {("n0", running.run_id): alive()}, terminations={queued.key: error, running.key: error}).actions
    assert actions == [
        EndJob(queued.key, ExecutionState.FAILED, {"errors": [error], "exit_code": None}),
        EndJob(running.key, ExecutionState.TERMINATING, {"errors": [error]}),
        StopRuns(running.key, running.run_id, ("n0",)),
    ]
    terminating = running.model_copy(update={"execution_state": ExecutionState.TERMINATING, "errors": [error]})
    snap = snapshot(cluster(target=1), [node("n0", NodeState.RUNNING, running.key)], [terminating])
    actions = plan(snap, {("n0", running.run_id): alive("terminated", exit_code=-15)}).actions
    assert actions == [ReleaseNode("n0"), EndJob(running.key, ExecutionState.FAILED, {"exit_code": -1, "errors": [error]})]


def test_node_setup_outcomes_decide_the_preparing_nodes() -> None:
    preparing = [node("ok", NodeState.PREPARING), node("bad", NodeState.PREPARING), node("mute", NodeState.PREPARING)]
    preparing[2] = preparing[2].model_copy(update={"state_transition_time": NOW - timedelta(seconds=61)})
    setups = {"ok": alive("succeeded"), "bad": alive("failed", error={"code": "NodeSetupFailed", "message": "exit 9"})}
    actions = plan(snapshot(cluster(target=3), preparing, []), setups=setups).actions
    assert actions[2] == NodeReady("ok")
    failed, mute = actions[0], actions[1]
    assert isinstance(failed, NodeUnusable) and "node setup failed on bad" in failed.error["message"]
    assert isinstance(mute, NodeUnusable) and "its setup agent never reported" in mute.error["message"]


def test_custom_toolkit_helper_nodes_are_released_when_the_first_node_is_done() -> None:
    custom = job("custom", ExecutionState.RUNNING, ["n0", "n1"], count=2, toolkit="customToolkitSettings")
    snap = snapshot(cluster(), [node("n0", NodeState.RUNNING, custom.key), node("n1", NodeState.RUNNING, custom.key)], [custom])
    actions = plan(snap, {("n0", custom.run_id): alive("succeeded", exit_code=0), ("n1", custom.run_id): alive()}).actions
    assert actions[0] == StopRuns(custom.key, custom.run_id, ("n1",))
    assert actions[-1] == EndJob(custom.key, ExecutionState.SUCCEEDED, {"exit_code": 0, "errors": []})


def test_nodes_booked_by_a_pass_that_died_before_the_job_was_written_are_released() -> None:
    queued = job("queued")
    booked = node("n0", NodeState.RUNNING, queued.key)  # nodes first, then the job: the pass died in between
    actions = plan(snapshot(cluster(target=1), [booked], [queued])).actions
    assert actions == [ReleaseNode("n0"), LaunchJob(queued.key, ("n0",))]


def test_a_job_whose_launch_died_before_its_plan_reached_the_node_runs_again_and_blames_no_node() -> None:
    launched = job("launched", ExecutionState.RUNNING, ["n0"]).model_copy(
        update={"execution_state_transition_time": NOW - timedelta(seconds=61)}
    )
    snap = snapshot(cluster(target=1), [node("n0", NodeState.RUNNING, launched.key)], [launched])
    actions = plan(snap, {("n0", launched.run_id): Observed(status=None, planned=False)}).actions
    assert not any(isinstance(a, NodeUnusable) for a in actions)
    requeue = next(a for a in actions if isinstance(a, EndJob))
    assert requeue.state == ExecutionState.QUEUED and requeue.changes["attempt"] == 1
    assert actions[-1] == LaunchJob(launched.key, ("n0",))


def test_a_job_no_rule_expects_is_skipped_and_the_rest_of_the_cluster_moves_on() -> None:
    """A terminating job whose launch never reached its node, a node lost while draining: each once raised mid-plan."""
    error = {"code": "JobTerminated", "message": "by the user"}
    stuck = job("stuck", ExecutionState.TERMINATING, ["n0"]).model_copy(
        update={"execution_state_transition_time": NOW - timedelta(seconds=61), "errors": [error]}
    )
    draining = job("draining", ExecutionState.RUNNING, ["n1"])
    waiting = job("waiting")
    patient = cluster({"manual": {"targetNodeCount": 3, "nodeDeallocationOption": "waitforjobcompletion"}}, target=3)
    nodes = [node("n0", NodeState.RUNNING, stuck.key), node("n1", NodeState.LEAVING, draining.key), node("n2")]
    silent = alive(heartbeat_age_s=31)
    runs = {("n0", stuck.run_id): Observed(status=None, planned=False), ("n1", draining.run_id): silent}
    result = plan(snapshot(patient, nodes, [stuck, draining, waiting]), runs)
    ended = {a.job: a for a in result.actions if isinstance(a, EndJob)}
    assert ended[stuck.key].state == ExecutionState.FAILED  # terminated, and nothing runs it: it has ended
    assert ended[draining.key].state == ExecutionState.FAILED  # its draining node was lost (terminate is what a drain means)
    assert any(isinstance(a, NodeUnusable) and a.node_id == "n1" for a in result.actions)
    assert any(isinstance(a, LaunchJob) and a.job == waiting.key for a in result.actions) and result.skipped == []


def test_a_planning_error_in_one_job_leaves_that_job_alone_and_plans_the_others(monkeypatch: Any) -> None:
    from airflow_batchai.errors import BatchAIError
    from airflow_batchai.scheduling.decisions import Planner

    broken, fine = job("broken", ExecutionState.RUNNING, ["n0"]), job("fine", ExecutionState.RUNNING, ["n1"])
    original = Planner.observe_job

    def observe(self: Planner, current: JobRecord) -> None:
        if current.name == "broken":
            self.end_job(current, ExecutionState.TERMINATING)
            raise BatchAIError("InvalidStateTransition", "job broken cannot go from running to nowhere", current.key)
        original(self, current)

    monkeypatch.setattr(Planner, "observe_job", observe)
    nodes = [node("n0", NodeState.RUNNING, broken.key), node("n1", NodeState.RUNNING, fine.key)]
    runs = {("n0", broken.run_id): alive(), ("n1", fine.run_id): alive("succeeded", exit_code=0)}
    result = plan(snapshot(cluster(), nodes, [broken, fine]), runs)
    assert result.skipped == [(broken.key, "job broken cannot go from running to nowhere")]
    assert [a for a in result.actions if isinstance(a, EndJob)] == [
        EndJob(fine.key, ExecutionState.SUCCEEDED, {"exit_code": 0, "errors": []})
    ]


LOST = {"code": "NodeLost", "message": "node n0 (10.0.0.1) is unusable: no heartbeat for 30 s"}


def test_a_lost_member_is_tried_again_every_probe_interval_but_a_failed_setup_is_not() -> None:
    recent = node("n0", NodeState.UNUSABLE, errors=[LOST], probed_at=NOW - timedelta(seconds=5))
    due = node("n1", NodeState.UNUSABLE, errors=[LOST], probed_at=NOW - timedelta(seconds=20))
    setup_failed = node("n2", NodeState.UNUSABLE, errors=[{"code": "NodeSetupFailed", "message": "exit code 1"}])
    setup_failed = setup_failed.model_copy(update={"state_transition_time": NOW - timedelta(hours=1)})
    actions = plan(snapshot(cluster(target=3), [recent, due, setup_failed], [])).actions
    assert actions == [ProbeNode("n1")]


def test_a_lost_member_is_replaced_by_a_free_pool_node_and_then_leaves() -> None:
    lost = node("n0", NodeState.UNUSABLE, errors=[LOST], probed_at=NOW)
    actions = plan(snapshot(cluster(target=2), [lost, node("n1"), node("n2", NodeState.FREE)], [])).actions
    assert actions == [ClaimNode("n2"), RemoveNode("n0")]
    alone = plan(snapshot(cluster(target=2), [lost, node("n1")], [])).actions
    assert alone == []  # nothing to replace it with: it stays, and is tried again, until the pool has a node


def test_a_member_whose_setup_failed_is_not_replaced_by_the_next_node_to_fail_the_same_way() -> None:
    broken = node("n0", NodeState.UNUSABLE, errors=[{"code": "NodeSetupFailed", "message": "exit code 1"}])
    assert plan(snapshot(cluster(target=2), [broken, node("n1"), node("n2", NodeState.FREE)], [])).actions == []


def test_a_free_node_that_left_with_an_error_is_claimed_last_and_only_after_a_while() -> None:
    errored = node("n0", NodeState.FREE, errors=[LOST])
    assert plan(snapshot(cluster(target=1), [errored], [])).actions == []
    assert plan(snapshot(cluster(target=1), [errored, node("n9", NodeState.FREE)], [])).actions == [ClaimNode("n9")]
    later = errored.model_copy(update={"state_transition_time": NOW - timedelta(minutes=2)})
    assert plan(snapshot(cluster(target=1), [later], [])).actions == [ClaimNode("n0")]


def test_a_requeued_job_keeps_the_attempt_that_lost_its_node_in_its_history() -> None:
    running = job("train", ExecutionState.RUNNING, ["n0"]).model_copy(update={"start_time": NOW - timedelta(minutes=1)})
    snap = snapshot(cluster(target=1), [node("n0", NodeState.RUNNING, running.key)], [running])
    actions = plan(snap, {("n0", running.run_id): alive(heartbeat_age_s=31)}).actions
    [requeue] = [a for a in actions if isinstance(a, EndJob)]
    assert requeue.state == ExecutionState.QUEUED and requeue.changes["attempt"] == 1
    [attempt] = requeue.changes["attempts"]
    assert attempt["attempt"] == 0 and attempt["nodes"] == ["n0"] and attempt["errors"][0]["code"] == "NodeLost"
    again = running.model_copy(update={"attempt": 1, "attempts": requeue.changes["attempts"], "nodes": ["n1"]})
    snap = snapshot(cluster(target=1), [node("n1", NodeState.RUNNING, again.key)], [again])
    [success] = [a for a in plan(snap, {("n1", again.run_id): alive("succeeded", exit_code=0)}).actions if isinstance(a, EndJob)]
    assert success.state == ExecutionState.SUCCEEDED and "attempts" not in success.changes  # the history stays as it is


def test_a_shortfall_is_said_only_when_the_pool_can_never_meet_the_target() -> None:
    busy_elsewhere = node("n1", NodeState.IDLE).model_copy(update={"cluster": "default/other"})
    short = plan(snapshot(cluster(target=3), [node("n0"), busy_elsewhere], []))
    assert short.shortfall == 1  # two eligible hosts in all, three wanted
    waiting = plan(snapshot(cluster(target=2), [node("n0"), busy_elsewhere], []))
    assert waiting.shortfall == 0  # the other cluster's node may come free: no error for that


def test_an_elastic_pool_is_asked_for_what_its_free_nodes_and_those_starting_cannot_give() -> None:
    record = cluster({"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}}, target=0)
    jobs = [job("a", count=3)]
    fixed = plan(snapshot(record, [node("n0", NodeState.FREE)], jobs)).actions
    assert fixed == [ClaimNode("n0")]  # a fixed pool has nothing to start
    elastic = snapshot(record, [node("n0", NodeState.FREE)], jobs)
    elastic.startable = 5
    assert plan(elastic).actions == [ClaimNode("n0"), RequestNodes(2, None)]
    nearly_full = snapshot(record, [node("n0", NodeState.FREE)], jobs)
    nearly_full.startable = 1  # the pool's capacity, less what it has and what is starting
    assert plan(nearly_full).actions == [ClaimNode("n0"), RequestNodes(1, None)]


def test_an_elastic_pool_short_only_of_what_it_is_starting_says_no_shortfall_and_its_spare_machines_are_stopped() -> None:
    record = cluster({"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}}, target=0)
    booting = snapshot(record, [], [job("a", count=2)])
    booting.elastic, booting.coming, booting.startable = True, 2, 2  # two on their way, two more it could start
    assert plan(booting).shortfall == 0, "nodes that are starting are not missing"
    assert not [a for a in plan(booting).actions if isinstance(a, RequestNodes)], "nor asked for again while they boot"
    at_target = snapshot(cluster({"manual": {"targetNodeCount": 1}}, target=1), [node("n0"), node("n1", NodeState.FREE)], [])
    at_target.elastic = True
    assert plan(at_target).actions == [StopMachine("n1")], "a free machine nobody needs costs money: stopped"
    at_target.elastic = False
    assert plan(at_target).actions == [], "a fixed pool's free host is simply there"


def test_a_spent_daily_budget_starts_no_queued_job_and_asks_no_machine_for_it_while_running_ones_go_on() -> None:
    from dataclasses import replace

    record = cluster({"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}}, target=0)
    busy = job("busy", ExecutionState.RUNNING, ["n0"])
    waiting = snapshot(record, [node("n0", NodeState.RUNNING, busy.key), node("n1")], [busy, job("next"), job("big", count=3)])
    waiting.elastic, waiting.startable = True, 4
    spent = replace(LIMITS, hold="BudgetExceeded: spent")
    held = plan_pass(waiting, {("n0", busy.run_id): alive()}, {}, NOW, spent)
    assert held.actions == [] and held.target == 2, "no launch, no claim, no VM: its two members stay, none added for the queued"
    free = plan(waiting, {("n0", busy.run_id): alive()})
    assert any(isinstance(a, RequestNodes) for a in free.actions), "the same pass under its budget asks for nodes"
