"""The four ways into a storage account, and the SAS each gives nodes."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, UserDelegationKey, generate_account_sas

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.data.credentials import StorageCredential
from airflow_batchai.errors import BatchAIError
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.azurite import ACCOUNT, KEY
from tests.conftest import custom_job, kill_agents_under


def test_a_connection_string_gives_account_endpoint_and_key() -> None:
    found = StorageCredential.parse(
        connection_string=f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"
    )
    assert (found.account, found.blob_endpoint, found.account_key) == ("acct", "https://acct.blob.core.windows.net", KEY)
    assert KEY not in repr(found)


def test_missing_parts_are_named_and_values_never_echoed() -> None:
    with pytest.raises(BatchAIError) as raised:
        StorageCredential.parse(connection_string=f"AccountKey={KEY}")
    assert raised.value.target == "storage_connection_string" and KEY not in str(raised.value)
    with pytest.raises(BatchAIError) as raised:
        StorageCredential.parse(account_key=KEY)
    assert raised.value.target == "storage_account" and KEY not in str(raised.value)


def test_a_key_mints_container_sas_with_only_the_asked_permissions() -> None:
    sas = StorageCredential.parse(account="acct", account_key=KEY).container_sas("data", "rl", timedelta(hours=2))
    fields = dict(part.split("=", 1) for part in sas.split("&"))
    assert fields["sp"] == "rl" and fields["sr"] == "c" and KEY not in sas
    expiry = datetime.fromisoformat(fields["se"].replace("%3A", ":").replace("Z", "+00:00"))
    assert timedelta(hours=2) < expiry - datetime.now(timezone.utc) <= timedelta(hours=2, minutes=31)


def test_entra_id_gives_nodes_user_delegation_sas() -> None:
    """Entra ID tokens have no local stand-in: a stub service hands out the delegation key Azure would."""

    class StubService:
        def get_user_delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
            key = UserDelegationKey()
            key.signed_oid, key.signed_tid = str(uuid.uuid4()), str(uuid.uuid4())
            key.signed_start, key.signed_expiry = start.strftime("%Y-%m-%dT%H:%M:%SZ"), expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
            key.signed_service, key.signed_version, key.value = "b", "2021-08-06", "ZGVsZWdhdGlvbi1rZXk="
            return key

    credential = StorageCredential.parse(account="acct")
    assert credential.entra and credential.secrets == []
    sas = credential.container_sas("logs", "racwl", timedelta(hours=1), StubService())  # type: ignore[arg-type]
    assert "skoid=" in sas and "sp=racwl" in sas


def test_entra_id_needs_a_vault_key_to_seal_queued_secrets() -> None:
    with pytest.raises(BatchAIError) as raised:
        service_from_config(ProviderConfig(storage_account="acct"))
    assert raised.value.target == "vault_key"


def test_an_account_sas_runs_jobs_and_is_passed_on_with_a_warning(azurite: Any, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    account_sas = generate_account_sas(
        ACCOUNT,
        KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        datetime.now(timezone.utc) + timedelta(hours=1),
    )
    config = ProviderConfig(
        storage_account=ACCOUNT,
        storage_sas_token=account_sas,
        storage_blob_endpoint=azurite.endpoint,
        control_container=f"sas-{uuid.uuid4().hex[:10]}",
        home=str(home),
    )
    service = service_from_config(config)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    body = custom_job("echo hello from a blob-backed job")
    body["mountVolumes"] = {"azureBlobFileSystems": [{"accountName": ACCOUNT, "containerName": "sas-logs", "relativeMountPath": "logs"}]}
    try:
        with caplog.at_level(logging.WARNING):
            service.create_job("c", "hello", load_job_spec({"properties": body}, environ={}))
            assert service.wait_job("hello", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
        assert service.read_output_file("hello", "stdout.txt") == b"hello from a blob-backed job\n"
        assert "only an account SAS is configured" in caplog.text and account_sas not in caplog.text
    finally:
        kill_agents_under(home)
