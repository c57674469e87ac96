"""Jobs whose volumes are Blob containers, on Azurite: staged in, logs streamed out, outputs listed with SAS.

The nodes are local processes with no blobfuse2: the agent stages over per-job SAS URLs with
the standard library, exactly as on an SSH node without FUSE.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.data.azure import AzureDataStore
from airflow_batchai.data.upload import upload_batch
from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.azurite import KEY
from tests.conftest import command_lines_with, kill_agents_under, put_stand_in_on_path, wait_until
from tests.provider.data.contract import DataStoreContract

TRAIN = """
import os, sys, time
inputs, model = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(inputs)):
    print("read", name, open(os.path.join(inputs, name)).read().strip(), flush=True)
print("sibling module:", __import__("helper").VALUE, flush=True)
print("mount files:", sorted(os.path.relpath(os.path.join(d, f), os.environ["AZ_BATCHAI_JOB_MOUNT_ROOT"])
      for d, _, fs in os.walk(os.environ["AZ_BATCHAI_JOB_MOUNT_ROOT"]) for f in fs if "stdouterr" not in d and "outputs" not in d), flush=True)
print("sas in my environment:", any("sig=" in v for v in os.environ.values()), flush=True)
os.makedirs(model, exist_ok=True)
open(os.path.join(model, "model.txt"), "w").write("weights")
for step in range(int(os.environ.get("STEPS", "0"))):
    print("step", step, flush=True)
    time.sleep(0.5)
"""


def azure_service(azurite: Any, home: Path, volume_mode: str = "stage") -> Service:
    config = ProviderConfig(
        storage_connection_string=azurite.connection_string,
        control_container=f"control-{uuid.uuid4().hex[:10]}",
        home=str(home),
        files_on_blob=True,
        volume_mode=volume_mode,
    )
    return service_from_config(config)


def job_body(steps: int = 0) -> dict[str, Any]:
    return {
        "nodeCount": 1,
        "customToolkitSettings": {
            "commandLine": 'cd $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/code && "$BATCHAI_PYTHON" train.py $AZ_BATCHAI_INPUT_DATA $AZ_BATCHAI_OUTPUT_MODEL'
        },
        "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/digits"}],
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "environmentVariables": [{"name": "STEPS", "value": str(steps)}],
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "devstoreaccount1", "containerName": name, "relativeMountPath": name}
                for name in ("scripts", "data", "logs")
            ]
        },
    }


@pytest.fixture
def uploaded(azurite: Any, home: Path, tmp_path: Path) -> Service:
    service = azure_service(azurite, home)
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN)
    (code / "helper.py").write_text("VALUE = 42\n")
    data = tmp_path / "data"
    (data / "digits").mkdir(parents=True)
    (data / "unrelated").mkdir()
    for index in range(3):
        (data / "digits" / f"part-{index}.txt").write_text(f"digits {index}\n")
    (data / "unrelated" / "huge.bin").write_bytes(b"x" * 1000)
    upload_batch(service.data, source=str(code), account="devstoreaccount1", container="scripts", destination_path="code")
    upload_batch(service.data, source=str(data), account="devstoreaccount1", container="data")
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    yield service
    kill_agents_under(home)


def test_a_job_reads_its_inputs_and_writes_logs_and_outputs_to_blob(uploaded: Service, home: Path) -> None:
    service = uploaded
    service.create_job("c", "train", load_job_spec({"properties": job_body()}, environ={}))
    done = service.wait_job("train", timeout_s=60, poll_s=0.2)
    stdout = (service.read_output_file("train", "stdout.txt") or b"").decode()
    assert done.execution_state == "succeeded", (done.execution_info, stdout, service.read_output_file("train", "stderr.txt"))
    assert "read part-0.txt digits 0" in stdout and "read part-2.txt digits 2" in stdout
    assert "sibling module: 42" in stdout  # the script's folder came along
    assert "'data/unrelated/huge.bin'" not in stdout and "'scripts/code/helper.py'" in stdout  # only what the job reads
    assert "sas in my environment: False" in stdout
    models = service.list_output_files("train", output_directory_id="MODEL")
    assert [m.name for m in models] == ["model.txt"]
    with urllib.request.urlopen(models[0].download_url, timeout=10) as response:
        assert response.read() == b"weights"
    first = service.list_output_files("train", max_results=2)
    rest = service.list_output_files("train", max_results=1000, marker=first[-1].name)
    logs = {f.name: f for f in service.list_output_files("train")}
    assert [f.name for f in first + rest] == sorted(logs) and len(first) == 2  # pages follow each other by name
    with pytest.raises(BatchAIError, match="maxresults"):
        service.list_output_files("train", max_results=1001)
    with pytest.raises(BatchAIError, match="linkexpiryinminutes"):
        service.list_output_files("train", link_expiry_minutes=4)
    assert {"stdout.txt", "stderr.txt", "execution.log"} <= set(logs)
    with urllib.request.urlopen(logs["stdout.txt"].download_url, timeout=10) as response:
        assert response.read().decode() == stdout
    assert "sp=r" in logs["stdout.txt"].download_url and KEY not in json.dumps([f.to_json() for f in logs.values()])
    assert not list(home.glob("nodes/*/jobs/default/default/train/mounts/*"))  # staged folders removed at the end


def test_log_lines_reach_storage_within_a_second_while_the_job_runs(uploaded: Service) -> None:
    service = uploaded
    service.create_job("c", "stream", load_job_spec({"properties": job_body(steps=8)}, environ={}))
    seen: dict[int, float] = {}
    started = time.monotonic()
    while len(seen) < 8 and time.monotonic() - started < 60:
        service.show_job("stream")  # as a follower does: a read kicks the cluster's pass (the node may still be in setup)
        text = (service.read_output_file("stream", "stdout.txt") or b"").decode()
        for step in range(8):
            if f"step {step}\n" in text and step not in seen:
                seen[step] = time.monotonic()
        time.sleep(0.05)
    assert len(seen) == 8
    assert service.show_job("stream").execution_state == "running" or seen[0] < seen[7] - 3  # seen while running
    gaps = [seen[s + 1] - seen[s] for s in range(7)]
    assert max(gaps) < 1.6, gaps  # printed every 0.5 s; each is in storage at most ~1 s later
    assert service.wait_job("stream", timeout_s=30, poll_s=0.2).execution_state == "succeeded"


def test_no_key_or_sas_lands_in_records_plans_or_command_lines(uploaded: Service, home: Path, azurite: Any) -> None:
    service = uploaded
    service.create_job("c", "quiet", load_job_spec({"properties": job_body(steps=4)}, environ={}))
    plan = wait_until(lambda: next(iter(home.glob("nodes/*/batchai/runs/*/plan.json")), None), 30, what="a job plan on the node")
    wait_until(lambda: service.show_job("quiet").execution_state == "running", 30, what="running")
    assert command_lines_with(b"sig=", KEY.encode()) == []
    assert "sig=" not in plan.read_text() and KEY not in plan.read_text()
    service.wait_job("quiet", timeout_s=60, poll_s=0.2)
    control = service.store.container  # type: ignore[attr-defined]
    for blob in control.list_blobs():
        payload = control.download_blob(blob.name).readall()
        assert b"sig=" not in payload and KEY.encode() not in payload, blob.name


def test_upload_batch_to_blob_skips_unchanged_files_by_size_and_md5(azurite: Any, home: Path, tmp_path: Path) -> None:
    service = azure_service(azurite, home)
    source = tmp_path / "src"
    (source / "nested").mkdir(parents=True)
    (source / "small.txt").write_text("small")
    (source / "nested" / "big.bin").write_bytes(os.urandom(40 * 1024 * 1024))  # above the in-memory limit: streamed in blocks
    lines: list[str] = []
    first = upload_batch(
        service.data, source=str(source), account="devstoreaccount1", container="uploads", destination_path="run1", on_progress=lines.append
    )
    assert first["uploaded"] == ["nested/big.bin", "small.txt"] and any(line.startswith("[2/2]") for line in lines)
    blob = service.data.container("uploads").get_blob_client("run1/nested/big.bin").get_blob_properties()
    assert bytes(blob.content_settings.content_md5) == hashlib.md5((source / "nested" / "big.bin").read_bytes()).digest()
    (source / "small.txt").write_text("SMALL")  # same size, other content
    again = upload_batch(service.data, source=str(source), account="devstoreaccount1", container="uploads", destination_path="run1")
    assert again["uploaded"] == ["small.txt"] and again["skipped"] == ["nested/big.bin"]
    forced = upload_batch(
        service.data, source=str(source), account="devstoreaccount1", container="uploads", destination_path="run1", overwrite=True
    )
    assert len(forced["uploaded"]) == 2
    with pytest.raises(BatchAIError) as raised:
        upload_batch(service.data, source=str(source), account="otheraccount", container="uploads")
    assert "otheraccount" in str(raised.value)


def test_a_bad_container_name_is_refused_naming_the_field(azurite: Any, home: Path) -> None:
    service = azure_service(azurite, home)
    body = job_body()
    body["mountVolumes"]["azureBlobFileSystems"][0]["containerName"] = "Bad_Name"
    with pytest.raises(BatchAIError) as raised:
        service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
        service.create_job("c", "bad", load_job_spec({"properties": body}, environ={}))
    assert raised.value.target == "mountVolumes.azureBlobFileSystems[0]" and "'Bad_Name'" in raised.value.message


def test_cluster_mounts_on_blob_serve_node_setup_and_jobs_like_the_recipes(azurite: Any, home: Path, tmp_path: Path) -> None:
    """Recipes keep scripts and logs on a cluster-level share: $AZ_BATCHAI_MOUNT_ROOT/afs."""
    service = azure_service(azurite, home)
    setup = tmp_path / "setup"
    setup.mkdir()
    (setup / "install.sh").write_text("echo installing from $(basename $(dirname $0))\n")
    upload_batch(service.data, source=str(setup), account="devstoreaccount1", container="afs", destination_path="setup")
    afs = {"azureBlobFileSystems": [{"accountName": "devstoreaccount1", "containerName": "afs", "relativeMountPath": "afs"}]}
    cluster = {
        "scaleSettings": {"manual": {"targetNodeCount": 1}},
        "nodeSetup": {
            "mountVolumes": afs,
            "setupTask": {
                "commandLine": "sh $AZ_BATCHAI_MOUNT_ROOT/afs/setup/install.sh",
                "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs",
            },
        },
    }
    service.create_cluster("recipes", load_cluster_spec(cluster, environ={}))
    try:
        wait_until(lambda: service.show_cluster("recipes").node_state_counts.idle_node_count == 1, 30, 0.2, what="setup done")
        logs = [b.name for b in service.data.container("afs").list_blobs() if "stdout-" in b.name]
        assert len(logs) == 1 and "/clusters/recipes/" in logs[0]
        assert service.data.container("afs").download_blob(logs[0]).readall() == b"installing from setup\n"
        body = {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "ls $AZ_BATCHAI_MOUNT_ROOT/afs/setup"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs",
        }
        service.create_job("recipes", "ls", load_job_spec({"properties": body}, environ={}))
        assert service.wait_job("ls", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
        assert service.read_output_file("ls", "stdout.txt") == b"install.sh\n"
    finally:
        kill_agents_under(home)


def fuse_mounts_fail(tmp_path: Path) -> str | None:
    """Why rclone cannot mount on this machine (no rclone, no FUSE, not permitted), or None when it can."""
    if shutil.which("rclone") is None or shutil.which("fusermount3") is None:
        return "rclone or fuse3 missing (scripts/test.sh installs both)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    source, point = tmp_path / "probe-source", tmp_path / "probe-mount"
    source.mkdir()
    point.mkdir()
    done = subprocess.run(
        ["rclone", "mount", f":local:{source}", str(point), "--daemon", "--daemon-wait", "10s"], capture_output=True, text=True, timeout=60
    )
    mounted = os.path.ismount(point)
    if mounted:
        subprocess.run(["fusermount3", "-u", str(point)], capture_output=True, timeout=60)
    return None if mounted else (done.stderr.strip().splitlines() or ["mount did not appear"])[-1]


def test_volumes_a_job_only_reads_are_mounted_with_rclone_where_the_node_has_it(azurite: Any, home: Path, tmp_path: Path) -> None:
    reason = fuse_mounts_fail(tmp_path)
    if reason:
        pytest.skip(f"rclone cannot mount here, so the agent would stage instead: {reason}")
    service = azure_service(azurite, home, volume_mode="auto")
    data = tmp_path / "data"
    (data / "digits").mkdir(parents=True)
    (data / "digits" / "part-0.txt").write_text("digits 0\n")
    (data / "unrelated").mkdir()
    (data / "unrelated" / "huge.bin").write_bytes(b"x")
    upload_batch(service.data, source=str(data), account="devstoreaccount1", container="mounted", destination_path="")
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    command = 'grep -c " $AZ_BATCHAI_JOB_MOUNT_ROOT/data fuse" /proc/mounts; cat $AZ_BATCHAI_INPUT_DATA/part-0.txt; ls $AZ_BATCHAI_JOB_MOUNT_ROOT/data; sleep 2'
    body = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": command},
        "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/digits"}],
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "devstoreaccount1", "containerName": "mounted", "relativeMountPath": "data"},
                {"accountName": "devstoreaccount1", "containerName": "logs", "relativeMountPath": "logs"},
            ]
        },
    }
    try:
        service.create_job("c", "mounted", load_job_spec({"properties": body}, environ={}))
        wait_until(lambda: service.show_job("mounted").execution_state == "running", 30, what="running")
        assert command_lines_with(b"sig=") == []  # rclone got its SAS URL from the environment
        done = service.wait_job("mounted", timeout_s=60, poll_s=0.2)
        stdout = (service.read_output_file("mounted", "stdout.txt") or b"").decode()
        assert done.execution_state == "succeeded", (done.execution_info, stdout, service.read_output_file("mounted", "stderr.txt"))
        assert stdout.splitlines() == ["1", "digits 0", "digits", "unrelated"]  # a real mount: the whole container, read lazily
        execution = (service.read_output_file("mounted", "execution.log") or b"").decode()
        assert "mounted devstoreaccount1/mounted read-only" in execution and "staged" not in execution.split("mounted devstoreaccount1")[0]
        assert str(home) not in Path("/proc/mounts").read_text()  # unmounted at the end
    finally:
        kill_agents_under(home)


BLOBFUSE2_STAND_IN = '''#!{python}
"""Stand-in for blobfuse2 (Microsoft ships no Debian package, and its repository is out of reach
here): records its call and config, then mounts a read-only tmpfs holding a copy of the container."""
import json, os, shutil, stat, subprocess, sys
point = sys.argv[2]
config = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--config-file="))
with open(config) as handle:
    text = handle.read()
with open({record!r}, "w") as handle:
    json.dump({{"argv": sys.argv[1:], "mode": stat.S_IMODE(os.stat(config).st_mode), "config": config, "text": text}}, handle)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", point], check=True)
shutil.copytree({copy!r}, point, dirs_exist_ok=True)
subprocess.run(["mount", "-o", "remount,ro", point], check=True)
'''


def test_blobfuse2_is_preferred_and_gets_its_sas_in_a_private_file_removed_at_the_end(
    azurite: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """blobfuse2 itself cannot run here: a stand-in checks what the agent hands it."""
    if not Path("/dev/fuse").exists() or shutil.which("fusermount3") is None:
        pytest.skip("the agent mounts only where the node has FUSE (/dev/fuse and fuse3)")
    service = azure_service(azurite, home, volume_mode="auto")
    data = tmp_path / "data" / "digits"
    data.mkdir(parents=True)
    (data / "part-0.txt").write_text("digits 0\n")
    upload_batch(service.data, source=str(tmp_path / "data"), account="devstoreaccount1", container="fused", destination_path="")
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copy)
    (copy / "digits" / "part-0.txt").write_text("digits 0 through blobfuse2\n")
    record = tmp_path / "blobfuse2.json"
    script = BLOBFUSE2_STAND_IN.format(python=sys.executable, record=str(record), copy=str(copy))
    put_stand_in_on_path(monkeypatch, tmp_path / "bin", "blobfuse2", script)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    body = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": "cat $AZ_BATCHAI_INPUT_DATA/part-0.txt"},
        "inputDirectories": [{"id": "DATA", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/digits"}],
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "devstoreaccount1", "containerName": "fused", "relativeMountPath": "data"},
                {"accountName": "devstoreaccount1", "containerName": "logs", "relativeMountPath": "logs"},
            ]
        },
    }
    try:
        service.create_job("c", "fused", load_job_spec({"properties": body}, environ={}))
        done = service.wait_job("fused", timeout_s=60, poll_s=0.2)
        stdout = service.read_output_file("fused", "stdout.txt")
        execution = service.read_output_file("fused", "execution.log") or b""
        assert done.execution_state == "succeeded", (done.execution_info, stdout, execution)
        assert stdout == b"digits 0 through blobfuse2\n" and b"read-only" in execution and b"with blobfuse2" in execution

        seen = json.loads(record.read_text())
        assert seen["argv"][0] == "mount" and seen["argv"][1].endswith("/data") and "--read-only" in seen["argv"]
        assert not any("sig=" in argument for argument in seen["argv"])
        assert seen["mode"] == 0o600
        settings = dict(line.strip().split(": ", 1) for line in seen["text"].splitlines() if ": " in line)
        assert settings["mode"] == "sas" and settings["account-name"] == "devstoreaccount1" and settings["container"] == "fused"
        assert settings["endpoint"] == azurite.endpoint and "sp=rl&" in settings["sas"]  # read-only, this job's SAS
        assert not Path(seen["config"]).exists()  # the SAS left the node's disk with the mount
        assert seen["argv"][1] not in Path("/proc/mounts").read_text()
    finally:
        kill_agents_under(home)


STREAM = """
import os, time
out = os.environ["AZ_BATCHAI_OUTPUT_MODEL"]
os.makedirs(out, exist_ok=True)
for i in range(150):
    print("line %03d" % i, flush=True)
    if i % 7 == 0 and i < 140:
        with open(os.path.join(out, "part-%02d.txt" % (i // 7)), "w") as part:
            part.write("content %d\\n" % i * 100)
    time.sleep(0.06)
"""


def _found(saved: Path) -> list[bytes]:
    """Which of the code's blob and the logs container Azurite's saved metadata holds."""
    data = saved.read_bytes()
    return [needle for needle in (b"code/stream.py", b'"logs"') if needle in data]


def test_storage_that_loses_acknowledged_writes_still_gets_every_log_line_and_output(home: Path, tmp_path: Path) -> None:
    """Azurite SIGKILLed mid-job and started again on its data: it forgets its last seconds of writes,
    as a storage failover can. The job may only succeed with all 150 lines and 20 files in storage."""
    from airflow_batchai.control.local import LocalControlStore, LocalSecretVault
    from airflow_batchai.pools.local import LocalNodePool
    from airflow_batchai.settings import Settings
    from tests import azurite as emulator

    storage = emulator.start(location=tmp_path / "azurite")
    try:
        data = AzureDataStore(storage.credential(), files_on_blob=True, volume_mode="stage")
        settings = Settings(default_storage_account="devstoreaccount1")
        service = Service(LocalControlStore(home / "control"), LocalSecretVault(home / "secrets"), LocalNodePool(home, 1), data, settings)
        code = tmp_path / "code"
        code.mkdir()
        (code / "stream.py").write_text(STREAM)
        upload_batch(data, source=str(code), account="devstoreaccount1", container="scripts", destination_path="code")
        storage.credential().service().create_container("logs")
        service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
        saved = tmp_path / "azurite" / "__azurite_db_blob__.json"  # Azurite saves its metadata there every 5 s
        wait_until(lambda: saved.exists() and {b"code/stream.py", b'"logs"'} <= set(_found(saved)), 15, 0.2, what="Azurite to save them")
        # what came before the job is saved, so only the job's own writes can be lost
        body = job_body()
        body["customToolkitSettings"] = {"commandLine": '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/code/stream.py'}
        body.pop("inputDirectories")
        service.create_job("c", "failover", load_job_spec({"properties": body}, environ={}))
        wait_until(lambda: b"line 060" in (service.read_output_file("failover", "stdout.txt") or b""), timeout_s=60)
        os.killpg(storage.process.pid, signal.SIGKILL)
        storage.process.wait(timeout=10)
        storage = emulator.start(location=tmp_path / "azurite", port=storage.port)
        done = service.wait_job("failover", timeout_s=120, poll_s=0.2)
        assert done.execution_state == "succeeded", done.execution_info
        stdout = (service.read_output_file("failover", "stdout.txt") or b"").decode()
        assert stdout == "".join(f"line {i:03d}\n" for i in range(150))
        parts = {f.name: f for f in service.list_output_files("failover", output_directory_id="MODEL")}
        assert sorted(parts) == [f"part-{i:02d}.txt" for i in range(20)]
        with urllib.request.urlopen(parts["part-19.txt"].download_url, timeout=10) as response:
            assert response.read() == ("content 133\n" * 100).encode()
    finally:
        kill_agents_under(home)
        emulator.stop(storage)


def test_a_wait_rides_out_an_account_frozen_for_longer_than_one_call_may_take(home: Path) -> None:
    """SIGSTOP on Azurite: each store call gives up within its deadline, the wait keeps going, the job
    (whose node keeps running) is seen to succeed once the account answers again."""
    from tests import azurite as emulator
    from tests.conftest import custom_job

    storage = emulator.start()
    try:
        service = azure_service(storage, home)
        storage.credential().service().create_container("logs")
        service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
        wait_until(lambda: service.show_cluster("c").node_state_counts.idle_node_count == 1, 30, what="idle node")
        body = custom_job("sleep 3; echo done")
        body["mountVolumes"]["azureFileShares"][0]["azureFileUrl"] = "https://devstoreaccount1.file.core.windows.net/logs"
        service.create_job("c", "patient", load_job_spec({"properties": body}, environ={}))
        os.kill(storage.process.pid, signal.SIGSTOP)
        thaw = threading.Timer(22, os.kill, (storage.process.pid, signal.SIGCONT))
        thaw.start()
        started = time.monotonic()
        connection = json.dumps({"storage_connection_string": storage.connection_string, "control_container": "control-frozen"})
        shown = subprocess.run(  # the connection (its account key) in the environment: never on a command line
            [sys.executable, "-m", "airflow_batchai.cli", "job", "show", "-n", "patient"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "BATCHAI_CONNECTION": connection},
        )
        assert shown.returncode == 2 and "ControlStoreUnavailable" in shown.stderr and "Traceback" not in shown.stderr, shown.stderr
        assert time.monotonic() - started < 18  # `batchai job show` on a frozen account: an error within ~15 s, not minutes
        assert KEY not in shown.stderr
        done = service.wait_job("patient", timeout_s=120, poll_s=0.2)
        assert done.execution_state == "succeeded", done.execution_info
        assert time.monotonic() - started > 21  # it waited through the freeze instead of failing in it
        assert service.read_output_file("patient", "stdout.txt") == b"done\n"
    finally:
        os.kill(storage.process.pid, signal.SIGCONT)
        kill_agents_under(home)
        emulator.stop(storage)


class TestAzureDataStore(DataStoreContract):
    @pytest.fixture
    def data_store(self, azurite: Any) -> AzureDataStore:
        return AzureDataStore(azurite.credential())

    @pytest.fixture
    def fresh_name(self) -> Callable[[], str]:
        return lambda: f"vol-{uuid.uuid4().hex[:12]}"
