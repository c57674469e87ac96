"""Local folders pass the DataStore contract (the embedded default's storage)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_batchai.data.local import LocalDataStore
from tests.provider.data.contract import DataStoreContract, volume

_names = itertools.count()


class TestLocalDataStore(DataStoreContract):
    @pytest.fixture
    def data_store(self, tmp_path: Path) -> LocalDataStore:
        return LocalDataStore(tmp_path / "storage")

    @pytest.fixture
    def fresh_name(self) -> Callable[[], str]:
        return lambda: f"vol{next(_names)}"


def test_a_path_that_climbs_out_of_its_volume_is_refused(tmp_path: Path) -> None:
    store = LocalDataStore(tmp_path / "storage")
    (tmp_path / "secret.txt").write_text("not yours")
    link = volume(store, "logs")
    with pytest.raises(Exception, match="must stay inside"):
        store.read(link, "../../secret.txt")
