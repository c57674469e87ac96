"""OpenLineage datasets of a job: what it mounts to read, where its outputs go."""

from __future__ import annotations

from airflow_batchai.lineage import DatasetName, job_datasets
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import DATA


def test_the_quickstart_reads_its_data_and_scripts_and_writes_its_model_and_logs() -> None:
    spec = load_job_spec(DATA / "seed_002_quickstart_job.json", cluster="nc6", storage_account_name="acct", environ={})
    inputs, outputs = job_datasets(spec, "seg/1234")
    assert inputs == [
        DatasetName("wasbs://data@acct.blob.core.windows.net", "/"),
        DatasetName("wasbs://scripts@acct.file.core.windows.net", "/"),
    ], "the logs share is only written to"
    assert outputs == [
        DatasetName("wasbs://logs@acct.file.core.windows.net", "seg/1234/outputs"),
        DatasetName("wasbs://logs@acct.file.core.windows.net", "seg/1234/stdouterr"),
    ]


def test_cluster_mounts_count_and_a_share_both_read_and_written_is_both() -> None:
    spec = load_job_spec(
        {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "python $AZ_BATCHAI_MOUNT_ROOT/afs/train.py --out $AZ_BATCHAI_OUTPUT_MODEL"},
            "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/afs/models", "pathSuffix": "v2"}],
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP_DIR",
        },
        cluster="c",
        environ={},
    )
    cluster = load_cluster_spec(
        {
            "scaleSettings": {"manual": {"targetNodeCount": 1}},
            "nodeSetup": {
                "mountVolumes": {
                    "azureFileShares": [{"azureFileUrl": "https://acct.file.core.windows.net/team", "relativeMountPath": "afs"}]
                }
            },
        },
        environ={},
    )
    inputs, outputs = job_datasets(spec, "SEG", cluster)
    assert inputs == [DatasetName("wasbs://team@acct.file.core.windows.net", "/")]
    assert outputs == [DatasetName("wasbs://team@acct.file.core.windows.net", "models/SEG/outputs/v2")], (
        "node-local stdouterr is no dataset"
    )
