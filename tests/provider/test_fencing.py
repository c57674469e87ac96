"""Two attempts of one job never run at once: a lost attempt is stopped (processes that left its
process groups included) before its next one starts. Real agents on local nodes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, pid_alive, wait_until

# The first attempt leaves a process that escapes its process group (setsid) and ticks into a file;
# the second attempt writes when it started. Overlap = a tick after that.
ESCAPING_FIRST_RUN = (
    "if [ -e {home}/first ]; then date +%s.%N > {home}/second-start; echo second attempt; "
    "else touch {home}/first; setsid sh -c 'echo $$ > {home}/stray; while :; do date +%s.%N >> {home}/ticks; sleep 0.05; done' & "
    "sleep 300 & echo $! > {home}/pid; wait; fi"
)


def test_a_requeued_job_starts_only_after_every_process_of_its_lost_attempt_is_gone(home: Path) -> None:
    service = Service.embedded(home, nodes=2, settings=Settings(heartbeat_timeout_s=3, launch_timeout_s=20))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    service.create_job("c", "fenced", load_job_spec({"properties": custom_job(ESCAPING_FIRST_RUN.format(home=home))}, environ={}))
    stray = int(wait_until(lambda: (home / "stray").exists() and (home / "stray").read_text().strip(), 30, what="stray process"))
    wait_until(lambda: (home / "pid").exists(), 30, what="first attempt running")
    statuses = [json.loads(p.read_text()) for p in home.glob("nodes/local-0/batchai/runs/*/status.json")]
    os.kill(next(s["pid"] for s in statuses if s["state"] == "running"), 9)  # the agent dies; its job does not

    done = service.wait_job("fenced", timeout_s=90, poll_s=0.2)
    assert done.execution_state == "succeeded", done.execution_info
    assert done.execution_info.attempts[0].errors[0].code == "NodeLost"
    second_start = float((home / "second-start").read_text())
    last_tick = float((home / "ticks").read_text().split()[-1])
    assert last_tick < second_start, f"the lost attempt ticked {last_tick - second_start:.2f} s into the next one"
    assert not pid_alive(stray), "the process that left its group was stopped too"
    time.sleep(0.3)
    assert float((home / "ticks").read_text().split()[-1]) == last_tick


def test_a_job_that_ends_leaves_no_process_behind_even_one_that_left_its_group(service: Service, home: Path) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    command = f"setsid sh -c 'echo $$ > {home}/daemon; exec sleep 300' & sleep 0.5; echo started"
    service.create_job("c", "daemon", load_job_spec({"properties": custom_job(command)}, environ={}))
    assert service.wait_job("daemon", timeout_s=60, poll_s=0.1).execution_state == "succeeded"
    daemon = int((home / "daemon").read_text())
    wait_until(lambda: not pid_alive(daemon), 10, what="the job's daemon stopped with the job")


def test_a_rank_that_ends_first_does_not_stop_the_ranks_of_its_job_on_other_local_nodes(service: Service, home: Path) -> None:
    """Local nodes share one machine: the end of node 0's run must stop node 0's processes only."""
    script = home.parent / "ranks.py"
    script.write_text(
        "import os, time\n"
        "rank = int(os.environ['AZ_BATCHAI_TASK_INDEX'])\n"
        f"if rank == 1:\n    time.sleep(2)\n    open({str(home.parent / 'rank1-done')!r}, 'w').write('done')\n"
    )
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").node_state_counts.idle_node_count == 2, 30, 0.1, what="two idle nodes")
    body = custom_job("unused", nodes=2)
    del body["customToolkitSettings"]
    body["pyTorchSettings"] = {"pythonScriptFilePath": str(script), "processCount": 2}
    service.create_job("c", "ranks", load_job_spec({"properties": body}, environ={}))
    done = service.wait_job("ranks", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded", done.execution_info
    assert (home.parent / "rank1-done").read_text() == "done"


def test_an_agent_whose_controller_stops_renewing_its_contact_stops_its_job(home: Path) -> None:
    """A partition seen from the node: the controller's renewals stop. Readers' passes do not renew."""
    settings = Settings(contact_fence_s=3)
    controller = Service.embedded(home, nodes=1, settings=settings, kind="controller")
    controller.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: controller.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    controller.create_job("c", "cut-off", load_job_spec({"properties": custom_job("sleep 60")}, environ={}))
    wait_until(lambda: controller.show_job("cut-off").execution_state == "running", 30, 0.1, what="running")
    contact = home / "nodes" / "local-0" / "batchai" / "contact"
    wait_until(lambda: contact.exists(), 15, 0.1, what="the controller's first renewal during the run")
    reader = Service.embedded(home, nodes=1, settings=settings)  # from here on nobody renews
    done = reader.wait_job("cut-off", timeout_s=30, poll_s=0.2)
    assert done.execution_state == "failed", done
    [error] = done.execution_info.errors
    assert error.code == "ContactLost" and "controller" in error.message, error
