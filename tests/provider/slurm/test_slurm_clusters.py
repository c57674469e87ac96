"""Batch AI clusters and jobs on a real Slurm partition (tests/slurmcluster.py: Debian's slurmctld,
two slurmds, munge): the same Service, CLI connection and job files as on SSH nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import connection_config, service_from_config
from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import wait_until

SECRET = "s3cret-value-that-must-stay-hidden"


@pytest.fixture
def slurm_service(slurm_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING", f"batchai://?storage_account_key={SECRET}")  # what a worker's env may hold
    return service_from_config(connection_config(slurm_cluster.connection(tmp_path), "connection"))


def job(properties: dict[str, Any]) -> Any:
    return load_job_spec({"properties": properties}, storage_account_name="local", environ={})


def test_a_cluster_is_a_view_of_the_partition(slurm_service: Service) -> None:
    view = slurm_service.create_cluster(
        "gpu", load_cluster_spec({"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 2}}})
    )
    assert view.node_state_counts.idle_node_count == 2 and view.current_node_count == 2
    assert sorted(n.node_id for n in view.nodes) == ["node1", "node2"]
    with pytest.raises(BatchAIError) as unknown:
        slurm_service.create_cluster(
            "other", load_cluster_spec({"vmSize": "STANDARD_ND40", "scaleSettings": {"manual": {"targetNodeCount": 1}}})
        )
    assert unknown.value.target == "vmSize" and "STANDARD_ND40" in unknown.value.message
    with pytest.raises(BatchAIError) as too_big:
        slurm_service.create_job(
            "gpu", "big", job({"nodeCount": 3, "customToolkitSettings": {"commandLine": "true"}, "stdOutErrPathPrefix": "/tmp"})
        )
    assert too_big.value.target == "nodeCount"


def test_a_job_is_one_slurm_job_with_batch_ai_environment_and_no_secret_in_sight(slurm_service: Service, slurm_cluster: Any) -> None:
    slurm_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}))
    spec = job(
        {
            "nodeCount": 2,
            "customToolkitSettings": {
                "commandLine": "echo master=$AZ_BATCHAI_JOB_MASTER_NODE_IP node=$AZ_BATCHAI_NODE_IP name=$AZ_BATCHAI_JOB_NAME "
                "token=$TOKEN slurm=$SLURM_JOB_ID; env | grep -c AIRFLOW_CONN || true; echo oops >&2"
            },
            "secrets": [{"name": "TOKEN", "value": SECRET}],
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "mountVolumes": {
                "azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]
            },
        }
    )
    created = slurm_service.create_job("gpu", "hello", spec)
    assert created.execution_state in ("queued", "running")
    done = slurm_service.wait_job("hello", timeout_s=60, poll_s=0.3)
    assert done.execution_state == "succeeded", done
    out = (slurm_service.read_output_file("hello", "stdout.txt") or b"").decode()
    assert "master=127.0.0.1 node=127.0.0.1 name=hello" in out and f"token={SECRET}" in out
    assert out.splitlines()[-1] == "0", "the control plane's environment (AIRFLOW_CONN_…) does not reach the job"
    assert "slurm=" in out and "slurm= " not in out
    assert (slurm_service.read_output_file("hello", "stderr.txt") or b"").decode() == "oops\n"
    record = slurm_service.store.read("jobs/default/default/hello")
    assert record is not None and record.data["slurm_job_id"]
    shown = subprocess.run(
        ["scontrol", "show", "job", record.data["slurm_job_id"]], capture_output=True, text=True, env={**os.environ, **slurm_cluster.env}
    )
    assert record.data["nodes"] == ["node1", "node2"] and "JobName=hello" in shown.stdout
    assert SECRET not in shown.stdout and SECRET not in json.dumps(record.data) and SECRET not in json.dumps(done.to_json())
    names = sorted(f.name for f in slurm_service.list_output_files("hello"))
    assert names == [
        "execution-node1.log",
        "execution-node2.log",
        "resources-node1.json",
        "resources-node2.json",
        "stderr.txt",
        "stdout.txt",
    ]


@pytest.fixture
def login_service(slurm_on_hosts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """Slurm's commands over SSH on the login host; nothing of Slurm in this process's environment."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    return service_from_config(connection_config(slurm_on_hosts.connection(tmp_path), "connection"))


def network_namespace(namespace: str | None) -> str:
    """The network namespace's identity as a process in it reads it (``net:[4026532...]``)."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "readlink", "/proc/self/ns/net"], capture_output=True, text=True, check=True).stdout.strip()


def test_through_a_login_node_each_rank_runs_on_its_own_host(login_service: Service, slurm_on_hosts: Any) -> None:
    login_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}))
    assert login_service.show_cluster("gpu").node_state_counts.idle_node_count == 2
    spec = job(
        {
            "nodeCount": 2,
            "customToolkitSettings": {
                "commandLine": "echo ip=$AZ_BATCHAI_NODE_IP master=$AZ_BATCHAI_JOB_MASTER_NODE_IP net=$(readlink /proc/self/ns/net)"
            },
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "mountVolumes": {
                "azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]
            },
        }
    )
    login_service.create_job("gpu", "where", spec)
    done = login_service.wait_job("where", timeout_s=60, poll_s=0.3)
    assert done.execution_state == "succeeded", done
    first = slurm_on_hosts.hosts.hosts[1]
    out = (login_service.read_output_file("where", "stdout.txt") or b"").decode()
    assert f"ip={first.address} master={first.address} net={network_namespace(first.namespace)}" in out, out
    assert login_service.store.read("jobs/default/default/where").data["nodes"] == ["node1", "node2"]
    if first.namespace:
        assert network_namespace(first.namespace) != network_namespace(None), "the job ran in node1's namespace, not here"


def running_on_nodes(marker: str) -> list[str]:
    """Processes of this machine whose command line holds ``marker`` (the test's nodes are this machine)."""
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [pid for pid in found.stdout.split() if int(pid) != os.getpid()]


def test_terminate_is_scancel_and_leaves_no_process_on_any_node(slurm_service: Service) -> None:
    slurm_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}))
    marker = "sleep 3217"
    spec = job(
        {
            "nodeCount": 2,
            "pyTorchSettings": {"pythonScriptFilePath": "-c", "commandLineArgs": f"\"import os; os.system('{marker}')\""},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
        }
    )
    slurm_service.create_job("gpu", "long", spec)
    wait_until(lambda: len(running_on_nodes(marker)) >= 2, 30, 0.2, what="both ranks to run")
    wait_until(lambda: slurm_service.refresh_job("long").execution_state == "running", 30, 0.2, what="the job to run")
    view = slurm_service.terminate_job("long")
    if view.execution_state != "failed":
        view = slurm_service.wait_job("long", timeout_s=30, poll_s=0.3)
    assert view.execution_state == "failed" and view.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not running_on_nodes(marker), 20, 0.2, what="every rank to be gone")
    record = slurm_service.store.read("jobs/default/default/long")
    assert record is not None

    def slurm_state() -> str:
        shown = subprocess.run(["scontrol", "show", "job", record.data["slurm_job_id"]], capture_output=True, text=True).stdout
        return shown.split("JobState=")[1].split()[0] if "JobState=" in shown else shown

    # Slurm says COMPLETING while its daemons finish the job's epilog; the end state comes after.
    state = wait_until(lambda: (found := slurm_state()) != "COMPLETING" and found, 30, 0.2, what="Slurm to finish the job")
    assert state == "CANCELLED", state


def test_a_job_cancelled_while_pending_in_slurm_leaves_no_secret_behind(slurm_service: Service, tmp_path: Path) -> None:
    slurm_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 4}}}))
    both = {"nodeCount": 2, "customToolkitSettings": {"commandLine": "sleep 30"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP"}
    slurm_service.create_job("gpu", "holder", job(both))
    wait_until(lambda: slurm_service.refresh_job("holder").execution_state == "running", 30, 0.2, what="the first job to run")
    slurm_service.create_job("gpu", "waiting", job({**both, "secrets": [{"name": "TOKEN", "value": SECRET}]}))
    record = wait_until(
        lambda: (found := slurm_service.store.read("jobs/default/default/waiting")) and found.data["slurm_job_id"] and found,
        30,
        0.2,
        what="the second job to be submitted",
    )
    pending = subprocess.run(["scontrol", "show", "job", record.data["slurm_job_id"]], capture_output=True, text=True).stdout
    assert "JobState=PENDING" in pending and slurm_service.show_job("waiting").execution_state == "queued"
    secrets_files = [p for p in (tmp_path / "nodes").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert secrets_files and all(oct(p.stat().st_mode)[-3:] == "600" for p in secrets_files), "each node's secrets wait 0600"
    assert slurm_service.terminate_job("waiting").execution_state == "failed"
    slurm_service.terminate_job("holder")
    left = [p for p in (tmp_path / "nodes").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not left, f"secrets left on the shared folder: {left}"


@pytest.mark.parametrize("option", ["requeue", "terminate"])
def test_a_job_whose_node_fails_is_requeued_or_failed_per_the_deallocation_option(
    slurm_service: Service, slurm_cluster: Any, tmp_path: Path, option: str
) -> None:
    scale = {"manual": {"targetNodeCount": 2, "nodeDeallocationOption": option}}
    slurm_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": scale}))
    marker = tmp_path / "first-attempt-ran"  # the first attempt waits for its node to fail, the second ends at once
    command = f"if [ -e {marker} ]; then echo second attempt; else touch {marker}; sleep 60; fi"
    spec = job({"nodeCount": 1, "customToolkitSettings": {"commandLine": command}, "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP"})
    slurm_service.create_job("gpu", "victim", spec)
    wait_until(
        lambda: slurm_service.refresh_job("victim").execution_state == "running" and marker.exists(),
        30,
        0.2,
        what="the first attempt to run",
    )
    first_record = slurm_service.store.read("jobs/default/default/victim")
    assert first_record is not None
    [node] = first_record.data["nodes"]
    down = ["scontrol", "update", f"nodename={node}", "state=down", "reason=batchai-test"]
    try:
        subprocess.run(down, env={**os.environ, **slurm_cluster.env}, check=True, capture_output=True, timeout=10)
        done = slurm_service.wait_job("victim", timeout_s=60, poll_s=0.3)
    finally:
        # back in service for the next tests (ReturnToService=2 may have done it already: then resume is refused)
        resume = ["scontrol", "update", f"nodename={node}", "state=resume"]
        subprocess.run(resume, env={**os.environ, **slurm_cluster.env}, check=False, capture_output=True, timeout=10)
    record = slurm_service.store.read("jobs/default/default/victim")
    assert record is not None
    if option == "requeue":
        assert done.execution_state == "succeeded", done
        assert record.data["attempt"] == 1 and record.data["slurm_job_id"] != first_record.data["slurm_job_id"], "a new Slurm job"
        [first] = record.data["attempts"]
        assert first["nodes"] == [node] and first["errors"][0]["code"] == "NodeFailed" and "NODE_FAIL" in first["errors"][0]["message"]
        assert (slurm_service.read_output_file("victim", "stdout.txt") or b"").decode() == "second attempt\n"
    else:
        assert done.execution_state == "failed" and done.execution_info.errors[0].code == "NodeFailed", done
        assert not record.data["attempts"]


def test_a_failing_job_fails_with_its_exit_code_and_a_wall_clock_limit_ends_a_job(slurm_service: Service) -> None:
    slurm_service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
    failing = job(
        {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "echo broken input >&2; exit 3"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
        }
    )
    slow = job(
        {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "sleep 60"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            "constraints": {"maxWallClockTime": "00:00:03"},
        }
    )
    slurm_service.create_job("gpu", "failing", failing)
    slurm_service.create_job("gpu", "slow", slow)
    failed = slurm_service.wait_job("failing", timeout_s=60, poll_s=0.3)
    assert failed.execution_state == "failed" and failed.execution_info.exit_code == 3
    assert (slurm_service.read_output_file("failing", "stderr.txt") or b"").decode() == "broken input\n"
    timed_out = slurm_service.wait_job("slow", timeout_s=60, poll_s=0.3)
    assert timed_out.execution_state == "failed"
    assert timed_out.execution_info.errors[0].code == "MaxWallClockTimeExceeded"


def test_the_slurm_field_is_read_from_json_text_and_bad_values_name_their_field(tmp_path: Path) -> None:
    config = connection_config({"conn_type": "batchai", "extra": json.dumps({"slurm": '{"partition": "gpu", "qos": "high"}'})}, "conn")
    assert config.slurm is not None and (config.slurm.partition, config.slurm.qos, config.slurm.login) == ("gpu", "high", None)
    assert config.describe().startswith("Slurm partition gpu")
    for extras, field in (
        ({"slurm": {"qos": "high"}}, "slurm.partition"),
        ({"slurm": {"partition": "gpu", "sbatch_args": ["--export=ALL"]}}, "slurm.sbatch_args"),
        ({"slurm": {"partition": "gpu", "colour": "red"}}, "slurm.colour"),
    ):
        with pytest.raises(BatchAIError) as refused:
            connection_config(extras, "conn")
        assert refused.value.target == field, refused.value.message
    both = connection_config({"slurm": {"partition": "gpu"}, "hosts": ["node-a"], "home": str(tmp_path)}, "conn")
    with pytest.raises(BatchAIError, match="not both"):
        service_from_config(both)
    with pytest.raises(BatchAIError) as login:  # refused before any name is looked up
        service_from_config(connection_config({"slurm": {"partition": "gpu", "login": "bad host!"}, "home": str(tmp_path)}, "conn"))
    assert login.value.target == "slurm.login"


def test_the_cli_takes_a_slurm_connection_like_any_other(slurm_cluster: Any, tmp_path: Path) -> None:
    connection = json.dumps({"slurm": {"partition": "gpu"}, "home": str(tmp_path / "home"), "node_root": str(tmp_path / "nodes")})
    env = {**os.environ, **slurm_cluster.env, "BATCHAI_CONNECTION": connection}
    cli = [sys.executable, "-m", "airflow_batchai.cli"]
    created = subprocess.run(
        [*cli, "cluster", "create", "-n", "gpu", "-s", "STANDARD_NC6", "--min", "0", "--max", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    shown = subprocess.run([*cli, "cluster", "show", "-n", "gpu"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["vmSize"] == "STANDARD_NC6" and view["nodeStateCounts"]["idleNodeCount"] == 2


def test_on_azure_storage_records_and_volumes_stay_in_the_account(
    slurm_cluster: Any, azurite: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slurm runs the job; the records, the logs share and the output stay in the storage account."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    container = f"slurm-{os.getpid()}-{len(list(tmp_path.parts))}"
    extra = {
        **slurm_cluster.connection(tmp_path),
        "storage_connection_string": azurite.connection_string,
        "control_container": container,
        "files_on_blob": True,
    }
    service = service_from_config(connection_config(extra, "connection"))
    service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}))
    spec = load_job_spec(
        {
            "properties": {
                "nodeCount": 1,
                "customToolkitSettings": {"commandLine": "echo on slurm $SLURM_JOB_ID > $AZ_BATCHAI_OUTPUT_OUT/result.txt; echo done"},
                "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
                "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
                "mountVolumes": {
                    "azureFileShares": [
                        {
                            "azureFileUrl": f"https://{azurite.credential().account}.file.core.windows.net/slurmlogs",
                            "relativeMountPath": "logs",
                        }
                    ]
                },
            }
        },
        environ={},
    )
    service.create_job("gpu", "stored", spec)
    done = service.wait_job("stored", timeout_s=60, poll_s=0.3)
    assert done.execution_state == "succeeded", done
    [result] = service.list_output_files("stored", output_directory_id="OUT")
    assert result.name == "result.txt" and "sig=" in result.download_url
    from azure.storage.blob import BlobServiceClient

    account = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert any(
        b.name.endswith("/OUT/result.txt") or b.name.endswith("result.txt") for b in account.get_container_client("slurmlogs").list_blobs()
    )
    assert any(account.get_container_client(container).list_blobs()), "the records are in the control container"
    assert not (tmp_path / "home").exists(), "nothing went to local folders but the nodes' own"


@pytest.fixture
def power_saving(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A partition of its own that powers nodes down after 2 s idle and up when a job needs them (tests/slurmcluster.py)."""
    from tests import slurmcluster

    if not slurmcluster.available():
        pytest.skip("Slurm is not installed (.ci/run installs slurmctld slurmd slurm-client munge)")
    cluster = slurmcluster.start(tmp_path_factory.mktemp("power"), nodes=("node1", "node2"), suspend_s=2)  # a short path: see start
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    try:
        yield cluster
    finally:
        slurmcluster.stop(cluster)


def test_a_power_saving_partition_wakes_for_a_job_says_why_it_waits_and_sleeps_again(power_saving: Any, tmp_path: Path) -> None:
    """As on a cloud Slurm cluster: powered-down nodes are no nodes of the cluster (as deallocated VMs), a job that
    needs them is queued with the reason while they power up (the cluster resizing, its nodes preparing), then runs."""
    service = service_from_config(connection_config(power_saving.connection(tmp_path), "connection"))
    scale = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 2}}
    service.create_cluster("gpu", load_cluster_spec({"scaleSettings": scale}))
    asleep = lambda: (c := service.show_cluster("gpu")).current_node_count == 0 and c.allocation_state == "steady"  # noqa: E731
    wait_until(asleep, 30, 0.5, what="both nodes powered down")
    service.create_job(
        "gpu",
        "wake",
        job({"nodeCount": 2, "customToolkitSettings": {"commandLine": "hostname"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT"}),
    )
    waking = wait_until(
        lambda: (
            (j := service.show_job("wake")).execution_info
            and j.execution_info.queue_reason
            and "power up" in j.execution_info.queue_reason
            and j
        ),
        30,
        0.3,
        what="the job waiting for its nodes to power up",
    )
    assert waking.execution_state == "queued"
    resizing = service.show_cluster("gpu")
    assert resizing.node_state_counts.preparing_node_count == 2 and resizing.allocation_state == "resizing", resizing
    done = service.wait_job("wake", timeout_s=90, poll_s=0.5)
    log = power_saving.folder / "log"
    assert done.execution_state == "succeeded", (done.execution_info, (log / "slurmctld.log").read_text()[-3000:])
    assert done.execution_info.queue_reason is None
    wait_until(asleep, 30, 0.5, what="the nodes powered down again once idle")
    power_log = (power_saving.folder / "log" / "power.log").read_text()
    lines = power_log.splitlines()  # Slurm suspends nodes one by one or together, as its timer finds them
    resumed = [index for index, line in enumerate(lines) if " resume " in line]
    assert len(resumed) == 1 and "resume node[1-2]" in lines[resumed[0]], power_log
    assert {"suspend" in line for line in lines[: resumed[0]]} == {True} and "suspend" in lines[-1], "asleep before and after"


def test_a_slurm_clusters_usage_is_its_jobs_running_seconds_and_a_budget_holds_new_jobs(
    slurm_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition's nodes are not ours to follow (other users run there too): a Slurm cluster counts what its jobs ran."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    extras = {**slurm_cluster.connection(tmp_path), "prices": {"node_hour": 36.0, "daily_budgets": {"gpu": 0.05}}}
    service = service_from_config(connection_config(extras, "connection"))
    service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}))
    spec = job({"nodeCount": 2, "customToolkitSettings": {"commandLine": "sleep 3"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT"})
    service.create_job("gpu", "pair", spec)
    done = service.wait_job("pair", timeout_s=90, poll_s=0.3)
    assert done.execution_state == "succeeded" and done.usage is not None and done.usage["nodeSeconds"] >= 6.0
    cluster = wait_until(lambda: (c := service.show_cluster("gpu")).usage["sinceCreation"]["nodeSeconds"] and c, 30, 0.3, what="counted")  # type: ignore[index]
    assert abs(cluster.usage["sinceCreation"]["byState"]["running"]["nodeSeconds"] - done.usage["nodeSeconds"]) <= 1.0  # type: ignore[index]
    assert set(cluster.usage["sinceCreation"]["byState"]) == {"running"}, "the partition's idle time is not this cluster's"  # type: ignore[index]
    service.create_job(
        "gpu",
        "held",
        job({"nodeCount": 1, "customToolkitSettings": {"commandLine": "true"}, "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT"}),
    )
    held = wait_until(lambda: (j := service.refresh_job("held")).execution_info.queue_reason and j, 30, 0.3, what="the budget said")
    assert held.execution_state == "queued" and (held.execution_info.queue_reason or "").startswith("BudgetExceeded: cluster gpu")
