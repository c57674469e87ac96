"""Retrain every day, and publish the model only when it got better.

upload the training script → train on a 1-node cluster (logistic regression on scikit-learn's
digits, with the run's Params; TensorBoard curves go to the MODEL output directory's ``tensorboard/``
folder, for the job's page) → read the job's held-out accuracy → a short-circuit lets the
publish through only when it beats the model last published (the newest event of the model
Asset, read as this DAG's inlet) by ``min_improvement`` → publish: an event on the model Asset
whose extra names the job's MODEL output directory and its accuracy, for downstream DAGs
scheduled on it.

The cluster is autoscale from 0 to 1 node: it costs nothing between runs. On the embedded default or
SSH hosts that frees a node; on a connection with ``azure_vms`` (a VM scale set, or named VMs) the
job's VM is started when the job queues and deallocated ``idle_seconds`` after it ends, so a daily
run bills minutes of a GPU VM, not a day (docs/elastic-capacity.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.operators.batchai import BatchAICreateClusterOperator, BatchAISubmitJobOperator, BatchAIUploadOperator

SCRIPTS = Path(__file__).parent / "assets" / "retrain"
EXPERIMENT = "retrain"
ROOT = "$AZ_BATCHAI_JOB_MOUNT_ROOT/retrain"
MODEL = Asset("batchai_retrained_digits_model")


@dag(
    dag_id="batchai_scheduled_retrain",
    schedule="@daily",
    catchup=False,
    tags=["batchai", "example"],
    doc_md=__doc__,
    params={
        "c": Param(1.0, type="number", exclusiveMinimum=0, description="inverse regularisation strength"),
        "train_fraction": Param(0.5, type="number", exclusiveMinimum=0, exclusiveMaximum=1, description="share of the digits trained on"),
        "min_improvement": Param(0.0, type="number", minimum=0, description="how much better than the published model to publish"),
        "idle_seconds": Param(60, type="integer", minimum=0, description="the node (an Azure VM: deallocated) leaves after this long idle"),
    },
)
def batchai_scheduled_retrain() -> None:
    upload = BatchAIUploadOperator(
        task_id="upload_script", source=str(SCRIPTS), pattern="train.py", destination="retrain", destination_path="code"
    )
    cluster = BatchAICreateClusterOperator(
        task_id="create_cluster",
        cluster_name="retrain",
        spec={
            "scaleSettings": {
                "autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1, "idleSecondsBeforeScaledown": "{{ params.idle_seconds }}"}
            }
        },
        update=True,
    )
    train = BatchAISubmitJobOperator(
        task_id="train",
        cluster_name="retrain",
        experiment=EXPERIMENT,
        poll_interval=0.5,
        spec={
            "nodeCount": 1,
            "customToolkitSettings": {
                "commandLine": f'"$BATCHAI_PYTHON" {ROOT}/code/train.py --output $AZ_BATCHAI_OUTPUT_MODEL'
                " --c {{ params.c }} --train-fraction {{ params.train_fraction }}"
            },
            "stdOutErrPathPrefix": ROOT,
            "outputDirectories": [{"id": "MODEL", "pathPrefix": ROOT, "pathSuffix": "model"}],
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "retrain", "relativeMountPath": "retrain"}
                ]
            },
        },
    )

    @task
    def evaluate(job: dict[str, Any]) -> dict[str, Any]:
        """The job's held-out accuracy, from the metrics.json it wrote next to its model."""
        service = BatchAIHook().service
        metrics = json.loads(service.read_output_file(job["name"], "metrics.json", EXPERIMENT, output_directory_id="MODEL") or b"{}")
        files = service.list_output_files(job["name"], EXPERIMENT, output_directory_id="MODEL")
        url = next((f.download_url.split("?")[0] for f in files if f.name == "model.pkl" and f.download_url), "")  # no SAS
        folder = url.rsplit("/", 1)[0]
        print(f"job {job['name']}: held-out accuracy {metrics['accuracy']:.4f}")
        return {"job": job["name"], "accuracy": metrics["accuracy"], "model_folder": folder}

    @task.short_circuit(inlets=[MODEL])
    def improved(result: dict[str, Any], params: dict[str, Any], inlet_events: Any) -> bool:
        """Publish only what beats the model published last (none yet: anything is better)."""
        published = inlet_events[MODEL]
        best = published[-1].extra.get("accuracy") if published else None
        better = best is None or result["accuracy"] > best + float(params["min_improvement"])
        print(
            f"accuracy {result['accuracy']:.4f} against the published {best}: {'publishing' if better else 'keeping the published model'}"
        )
        return better

    @task(outlets=[MODEL])
    def publish(result: dict[str, Any], outlet_events: Any) -> None:
        outlet_events[MODEL].extra = result
        print(f"published model of job {result['job']} (accuracy {result['accuracy']:.4f}) at {result['model_folder']}")

    result = evaluate(train.output)
    [upload, cluster] >> train
    improved(result) >> publish(result)


batchai_scheduled_retrain()
