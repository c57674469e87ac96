"""The ``batchai`` command end to end, as a user runs it: the seed quickstart, exit codes, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, REPO

BATCHAI = [sys.executable, "-m", "airflow_batchai.cli"]


def batchai(home: Path, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*BATCHAI, *args, *(["--home", str(home)] if args[0] != "job" or args[1] != "validate" else [])],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == expect, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def upload_quickstart(home: Path) -> None:
    storage = home / "storage" / "acct"
    (storage / "scripts" / "cntk").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "assets" / "quickstart" / "ConvNet_MNIST.py", storage / "scripts" / "cntk")
    subprocess.run(
        [sys.executable, str(REPO / "dags" / "assets" / "quickstart" / "prepare_data.py"), str(storage / "data" / "mnist_cntk")],
        check=True,
        capture_output=True,
    )


def test_seed_quickstart_runs_unchanged_from_the_command_line(home: Path) -> None:
    upload_quickstart(home)
    cluster = as_json(batchai(home, "cluster", "create", "-n", "nc6", "-t", "1", "-w", "quickstart"))
    assert cluster["name"] == "nc6" and cluster["scaleSettings"]["manual"]["targetNodeCount"] == 1
    job_file = str(DATA / "seed_002_quickstart_job.json")
    created = as_json(
        batchai(
            home,
            "job",
            "create",
            "-n",
            "cntk_python_1",
            "-c",
            "nc6",
            "-w",
            "quickstart",
            "-e",
            "quickstart",
            "-f",
            job_file,
            "--storage-account-name",
            "acct",
        )
    )
    assert created["toolType"] == "cntk" and created["cntkSettings"]["processCount"] == 1
    assert created["mountVolumes"]["azureFileShares"][0]["azureFileUrl"] == "https://acct.file.core.windows.net/logs"
    streamed = batchai(
        home, "job", "file", "stream", "-j", "cntk_python_1", "-w", "quickstart", "-e", "quickstart", "-f", "stderr.txt"
    ).stdout
    assert "Finished Epoch[1 of 20]" in streamed and "Final Results" in streamed
    batchai(home, "job", "wait", "-n", "cntk_python_1", "-w", "quickstart", "-e", "quickstart")
    shown = as_json(batchai(home, "job", "show", "-n", "cntk_python_1", "-w", "quickstart", "-e", "quickstart"))
    assert shown["executionState"] == "succeeded" and shown["executionInfo"]["exitCode"] == 0
    models = as_json(batchai(home, "job", "file", "list", "-j", "cntk_python_1", "-w", "quickstart", "-e", "quickstart", "-d", "MODEL"))
    assert {f["name"]: f["fileType"] for f in models if f["fileType"] == "directory"} == {"tensorboard": "directory"}  # its curves
    models = [f for f in models if f["fileType"] == "file"]
    assert sorted(f["name"] for f in models) == sorted(f"ConvNet_MNIST_{i}.dnn" for i in range(20))
    assert all(f["contentLength"] > 0 and f["downloadUrl"].startswith("file://") for f in models)
    stdout = batchai(
        home, "job", "file", "stream", "-j", "cntk_python_1", "-w", "quickstart", "-e", "quickstart", "-f", "stdout.txt"
    ).stdout
    assert float(stdout.split("test accuracy")[1]) > 0.85
    assert [j["name"] for j in as_json(batchai(home, "job", "list", "-w", "quickstart", "-e", "quickstart"))] == ["cntk_python_1"]
    resized = as_json(batchai(home, "cluster", "resize", "-n", "nc6", "-t", "0", "-w", "quickstart"))
    assert resized["currentNodeCount"] == 0
    batchai(home, "cluster", "delete", "-n", "nc6", "-w", "quickstart")
    assert as_json(batchai(home, "cluster", "list", "-w", "quickstart")) == []


def test_job_wait_exits_with_the_job_exit_code(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "properties": {
                    "nodeCount": 1,
                    "customToolkitSettings": {"commandLine": "exit 3"},
                    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
                }
            }
        )
    )
    batchai(home, "cluster", "create", "-n", "c", "--min", "1", "--max", "1")
    batchai(home, "job", "create", "-n", "j", "-c", "c", "-f", str(spec))
    result = batchai(home, "job", "wait", "-n", "j", "--interval", "0.2", expect=3)
    assert "JobFailed" in result.stderr
    batchai(home, "job", "terminate", "-n", "j")
    batchai(home, "job", "delete", "-n", "j")
    batchai(home, "job", "show", "-n", "j", expect=2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"properties": {"nodeCount": 1,}}', "is not valid JSON"),
        ('{"properties": {"nodeCount": 1, "stdOutErrPathPrefix": "/x"}}', "exactly one toolkit"),
        (
            '{"properties": {"nodeCount": 0, "customToolkitSettings": {"commandLine": "x"}, "stdOutErrPathPrefix": "/x"}}',
            "properties.nodeCount",
        ),
    ],
)
def test_bad_job_files_exit_2_with_one_clear_line(home: Path, tmp_path: Path, content: str, message: str) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(content)
    for args in (("job", "validate", "-f", str(spec)), ("job", "create", "-n", "j", "-c", "c", "-f", str(spec))):
        result = batchai(home, *args, expect=2)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_errors_name_the_missing_thing(home: Path, tmp_path: Path) -> None:
    assert "ClusterNotFound" in batchai(home, "cluster", "show", "-n", "ghost", expect=2).stderr
    result = batchai(home, "job", "create", "-n", "j", "-c", "ghost", "-f", str(DATA / "seed_002_quickstart_job.json"), expect=2)
    assert "cluster ghost is not found" in result.stderr
    assert "cannot read" in batchai(home, "job", "validate", "-f", str(tmp_path / "none.json"), expect=2).stderr


def test_validate_accepts_every_recipe(home: Path) -> None:
    for recipe in sorted((DATA / "recipes").glob("*.json")):
        assert "valid" in batchai(home, "job", "validate", "-f", str(recipe)).stdout


def test_the_same_commands_run_on_azurite_by_changing_only_the_connection(home: Path, tmp_path: Path, azurite: Any) -> None:
    connection = {"storage_connection_string": azurite.connection_string, "control_container": "cli-control", "files_on_blob": True}
    env = {"BATCHAI_CONNECTION": json.dumps(connection)}
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.py").write_text("print('hello from blob')\n")
    report = as_json(batchai(home, "upload", "-s", str(scripts), "-d", "code", env=env))
    assert report["uploaded"] == ["hello.py"]
    batchai(home, "cluster", "create", "-n", "c", "-t", "1", env=env)
    job = tmp_path / "job.json"
    body = {
        "nodeCount": 1,
        "customToolkitSettings": {"commandLine": '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/code/hello.py'},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/code",
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "code", "relativeMountPath": "code"}
            ]
        },
    }
    job.write_text(json.dumps({"properties": body}))
    created = as_json(batchai(home, "job", "create", "-n", "hello", "-c", "c", "-f", str(job), env=env))
    assert created["mountVolumes"]["azureBlobFileSystems"][0]["accountName"] == "devstoreaccount1"
    batchai(home, "job", "wait", "-n", "hello", env=env)
    [stdout] = [f for f in as_json(batchai(home, "job", "file", "list", "-j", "hello", env=env)) if f["name"] == "stdout.txt"]
    assert stdout["downloadUrl"].startswith(azurite.endpoint + "/code/") and "sig=" in stdout["downloadUrl"]
    assert batchai(home, "job", "file", "stream", "-j", "hello", "-f", "stdout.txt", env=env).stdout == "hello from blob\n"
    assert not (home / "control").exists() and not (home / "storage").exists()
    airflow_form = {"conn_type": "batchai", "extra": connection}  # what AIRFLOW_CONN_BATCHAI_DEFAULT holds
    shown = as_json(batchai(home, "job", "show", "-n", "hello", env={"BATCHAI_CONNECTION": json.dumps(airflow_form)}))
    assert shown["executionState"] == "succeeded"
    bad = batchai(home, "cluster", "list", env={"BATCHAI_CONNECTION": '{"storage_account": "a", "nodes": 3}'}, expect=2)
    assert "InvalidConnection" in bad.stderr and "nodes" in bad.stderr
    not_an_object = batchai(home, "cluster", "list", env={"BATCHAI_CONNECTION": "[1, 2]"}, expect=2)
    assert "InvalidConnection" in not_an_object.stderr
