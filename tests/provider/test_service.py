"""The service on the embedded default: clusters, jobs and files, with real agents on local nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.errors import BatchAIError, InvalidSpec
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import ClusterSpec, load_cluster_spec, load_job_spec
from tests.conftest import custom_job, pid_alive, wait_until

JOB_TIMEOUT_S = 60


def job(body: dict[str, Any]) -> Any:
    return load_job_spec({"properties": body}, environ={})


def ready_cluster(service: Service, name: str = "c", nodes: int = 2, spec: ClusterSpec | None = None) -> dict[str, Any]:
    spec = spec or load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": nodes}}}, environ={})
    service.create_cluster(name, spec)
    return wait_until(
        lambda: (view := service.show_cluster(name)).allocation_state == "steady" and view, 30, 0.1, what=f"cluster {name} steady"
    )


def gate(home: Path, name: str) -> str:
    """A command that waits (bounded) until the test opens the gate file ``name``."""
    path = home / "gates" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"for i in $(seq 600); do test -e {path} && break; sleep 0.1; done; echo ran {name}"


def open_gate(home: Path, name: str) -> None:
    (home / "gates" / name).touch()


def test_cluster_allocates_and_prepares_nodes_then_is_steady(service: Service) -> None:
    view = ready_cluster(service)
    assert view.current_node_count == 2
    assert view.node_state_counts.to_json() == {
        "idleNodeCount": 2,
        "runningNodeCount": 0,
        "preparingNodeCount": 0,
        "unusableNodeCount": 0,
        "leavingNodeCount": 0,
    }
    assert view.scale_settings == {"manual": {"targetNodeCount": 2, "nodeDeallocationOption": "requeue"}}
    assert [c.name for c in service.list_clusters()] == ["c"]


def test_a_job_runs_to_success_with_its_outputs_listed(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    body = custom_job(
        "echo training; echo 'weights' > $AZ_BATCHAI_OUTPUT_MODEL/model.bin; mkdir $AZ_BATCHAI_OUTPUT_MODEL/sub",
        outputDirectories=[{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
    )
    created = service.create_job("c", "train", job(body), "exp")
    assert created.execution_state in ("queued", "running") and created.tool_type == "custom"
    done = service.wait_job("train", "exp", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    assert done.execution_state == "succeeded" and done.execution_info.exit_code == 0
    assert done.execution_info.start_time <= done.execution_info.end_time
    files = {f.name: f for f in service.list_output_files("train", "exp", output_directory_id="MODEL")}
    assert files["sub"].to_json() == {"name": "sub", "fileType": "directory"}
    model = files["model.bin"]
    assert model.file_type == "file" and model.content_length == 8 and model.download_url.startswith("file://")
    assert Path(model.download_url[len("file://") :]).read_text() == "weights\n"
    segment = done.job_output_directory_path_segment
    assert segment.endswith(f"/workspaces/default/experiments/exp/jobs/train/{segment.rsplit('/', 1)[1]}")
    assert (home / "storage" / "local" / "logs" / segment / "outputs" / "model.bin").exists()
    logs = sorted(f.name for f in service.list_output_files("train", "exp"))
    assert logs == ["execution.log", "resources-local-0.json", "stderr.txt", "stdout.txt"]  # the node's resource curves beside its logs
    assert service.read_output_file("train", "stdout.txt", "exp") == b"training\n"
    assert service.read_output_file("train", "stdout.txt", "exp", offset=5) == b"ing\n"
    with pytest.raises(BatchAIError, match="must stay inside"):
        service.list_output_files("train", "exp", directory="../..")


def test_a_failing_job_fails_with_its_exit_code_and_stderr_kept(service: Service) -> None:
    ready_cluster(service, nodes=1)
    service.create_job("c", "broken", job(custom_job("echo 'Traceback: boom' >&2; exit 3")))
    done = service.wait_job("broken", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    assert done.execution_state == "failed" and done.execution_info.exit_code == 3
    assert done.execution_info.errors[0].code == "JobFailed"
    assert service.read_output_file("broken", "stderr.txt") == b"Traceback: boom\n"
    assert service.show_cluster("c").node_state_counts.idle_node_count == 1


def test_gang_scheduling_by_priority_then_age_with_two_nodes_and_three_jobs(service: Service, home: Path) -> None:
    ready_cluster(service)
    service.create_job("c", "a", job(custom_job(gate(home, "a"))))
    wait_until(lambda: service.show_job("a").execution_state == "running", what="a running")
    service.create_job("c", "b", job(custom_job(gate(home, "b"), nodes=2)))
    service.create_job("c", "urgent", job(custom_job(gate(home, "urgent"), schedulingPriority="high")))
    # the younger high-priority job takes the free node; the 2-node job never starts on one node
    wait_until(lambda: service.show_job("urgent").execution_state == "running", what="urgent running")
    assert service.show_job("b").execution_state == "queued"
    open_gate(home, "a")
    wait_until(lambda: service.show_job("a").execution_state == "succeeded", what="a done")
    assert service.show_job("b").execution_state == "queued"  # one node idle is not enough
    open_gate(home, "urgent")
    wait_until(lambda: service.show_job("b").execution_state == "running", what="b running")
    open_gate(home, "b")
    b = service.wait_job("b", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    a, urgent = service.show_job("a"), service.show_job("urgent")
    assert b.execution_state == "succeeded", b.execution_info
    assert b.execution_info.start_time >= max(a.execution_info.end_time, urgent.execution_info.end_time)
    record = json.loads((home / "control" / "records" / "jobs" / "default" / "default" / "b.json").read_text())
    assert sorted(record["data"]["nodes"]) == ["local-0", "local-1"]


def test_resubmitting_the_same_job_returns_it_and_a_different_spec_is_refused(service: Service) -> None:
    ready_cluster(service, nodes=1)
    first = service.create_job("c", "same", job(custom_job("true")))
    again = service.create_job("c", "same", job(custom_job("true")))
    assert again.job_output_directory_path_segment == first.job_output_directory_path_segment
    with pytest.raises(BatchAIError, match="JobAlreadyExists"):
        service.create_job("c", "same", job(custom_job("false")))
    assert len(service.list_jobs()) == 1


def test_terminate_moves_running_and_queued_jobs_to_failed_and_leaves_finished_ones(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    service.create_job("c", "long", job(custom_job(f"sleep 300 & echo $! > {home}/child.pid; wait")))
    service.create_job("c", "waiting", job(custom_job("true")))
    child = int(wait_until(lambda: (home / "child.pid").exists() and (home / "child.pid").read_text().strip(), what="child pid"))
    assert service.show_job("waiting").execution_state == "queued"
    queued = service.terminate_job("waiting")
    assert queued.execution_state == "failed" and queued.execution_info.errors[0].code == "JobTerminated"
    stopped = service.terminate_job("long")
    assert stopped.execution_state == "failed" and stopped.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not pid_alive(child), 10, what="job process gone")
    assert service.terminate_job("long").execution_state_transition_time == stopped.execution_state_transition_time
    assert service.show_cluster("c").node_state_counts.idle_node_count == 1


def test_a_job_needing_more_nodes_than_the_cluster_can_have_is_refused(service: Service) -> None:
    ready_cluster(service, nodes=1)
    with pytest.raises(BatchAIError, match="nodeCount 3 exceeds the 2 node"):
        service.create_job("c", "huge", job(custom_job("true", nodes=3)))
    auto = load_cluster_spec({"scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1}}}, environ={})
    service.create_cluster("small", auto)
    with pytest.raises(BatchAIError, match="InsufficientNodes"):
        service.create_job("small", "two", job(custom_job("true", nodes=2)))
    assert service.list_jobs() == []


def test_unsupported_mounts_and_unfilled_placeholders_create_nothing(service: Service) -> None:
    ready_cluster(service, nodes=1)
    nfs = custom_job("true")
    nfs["mountVolumes"] = {"fileServers": [{"fileServer": {"id": "/x/fs"}, "relativeMountPath": "nfs"}]}
    with pytest.raises(
        BatchAIError, match=r"mountVolumes.fileServers\[0\]: Batch AI file servers do not exist here; mount your NFS server with unmanaged"
    ):
        service.create_job("c", "nfs", job(nfs))
    placeholder = custom_job("true")
    placeholder["mountVolumes"] = {
        "azureBlobFileSystems": [{"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "d", "relativeMountPath": "d"}]
    }
    with pytest.raises(InvalidSpec, match="placeholder not filled"):
        service.create_job("c", "ph", job(placeholder))
    with pytest.raises(BatchAIError, match="ClusterNotFound"):
        service.create_job("nope", "j", job(custom_job("true")))
    assert service.list_jobs() == []


def test_secrets_never_appear_in_views_records_logs_or_command_lines(service: Service, home: Path) -> None:
    secret, key = "s3cret-Value-71d2", "c3RvcmFnZS1rZXktOTk5OQ=="
    ready_cluster(service, nodes=1)
    body = custom_job(f'test -n "$TOKEN" && echo has-token; sleep 1; ps -eo args > {home}/ps.txt')
    body["secrets"] = [{"name": "TOKEN", "value": secret}]
    body["mountVolumes"]["azureBlobFileSystems"] = [
        {"accountName": "local", "containerName": "data", "relativeMountPath": "data", "credentials": {"accountKey": key}}
    ]
    view = service.create_job("c", "secretive", job(body))
    done = service.wait_job("secretive", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    assert done.execution_state == "succeeded", done
    assert service.read_output_file("secretive", "stdout.txt") == b"has-token\n"
    shown = done.to_json()  # the spec's fields as submitted, its secrets' values removed
    assert shown["secrets"] == [{"name": "TOKEN"}] and shown["mountVolumes"]["azureBlobFileSystems"][0]["credentials"] == {}
    listed = [job.to_json() for job in service.list_jobs()]
    for text in (json.dumps(view.to_json()), json.dumps(shown), json.dumps(listed), (home / "ps.txt").read_text()):
        assert secret not in text and key not in text
    for path in home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert secret.encode() not in content and key.encode() not in content, path
    assert not list((home / "secrets").glob("job-*")), "a finished job's secrets are deleted"


def test_scale_to_zero_removes_nodes_and_cleans_their_folders(service: Service, home: Path) -> None:
    ready_cluster(service)
    service.create_job("c", "j", job(custom_job("true")))
    service.wait_job("j", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    view = service.resize_cluster("c", 0)
    assert view.current_node_count == 0 and view.allocation_state == "steady"
    assert not list((home / "nodes").glob("*/*"))
    assert {n.state.value for n in service.pool_nodes()} == {"free"}


def test_scale_down_requeues_a_running_job_which_runs_again_later(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    service.create_job("c", "requeued", job(custom_job(f"echo attempt >> {home}/attempts; " + gate(home, "r"))))
    wait_until(lambda: (home / "attempts").exists(), what="first attempt")
    assert service.resize_cluster("c", 0).current_node_count == 0
    assert service.show_job("requeued").execution_state == "queued"
    open_gate(home, "r")
    service.resize_cluster("c", 1)
    done = service.wait_job("requeued", timeout_s=JOB_TIMEOUT_S, poll_s=0.1)
    assert done.execution_state == "succeeded"
    assert (home / "attempts").read_text() == "attempt\nattempt\n"


def test_scale_down_with_terminate_option_fails_the_running_job(service: Service, home: Path) -> None:
    spec = load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1, "nodeDeallocationOption": "terminate"}}}, environ={})
    ready_cluster(service, spec=spec)
    service.create_job("c", "victim", job(custom_job(gate(home, "never"))))
    wait_until(lambda: service.show_job("victim").execution_state == "running", what="running")
    service.resize_cluster("c", 0)
    view = service.show_job("victim")
    assert view.execution_state == "failed" and view.execution_info.errors[0].code == "JobTerminated"


def test_deleting_a_cluster_fails_its_jobs_and_stops_their_processes(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    service.create_job("c", "running", job(custom_job(f"sleep 300 & echo $! > {home}/pid; wait")))
    service.create_job("c", "queued", job(custom_job("true")))
    pid = int(wait_until(lambda: (home / "pid").exists() and (home / "pid").read_text().strip(), what="pid"))
    service.delete_cluster("c")
    for name in ("running", "queued"):
        view = service.show_job(name)
        assert view.execution_state == "failed" and view.execution_info.errors[0].code == "ClusterDeleted"
    wait_until(lambda: not pid_alive(pid), 10, what="process gone")
    with pytest.raises(BatchAIError, match="ClusterNotFound"):
        service.show_cluster("c")


def test_node_setup_mounts_cluster_volumes_and_logs_per_node(service: Service, home: Path) -> None:
    spec = load_cluster_spec(
        {
            "scaleSettings": {"manual": {"targetNodeCount": 2}},
            "nodeSetup": {
                "setupTask": {
                    "commandLine": "echo set up $GREETING on $AZ_BATCHAI_MOUNT_ROOT > /dev/null; echo ok; touch $AZ_BATCHAI_MOUNT_ROOT/shared/ready-$(hostname)",
                    "environmentVariables": [{"name": "GREETING", "value": "hi"}],
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/shared",
                },
                "mountVolumes": {
                    "azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/clustershare", "relativeMountPath": "shared"}]
                },
            },
        },
        environ={},
    )
    view = ready_cluster(service, spec=spec)
    assert view.node_state_counts.idle_node_count == 2
    logs = list((home / "storage" / "local" / "clustershare").rglob("stdout-local-*.txt"))
    assert sorted(p.name for p in logs) == ["stdout-local-0.txt", "stdout-local-1.txt"]
    assert all(p.read_text() == "ok\n" for p in logs)
    assert "/workspaces/default/clusters/c/" in logs[0].as_posix()
    service.create_job(
        "c",
        "reads",
        job({**custom_job("ls $AZ_BATCHAI_MOUNT_ROOT/shared | grep -c ready"), "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/shared"}),
    )
    assert service.wait_job("reads", timeout_s=JOB_TIMEOUT_S, poll_s=0.1).execution_state == "succeeded"
    assert service.read_output_file("reads", "stdout.txt") == b"1\n"


def test_a_failing_setup_task_makes_the_node_unusable_with_the_error(service: Service) -> None:
    spec = load_cluster_spec(
        {
            "scaleSettings": {"manual": {"targetNodeCount": 1}},
            "nodeSetup": {"setupTask": {"commandLine": "exit 9", "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/setup-logs"}},
        },
        environ={},
    )
    service.create_cluster("broken", spec)
    view = wait_until(lambda: (v := service.show_cluster("broken")).node_state_counts.unusable_node_count == 1 and v, 30, what="unusable")
    assert view.errors and view.errors[0].code == "NodeSetupFailed" and "local-0" in view.errors[0].message


FIRST_RUN_HANGS = "if [ -e {home}/first ]; then echo second attempt; else touch {home}/first; sleep 300 & echo $! > {home}/pid; wait; fi"


def kill_running_agent(home: Path, node_id: str) -> int:
    """SIGKILL the agent of the run going on at ``node_id``: the node stops reporting; returns the job's own pid."""
    pid = int(wait_until(lambda: (home / "pid").exists() and (home / "pid").read_text().strip(), what="pid"))
    statuses = [json.loads(p.read_text()) for p in home.glob(f"nodes/{node_id}/batchai/runs/*/status.json")]
    os.kill(next(s["pid"] for s in statuses if s["state"] == "running"), 9)
    return pid


def test_a_node_whose_agent_dies_is_replaced_and_its_job_requeued_keeping_the_lost_attempt(home: Path) -> None:
    service = Service.embedded(home, nodes=2, settings=Settings(heartbeat_timeout_s=3, launch_timeout_s=20))
    ready_cluster(service, nodes=1)
    service.create_job("c", "orphaned", job(custom_job(FIRST_RUN_HANGS.format(home=home))))
    pid = kill_running_agent(home, "local-0")
    # requeued, and placed again on the spare node some 0.15 s later: look often enough to see it queued
    view = wait_until(lambda: (v := service.show_job("orphaned")).execution_state == "queued" and v, 20, 0.02, what="requeue")
    assert view.execution_info.errors[0].code == "NodeLost" and "local-0" in view.execution_info.errors[0].message
    wait_until(lambda: not pid_alive(pid), 15, what="orphaned process stopped")
    done = service.wait_job("orphaned", timeout_s=60, poll_s=0.2)
    assert done.execution_state == "succeeded", done.execution_info
    assert service.read_output_file("orphaned", "stdout.txt") == b"second attempt\n"
    [lost] = done.execution_info.attempts
    assert lost.nodes == ["local-0"] and lost.errors[0].code == "NodeLost" and not done.execution_info.errors
    nodes = service.show_cluster("c")
    assert nodes.current_node_count == 1 and nodes.node_state_counts.unusable_node_count == 0


def test_a_lost_node_that_answers_again_is_set_up_anew_and_runs_the_requeued_job(home: Path) -> None:
    settings = Settings(heartbeat_timeout_s=3, launch_timeout_s=20, heal_probe_interval_s=1)
    service = Service.embedded(home, nodes=1, settings=settings)  # no spare node: only healing brings the cluster back
    ready_cluster(service, nodes=1)
    service.create_job("c", "healed", job(custom_job(FIRST_RUN_HANGS.format(home=home))))
    kill_running_agent(home, "local-0")
    wait_until(lambda: service.show_cluster("c").node_state_counts.unusable_node_count == 1, 20, 0.2, what="node lost")
    done = service.wait_job("healed", timeout_s=60, poll_s=0.2)
    assert done.execution_state == "succeeded", done.execution_info
    assert done.execution_info.attempts[0].errors[0].code == "NodeLost"
    assert service.show_cluster("c").node_state_counts.idle_node_count == 1


def test_creating_a_cluster_again_reuses_it_and_a_different_spec_needs_update(service: Service) -> None:
    first = ready_cluster(service, nodes=1)
    again = service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    assert again.creation_time == first.creation_time
    bigger = load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={})
    with pytest.raises(BatchAIError, match="ClusterAlreadyExists"):
        service.create_cluster("c", bigger)
    updated = service.create_cluster("c", bigger, update_existing=True)
    assert updated.creation_time == first.creation_time and updated.scale_settings["manual"]["targetNodeCount"] == 2
    assert wait_until(lambda: service.show_cluster("c").node_state_counts.idle_node_count == 2, what="second node")


def _docker_engine() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(
    not _docker_engine(), reason="no Docker engine on this machine (only the client): container jobs are tested where one runs"
)
def test_a_container_job_runs_prep_and_command_in_the_same_container(service: Service) -> None:
    ready_cluster(service, nodes=1)
    body = custom_job("cat /tmp/prepared && python -c 'import sys; print(sys.version_info[0])'")
    body["jobPreparation"] = {"commandLine": "echo prepared-inside > /tmp/prepared"}
    body["containerSettings"] = {"imageSourceRegistry": {"image": "python:3.11-slim"}}
    service.create_job("c", "in-docker", job(body))
    done = service.wait_job("in-docker", timeout_s=600, poll_s=0.5)
    assert done.execution_state == "succeeded", done.execution_info
    assert service.read_output_file("in-docker", "stdout.txt") == b"prepared-inside\n3\n"


def test_container_jobs_fail_clearly_without_an_engine_and_keep_the_registry_password_out(service: Service, home: Path) -> None:
    if _docker_engine():
        pytest.skip("a Docker engine runs here")
    ready_cluster(service, nodes=1)
    body = custom_job("echo never")
    body["containerSettings"] = {
        "imageSourceRegistry": {"image": "demo.azurecr.io/x:1", "credentials": {"username": "robot", "password": "reg-secret-3141"}}
    }
    view = service.create_job("c", "boxed", job(body))
    assert "password" not in json.dumps(view.to_json()["containerSettings"])
    done = service.wait_job("boxed", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "failed" and done.execution_info.errors[0].code == "FailedStartingContainer"
    assert "local-0" in done.execution_info.errors[0].message
    for path in home.rglob("*"):
        if path.is_file():
            assert b"reg-secret-3141" not in path.read_bytes(), path


def test_a_submit_that_died_before_its_live_entry_is_healed_by_its_retry(service: Service, home: Path) -> None:
    ready_cluster(service, nodes=1)
    spec = job(custom_job("true"))
    service.passes.kick = lambda *args, **kwargs: None  # type: ignore[method-assign]  # nothing runs before the retry
    service.create_job("c", "half", spec)
    (home / "control" / "records" / "live" / "default" / "c" / "default" / "half.json").unlink()  # as if it died there
    service.reconcile_cluster("default", "c")
    assert service.show_job("half").execution_state == "queued"  # no entry, so no pass sees it
    service.create_job("c", "half", spec)  # Airflow's retry of the submit
    del service.passes.kick
    assert service.wait_job("half", timeout_s=JOB_TIMEOUT_S, poll_s=0.1).execution_state == "succeeded"


def test_terminating_a_job_left_without_its_live_entry_still_ends_it(service: Service, home: Path) -> None:
    """Its submitter died between the record and the entry: no pass sees it, but a terminate names it."""
    ready_cluster(service, nodes=1)
    service.passes.kick = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no pass before the terminate
    service.create_job("c", "orphan", job(custom_job("true")))
    (home / "control" / "records" / "live" / "default" / "c" / "default" / "orphan.json").unlink()
    stopped = service.terminate_job("orphan")
    assert stopped.execution_state == "failed" and stopped.execution_info.errors[0].code == "JobTerminated"


def test_the_longest_command_line_a_spec_may_have_runs(service: Service) -> None:
    """Accepted means runnable: 128,000 bytes still fit in the one argument the agent hands to bash."""
    ready_cluster(service, nodes=1)
    command = "echo ok #" + "x" * (128_000 - len("echo ok #"))
    service.create_job("c", "longest", job(custom_job(command)))
    done = service.wait_job("longest", timeout_s=60, poll_s=0.1)
    assert done.execution_state == "succeeded", (done.execution_info, service.read_output_file("longest", "stderr.txt"))
    assert service.read_output_file("longest", "stdout.txt") == b"ok\n"


def test_a_target_the_pool_cannot_meet_is_said_in_the_clusters_errors(service: Service) -> None:
    """Two local nodes, three asked for: the cluster says so instead of quietly holding two."""
    service.create_cluster("big", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 3}}}, environ={}))
    view = wait_until(lambda: (v := service.show_cluster("big")).errors and v, 30, 0.1, what="shortfall said")
    assert view.errors and view.errors[0].code == "InsufficientNodes" and "wants 3 node(s)" in view.errors[0].message
    service.resize_cluster("big", 2)
    assert wait_until(lambda: (v := service.show_cluster("big")).allocation_state == "steady" and v, 30, 0.1).errors is None
