"""The agent's uploads against real Azurite: appends at known positions, and a finish that checks storage.

Storage is made to "forget" writes by overwriting its blobs behind the syncer's back, the way
an account that lost acknowledged writes looks from the node: shorter logs, missing files.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.agent import storageclient
from airflow_batchai.agent.storageclient import BlobError, Container, Syncer


@pytest.fixture
def container(azurite: Any) -> Container:
    credential = azurite.credential()
    name = f"sync-{uuid.uuid4().hex[:10]}"
    credential.service().create_container(name)
    return Container(credential.container_url(name), credential.container_sas(name, "racwdl", timedelta(hours=1)))


def blob_bytes(container: Container, name: str) -> bytes | None:
    status, payload = container.request("GET", name)
    return payload if status == 200 else None


def test_an_append_where_storage_ends_elsewhere_resumes_from_what_storage_holds(container: Container, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    stdout = logs / "stdout.txt"
    stdout.write_text("".join(f"line {i}\n" for i in range(10)))
    notes: list[str] = []
    syncer = Syncer([(str(logs), container, "job/stdouterr", True)], notes.append)
    syncer.tick(final=False)
    name = "job/stdouterr/stdout.txt"
    container.create_append(name)  # storage lost the log's writes: an empty blob again
    container.append(name, b"line 0\n", 0)
    with stdout.open("a") as handle:
        handle.write("line 10\n")
    syncer.tick(final=False)  # the conditional append is refused (412): the syncer re-reads what storage holds
    assert any("storage holds 7 of" in note for note in notes), notes
    assert syncer.finish(deadline=time.time() + 30) == []
    assert blob_bytes(container, name) == stdout.read_bytes()


def test_finish_sends_again_outputs_storage_lost_or_holds_differently(container: Container, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    for index in range(3):
        (outputs / f"part-{index}.bin").write_bytes(bytes([index]) * 1000)
    syncer = Syncer([(str(outputs), container, "job/model", False)], lambda _: None)
    syncer.tick(final=True)
    container.request("DELETE", "job/model/part-0.bin")  # gone
    container.request("PUT", "job/model/part-1.bin", body=b"\x09" * 1000, headers={"x-ms-blob-type": "BlockBlob"})  # same size, older
    assert syncer.finish(deadline=time.time() + 30) == []
    for index in range(3):
        assert blob_bytes(container, f"job/model/part-{index}.bin") == bytes([index]) * 1000
    assert container.properties("job/model/part-2.bin") == (1000, storageclient.file_md5(str(outputs / "part-2.bin")))


def test_finish_names_the_files_storage_never_took_by_its_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storageclient, "BLOB_RETRIES", 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gone = Container(f"http://127.0.0.1:{closed}/devstoreaccount1/logs", "sv=x&sig=secret")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights")
    notes: list[str] = []
    syncer = Syncer([(str(outputs), gone, "job/model", False)], notes.append)
    with pytest.raises(BlobError):
        gone.properties("job/model/model.pt")
    assert syncer.finish(deadline=time.time() + 3) == ["job/model/model.pt"]
    assert not any("secret" in note for note in notes)  # errors name the blob, never the SAS


def test_a_dangling_link_among_the_outputs_is_skipped_not_a_crash_at_the_end(container: Container, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.pt").write_bytes(b"weights")
    (outputs / "latest.pt").symlink_to(outputs / "checkpoint-that-was-removed.pt")
    notes: list[str] = []
    syncer = Syncer([(str(outputs), container, "job/model", False)], notes.append)
    syncer.start()
    assert syncer.finish(deadline=time.time() + 30) == []
    assert blob_bytes(container, "job/model/model.pt") == b"weights" and blob_bytes(container, "job/model/latest.pt") is None
    assert any("latest.pt" in note for note in notes)


def test_no_request_outlives_the_final_deadline(tmp_path: Path) -> None:
    """A listener that never answers: with the deadline set, a request gives up at it, not after its own 45 s."""
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)
        hung = Container(f"http://127.0.0.1:{frozen.getsockname()[1]}/devstoreaccount1/logs", "sv=x&sig=y")
        outputs = tmp_path / "outputs"
        outputs.mkdir()
        (outputs / "model.pt").write_bytes(b"weights")
        started = time.time()
        assert Syncer([(str(outputs), hung, "job/model", False)], lambda _: None).finish(deadline=started + 4) == ["job/model/model.pt"]
    assert time.time() - started < 10


SECRET_TEXT = "the service's own secret, outside every job folder"


def listed(container: Container, prefix: str) -> dict[str, bytes | None]:
    return {e["name"]: blob_bytes(container, e["name"]) for e in container.entries(prefix) if not e["is_prefix"]}


def test_the_uploader_sends_the_jobs_files_and_never_what_its_links_point_at(container: Container, tmp_path: Path) -> None:
    outputs, logs = tmp_path / "outputs", tmp_path / "stdouterr"
    outputs.mkdir()
    logs.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    (outputs / "model.bin").write_bytes(b"weights")
    (outputs / "stolen.bin").symlink_to(secret)
    (outputs / "etc").symlink_to("/etc")
    (logs / "stdout.txt").write_text("line\n")
    (logs / "stolen.txt").symlink_to(secret)
    syncer = Syncer([(str(outputs), container, "job/outputs", False), (str(logs), container, "job/stdouterr", True)], lambda _: None)
    assert syncer.finish(deadline=time.time() + 30) == []
    assert listed(container, "job/") == {"job/outputs/model.bin": b"weights", "job/stdouterr/stdout.txt": b"line\n"}


def test_a_synced_folder_swapped_for_a_link_after_the_job_started_uploads_nothing_outside(container: Container, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "model.bin").write_bytes(b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET_TEXT)
    syncer = Syncer([(str(outputs), container, "job/outputs", False)], lambda _: None)  # made before the job runs
    outputs.rename(tmp_path / "moved")  # then the job swaps its folder for a link to somewhere else
    outputs.symlink_to(outside)
    assert syncer.finish(deadline=time.time() + 30) == []
    assert listed(container, "job/") == {"job/outputs/model.bin": b"weights"}, "the folder opened at the start, not the link"
