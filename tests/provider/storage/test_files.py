"""Azure Files shares as job volumes, against a fake File service.

Azure Files has no local emulator (Azurite serves only Blob, Queue and Table), so these tests
run the real agent and control plane against tests/fakefiles.py, which answers the File REST
calls as the service documents them and checks each request's SAS permissions. Records and
everything else still live in Azurite. The behaviour asserted is the blob path's.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.storage.upload import upload_batch
from tests.conftest import kill_agents_under

SHARES = ("scripts", "logs")


@pytest.fixture
def service(azurite: Any, fake_files: Any, home: Path, tmp_path: Path) -> Service:
    connection = azurite.connection_string + f"FileEndpoint={fake_files.endpoint};"
    service = service_from_config(
        ProviderConfig(storage_connection_string=connection, control_container=f"files-{uuid.uuid4().hex[:8]}", home=str(home))
    )
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import sys, os\nprint('training on', open(sys.argv[1]).read())\nopen(os.path.join(sys.argv[2], 'model.txt'), 'w').write('w')\n"
    )
    (code / "digits.txt").write_text("digits")
    upload_batch(service.data, source=str(code), account="devstoreaccount1", container="scripts", destination_path="cntk", kind="file")
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    yield service
    kill_agents_under(home)


def test_a_job_on_azure_files_shares_reads_writes_and_lists_like_on_blob(service: Service, fake_files: Any, tmp_path: Path) -> None:
    body = {
        "nodeCount": 1,
        "customToolkitSettings": {
            "commandLine": '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/train.py $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/digits.txt $AZ_BATCHAI_OUTPUT_MODEL'
        },
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
        "mountVolumes": {
            "azureFileShares": [
                {"azureFileUrl": f"https://devstoreaccount1.file.core.windows.net/{name}", "relativeMountPath": name} for name in SHARES
            ]
        },
    }
    fake_files.permissions_seen.clear()  # from here on, only what the node's agent sends
    service.create_job("c", "files", load_job_spec({"properties": body}, environ={}))
    done = service.wait_job("files", timeout_s=60, poll_s=0.2)
    assert fake_files.permissions_seen["scripts"] == {"rl"}  # the job only reads scripts: its SAS cannot write
    assert fake_files.permissions_seen["logs"] == {"rcwl"}  # and may create and write logs, never delete
    stdout = service.read_output_file("files", "stdout.txt")
    assert done["executionState"] == "succeeded", (done["executionInfo"], stdout, service.read_output_file("files", "stderr.txt"))
    assert stdout == b"training on digits\n"
    assert service.read_output_file("files", "stdout.txt", offset=9) == b"on digits\n"  # a range read, as streaming does
    [model] = service.list_output_files("files", output_directory_id="MODEL")
    assert (
        model["name"] == "model.txt" and "sig=" in model["downloadUrl"] and model["downloadUrl"].startswith(fake_files.endpoint + "/logs/")
    )
    with urllib.request.urlopen(model["downloadUrl"], timeout=10) as response:
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
