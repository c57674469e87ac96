"""Shared fixtures: an embedded-default Service in a temporary home, and waiting helpers.

Every node is a real local process tree; nothing of our own code is mocked. Fixtures stop
what they started: after each test, any agent still running under the test's home is
terminated by PID.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.service import Service, Settings

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def kill_agents_under(home: Path) -> None:
    """Stop every agent (and its process groups) whose run folder lies under ``home``."""
    for status_path in home.glob("nodes/*/batchai/runs/*/status.json"):
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            continue
        for pgid in status.get("pgids") or []:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        pid = status.get("pid")
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "batchai-home"
    yield root
    kill_agents_under(root)


@pytest.fixture
def service(home: Path) -> Service:
    """Two local nodes; short timeouts so lost-node tests finish quickly."""
    return Service.embedded(home, nodes=2, settings=Settings(heartbeat_timeout_s=10, launch_timeout_s=20))


def custom_job(command: str, *, nodes: int = 1, **extra: Any) -> dict[str, Any]:
    """A minimal job.json body around ``command``, with logs on a local 'logs' share."""
    return {
        "nodeCount": nodes,
        "customToolkitSettings": {"commandLine": command},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {"azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]},
        **extra,
    }
