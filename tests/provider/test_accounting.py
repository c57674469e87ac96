"""How node-seconds are kept: closed in the write that moves a node, split at UTC midnight, counted once per membership."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_batchai.accounting import GPU_SECONDS, add_interval, merge, totals
from airflow_batchai.records import NodeRecord, NodeState, move_node

T0 = datetime(2026, 12, 7, 23, 59, 0, tzinfo=timezone.utc)


def test_an_interval_across_midnight_is_split_between_the_two_days() -> None:
    usage = add_interval({}, "running", T0, T0 + timedelta(minutes=2), gpus=2)
    assert usage == {
        "2026-12-07": {"running": 60.0, GPU_SECONDS: 120.0},
        "2026-12-08": {"running": 60.0, GPU_SECONDS: 120.0},
    }
    assert totals(usage) == {"running": 120.0, GPU_SECONDS: 240.0} and totals(usage, "2026-12-08") == {"running": 60.0, GPU_SECONDS: 120.0}
    assert merge(usage, {"2026-12-08": {"idle": 5.0}})["2026-12-08"] == {"running": 60.0, GPU_SECONDS: 120.0, "idle": 5.0}


def test_a_node_closes_each_state_it_leaves_into_its_usage_and_hands_it_over_when_it_leaves_the_cluster() -> None:
    free = NodeRecord(node_id="n1", address="10.0.0.1", root="/r", gpus=1, state_transition_time=T0)
    joined = move_node(free, NodeState.PREPARING, boot_s=90.0, cluster="ws/c", cluster_uuid="u-1")
    assert joined.membership and joined.usage[joined.state_transition_time.date().isoformat()] == {"starting": 90.0}
    earlier = joined.state_transition_time - timedelta(seconds=30)
    idle = move_node(joined.model_copy(update={"state_transition_time": earlier}), NodeState.IDLE)
    assert totals(idle.usage) == {"starting": 90.0, "preparing": 30.0, GPU_SECONDS: 30.0}, "30 s set up, closed in this write"
    gone = move_node(move_node(idle, NodeState.LEAVING), NodeState.FREE)
    assert gone.usage == {} and gone.membership is None and gone.cluster is None
    assert gone.departed is not None and gone.departed["cluster_uuid"] == "u-1" and gone.departed["membership"] == joined.membership
    assert totals(gone.departed["usage"])["preparing"] == 30.0, "kept for the cluster to count, once"
    again = move_node(gone, NodeState.PREPARING, cluster="ws/c", cluster_uuid="u-1")
    assert again.membership != joined.membership and again.departed == gone.departed, "a new stay; the last one still to count"
