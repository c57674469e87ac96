"""Distributed PyTorch (DDP) training as a Batch AI job: gloo on CPU nodes, nccl where GPUs are.

upload the training script to the ``scripts`` file share → create a cluster of ``nodes`` nodes →
run a ``pyTorchSettings`` job on all of them, mounting the ``scripts`` and ``logs`` shares as Batch
AI's recipes did (its stdout/stderr stream into the task log) → list the model checkpoints →
scale to zero. Rank 0 also writes TensorBoard curves into the MODEL output directory's
``tensorboard/`` folder, which the job's page draws. Trigger it from the web UI with other
``nodes`` / ``epochs`` values.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param, dag

from airflow_batchai.operators.batchai import (
    BatchAICreateClusterOperator,
    BatchAIListOutputFilesOperator,
    BatchAIScaleClusterOperator,
    BatchAISubmitJobOperator,
    BatchAIUploadOperator,
)

ASSETS = Path(__file__).parent / "assets" / "pytorch"
WORKSPACE = "distributed"
JOB_SPEC = {
    "properties": {
        "nodeCount": "{{ params.nodes }}",
        "pyTorchSettings": {
            "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/pytorch/ddp_digits.py",
            "commandLineArgs": "--epochs {{ params.epochs }} --output-dir $AZ_BATCHAI_OUTPUT_MODEL",
            "communicationBackend": "{{ params.backend }}",
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
}


@dag(
    dag_id="batchai_distributed_pytorch",
    schedule=None,
    catchup=False,
    tags=["batchai", "example"],
    doc_md=__doc__,
    params={
        "nodes": Param(2, type="integer", minimum=1, description="nodes of the job (and of the cluster)"),
        "epochs": Param(3, type="integer", minimum=1, description="training epochs"),
        "backend": Param("gloo", enum=["gloo", "nccl"], description="nccl needs GPUs on every node"),
    },
)
def batchai_distributed_pytorch() -> None:
    upload = BatchAIUploadOperator(
        task_id="upload_script",
        source=str(ASSETS),
        pattern="ddp_digits.py",
        destination="scripts",
        destination_path="pytorch",
        destination_type="file",  # the job mounts scripts as an Azure Files share: a blob container of that name it would not see
    )
    cluster = BatchAICreateClusterOperator(
        task_id="create_cluster",
        workspace=WORKSPACE,
        cluster_name="ddp",
        spec={"properties": {"scaleSettings": {"manual": {"targetNodeCount": "{{ params.nodes }}"}}}},
        update=True,
    )
    train = BatchAISubmitJobOperator(
        task_id="train", workspace=WORKSPACE, cluster_name="ddp", experiment="ddp", spec=JOB_SPEC, poll_interval=2, timeout=1800
    )
    models = BatchAIListOutputFilesOperator(
        task_id="list_model_files",
        workspace=WORKSPACE,
        job_name="{{ ti.xcom_pull(task_ids='train')['name'] }}",
        experiment="ddp",
        output_directory_id="MODEL",
    )
    # A teardown: it runs when the cluster was created, whatever happened after, and, unlike an
    # "all_done" leaf, it does not decide the run's state: a failed training fails the run.
    scale_down = BatchAIScaleClusterOperator(
        task_id="scale_to_zero", workspace=WORKSPACE, cluster_name="ddp", target_node_count=0
    ).as_teardown(setups=cluster)
    [upload, cluster] >> train >> models >> scale_down


batchai_distributed_pytorch()
