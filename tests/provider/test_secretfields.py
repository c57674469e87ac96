"""The one list of secret fields: what is removed from records is exactly what is masked and what the vault keeps."""

from __future__ import annotations

import json

import pytest

from airflow_batchai.secretfields import CLUSTER_SECRET_FIELDS, JOB_SECRET_FIELDS, secret_values, split_cluster_secrets, split_job_secrets
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import DATA

JOB = {
    "nodeCount": 1,
    "customToolkitSettings": {"commandLine": "true"},
    "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
    "secrets": [{"name": "TOKEN", "value": "job-token-1"}, {"name": "OTHER", "value": "job-token-2"}],
    "mountVolumes": {
        "azureFileShares": [
            {
                "accountName": "acct",
                "azureFileUrl": "https://acct.file.core.windows.net/logs",
                "relativeMountPath": "logs",
                "credentials": {"accountKey": "share-key-3"},
            }
        ],
        "azureBlobFileSystems": [
            {"accountName": "acct2", "containerName": "data", "relativeMountPath": "data", "credentials": {"accountKey": "blob-key-4"}}
        ],
    },
    "containerSettings": {"imageSourceRegistry": {"image": "x/y:1", "credentials": {"username": "u", "password": "registry-5"}}},
}
CLUSTER = {
    "scaleSettings": {"manual": {"targetNodeCount": 1}},
    "userAccountSettings": {"adminUserName": "admin", "adminUserPassword": "admin-pass-6"},
    "nodeSetup": {
        "setupTask": {
            "commandLine": "true",
            "stdOutErrPathPrefix": "$AZ_BATCHAI_MOUNT_ROOT/s",
            "secrets": [{"name": "S", "value": "setup-7"}],
        },
        "mountVolumes": {
            "azureBlobFileSystems": [
                {"accountName": "acct", "containerName": "c", "relativeMountPath": "c", "credentials": {"accountKey": "cluster-key-8"}}
            ]
        },
        "performanceCountersSettings": {"appInsightsReference": {"component": {"id": "/x"}, "instrumentationKey": "insights-9"}},
    },
}


def vault_values(secrets: dict) -> set[str]:
    return {*secrets["env"].values(), *secrets["storage_keys"].values(), *(v for k, v in secrets.items() if k.endswith("password"))}


def test_a_jobs_secrets_are_removed_masked_and_sealed_alike() -> None:
    spec = load_job_spec({"properties": JOB}, environ={})
    stored, sealed = split_job_secrets(spec)
    shown = json.dumps(stored)
    found = secret_values({"properties": JOB}, JOB_SECRET_FIELDS)
    assert sorted(found) == ["blob-key-4", "job-token-1", "job-token-2", "registry-5", "share-key-3"]
    assert set(found) == vault_values(sealed) and not any(value in shown for value in found)
    assert stored["secrets"] == [{"name": "TOKEN"}, {"name": "OTHER"}]
    assert stored["mountVolumes"]["azureBlobFileSystems"][0]["credentials"] == {}
    assert secret_values(json.dumps(JOB), JOB_SECRET_FIELDS) == found  # rendered JSON text, as a template gives it


def test_a_clusters_secrets_are_removed_masked_and_sealed_alike() -> None:
    spec = load_cluster_spec(CLUSTER, environ={})
    stored, sealed = split_cluster_secrets(spec)
    found = secret_values(CLUSTER, CLUSTER_SECRET_FIELDS)
    assert sorted(found) == ["admin-pass-6", "cluster-key-8", "insights-9", "setup-7"]
    assert vault_values(sealed) == {"admin-pass-6", "cluster-key-8", "setup-7"}  # the insights key is dropped, not kept
    assert not any(value in json.dumps(stored) for value in found)


@pytest.mark.parametrize("path", sorted(p.name for p in (DATA / "recipes").glob("*job.json")))
def test_no_recipe_field_outside_the_list_holds_a_secret(path: str) -> None:
    document = json.loads((DATA / "recipes" / path).read_text())
    spec = load_job_spec(document, storage_account_name="acct", storage_account_key="recipe-key-10", environ={})
    stored, sealed = split_job_secrets(spec)
    assert "recipe-key-10" not in json.dumps(stored)
    assert set(secret_values(spec, JOB_SECRET_FIELDS)) == vault_values(sealed)


def test_placeholders_and_unparsable_text_are_not_secrets() -> None:
    placeholder = {"mountVolumes": {"azureFileShares": [{"credentials": {"accountKey": "<AZURE_BATCHAI_STORAGE_KEY>"}}]}}
    assert secret_values(placeholder, JOB_SECRET_FIELDS) == []
    assert secret_values("{{ not json", JOB_SECRET_FIELDS) == []


def test_a_rendered_spec_reads_whole_and_serializes_without_its_secrets_however_deep() -> None:
    """Airflow's redaction of rendered fields stops 5 levels down; a cluster's mount key sits 6 deep."""
    from airflow_batchai.secretfields import CLUSTER_SECRET_FIELDS, RenderedSpec

    document = {
        "scaleSettings": {"manual": {"targetNodeCount": 1}},
        "userAccountSettings": {"adminUserName": "admin", "adminUserPassword": "pw-123456"},
        "nodeSetup": {
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": "a", "containerName": "c", "relativeMountPath": "d", "credentials": {"accountKey": "deep-key-0001"}},
                    {
                        "accountName": "a",
                        "containerName": "e",
                        "relativeMountPath": "e",
                        "credentials": {"accountKey": "<AZURE_BATCHAI_STORAGE_KEY>"},
                    },
                ]
            }
        },
    }
    rendered = RenderedSpec(document, CLUSTER_SECRET_FIELDS)
    assert dict(rendered) == document and load_cluster_spec(rendered, environ={}).node_setup is not None
    shown = rendered.serialize()
    keys = [m["credentials"]["accountKey"] for m in shown["nodeSetup"]["mountVolumes"]["azureBlobFileSystems"]]
    assert keys == ["***", "<AZURE_BATCHAI_STORAGE_KEY>"] and shown["userAccountSettings"]["adminUserPassword"] == "***"
    assert "deep-key-0001" not in repr(rendered) and "pw-123456" not in repr(rendered)
