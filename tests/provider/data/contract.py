"""The DataStore contract, written once for every backend.

A backend's test module subclasses ``DataStoreContract`` and provides a ``data_store`` fixture
(a store whose account is ``default_account``) and a ``fresh_name`` fixture (a container name no
other test uses). The same uploads, listings and reads must give the same Batch AI answers on
local folders and on Azure Storage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_batchai.data import DataStore
from airflow_batchai.data.links import Link
from airflow_batchai.errors import BatchAIError
from airflow_batchai.spec import MountVolumes


def volume(store: DataStore, container: str) -> Link:
    volumes = MountVolumes.model_validate(
        {"azureBlobFileSystems": [{"accountName": store.default_account, "containerName": container, "relativeMountPath": "v"}]}
    )
    [link] = store.links(volumes, "mountVolumes")
    return link


def upload(store: DataStore, container: str, files: dict[str, bytes], folder: Path, prefix: str = "") -> None:
    target = store.upload_target(store.default_account, container, prefix)
    for relative, content in files.items():
        source = folder / relative.replace("/", "_")
        source.write_bytes(content)
        target.put(relative, source)


class DataStoreContract:
    def test_uploaded_files_are_listed_one_level_at_a_time_with_their_sizes(
        self, data_store: DataStore, fresh_name: Callable[[], str], tmp_path: Path
    ) -> None:
        name = fresh_name()
        upload(data_store, name, {"a.txt": b"alpha", "sub/b.txt": b"bravo!"}, tmp_path, prefix="run")
        link = volume(data_store, name)
        top = data_store.list_files(link, "run")
        assert [(f.name, f.file_type, f.content_length) for f in top] == [("a.txt", "file", 5), ("sub", "directory", None)]
        assert top[0].download_url and top[0].last_modified
        assert [f.name for f in data_store.list_files(link, "run/sub")] == ["b.txt"]

    def test_listing_without_urls_signs_nothing(self, data_store: DataStore, fresh_name: Callable[[], str], tmp_path: Path) -> None:
        name = fresh_name()
        upload(data_store, name, {"log.txt": b"x"}, tmp_path)
        assert [f.download_url for f in data_store.list_files(volume(data_store, name), "", urls=False)] == [None]

    def test_reads_start_at_an_offset_and_a_missing_file_is_none(
        self, data_store: DataStore, fresh_name: Callable[[], str], tmp_path: Path
    ) -> None:
        name = fresh_name()
        upload(data_store, name, {"out/stdout.txt": b"hello world\n"}, tmp_path)
        link = volume(data_store, name)
        assert data_store.read(link, "out/stdout.txt") == b"hello world\n"
        assert data_store.read(link, "out/stdout.txt", offset=6) == b"world\n"
        assert data_store.read(link, "out/stdout.txt", offset=6, length=3) == b"wor"
        assert data_store.read(link, "out/stdout.txt", offset=12) == b""  # nothing new yet
        assert data_store.read(link, "out/missing.txt") is None

    def test_an_ensured_volume_exists_and_lists_empty(self, data_store: DataStore, fresh_name: Callable[[], str]) -> None:
        link = volume(data_store, fresh_name())
        data_store.ensure([link])
        data_store.ensure([link])  # twice is harmless
        assert data_store.list_files(link, "") == [] and data_store.list_files(link, "not/there") == []

    def test_an_unchanged_upload_is_recognised(self, data_store: DataStore, fresh_name: Callable[[], str], tmp_path: Path) -> None:
        name = fresh_name()
        upload(data_store, name, {"model.bin": b"weights"}, tmp_path)
        target = data_store.upload_target(data_store.default_account, name, "")
        same, other = tmp_path / "same", tmp_path / "other"
        same.write_bytes(b"weights")
        other.write_bytes(b"weightz")
        assert target.unchanged("model.bin", same) and not target.unchanged("model.bin", other)

    def test_a_bad_container_name_is_refused_naming_the_field(self, data_store: DataStore) -> None:
        with pytest.raises(BatchAIError) as raised:
            volume(data_store, "../escape")
        assert raised.value.code == "InvalidStorageName" and raised.value.target == "mountVolumes.azureBlobFileSystems[0]"
