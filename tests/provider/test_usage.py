"""Usage and cost on the embedded default: a job's node-seconds are its nodes' running seconds, a requeued job
counts each attempt, idle time is the cluster's, and a daily budget holds new jobs until it is raised."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_batchai.prices import PriceSettings
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, wait_until


def manual(nodes: int, **extra: object) -> object:
    return load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": nodes, "nodeDeallocationOption": "requeue"}}, **extra})


def job(command: str, nodes: int = 1) -> object:
    return load_job_spec({"properties": custom_job(command, nodes=nodes)}, environ={})


def priced(home: Path, **prices: object) -> Service:
    return Service.embedded(home, nodes=2, settings=Settings(prices=PriceSettings(node_hour=7.2, currency="EUR", **prices)))  # type: ignore[arg-type]


def test_a_two_node_jobs_usage_is_its_nodes_running_seconds_and_idle_time_is_the_clusters(tmp_path: Path) -> None:
    service = priced(tmp_path / "home")
    service.create_cluster("c", manual(2))  # type: ignore[arg-type]
    wait_until(lambda: service.show_cluster("c").idle_nodes() == 2, 60, 0.1, what="two idle nodes")
    service.create_job("c", "pair", job("sleep 2", nodes=2), "e")  # type: ignore[arg-type]
    done = service.wait_job("pair", "e", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded" and done.usage is not None
    usage = done.usage
    assert 4.0 <= usage["nodeSeconds"] <= 8.0, usage  # two nodes, a 2 s job (and its agent's start)
    assert usage["estimatedCost"]["currency"] == "EUR"
    assert usage["estimatedCost"]["amount"] == pytest.approx(usage["nodeSeconds"] * 7.2 / 3600, abs=2e-4)
    [attempt] = usage["attempts"]
    assert attempt["nodeSeconds"] == usage["nodeSeconds"]

    cluster = wait_until(lambda: (c := service.show_cluster("c")).idle_nodes() == 2 and c, 30, 0.1, what="the nodes idle again")
    running = cluster.usage["sinceCreation"]["byState"]["running"]["nodeSeconds"]  # type: ignore[index]
    assert abs(running - usage["nodeSeconds"]) <= 1.0, "the nodes' own running seconds: the same within a second"
    time.sleep(1.5)
    later = service.show_cluster("c").usage
    assert later is not None and later["sinceCreation"]["byState"]["idle"]["nodeSeconds"] >= 3.0, "idle time is the cluster's"
    assert service.show_job("pair", "e").usage["nodeSeconds"] == usage["nodeSeconds"], "a job's usage ends with it"  # type: ignore[index]
    today = later["today"]
    assert today["nodeSeconds"] == later["sinceCreation"]["nodeSeconds"] and today["estimatedCost"]["currency"] == "EUR"
    assert later["rate"] == {"perNodeHour": 7.2, "currency": "EUR", "source": "connection prices.node_hour"}


def test_a_requeued_job_counts_both_attempts_apart(tmp_path: Path) -> None:
    service = priced(tmp_path / "home")
    service.create_cluster("c", manual(1))  # type: ignore[arg-type]
    marker = tmp_path / "second"
    service.create_job("c", "twice", job(f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; sleep 60"), "e")  # type: ignore[arg-type]
    wait_until(lambda: service.refresh_job("twice", "e") and marker.exists(), 60, 0.1, what="the first attempt running")  # reads move it
    time.sleep(1)
    service.resize_cluster("c", 0)  # its node leaves: requeue (nodeDeallocationOption)
    wait_until(lambda: service.refresh_job("twice", "e").execution_info.attempts, 60, 0.1, what="the requeue")
    service.resize_cluster("c", 1)
    done = service.wait_job("twice", "e", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded" and done.usage is not None
    first, second = done.usage["attempts"]
    assert (first["attempt"], second["attempt"]) == (0, 1)
    assert first["nodeSeconds"] >= 1.0 and 0 <= second["nodeSeconds"] < first["nodeSeconds"] + 60
    assert done.usage["nodeSeconds"] == round(first["nodeSeconds"] + second["nodeSeconds"], 1)


def test_a_daily_budget_holds_new_jobs_and_a_larger_one_releases_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tight = priced(home, daily_budgets={"c": 0.005})  # 7.2 EUR an hour: 2.5 node-seconds spend it
    tight.create_cluster("c", manual(1))  # type: ignore[arg-type]
    tight.create_job("c", "first", job("sleep 3"), "e")  # type: ignore[arg-type]
    assert tight.wait_job("first", "e", timeout_s=60, poll_s=0.1).execution_state == "succeeded"
    tight.create_job("c", "second", job("true"), "e")  # type: ignore[arg-type]
    held = wait_until(lambda: (j := tight.refresh_job("second", "e")).execution_info.queue_reason and j, 30, 0.2, what="the budget said")
    assert held.execution_state == "queued"
    reason = held.execution_info.queue_reason or ""
    assert reason.startswith("BudgetExceeded: cluster c has cost") and "its daily budget is 0.0050" in reason
    time.sleep(1)
    assert tight.refresh_job("second", "e").execution_state == "queued", "held, not started"
    generous = priced(home, daily_budgets={"c": 100.0})  # the connection's budget raised
    done = generous.wait_job("second", "e", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded" and done.execution_info.queue_reason is None


def test_a_controller_killed_mid_run_loses_no_second_and_counts_none_twice(tmp_path: Path) -> None:
    """Two nodes that stay members: whatever passes ran or died, the cluster's node-seconds grow by twice the wall time."""
    from tests.provider.test_controller import quiet_service, start_controller, stop

    home = tmp_path / "home"
    service = quiet_service(home)
    service.create_cluster("c", manual(2))  # type: ignore[arg-type]
    controller = start_controller(home, tmp_path / "controller.log")
    try:
        wait_until(lambda: service.show_cluster("c").idle_nodes() == 2, 60, 0.1, what="two idle nodes")
        started = time.time()
        before = service.show_cluster("c").usage["sinceCreation"]["nodeSeconds"]  # type: ignore[index]
        service.create_job("c", "long", job("sleep 4", nodes=2), "e")  # type: ignore[arg-type]
        wait_until(lambda: service.show_job("long", "e").execution_state == "running", 30, 0.05, what="the job running")
        time.sleep(1)
        controller.kill()  # mid-run, maybe mid-pass: no goodbye
        controller.wait(timeout=30)
        controller = start_controller(home, tmp_path / "controller.log")
        done = service.wait_job("long", "e", timeout_s=60, poll_s=0.1)
        assert done.execution_state == "succeeded"
        wait_until(lambda: service.show_cluster("c").idle_nodes() == 2, 30, 0.1, what="the nodes idle again")
        after = service.show_cluster("c").usage
        ended = time.time()
    finally:
        stop(controller)
    assert after is not None
    grown = after["sinceCreation"]["nodeSeconds"] - before
    assert abs(grown - 2 * (ended - started)) <= 1.0, (grown, ended - started)
    running = after["sinceCreation"]["byState"]["running"]["nodeSeconds"]
    assert abs(running - done.usage["nodeSeconds"]) <= 1.0, (running, done.usage)  # type: ignore[index]


def test_batchai_usage_prints_clusters_and_experiments_by_day_as_a_table_or_json(tmp_path: Path) -> None:
    from tests.provider.test_cli import as_json, batchai

    home = tmp_path / "home"
    service = priced(home)
    service.create_cluster("c", manual(1))  # type: ignore[arg-type]
    service.create_job("c", "one", job("sleep 1"), "exp-a")  # type: ignore[arg-type]
    done = service.wait_job("one", "exp-a", timeout_s=60, poll_s=0.1)
    connection = json.dumps({"prices": {"node_hour": 7.2, "currency": "EUR"}})
    report = as_json(batchai(home, "usage", "--connection", connection, "-o", "json"))
    today = done.execution_info.end_time.date().isoformat()  # type: ignore[union-attr]
    [cluster] = report["clusters"]
    assert cluster["day"] == today and cluster["cluster"] == "c" and cluster["nodeSeconds"] >= done.usage["nodeSeconds"]  # type: ignore[index]
    assert set(cluster["byState"]) >= {"preparing", "running"} and cluster["estimatedCost"]["currency"] == "EUR"
    [experiment] = report["experiments"]
    assert (experiment["experiment"], experiment["jobs"]) == ("exp-a", 1)
    assert abs(experiment["nodeSeconds"] - done.usage["nodeSeconds"]) <= 0.2  # type: ignore[index]
    table = batchai(home, "usage", "--connection", connection).stdout
    assert "day" in table and "idle" in table and f"{today}  c" in table and "exp-a" in table and "EUR" in table
    unpriced = as_json(batchai(home, "usage", "-o", "json"))  # no prices in this connection: unknown, and why
    assert (
        unpriced["clusters"][0]["estimatedCost"]["amount"] is None
        and "prices.node_hour" in unpriced["clusters"][0]["estimatedCost"]["reason"]
    )
    assert "--since must be a day as YYYY-MM-DD, got 'tomorrow'" in batchai(home, "usage", "--since", "tomorrow", expect=2).stderr
    assert as_json(batchai(home, "usage", "--since", "2999-01-01", "-o", "json")) == {
        "since": "2999-01-01",
        "clusters": [],
        "experiments": [],
    }
