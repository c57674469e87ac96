"""A job that fills its node's disk or its volume fails with DiskFull, and the node heals.

The full disks are real: small tmpfs mounts in the test's folder (as root; skipped where this
machine cannot mount one). Real agents on local nodes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_batchai.reading.readmodels import JobView
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine cannot mount a tmpfs for a full disk: {done.stderr.strip()}")


@pytest.fixture
def small_disks(home: Path) -> Iterator[Callable[[Path, str], Path]]:
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        mount_tmpfs(folder, size)
        mounted.append(folder)
        return folder

    yield mount
    kill_agents_under(home)
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def ready(service: Service) -> None:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")


def submit(service: Service, name: str, command: str, **extra: object) -> JobView:
    service.create_job("c", name, load_job_spec({"properties": custom_job(command, **extra)}, environ={}))
    return service.wait_job(name, timeout_s=90, poll_s=0.1)


def test_a_job_that_fills_its_nodes_disk_fails_diskfull_and_the_next_job_runs(home: Path, small_disks: Callable[[Path, str], Path]) -> None:
    node_root = small_disks(home / "nodes" / "local-0", "24m")
    service = Service.embedded(home, nodes=1, settings=Settings(heartbeat_timeout_s=10))
    ready(service)
    filled = submit(service, "filler", "head -c 64M /dev/zero > $AZ_BATCHAI_JOB_TEMP/fill; echo exit anyway; exit 0")
    assert filled.execution_state == "failed", filled
    [error] = filled.execution_info.errors
    assert error.code == "DiskFull" and "working folder" in error.message and str(node_root) in error.message
    assert "bytes free" in error.message and "removed" in error.message
    assert not list(node_root.rglob("fill")), "the job's folder was cleaned"
    view = service.show_cluster("c")
    assert view.node_state_counts.idle_node_count == 1, view
    assert submit(service, "next", "echo fine").execution_state == "succeeded"


def test_a_job_that_fills_its_output_volume_fails_naming_that_volume(home: Path, small_disks: Callable[[Path, str], Path]) -> None:
    small_disks(home / "storage" / "local" / "logs", "8m")
    service = Service.embedded(home, nodes=1, settings=Settings(heartbeat_timeout_s=10))
    ready(service)
    outputs = [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}]
    filled = submit(service, "big-model", "head -c 32M /dev/zero > $AZ_BATCHAI_OUTPUT_MODEL/model.bin; exit 0", outputDirectories=outputs)
    assert filled.execution_state == "failed", filled
    [error] = filled.execution_info.errors
    # the agent names the first volume it finds full: the output directory on the logs share, or the job's
    # stdout/stderr folder on the same small disk (a check made while the disk was still filling sees a few KB left)
    assert error.code == "DiskFull" and "bytes free" in error.message, error
    assert ("/logs/" in error.message and "output directory MODEL" in error.message) or "stdouterr volume" in error.message, error
    assert service.show_cluster("c").node_state_counts.idle_node_count == 1, "the node itself is not full"
