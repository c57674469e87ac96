"""Azure Batch AI's CNTK quickstart (its first `az batchai` walkthrough) as a DAG, on the embedded default.

upload the training script to the ``scripts`` share and the digits data set to the ``data``
container → create a 1-node cluster → submit the quickstart's job.json unchanged → wait with
the sensor → list the MODEL files → scale the cluster to zero (a teardown: also when something
failed, without hiding the failure). Runs again and again: each run grows the cluster back.
"""

from __future__ import annotations

import runpy
import shutil
import tempfile
from pathlib import Path

from airflow.sdk import dag, task

from airflow_batchai.operators.batchai import (
    BatchAICreateClusterOperator,
    BatchAIListOutputFilesOperator,
    BatchAIScaleClusterOperator,
    BatchAISubmitJobOperator,
    BatchAIUploadOperator,
)
from airflow_batchai.sensors.batchai import BatchAIJobSensor

ASSETS = Path(__file__).parent / "assets" / "quickstart"
WORKSPACE = "quickstart"
JOB_NAME = "{{ ti.xcom_pull(task_ids='submit_job')['name'] }}"


@dag(dag_id="batchai_quickstart", schedule=None, catchup=False, tags=["batchai", "example"], doc_md=__doc__)
def batchai_quickstart() -> None:
    @task
    def prepare_data() -> str:
        """Write scikit-learn's digits in CNTK text format (the quickstart's MNIST files, smaller)."""
        folder = tempfile.mkdtemp(prefix="batchai-digits-")
        runpy.run_path(str(ASSETS / "prepare_data.py"))["main"](folder)
        return folder

    upload_script = BatchAIUploadOperator(
        task_id="upload_script",
        source=str(ASSETS),
        pattern="ConvNet_MNIST.py",
        destination="scripts",
        destination_path="cntk",
        destination_type="file",  # the job mounts scripts as an Azure Files share
    )
    local_copy = prepare_data()
    upload_data = BatchAIUploadOperator(
        task_id="upload_data", source=local_copy, pattern="*8x8_cntk*", destination="data", destination_path="mnist_cntk"
    )

    @task
    def remove_local_copy(folder: str) -> None:
        """The data is in storage now; each run would otherwise leave a folder in the worker's temporary space."""
        shutil.rmtree(folder, ignore_errors=True)

    upload_data >> remove_local_copy.override(trigger_rule="all_done")(local_copy)
    cluster = BatchAICreateClusterOperator(
        task_id="create_cluster",
        workspace=WORKSPACE,
        cluster_name="nc6",
        spec={"properties": {"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 1}}}},
        update=True,  # the last run scaled it to zero: grow it again
    )
    submit = BatchAISubmitJobOperator(
        task_id="submit_job",
        workspace=WORKSPACE,
        cluster_name="nc6",
        experiment="quickstart",
        spec="assets/quickstart/job.json",
        wait_for_completion=False,
    )
    wait = BatchAIJobSensor(
        task_id="wait_for_job", workspace=WORKSPACE, job_name=JOB_NAME, experiment="quickstart", poke_interval=2, timeout=600
    )
    models = BatchAIListOutputFilesOperator(
        task_id="list_model_files", workspace=WORKSPACE, job_name=JOB_NAME, experiment="quickstart", output_directory_id="MODEL"
    )
    # A teardown: it runs when the cluster was created, whatever happened after, and, unlike an
    # "all_done" leaf, it does not decide the run's state: a failed job fails the run.
    scale_down = BatchAIScaleClusterOperator(
        task_id="scale_to_zero", workspace=WORKSPACE, cluster_name="nc6", target_node_count=0
    ).as_teardown(setups=cluster)
    [upload_script, upload_data, cluster] >> submit >> wait >> models >> scale_down


batchai_quickstart()
