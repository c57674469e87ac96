"""The example DAGs in dags/ succeed end to end on the embedded default."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.service import DEFAULT_WORKSPACE, Service
from tests import armcompute
from tests.conftest import REPO, kill_agents_under, run_dag, wait_until

DAGS = REPO / "dags"
CURVES_FOLDER = "tensorboard"  # in the MODEL output directory of the distributed and the retrain examples' jobs
DDP_TAGS = {"train/loss", "train/learning_rate", "test/accuracy"}
RETRAIN_TAGS = {"train/loss", "train/accuracy", "test/accuracy"}
MOUNT_KIND = {"file": "azureFileShares", "blob": "azureBlobFileSystems"}  # what an upload's destination_type is mounted as


def training_curves(service: Service, job: str, experiment: str, workspace: str, scratch: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars, by tag in the order written, of the TensorBoard event files in ``tensorboard/`` of the
    job's MODEL output directory: listed and read through the Service, parsed with TensorBoard's reader."""
    from tensorboard import data_compat
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    listed = service.list_output_files(job, experiment, workspace, output_directory_id="MODEL", directory=CURVES_FOLDER)
    names = [f.name for f in listed if f.file_type == "file"]
    assert names and all(name.startswith("events.out.tfevents.") for name in names), names
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in names:
        path = scratch / job / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            service.read_output_file(job, f"{CURVES_FOLDER}/{name}", experiment, workspace, output_directory_id="MODEL") or b""
        )
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                value = data_compat.migrate_value(value)
                curves.setdefault(value.tag, []).append((event.step, float(tensor_util.make_ndarray(value.tensor))))
    return curves


def assert_curves_rise_in_steps(curves: dict[str, list[tuple[int, float]]], tags: set[str]) -> None:
    assert set(curves) == tags, sorted(curves)
    for tag, points in curves.items():
        steps = [step for step, _ in points]
        assert steps and steps == sorted(set(steps)), (tag, steps)


def assert_ddp_curves(curves: dict[str, list[tuple[int, float]]], epochs: int, output: str) -> None:
    """Rank 0's curves of a ddp_digits.py run: a point a few steps, the accuracy once an epoch (as the log says)."""
    assert_curves_rise_in_steps(curves, DDP_TAGS)
    losses, rates, accuracies = (curves[tag] for tag in ("train/loss", "train/learning_rate", "test/accuracy"))
    assert len(accuracies) == epochs and len(losses) > 2 * epochs, "a few points an epoch"
    assert losses[-1][0] == rates[-1][0] == accuracies[-1][0], "every curve ends at the last step"
    assert losses[-1][1] < losses[0][1], "the loss went down"
    assert all(0.002 <= rate <= 0.02 for _, rate in rates) and [r for _, r in rates] == sorted((r for _, r in rates), reverse=True)
    for epoch, (_, accuracy) in enumerate(accuracies, 1):
        assert f"rank 0 epoch {epoch}/{epochs}: loss" in output and f"test accuracy {accuracy:.3f}" in output


def test_quickstart_dag_trains_lists_models_and_scales_to_zero(airflow_env: dict[str, str], home: Path) -> None:
    result = run_dag(airflow_env, DAGS, "batchai_quickstart", home)
    assert result.state == "success", result.output[-4000:]
    assert "uploaded ConvNet_MNIST.py" in result.output and "uploaded Train-8x8_cntk_text.txt" in result.output
    assert "ConvNet_MNIST_19.dnn" in result.output
    service = Service.embedded(home)
    [job] = service.list_jobs("quickstart", "quickstart")
    assert job.execution_state == "succeeded" and job.tool_type == "cntk"
    stdout = service.read_output_file(job.name, "stdout.txt", "quickstart", "quickstart") or b""
    assert float(stdout.decode().split("test accuracy")[1]) > 0.85
    assert service.show_cluster("nc6", "quickstart").current_node_count == 0
    again = run_dag(airflow_env, DAGS, "batchai_quickstart", home)  # a schedule runs it again on the scaled-down cluster
    assert again.state == "success" and "ClusterAlreadyExists" not in again.output, again.output[-4000:]
    assert [j.execution_state for j in service.list_jobs("quickstart", "quickstart")] == ["succeeded", "succeeded"]


@pytest.mark.slow
def test_distributed_pytorch_dag_runs_ddp_on_two_nodes_with_params(airflow_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = run_dag(airflow_env, DAGS, "batchai_distributed_pytorch", home, conf={"nodes": 2, "epochs": 2})
    assert result.state == "success", result.output[-4000:]
    for rank in (0, 1):
        assert f"[stdout-{rank}.txt] rank {rank}: all_reduce sum = 3 (expected 3)" in result.output
        assert f"[stdout-{rank}.txt] rank {rank} epoch 2/2" in result.output
    assert "model_epoch2.pt" in result.output and "model_epoch3.pt" not in result.output
    service = Service.embedded(home)
    assert service.show_cluster("ddp", "distributed").current_node_count == 0
    [job] = service.list_jobs("ddp", "distributed")
    [events] = service.list_output_files(job.name, "ddp", "distributed", output_directory_id="MODEL", directory=CURVES_FOLDER)
    assert events.name.startswith("events.out.tfevents."), "one event file: only rank 0 writes curves"
    assert_ddp_curves(training_curves(service, job.name, "ddp", "distributed", tmp_path), 2, result.output)


@pytest.mark.parametrize("dag_id", ["batchai_quickstart", "batchai_distributed_pytorch", "batchai_scheduled_retrain"])
def test_an_example_dag_uploads_to_the_storage_kind_its_job_mounts(dag_id: str) -> None:
    """On an Azure account a blob container and a file share of one name are two things: an upload with
    ``destination_type="blob"`` is seen only by an ``azureBlobFileSystems`` mount, a ``"file"`` one only by
    ``azureFileShares``. The embedded default (one folder per name) and ``files_on_blob`` (a share served
    from the container of its name) forgive a mismatch; Azure does not. (The scoring DAG's job specs are
    built at run time; its run on Azurite without ``files_on_blob`` checks the same.)"""
    from airflow_batchai.operators.batchai import BatchAISubmitJobOperator, BatchAIUploadOperator

    dag = runpy.run_path(str(DAGS / f"{dag_id}.py"))[dag_id]()
    mounts: set[tuple[str, str]] = set()
    for task in dag.tasks:
        if isinstance(task, BatchAISubmitJobOperator):
            spec = json.loads((DAGS / task.spec).read_text()) if isinstance(task.spec, str) else task.spec
            volumes = spec.get("properties", spec).get("mountVolumes", {})
            mounts |= {("azureFileShares", s["azureFileUrl"].rstrip("/").rsplit("/", 1)[-1]) for s in volumes.get("azureFileShares", [])}
            mounts |= {("azureBlobFileSystems", b["containerName"]) for b in volumes.get("azureBlobFileSystems", [])}
    uploads = {(task.destination_type, task.destination) for task in dag.tasks if isinstance(task, BatchAIUploadOperator)}
    assert uploads and mounts
    for kind, name in uploads:
        assert (MOUNT_KIND[kind], name) in mounts, f"{dag_id} uploads to the {kind} {name!r} but its job mounts {sorted(mounts)}"
        other = next(mount for upload, mount in MOUNT_KIND.items() if upload != kind)
        assert (other, name) not in mounts, f"{dag_id} mounts {name!r} as {other} too"


@pytest.mark.slow
def test_distributed_pytorch_dag_on_azure_storage_reads_its_script_from_the_share_it_uploaded(
    airflow_env: dict[str, str], home: Path, azurite: Any, fake_files: Any, tmp_path: Path
) -> None:
    """Azure's layout, where blob containers and file shares are apart: blobs in Azurite, shares in the fake
    File service (no ``files_on_blob``). The script goes to the ``scripts`` share and the job, mounting that
    share, runs it; its logs, checkpoints and curves land on the ``logs`` share."""
    pytest.importorskip("torch")
    extra = {
        "storage_connection_string": azurite.connection_string + f"FileEndpoint={fake_files.endpoint};",
        "control_container": f"ddp-{uuid.uuid4().hex[:8]}",
        "home": str(home),
    }
    connection = json.dumps({"conn_type": "batchai", "extra": extra})
    env = {**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": connection}
    result = run_dag(env, DAGS, "batchai_distributed_pytorch", home, conf={"nodes": 2, "epochs": 1})
    assert result.state == "success", result.output[-4000:]
    assert ("scripts", "pytorch/ddp_digits.py") in fake_files.files, sorted(fake_files.files)
    blobs = azurite.credential().service().get_container_client("scripts")
    assert not blobs.get_blob_client("pytorch/ddp_digits.py").exists(), "uploaded to the share, not to a container of its name"
    for rank in (0, 1):
        assert f"[stdout-{rank}.txt] rank {rank} epoch 1/1" in result.output
    service = service_from_config(ProviderConfig(**extra))
    [job] = service.list_jobs("ddp", "distributed")
    models = [f for f in service.list_output_files(job.name, "ddp", "distributed", output_directory_id="MODEL") if f.file_type == "file"]
    assert [m.name for m in models] == ["model_epoch1.pt"] and models[0].download_url.startswith(fake_files.endpoint + "/logs/")
    assert_ddp_curves(training_curves(service, job.name, "ddp", "distributed", tmp_path), 1, result.output)
    assert not (home / "storage").exists()


def test_quickstart_dag_runs_on_azure_storage_by_changing_only_the_connection(
    airflow_env: dict[str, str], home: Path, azurite: Any
) -> None:
    """The same DAG file, with a connection to Azurite: data, scripts, logs and models all in Blob."""
    extra = {
        "storage_connection_string": azurite.connection_string,
        "control_container": f"quickstart-{uuid.uuid4().hex[:8]}",
        "files_on_blob": True,
        "home": str(home),
    }
    connection = json.dumps({"conn_type": "batchai", "extra": extra})
    result = run_dag({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": connection}, DAGS, "batchai_quickstart", home)
    assert result.state == "success", result.output[-4000:]
    assert "ConvNet_MNIST_19.dnn" in result.output
    assert azurite.connection_string.split("AccountKey=")[1].split(";")[0] not in result.output
    service = service_from_config(ProviderConfig(**extra))
    [job] = service.list_jobs("quickstart", "quickstart")
    assert job.execution_state == "succeeded"
    stdout = service.read_output_file(job.name, "stdout.txt", "quickstart", "quickstart") or b""
    assert float(stdout.decode().split("test accuracy")[1]) > 0.85
    models = service.list_output_files(job.name, "quickstart", "quickstart", output_directory_id="MODEL")
    assert "ConvNet_MNIST_19.dnn" in {m.name for m in models} and all("sig=" in (m.download_url or "") for m in models if m.is_file)
    assert "tensorboard" in {m.name for m in models if not m.is_file}, "its training curves' folder"
    assert not (home / "storage").exists()  # nothing went to the local storage folders
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0].encode()
    for path in Path(airflow_env["AIRFLOW_HOME"]).rglob("*"):  # metadata DB (XCom included) and task logs
        if path.is_file():
            content = path.read_bytes()
            assert key not in content and b"sig=" not in content, path


def test_batch_scoring_dag_scores_slices_in_parallel_jobs_and_stitches_them(airflow_env: dict[str, str], home: Path) -> None:
    """Seed 003 on the embedded default: one job per slice (the cluster's maximum nodes by default), one log
    line per frame in the run's shared log folder, the styled frames stitched into one GIF in storage."""
    result = run_dag(airflow_env, DAGS, "batchai_batch_scoring", home, conf={"frames": 12})
    assert result.state == "success", result.output[-4000:]
    assert "stitched 12 frames into scoring/results/" in result.output
    service = Service.embedded(home)
    jobs = service.list_jobs("batch_scoring")
    assert len(jobs) == 2 and all(job.execution_state == "succeeded" for job in jobs)
    storage = home / "storage" / "local" / "scoring"
    [gif] = storage.glob("results/*/styled.gif")
    import numpy as np
    from PIL import Image

    with Image.open(gif) as movie:
        assert movie.n_frames == 12
        styled = np.asarray(movie.convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    [original] = storage.glob("input/*/frame-00000.png")
    before = np.asarray(Image.open(original).convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    style = np.asarray(Image.open(storage / "style" / "style.png").convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    assert np.abs(styled - style).sum() < np.abs(before - style).sum() / 2  # the colours moved to the style's
    [logs] = storage.glob("logs/*")
    lines = [line for log in sorted(logs.iterdir()) for line in log.read_text().splitlines()]
    assert len(lines) == 12 and lines[0].startswith("scored frame-00000.png")
    assert service.show_cluster("scoring").scale_settings["autoScale"]["minimumNodeCount"] == 0  # no teardown: autoscale


def test_scheduled_retrain_publishes_only_a_model_that_got_better(airflow_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    first = run_dag(airflow_env, DAGS, "batchai_scheduled_retrain", home, conf={"c": 0.05})
    assert first.state == "success", first.output[-4000:]
    assert "against the published None: publishing" in first.output and "published model of job" in first.output
    same = run_dag(airflow_env, DAGS, "batchai_scheduled_retrain", home, conf={"c": 0.05})
    assert same.state == "success", same.output[-4000:]
    assert "keeping the published model" in same.output and "published model of job" not in same.output
    better = run_dag(airflow_env, DAGS, "batchai_scheduled_retrain", home, conf={"c": 1.0, "train_fraction": 0.8})
    assert better.state == "success" and "published model of job" in better.output, better.output[-4000:]
    assert "sig=" not in better.output.split("published model of job")[1].splitlines()[0]  # no SAS in the Asset's extra
    service = Service.embedded(home)
    jobs = service.list_jobs("retrain")
    assert len(jobs) == 3
    for job in jobs:  # each run's curves, against the L-BFGS iterations, end at the accuracy it published or kept
        curves = training_curves(service, job.name, "retrain", DEFAULT_WORKSPACE, tmp_path)
        assert_curves_rise_in_steps(curves, RETRAIN_TAGS)
        assert curves["train/loss"][-1][1] < curves["train/loss"][0][1]
        metrics = json.loads(service.read_output_file(job.name, "metrics.json", "retrain", output_directory_id="MODEL") or b"{}")
        assert curves["test/accuracy"][-1][1] == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_scheduled_retrain_on_a_scale_set_starts_a_vm_for_its_job_and_deallocates_it(
    airflow_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    """The retrain DAG unchanged, on a connection naming a VM scale set (the ARM stand-in, its instances sshd hosts
    in network namespaces): 0 -> 1 -> 0 instances. Airflow's processes and the controller sign in to ARM as a
    managed identity through azure-identity (the stand-in's identity endpoint); Entra ID itself has no stand-in."""
    arm = armcompute.start(tmp_path / "arm", "--boot-s", "2", "--instances", "1")
    scale_set = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "scale_set": "gpu-vmss", "max_nodes": 1}
    extra = {
        "azure_vms": {**scale_set, "managed_identity_client_id": "mi-1", "arm_endpoint": arm.url, "arm_ca_bundle": arm.ca},
        "ssh_user": "root",
        "ssh_key_file": str(arm.folder / "hosts" / "client_key"),
        "authorized_keys_file": str(tmp_path / "authorized_keys"),  # the instances are this machine: never ~/.ssh
        "node_root": str(tmp_path / "nodes"),
        "node_python": sys.executable,
        "home": str(home),
    }
    env = {**airflow_env, **arm.identity_env(), "AIRFLOW_CONN_BATCHAI_DEFAULT": json.dumps({"conn_type": "batchai", "extra": extra})}
    batchai = str(Path(sys.executable).with_name("batchai"))
    with open(tmp_path / "controller.log", "wb") as log:
        controller = subprocess.Popen(
            [batchai, "controller", "--connection", json.dumps(extra), "--interval", "1"], env=env, stdout=log, stderr=log
        )
    try:
        result = run_dag(env, DAGS, "batchai_scheduled_retrain", home, conf={"idle_seconds": 2})
        assert result.state == "success", result.output[-4000:] + (tmp_path / "controller.log").read_text()[-3000:]
        assert "held-out accuracy" in result.output  # published or not: the session's earlier runs may have published a better model
        assert "published model of job" in result.output or "keeping the published model" in result.output
        instances = lambda: arm.state()["instances"]  # noqa: E731
        wait_until(lambda: [i["power"] for i in instances().values()] == ["deallocated"], 60, 0.5, what="the VM deallocated")
        state = arm.state()
        assert state["requests"]["PATCH Microsoft.Compute/virtualMachineScaleSets/gpu-vmss"] == 1, "0 -> 1: the capacity raised once"
        assert state["requests"]["POST Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/deallocate"] == 1, "1 -> 0: deallocated"
        billed_s = state["instances"]["0"]["billed_s"]
        print(f"retrain on a scale set: the VM was billed {billed_s:.1f} s (boot 2 s, idle 2 s)")
        assert billed_s < 90, "billed for the run, not for the day: started for the job, deallocated once idle"
        assert state["authorised"]["other"] == 0 and state["authorised"]["identity"] > 0, "every ARM call signed in as the identity"
        assert env["IDENTITY_HEADER"] not in result.output + (tmp_path / "controller.log").read_text()
    finally:
        controller.terminate()
        controller.wait(timeout=60)
        arm.stop()
        kill_agents_under(tmp_path / "nodes")


def test_batch_scoring_dag_runs_on_azure_storage_by_changing_only_the_connection(
    airflow_env: dict[str, str], home: Path, azurite: Any
) -> None:
    extra = {
        "storage_connection_string": azurite.connection_string,
        "control_container": f"scoring-{uuid.uuid4().hex[:8]}",
        "home": str(home),
    }
    connection = json.dumps({"conn_type": "batchai", "extra": extra})
    result = run_dag({**airflow_env, "AIRFLOW_CONN_BATCHAI_DEFAULT": connection}, DAGS, "batchai_batch_scoring", home, conf={"frames": 8})
    assert result.state == "success", result.output[-4000:]
    location = result.output.split("stitched 8 frames into ")[1].split()[0]
    container, blob = location.split("/", 1)
    gif = azurite.credential().service().get_blob_client(container, blob).download_blob().readall()
    assert gif[:6] == b"GIF89a" and not (home / "storage").exists()


def test_the_distributed_example_without_torch_on_the_node_fails_saying_so(tmp_path: Path) -> None:
    """A node where PyTorch is missing: the rank exits with one line naming it and the fix, no traceback."""
    import subprocess
    import sys

    missing = tmp_path / "no-torch" / "torch"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    script = REPO / "dags" / "assets" / "pytorch" / "ddp_digits.py"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(missing.parent)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "needs PyTorch and scikit-learn on every node, and torch is not installed" in result.stderr
    # a command that works from anywhere (PyPI alone would bring the CUDA build), and the clone's
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in result.stderr
    assert "pip install scikit-learn tensorboard" in result.stderr
    assert "pip install -e '.[examples]'" in result.stderr and "Traceback" not in result.stderr


def run_alone(script: Path, args: list[str], hidden: list[str], folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """An example's job script run by itself, on a node where the ``hidden`` packages are not installed."""
    for package in hidden:
        (folder / "hidden" / package).mkdir(parents=True, exist_ok=True)
        (folder / "hidden" / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n"
        )
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(folder / "hidden"), "TMPDIR": tempfile.gettempdir(), **env}
    return subprocess.run([sys.executable, str(script), *args], env=environment, capture_output=True, text=True, timeout=120)


def event_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing import event_file_loader

    [path] = folder.glob("events.out.tfevents.*")
    return {value.tag for event in event_file_loader.EventFileLoader(str(path)).Load() for value in event.summary.value}


def test_the_retrain_job_without_torch_writes_its_curves_with_tensorboards_own_writer(tmp_path: Path) -> None:
    result = run_alone(REPO / "dags/assets/retrain/train.py", ["--output", str(tmp_path / "model")], ["torch"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"model.pkl", "metrics.json", CURVES_FOLDER}
    assert event_tags(tmp_path / "model" / CURVES_FOLDER) == RETRAIN_TAGS


def test_the_retrain_job_without_tensorboard_trains_and_says_so_in_one_line(tmp_path: Path) -> None:
    result = run_alone(REPO / "dags/assets/retrain/train.py", ["--output", str(tmp_path / "model")], ["torch", "tensorboard"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stdout and {p.name for p in (tmp_path / "model").iterdir()} == {"model.pkl", "metrics.json"}
    [note] = result.stderr.splitlines()
    assert note.startswith("train.py: no training curves, TensorBoard is not installed") and "pip install tensorboard" in note


def test_the_distributed_example_without_tensorboard_trains_and_says_so_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.azurite import _free_port

    port = str(_free_port("127.0.0.1"))
    script = REPO / "dags/assets/pytorch/ddp_digits.py"
    output = tmp_path / "model"
    result = run_alone(
        script, ["--epochs", "1", "--output-dir", str(output)], ["tensorboard"], tmp_path, MASTER_ADDR="127.0.0.1", MASTER_PORT=port
    )
    assert result.returncode == 0, result.stderr
    assert "rank 0 epoch 1/1" in result.stdout and {p.name for p in output.iterdir()} == {"model_epoch1.pt"}
    assert "ddp_digits.py: no training curves, TensorBoard is not installed" in result.stderr and "Traceback" not in result.stderr
