"""The node agent as a real detached process: exit codes, detachment, terminate, wall clock, heartbeat."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.agent import agent as agent_module
from airflow_batchai.agent import tools
from airflow_batchai.agent.protocol import AgentPlan, AgentStatus
from airflow_batchai.layout import NodeLayout
from airflow_batchai.transport.handle import AGENT_FILES, NodeHandle
from airflow_batchai.transport.local import LocalTransport
from tests.conftest import pid_alive, wait_until


@pytest.fixture
def node(home: Path) -> NodeHandle:
    return NodeHandle("local-0", LocalTransport(), NodeLayout(str(home / "nodes" / "local-0")))


def plan(logs: Path, *tasks: tuple[str, str], **extra: Any) -> AgentPlan:
    """A minimal plan: tasks as (name, command), logs to ``logs``; ``extra`` fields as JSON, as plan.json holds them."""
    document = {
        "kind": "job",
        "node_id": "local-0",
        "env": {"LOGS": str(logs)},
        "make_dirs": ["LOGS"],
        "log_dir_env": "LOGS",
        "execution_log": "execution.log",
        "cwd": "",
        "failure_code": "JobFailed",
        "max_wall_clock_s": 3600,
        "tasks": [
            {"name": name, "command": command, "stdout": f"stdout-{name}.txt", "stderr": f"stderr-{name}.txt"} for name, command in tasks
        ],
        "grace_s": 1.0,
        **extra,
    }
    return AgentPlan.from_json(document)


def final_status(node: NodeHandle, run: str, timeout_s: float = 30) -> AgentStatus:
    return wait_until(lambda: (s := node.status(run)) and s.final and s, timeout_s, what=f"run {run} to end")


def test_the_node_modules_run_on_python_3_8_and_import_only_the_standard_library_and_each_other() -> None:
    siblings = {name[: -len(".py")] for name in AGENT_FILES}
    assert {"agent", "protocol", "storageclient", "volumes", "container", "tools", "runtime"} <= siblings
    for name, source in AGENT_FILES.items():
        tree = ast.parse(source, feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [] if node.level else [(node.module or "").split(".")[0]]
            else:
                continue
            for module in modules:
                assert module in sys.stdlib_module_names or module in siblings, f"{name} imports {module}"


def test_success_records_exit_code_zero_and_the_output(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("ok", plan(tmp_path, ("main", "echo hello; echo oops >&2")), {})
    status = final_status(node, "ok")
    assert (status.state, status.exit_code, status.error) == ("succeeded", 0, None)
    assert (tmp_path / "stdout-main.txt").read_text() == "hello\n"
    assert (tmp_path / "stderr-main.txt").read_text() == "oops\n"
    assert status.end_time >= status.start_time
    assert "started main" in (tmp_path / "execution.log").read_text()


def test_failure_records_the_process_exit_code(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("bad", plan(tmp_path, ("main", "exit 3")), {})
    status = final_status(node, "bad")
    assert (status.state, status.exit_code, status.error["code"]) == ("failed", 3, "JobFailed")


def test_one_failing_rank_stops_the_others(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("ranks", plan(tmp_path, ("r0", "sleep 60"), ("r1", "sleep 0.2; exit 7")), {})
    started = time.monotonic()
    status = final_status(node, "ranks")
    assert status.exit_code == 7 and time.monotonic() - started < 20


def test_preparation_failure_is_job_preparation_failed(node: NodeHandle, tmp_path: Path) -> None:
    prep = {"name": "preparation", "command": "echo preparing; exit 4", "stdout": "stdout-job_prep.txt", "stderr": "stderr-job_prep.txt"}
    node.start_run("prep", plan(tmp_path, ("main", "echo never"), preparation=prep), {})
    status = final_status(node, "prep")
    assert (status.state, status.exit_code, status.error["code"]) == ("failed", 4, "JobPreparationFailed")
    assert (tmp_path / "stdout-job_prep.txt").read_text() == "preparing\n"
    assert not (tmp_path / "stdout-main.txt").exists()


def test_a_missing_mpi_is_a_clear_preparation_error_naming_the_node(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("mpi", plan(tmp_path, ("main", "true"), requires=["no-such-mpirun-here"]), {})
    status = final_status(node, "mpi")
    assert status.error["code"] == "JobPreparationFailed"
    assert "no-such-mpirun-here" in status.error["message"] and "local-0" in status.error["message"]


def test_the_job_outlives_the_process_that_started_it(home: Path, tmp_path: Path) -> None:
    """A short-lived caller starts the agent and exits; the job runs on to completion."""
    layout = NodeLayout(str(home / "nodes" / "local-0"))
    run_dir = layout.run_dir("detached")
    Path(run_dir).mkdir(parents=True)
    Path(run_dir, "plan.json").write_text(json.dumps(plan(tmp_path, ("main", "sleep 1; echo finished")).to_json()))
    agent_path = Path(layout.agent_dir) / "agent.py"
    for name, source in AGENT_FILES.items():
        Path(layout.agent_dir, name).write_bytes(source)
    caller = f"""
import sys
from airflow_batchai.transport.local import LocalTransport
LocalTransport().start_detached([sys.executable, {str(agent_path)!r}, "run", {run_dir!r}], log_path={run_dir + "/agent.log"!r})
"""
    subprocess.run([sys.executable, "-c", caller], check=True, timeout=30)
    node = NodeHandle("local-0", LocalTransport(), layout)
    running = wait_until(lambda: node.status("detached"), what="agent status")
    assert os.getsid(running.pid) == running.pid != os.getsid(0)  # its own session
    assert final_status(node, "detached").state == "succeeded"
    assert (tmp_path / "stdout-main.txt").read_text() == "finished\n"


def test_terminate_kills_the_whole_process_group_grandchildren_included(node: NodeHandle, tmp_path: Path) -> None:
    script = (
        f"sleep 300 & echo $! > {tmp_path}/grandchild.pid; bash -c 'trap \"\" TERM; sleep 300' & echo $! > {tmp_path}/stubborn.pid; wait"
    )
    node.start_run("kill", plan(tmp_path, ("main", script)), {})
    grandchild = int(
        wait_until(lambda: (tmp_path / "grandchild.pid").exists() and (tmp_path / "grandchild.pid").read_text().strip(), what="pid")
    )
    stubborn = int(wait_until(lambda: (tmp_path / "stubborn.pid").exists() and (tmp_path / "stubborn.pid").read_text().strip(), what="pid"))
    agent_pid = node.status("kill").pid
    assert pid_alive(grandchild) and pid_alive(stubborn)
    node.terminate("kill", grace_s=1.0)
    status = node.status("kill")
    assert status.state == "terminated" and status.error["code"] == "JobTerminated"
    wait_until(lambda: not pid_alive(grandchild) and not pid_alive(stubborn) and not pid_alive(agent_pid), 10, what="processes to die")


def test_terminate_after_the_agent_died_still_kills_its_processes(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("orphan", plan(tmp_path, ("main", f"sleep 300 & echo $! > {tmp_path}/child.pid; wait")), {})
    child = int(wait_until(lambda: (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text().strip(), what="pid"))
    os.kill(node.status("orphan").pid, 9)
    node.terminate("orphan", grace_s=0.5)
    assert node.status("orphan").state == "terminated"
    wait_until(lambda: not pid_alive(child), 10, what="child to die")


def test_max_wall_clock_time_stops_the_job(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("slow", plan(tmp_path, ("main", "sleep 60"), max_wall_clock_s=1), {})
    started = time.monotonic()
    status = final_status(node, "slow")
    assert status.error["code"] == "MaxWallClockTimeExceeded" and status.state == "failed"
    assert time.monotonic() - started < 15


def test_heartbeat_advances_while_the_job_runs(node: NodeHandle, tmp_path: Path) -> None:
    node.start_run("beat", plan(tmp_path, ("main", "sleep 6")), {})
    first = wait_until(lambda: node.status("beat"), what="status").heartbeat
    later = wait_until(lambda: (s := node.status("beat")) and s.heartbeat > first + 1 and s, 10, what="a later heartbeat")
    assert later.state == "running" and later.pgids


def test_secrets_reach_the_job_environment_but_no_file_or_command_line(node: NodeHandle, tmp_path: Path) -> None:
    secret = "pa55-w0rd-value-9f8e7d"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    check = f'test "$(printf %s "$API_TOKEN" | sha256sum | cut -d" " -f1)" = {digest} && echo match; sleep 2'
    node.start_run("secret", plan(tmp_path, ("main", check)), {"API_TOKEN": secret})
    run_dir = Path(node.layout.run_dir("secret"))
    wait_until(lambda: (tmp_path / "stdout-main.txt").exists() and "match" in (tmp_path / "stdout-main.txt").read_text(), what="job")
    assert not (run_dir / "secrets.json").exists()
    for path in run_dir.iterdir():
        assert secret not in path.read_text(errors="replace"), path.name
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert secret.encode() not in (proc / "cmdline").read_bytes()
            except OSError:
                continue
    assert final_status(node, "secret").state == "succeeded"


def test_agents_of_one_job_sharing_a_folder_do_not_trip_over_each_other(home: Path, tmp_path: Path) -> None:
    """Every node of a job links the same shared folder and creates the same output folders.

    Each plan names its own node, as the control plane's do: the run's marker is per node, so the
    first agent to finish stops only its own strays, never another node's ranks."""
    shared, logs = tmp_path / "shared-run", tmp_path / "logs"
    nodes = [NodeHandle(f"local-{i}", LocalTransport(), NodeLayout(str(home / "nodes" / f"local-{i}"))) for i in range(6)]
    for index, node in enumerate(nodes):
        link = {"path": f"{node.layout.root}/jobs/shared", "source": str(shared), "unlink_at_end": True}
        rank = (f"rank{index}", f"touch {node.layout.root}/jobs/shared/{index}")
        node.start_run("race", plan(logs / "a" / "b", rank, links=[link], node_id=node.node_id), {})
    for node in nodes:
        status = final_status(node, "race")
        assert status.state == "succeeded", status.error
    assert sorted(p.name for p in shared.iterdir()) == [str(i) for i in range(6)]


def test_a_container_job_without_a_docker_engine_fails_clearly_naming_the_node(node: NodeHandle, tmp_path: Path) -> None:
    """This machine has at most the Docker client: the job must fail as FailedStartingContainer, not hang."""
    engine = subprocess.run(["docker", "info"], capture_output=True, timeout=30) if shutil.which("docker") else None
    if engine is not None and engine.returncode == 0:
        pytest.skip("a Docker engine runs here; tests/provider/test_service.py runs a real container job")
    container = {
        "name": "batchai-test",
        "image": "python:3.11-slim",
        "login": None,
        "start": ["docker", "run", "--detach", "--name", "batchai-test", "python:3.11-slim", "sleep", "infinity"],
        "exec": ["docker", "exec"],
        "shell": ["sh", "-c"],
        "remove": ["docker", "rm", "--force", "batchai-test"],
        "env_file": str(tmp_path / "container.env"),
    }
    node.start_run("nodocker", plan(tmp_path, ("main", "echo never")), {})
    node.start_run("docker", plan(tmp_path, ("main", "echo never"), container=container), {})
    status = final_status(node, "docker")
    assert status.state == "failed" and status.error["code"] == "FailedStartingContainer"
    assert "local-0" in status.error["message"] and not (tmp_path / "container.env").exists()
    assert final_status(node, "nodocker").state == "succeeded"


def test_authorized_keys_edits_touch_only_our_tagged_line(tmp_path: Path) -> None:
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    keys.parent.mkdir(parents=True)
    users_own = "ssh-rsa AAAAUSER me@laptop\n# a comment\nssh-ed25519 AAAALAST no-newline"
    keys.write_text(users_own)
    keys.chmod(0o600)
    tools.edit_authorized_keys(str(keys), "batchai-cluster-c-node-n0", "ssh-ed25519 AAAACLUSTER")
    tools.edit_authorized_keys(str(keys), "batchai-cluster-c-node-n0", "ssh-ed25519 AAAACLUSTER")  # idempotent
    tools.edit_authorized_keys(str(keys), "batchai-cluster-c-node-n1", "ssh-ed25519 AAAACLUSTER")
    assert (
        keys.read_text()
        == users_own + "\nssh-ed25519 AAAACLUSTER batchai-cluster-c-node-n0\nssh-ed25519 AAAACLUSTER batchai-cluster-c-node-n1\n"
    )
    assert keys.stat().st_mode & 0o777 == 0o600
    tools.edit_authorized_keys(str(keys), "batchai-cluster-c-node-n0")
    assert keys.read_text().endswith("no-newline\nssh-ed25519 AAAACLUSTER batchai-cluster-c-node-n1\n")
    tools.edit_authorized_keys(str(keys), "batchai-cluster-c-node-n1")
    assert keys.read_text() == users_own + "\n"
    assert sorted(p.name for p in keys.parent.iterdir()) == ["authorized_keys"]  # no lock or temporary file left


def test_setting_up_a_host_removes_the_logins_of_clusters_that_no_longer_exist(tmp_path: Path) -> None:
    """A host unreachable when its cluster was deleted kept that cluster's line; its next setup takes it out."""
    gone, live, new = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "33333333-3333-3333-3333-333333333333"
    keys = tmp_path / "authorized_keys"
    keys.write_text(
        "ssh-rsa AAAAUSER me@laptop\n"
        f"ssh-ed25519 AAAAGONE batchai-cluster-{gone}-node-n0\n"
        f"ssh-ed25519 AAAALIVE batchai-cluster-{live}-node-n0\n"
        "ssh-ed25519 AAAAOTHER batchai-clusterish-comment\n"
    )
    script = Path(agent_module.__file__)
    tag = f"batchai-cluster-{new}-node-n0"
    subprocess.run([sys.executable, str(script), "authorize", str(keys), tag, "ssh-ed25519 AAAANEW", "--keep", f"{live},{new}"], check=True)
    assert keys.read_text() == (
        "ssh-rsa AAAAUSER me@laptop\n"
        f"ssh-ed25519 AAAALIVE batchai-cluster-{live}-node-n0\n"
        "ssh-ed25519 AAAAOTHER batchai-clusterish-comment\n"
        f"ssh-ed25519 AAAANEW {tag}\n"
    )
    subprocess.run([sys.executable, str(script), "deauthorize", str(keys), tag, "--keep", ""], check=True)
    assert keys.read_text() == "ssh-rsa AAAAUSER me@laptop\nssh-ed25519 AAAAOTHER batchai-clusterish-comment\n"


def test_an_agent_refuses_a_plan_that_is_not_of_its_protocol_naming_the_field(node: NodeHandle, tmp_path: Path) -> None:
    """A control plane of another version wrote it: the agent says so instead of running half of it."""
    run_dir = Path(node.layout.run_dir("foreign"))
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps({**plan(tmp_path, ("main", "true")).to_json(), "job": "written, never read"}))
    done = subprocess.run([sys.executable, node.deploy_agent(), "run", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "plan.json: unknown field(s) job" in done.stderr
    assert not (tmp_path / "stdout-main.txt").exists()


def test_outputs_that_never_reach_storage_fail_the_job_naming_them_and_the_node_keeps_them(node: NodeHandle, tmp_path: Path) -> None:
    """Storage gone for good at the job's end: not a success, the files named, the staged copy left in place."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    staged = tmp_path / "mounts" / "out"
    upload = {
        "url": f"http://127.0.0.1:{closed}/devstoreaccount1/out",
        "sas": "BATCHAI_SAS_OUT",
        "label": "out",
        "local": str(staged),
        "prefix": "job",
    }
    run = plan(
        tmp_path,
        ("main", f"echo weights > {staged}/model.pt"),
        links=[{"path": str(staged), "stage": True, "unlink_at_end": True}],
        uploads=[upload],
        upload_deadline_s=3,
    )
    node.start_run("lost-outputs", run, {"BATCHAI_SAS_OUT": "sv=2021&sig=secret-signature"})
    status = final_status(node, "lost-outputs", timeout_s=60)
    assert (status.state, status.error["code"]) == ("failed", "OutputUploadFailed"), status.error
    assert "job/model.pt" in status.error["message"] and "within 3 s" in status.error["message"]
    assert (staged / "model.pt").read_text() == "weights\n"  # the only copy is not deleted
    assert "secret-signature" not in (tmp_path / "execution.log").read_text()
