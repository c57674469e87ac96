"""upload-batch parity on the local storage folders: pattern, destination path, skip unchanged, overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batchai.data.local import LocalDataStore
from airflow_batchai.data.upload import upload_batch
from airflow_batchai.errors import BatchAIError


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "nested").mkdir(parents=True)
    (folder / "a_28x28_cntk.txt").write_text("a" * 1000)
    (folder / "nested" / "b_28x28_cntk.txt").write_text("b" * 2000)
    (folder / "readme.md").write_text("skip me")
    return folder


def test_pattern_and_destination_path_are_honoured_with_progress_lines(tmp_path: Path, source: Path) -> None:
    data = LocalDataStore(tmp_path / "storage")
    lines: list[str] = []
    report = upload_batch(
        data,
        source=str(source),
        account="acct",
        container="data",
        destination_path="mnist",
        pattern="*28x28_cntk*",
        on_progress=lines.append,
    )
    assert report["uploaded"] == ["a_28x28_cntk.txt", "nested/b_28x28_cntk.txt"] and report["bytes"] == 3000
    assert (tmp_path / "storage" / "acct" / "data" / "mnist" / "nested" / "b_28x28_cntk.txt").read_text() == "b" * 2000
    assert not (tmp_path / "storage" / "acct" / "data" / "mnist" / "readme.md").exists()
    assert lines[-1].startswith("uploaded 2 file(s), 3000 bytes, skipped 0") and any(line.startswith("[2/2]") for line in lines)


def test_unchanged_files_are_skipped_and_changed_ones_uploaded_again(tmp_path: Path, source: Path) -> None:
    data = LocalDataStore(tmp_path / "storage")
    upload_batch(data, source=str(source), account="acct", container="data")
    (source / "readme.md").write_text("changed!")  # same size as before would still differ by MD5
    report = upload_batch(data, source=str(source), account="acct", container="data")
    assert report["uploaded"] == ["readme.md"] and len(report["skipped"]) == 2
    forced = upload_batch(data, source=str(source), account="acct", container="data", overwrite=True)
    assert len(forced["uploaded"]) == 3


def test_bad_sources_and_destinations_are_refused(tmp_path: Path, source: Path) -> None:
    data = LocalDataStore(tmp_path / "storage")
    with pytest.raises(BatchAIError, match="is not a folder"):
        upload_batch(data, source=str(tmp_path / "missing"), account="acct", container="data")
    with pytest.raises(BatchAIError, match="must not contain"):
        upload_batch(data, source=str(source), account="acct", container="data", destination_path="../escape")
    with pytest.raises(BatchAIError, match="not a valid storage name"):
        upload_batch(data, source=str(source), account="acct", container="../etc")
