"""The blob backend passes the same ControlStore contract on Azurite; plus its leases and vault."""

from __future__ import annotations

import functools
import socket
import time
import uuid
from typing import Any

import pytest

from airflow_batchai.control import lock
from airflow_batchai.control.blob import LEASE_S, BlobControlStore, BlobSecretVault
from airflow_batchai.data.credentials import StorageCredential
from airflow_batchai.errors import BatchAIError
from tests.azurite import KEY
from tests.provider.control.contract import ControlStoreContract


class TestBlobControlStore(ControlStoreContract):
    @pytest.fixture
    def store_factory(self, azurite: Any) -> functools.partial[BlobControlStore]:
        return functools.partial(BlobControlStore, azurite.credential(), f"control-{uuid.uuid4().hex[:12]}")


def test_a_dead_lock_holder_frees_the_lock_within_one_lease(azurite: Any) -> None:
    container = f"control-{uuid.uuid4().hex[:12]}"
    holder, other = BlobControlStore(azurite.credential(), container), BlobControlStore(azurite.credential(), container)
    blob = holder.container.get_blob_client("locks/cluster__ws__c")
    blob.upload_blob(b"")
    blob.acquire_lease(lease_duration=LEASE_S)  # taken and never released, as by a killed worker
    started = time.monotonic()
    with lock(other, "cluster/ws/c", timeout_s=LEASE_S + 10):
        waited = time.monotonic() - started
    assert LEASE_S - 2 <= waited <= LEASE_S + 5


def test_vault_blobs_are_encrypted_and_need_the_same_key(azurite: Any) -> None:
    store = BlobControlStore(azurite.credential(), f"control-{uuid.uuid4().hex[:12]}")
    vault = BlobSecretVault(store, "key material from the connection")
    vault.put("job-1", {"env": {"TOKEN": "s3cr3t-value"}})
    raw = store.container.get_blob_client("secrets/job-1").download_blob().readall()
    assert b"s3cr3t-value" not in raw
    assert vault.get("job-1") == {"env": {"TOKEN": "s3cr3t-value"}}
    with pytest.raises(BatchAIError, match="another vault key"):
        BlobSecretVault(store, "a rotated credential").get("job-1")
    vault.delete("job-1")
    assert vault.get("job-1") == {}


def test_an_unreachable_account_is_one_clear_error_after_bounded_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    credential = StorageCredential.parse(
        account="devstoreaccount1", account_key=KEY, blob_endpoint=f"http://127.0.0.1:{closed}/devstoreaccount1"
    )
    started = time.monotonic()
    with pytest.raises(BatchAIError) as raised:
        BlobControlStore(credential, "control")
    assert raised.value.code == "ControlStoreUnavailable" and f"127.0.0.1:{closed}" in raised.value.message
    assert KEY not in str(raised.value) and time.monotonic() - started < 16


def test_a_frozen_account_is_an_error_within_the_deadline_not_minutes() -> None:
    """A listener that never answers, as Azurite under SIGSTOP: the kernel completes the handshake, nothing more."""
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(64)
        endpoint = f"http://127.0.0.1:{frozen.getsockname()[1]}/devstoreaccount1"
        credential = StorageCredential.parse(account="devstoreaccount1", account_key=KEY, blob_endpoint=endpoint)
        started = time.monotonic()
        with pytest.raises(BatchAIError) as raised:
            BlobControlStore(credential, "control")
        waited = time.monotonic() - started
    assert raised.value.code == "ControlStoreUnavailable" and "did not answer within 12 s" in raised.value.message
    assert 5 < waited < 16, waited


def test_an_unchanged_record_is_read_again_as_a_304_without_its_body(azurite: Any) -> None:
    answers: list[int] = []
    credential = azurite.credential()
    counted = credential.service(raw_response_hook=lambda response: answers.append(response.http_response.status_code))
    store = BlobControlStore(credential, f"control-{uuid.uuid4().hex[:12]}", service=counted)
    store.create("clusters/ws/big", {"jobs": {f"j{i}": "x" * 50 for i in range(1000)}})
    BlobControlStore(credential, store.container_name).read("clusters/ws/big")  # another reader: no cache here
    answers.clear()
    for _ in range(3):
        assert len(store.read("clusters/ws/big").data["jobs"]) == 1000
    assert answers == [304, 304, 304]
