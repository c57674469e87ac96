"""Who runs a cluster's passes: the decisions read from the lease note (passes.py), without a store."""

from __future__ import annotations

from airflow_batchai.scheduling.passes import CONTROLLER_GRACE_S, launcher, live_controller

NOW = 1_800_000_000.0
CONTROLLER = "host:10:controller"
ME = "host:20:reader"


def between_passes(**fields: str) -> dict[str, str]:
    return {"seq": "s", "holder": CONTROLLER, "kind": "controller", "ended": f"{NOW - 1}", "next_due": f"{NOW + 2}", **fields}


def test_without_a_controller_the_submitter_launches_its_job() -> None:
    assert launcher({}, ME, NOW) == "here"  # a cluster nobody passed yet
    reader_note = {"seq": "s", "holder": "host:30:reader", "kind": "reader", "ended": f"{NOW - 1}", "next_due": f"{NOW + 2}"}
    assert launcher(reader_note, ME, NOW) == "here"


def test_a_live_controller_launches_every_job_even_after_another_process_ran_a_pass() -> None:
    assert launcher(between_passes(controller=CONTROLLER), ME, NOW) == "controller"
    after_a_terminate = between_passes(holder=ME, kind="writer", controller=CONTROLLER)  # a writer's pass keeps the field
    assert launcher(after_a_terminate, ME, NOW) == "controller"
    under_way = {"seq": "s", "holder": CONTROLLER, "kind": "controller", "controller": CONTROLLER, "started": f"{NOW - 300}"}
    assert launcher(under_way, ME, NOW) == "controller", "a pass under way: the lease tells whether its holder lives"


def test_a_controller_whose_pass_is_overdue_has_stopped_and_the_submitter_launches() -> None:
    overdue = between_passes(controller=CONTROLLER, next_due=f"{NOW - CONTROLLER_GRACE_S - 0.1}")
    assert live_controller(overdue, NOW) is None and launcher(overdue, ME, NOW) == "here"
    late_but_alive = between_passes(controller=CONTROLLER, next_due=f"{NOW - CONTROLLER_GRACE_S + 0.5}")
    assert live_controller(late_but_alive, NOW) == CONTROLLER


def test_the_controller_itself_launches_here() -> None:
    assert launcher(between_passes(controller=CONTROLLER), CONTROLLER, NOW) == "here"
