"""The local backend passes the ControlStore contract; plus what only a folder store has to show."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import pytest

from airflow_batchai.control.local import LocalControlStore, LocalSecretVault
from airflow_batchai.errors import BatchAIError
from tests.provider.control.contract import ControlStoreContract


class TestLocalControlStore(ControlStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> functools.partial[LocalControlStore]:
        return functools.partial(LocalControlStore, tmp_path / "control")


def test_keys_cannot_escape_the_store_folder(tmp_path: Path) -> None:
    store = LocalControlStore(tmp_path / "control")
    for key in ("../outside", "jobs/../../x", "", "jobs//x"):
        with pytest.raises(BatchAIError, match="bad record key"):
            store.create(key, {})
    assert not (tmp_path / "outside.json").exists()


def test_a_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalControlStore(tmp_path / "control")
    etag = store.create("pool/n", {"a": 1})
    store.replace("pool/n", {"a": 2}, etag)
    assert sorted(p.name for p in (tmp_path / "control" / "records" / "pool").iterdir()) == ["n.json"]


def test_secret_vault_files_are_private_and_removable(tmp_path: Path) -> None:
    vault = LocalSecretVault(tmp_path / "secrets")
    vault.put("job-1", {"env": {"TOKEN": "abc"}})
    path = tmp_path / "secrets" / "job-1.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "secrets").st_mode) == 0o700
    assert vault.get("job-1") == {"env": {"TOKEN": "abc"}}
    vault.delete("job-1")
    assert vault.get("job-1") == {} and not path.exists()
