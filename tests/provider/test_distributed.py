"""A 2-node PyTorch DDP job (gloo on CPU) through the whole engine: both ranks all-reduce and exit 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import REPO, wait_until

pytest.importorskip("torch")

DDP_JOB = {
    "nodeCount": 2,
    "pyTorchSettings": {
        "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/pytorch/ddp_digits.py",
        "commandLineArgs": "--epochs 2 --output-dir $AZ_BATCHAI_OUTPUT_MODEL",
        "communicationBackend": "gloo",
    },
    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
    "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}],
    "mountVolumes": {
        "azureFileShares": [
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "relativeMountPath": "logs"},
            {"azureFileUrl": "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/scripts", "relativeMountPath": "scripts"},
        ]
    },
}


@pytest.mark.slow
def test_two_node_ddp_job_all_reduces_and_both_ranks_exit_zero(service: Service, home: Path) -> None:
    scripts = home / "storage" / "local" / "scripts" / "pytorch"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "assets" / "pytorch" / "ddp_digits.py", scripts)
    service.create_cluster("gpu", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 2}}}, environ={}))
    wait_until(lambda: service.show_cluster("gpu").node_state_counts.idle_node_count == 2, what="2 idle nodes")
    spec = load_job_spec({"properties": DDP_JOB}, storage_account_name="local", environ={})
    service.create_job("gpu", "ddp", spec, "distributed")
    done = service.wait_job("ddp", "distributed", timeout_s=240, poll_s=0.5)
    logs = {
        name: (service.read_output_file("ddp", name, "distributed") or b"").decode()
        for name in ("stdout-0.txt", "stdout-1.txt", "stderr-0.txt", "stderr-1.txt")
    }
    assert done.execution_state == "succeeded", (done.execution_info, logs)
    assert done.to_json()["pyTorchSettings"]["processCount"] == 2
    for rank in (0, 1):
        out = logs[f"stdout-{rank}.txt"]
        assert f"rank {rank}/2 joined via file:// with gloo" in out
        assert f"rank {rank}: all_reduce sum = 3 (expected 3)" in out
        assert f"rank {rank} epoch 2/2" in out
    models = sorted(f.name for f in service.list_output_files("ddp", "distributed", output_directory_id="MODEL"))
    assert models == ["model_epoch1.pt", "model_epoch2.pt", "tensorboard"]  # rank 0's training curves beside the checkpoints
    names = sorted(f.name for f in service.list_output_files("ddp", "distributed"))
    logs = ["execution-local-0.log", "execution-local-1.log", "stderr-0.txt", "stderr-1.txt", "stdout-0.txt", "stdout-1.txt"]
    assert names == sorted([*logs, "resources-local-0.json", "resources-local-1.json"])  # each node's resource curves beside its logs
    assert not list((home / "shared").iterdir()), "the job's shared rendezvous folder is removed when it ends"
