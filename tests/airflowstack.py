"""A whole Airflow 3 deployment for tests: api-server, scheduler (LocalExecutor), dag-processor and
triggerer, on SQLite in a folder of the test's own, on a free loopback port; stopped by PID.

What ``dags test`` cannot show needs it: a worker that is SIGKILLed and retried by the
scheduler, a deferred task run by a real triggerer (and killed there by a user), the UI plugin
served by the real api-server. All admins (SimpleAuthManager), so a browser needs no login.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.conftest import stop_process_group

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# loopback only; no log servers (they listen on every address, and everything here reads the log files directly)
COMMAND_OPTIONS = {"api-server": ["--host", "127.0.0.1"], "scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}


@dataclass
class AirflowStack:
    folder: Path
    port: int
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: Any = None, timeout_s: float = 30) -> Any:
        """The public REST API (v2); the all-admins auth manager takes any caller."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get_text(self, path: str, timeout_s: float = 30) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def add_dag(self, dag_id: str, source: str, timeout_s: float = 90) -> None:
        """Write a DAG file, wait until the dag-processor has parsed it, and unpause it."""
        (Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py").write_text(textwrap.dedent(source))
        self.wait_for_dag(dag_id, timeout_s)

    def wait_for_dag(self, dag_id: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return
            except urllib.error.HTTPError as error:
                if error.code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def trigger(self, dag_id: str) -> str:
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 240) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.api("GET", self.run_path(dag_id, run_id))["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(1)
        raise AssertionError(f"DAG run {dag_id} {run_id} still running after {timeout_s} s")

    def task(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.api("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}")

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.task(dag_id, run_id, task_id)
            if found["state"] in states:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{task_id} is {found['state']}, not one of {states}, after {timeout_s} s")
            time.sleep(0.5)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[dict[str, Any]]:
        """The task log's records (each with event, logger, level), as the UI reads them."""
        request = urllib.request.Request(
            f"{self.url}{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{try_number}?full_content=true",
            headers={"Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            content = json.loads(response.read())["content"]
        return [entry for entry in content if isinstance(entry, dict)]

    def trigger_started(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> bool:
        """Whether a triggerer runs the task's trigger now (a trigger not yet picked up cannot be told of a kill)."""
        folder = self.folder / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return any("starting" in path.read_text(errors="replace") for path in folder.glob(f"attempt={try_number}.log.trigger.*.log"))

    def log_of(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process_group(process, 20)

    def start_component(self, name: str) -> None:
        command = [AIRFLOW, name, *COMMAND_OPTIONS.get(name, [])]
        if name == "api-server":
            command += ["--port", str(self.port)]
        with open(self.folder / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def environment(folder: Path, port: int, dags: Path, batchai_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        **os.environ,
        "AIRFLOW_HOME": str(folder / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": "batchai-tests-only-api-secret",
        "AIRFLOW__API_AUTH__JWT_SECRET": "batchai-tests-only-jwt-secret-0123456789abcdef",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "BATCHAI_HOME": str(batchai_home),
        # the embedded default with room for the tests' clusters side by side; one trusted team, so the
        # REST API may run jobs on these local nodes (refused unless an admin opts in: restapi tests)
        "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps(
            {"conn_type": "batchai", "extra": {"local_nodes": 4, "home": str(batchai_home), "local_jobs_from_shared_surfaces": True}}
        ),
        **(extra or {}),
    }


def start(folder: Path, port: int, dags: Path, batchai_home: Path, timeout_s: float = 240) -> AirflowStack:
    folder.mkdir(parents=True, exist_ok=True)
    env = environment(folder, port, dags, batchai_home)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    stack = AirflowStack(folder, port, env)
    try:
        for name in COMPONENTS:
            stack.start_component(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({process.returncode}):\n{stack.log_of(name)[-3000:]}")
            try:
                health = stack.api("GET", "/api/v2/monitor/health", timeout_s=5)
                if all((health.get(part) or {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "triggerer")):
                    return stack
            except (OSError, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError("the Airflow stack did not become healthy in time:\n" + stack.log_of("api-server")[-3000:])
    except BaseException:
        teardown(stack)
        raise


def teardown(stack: AirflowStack) -> None:
    for name in reversed(COMPONENTS):
        stack.stop(name)
