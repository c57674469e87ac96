"""Azure Files shares as job volumes, against a fake File service.

Azure Files has no local emulator (Azurite serves only Blob, Queue and Table), so these tests
run the real agent and control plane against tests/fakefiles.py, which answers the File REST
calls as the service documents them and checks each request's SAS permissions. Records and
everything else still live in Azurite. The behaviour asserted is the blob path's.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.data.upload import upload_batch
from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import kill_agents_under, put_stand_in_on_path

SHARES = ("scripts", "logs")


def files_service(azurite: Any, fake_files: Any, home: Path, tmp_path: Path, azure_files_mount: str = "stage") -> Service:
    connection = azurite.connection_string + f"FileEndpoint={fake_files.endpoint};"
    service = service_from_config(
        ProviderConfig(
            storage_connection_string=connection,
            control_container=f"files-{uuid.uuid4().hex[:8]}",
            home=str(home),
            azure_files_mount=azure_files_mount,
        )
    )
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import sys, os\nprint('training on', open(sys.argv[1]).read())\nopen(os.path.join(sys.argv[2], 'model.txt'), 'w').write('w')\n"
    )
    (code / "digits.txt").write_text("digits")
    upload_batch(service.data, source=str(code), account="devstoreaccount1", container="scripts", destination_path="cntk", kind="file")
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    return service


@pytest.fixture
def service(azurite: Any, fake_files: Any, home: Path, tmp_path: Path) -> Iterator[Service]:
    yield files_service(azurite, fake_files, home, tmp_path)
    kill_agents_under(home)


def training_job(mode: str = "0777") -> dict[str, Any]:
    """Reads its script and data from the ``scripts`` share, writes logs and a model to ``logs``."""
    return {
        "nodeCount": 1,
        "customToolkitSettings": {
            "commandLine": '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/train.py $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/digits.txt $AZ_BATCHAI_OUTPUT_MODEL'
        },
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
        "mountVolumes": {
            "azureFileShares": [
                {"azureFileUrl": f"https://devstoreaccount1.file.core.windows.net/{name}", "relativeMountPath": name, "fileMode": mode}
                for name in SHARES
            ]
        },
    }


def test_a_job_on_azure_files_shares_reads_writes_and_lists_like_on_blob(service: Service, fake_files: Any, tmp_path: Path) -> None:
    body = training_job()
    fake_files.permissions_seen.clear()  # from here on, only what the node's agent sends
    service.create_job("c", "files", load_job_spec({"properties": body}, environ={}))
    done = service.wait_job("files", timeout_s=60, poll_s=0.2)
    assert fake_files.permissions_seen["scripts"] == {"rl"}  # the job only reads scripts: its SAS cannot write
    assert fake_files.permissions_seen["logs"] == {"rcwl"}  # and may create and write logs, never delete
    stdout = service.read_output_file("files", "stdout.txt")
    assert done.execution_state == "succeeded", (done.execution_info, stdout, service.read_output_file("files", "stderr.txt"))
    assert stdout == b"training on digits\n"
    assert service.read_output_file("files", "stdout.txt", offset=9) == b"on digits\n"  # a range read, as streaming does
    [model] = service.list_output_files("files", output_directory_id="MODEL")
    assert model.name == "model.txt" and "sig=" in model.download_url and model.download_url.startswith(fake_files.endpoint + "/logs/")
    with urllib.request.urlopen(model.download_url, timeout=10) as response:
        assert response.read() == b"w"


def test_upload_batch_to_a_share_skips_unchanged_files(service: Service, tmp_path: Path) -> None:
    source = tmp_path / "code"
    report = upload_batch(
        service.data, source=str(source), account="devstoreaccount1", container="scripts", destination_path="cntk", kind="file"
    )
    assert report["uploaded"] == [] and report["skipped"] == ["digits.txt", "train.py"]
    (source / "digits.txt").write_text("DIGITS")
    again = upload_batch(
        service.data, source=str(source), account="devstoreaccount1", container="scripts", destination_path="cntk", kind="file"
    )
    assert again["uploaded"] == ["digits.txt"]


# --- SMB mounts (azure_files_mount "cifs") -----------------------------------------------
# The kernel here has no cifs file system, so no share can really be mounted on this machine.
# One test runs Debian's real mount.cifs, sees it fail, and checks that the agent stages the
# share instead. The other puts a stand-in mount.cifs first on PATH: it records what it was
# given and mounts a read-only tmpfs holding a local copy of the share, as SMB would show it.

STAND_IN = '''#!{python}
"""Stand-in for mount.cifs (no cifs in this kernel): records its call, mounts a read-only copy."""
import json, os, shutil, stat, subprocess, sys
unc, point, flag, options = sys.argv[1:5]
settings = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
with open(settings["credentials"]) as handle:
    credentials = handle.read()
record = {{"argv": sys.argv[1:], "mode": stat.S_IMODE(os.stat(settings["credentials"]).st_mode), "credentials": credentials}}
with open({record!r}, "w") as handle:
    json.dump(record, handle)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", point], check=True)
shutil.copytree(os.path.join({copies!r}, unc.rsplit("/", 1)[1]), point, dirs_exist_ok=True)
subprocess.run(["mount", "-o", "remount,ro", point], check=True)
'''


def account_key(azurite: Any) -> str:
    return dict(part.split("=", 1) for part in azurite.connection_string.split(";") if "=" in part)["AccountKey"]


def test_shares_a_job_only_reads_are_mounted_over_smb_when_the_connection_opts_in(
    azurite: Any, fake_files: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = files_service(azurite, fake_files, home, tmp_path, azure_files_mount="cifs")
    copies = tmp_path / "smb"
    shutil.copytree(tmp_path / "code", copies / "scripts" / "cntk")
    (copies / "scripts" / "cntk" / "digits.txt").write_text("digits over smb")  # tells a mount from a download
    record = tmp_path / "mount.json"
    put_stand_in_on_path(
        monkeypatch, tmp_path / "bin", "mount.cifs", STAND_IN.format(python=sys.executable, record=str(record), copies=str(copies))
    )
    key = account_key(azurite)
    try:
        fake_files.permissions_seen.clear()
        service.create_job("c", "smb", load_job_spec({"properties": training_job(mode="0640")}, environ={}))
        done = service.wait_job("smb", timeout_s=60, poll_s=0.2)
        assert "scripts" not in fake_files.permissions_seen  # nothing was downloaded from the mounted share
        assert fake_files.permissions_seen["logs"] == {"rcwl"}  # the share it writes is staged, so its logs stream
        stdout = service.read_output_file("smb", "stdout.txt")
        execution = service.read_output_file("smb", "execution.log") or b""
        assert done.execution_state == "succeeded", (done.execution_info, stdout, execution)
        assert stdout == b"training on digits over smb\n"
        assert b"mounted devstoreaccount1/scripts read-only" in execution

        seen = json.loads(record.read_text())
        unc, point, flag, options = seen["argv"]
        assert unc == "//127.0.0.1/scripts" and point.endswith("/scripts") and flag == "-o"
        assert {"vers=3.1.1", "ro", "file_mode=0640", "dir_mode=0777"} <= set(options.split(","))
        assert seen["credentials"] == f"username=devstoreaccount1\npassword={key}\n" and seen["mode"] == 0o600
        assert key not in " ".join(seen["argv"])
        credentials = next(o for o in options.split(",") if o.startswith("credentials=")).split("=", 1)[1]
        assert not Path(credentials).exists()  # the key was on the node's disk only for the mount call
        assert point not in Path("/proc/mounts").read_text()  # unmounted when the job ended
        leftovers = [f for f in home.rglob("*") if f.is_file() and key.encode() in f.read_bytes()]
        assert leftovers == []  # not in plans, status files, logs or anything else the node keeps
    finally:
        kill_agents_under(home)


def test_where_the_kernel_has_no_cifs_the_share_is_staged_instead(azurite: Any, fake_files: Any, home: Path, tmp_path: Path) -> None:
    if shutil.which("mount.cifs") is None:
        pytest.skip("Debian's cifs-utils is missing (scripts/test.sh installs it)")
    service = files_service(azurite, fake_files, home, tmp_path, azure_files_mount="cifs")
    try:
        fake_files.permissions_seen.clear()
        service.create_job("c", "fallback", load_job_spec({"properties": training_job()}, environ={}))
        done = service.wait_job("fallback", timeout_s=90, poll_s=0.2)
        assert fake_files.permissions_seen["scripts"] == {"rl"}  # staged over its read-only SAS
        stdout = service.read_output_file("fallback", "stdout.txt")
        execution = (service.read_output_file("fallback", "execution.log") or b"").decode()
        assert done.execution_state == "succeeded", (done.execution_info, stdout, execution)
        assert stdout == b"training on digits\n"
        assert "mounting devstoreaccount1/scripts with mount.cifs failed (" in execution and "staging it instead" in execution
        assert list(home.rglob("cifs-*.credentials")) == []
    finally:
        kill_agents_under(home)


def test_smb_mounts_need_an_account_key_and_say_so(azurite: Any, fake_files: Any, home: Path) -> None:
    sas = "sv=2022-11-02&ss=bf&srt=sco&sp=rl&se=2099-01-01&sig=c2VjcmV0"
    config = ProviderConfig(storage_account="acct", storage_sas_token=sas, home=str(home), azure_files_mount="cifs")
    with pytest.raises(BatchAIError, match="azure_files_mount 'cifs' needs the storage account key") as raised:
        service_from_config(config)
    assert raised.value.target == "azure_files_mount" and "c2VjcmV0" not in str(raised.value)
