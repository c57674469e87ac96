"""Training curves from the TensorBoard event files a job writes under its output directories.

The files are written by TensorBoard's own writer (what PyTorch's SummaryWriter uses underneath),
by a real job on the embedded default's local nodes, and read back through the job's output folders.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from airflow_batchai import overview as view
from airflow_batchai.reading import scalars
from airflow_batchai.reading.scalars import ScalarReader
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job

WRITER = """
import sys, time
from tensorboard.summary import Writer
writer = Writer(sys.argv[1] + "/tb/train")
for step in range(1, 6):
    writer.add_scalar("loss", 1.0 / step, step=step)
    writer.add_scalar("accuracy", 0.5 + step / 20, step=step)
writer.close()
other = Writer(sys.argv[1] + "/tb/eval")
other.add_scalar("loss", 0.3, step=5)
other.close()
"""


def run_job(service: Service, tmp_path: Path, name: str, script: str = WRITER) -> None:
    (tmp_path / f"{name}.py").write_text(script)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / f'{name}.py'))} $AZ_BATCHAI_OUTPUT_CURVES"
    outputs = {"outputDirectories": [{"id": "CURVES", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}]}
    service.create_job("c", name, load_job_spec({"properties": custom_job(command, **outputs)}, environ={}), "e")
    assert service.wait_job(name, "e", timeout_s=60, poll_s=0.2).execution_state == "succeeded"


@pytest.fixture
def cluster(service: Service) -> Service:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    return service


def test_a_jobs_scalars_are_curves_per_tag_one_line_per_run_in_step_order(cluster: Service, tmp_path: Path) -> None:
    run_job(cluster, tmp_path, "train")
    curves = view.job_details(cluster, "default", "e", "train")["scalars"]
    assert sorted(curves) == ["accuracy", "loss"]
    assert sorted(curves["loss"]) == ["CURVES/tb/eval", "CURVES/tb/train"], "a run is the folder of its event file"
    train = curves["loss"]["CURVES/tb/train"]
    assert [step for step, _, _ in train] == [1, 2, 3, 4, 5]
    assert [round(value, 4) for _, value, _ in train] == [1.0, 0.5, 0.3333, 0.25, 0.2]
    assert [point[:2] for point in curves["loss"]["CURVES/tb/eval"]] == [(5, pytest.approx(0.3))]


def test_an_event_file_is_read_once_then_only_what_was_appended(cluster: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_job(cluster, tmp_path, "train")
    reader = ScalarReader()
    files = cluster.output_files("train", "e")
    reads: list[tuple[str, int]] = []
    read = files.read
    monkeypatch.setattr(
        files, "read", lambda output, path, offset=0, length=None: reads.append((path, offset)) or read(output, path, offset, length)
    )
    first = reader.curves(files)
    assert len(reads) == 2 and all(offset == 0 for _, offset in reads)
    reads.clear()
    assert reader.curves(files) == first and reads == [], "an unchanged file is not read again"
    lists: list[str] = []
    listing = files.list
    monkeypatch.setattr(
        files, "list", lambda output, directory=".", *rest, **named: lists.append(directory) or listing(output, directory, *rest, **named)
    )
    reader.curves(files, ended=True)
    assert lists, "an ended job's folders are walked once"
    lists.clear()
    assert reader.curves(files, ended=True) == first and lists == [] and reads == [], "then its page costs no request"


def test_a_record_cut_mid_write_waits_for_the_next_look(tmp_path: Path) -> None:
    from tensorboard.summary import Writer

    Writer(str(tmp_path / "run")).close()  # only the file's version record
    writer = Writer(str(tmp_path / "full"))
    for step in range(3):
        writer.add_scalar("loss", float(step), step=step)
    writer.close()
    [whole] = (tmp_path / "full").iterdir()
    data = whole.read_bytes()
    folder = tmp_path / "out"
    folder.mkdir()
    events = folder / whole.name
    files = FolderFiles(folder)
    reader = ScalarReader()
    events.write_bytes(data[:-7])  # the writer is mid-flush: the last record is incomplete
    assert [p[0] for p in reader.curves(files)["loss"]["OUT"]] == [0, 1]
    events.write_bytes(data)
    assert [p[0] for p in reader.curves(files)["loss"]["OUT"]] == [0, 1, 2], "the cut record is read whole, once"


def test_a_week_long_curve_is_bounded_and_keeps_its_last_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scalars, "MAX_POINTS", 100)
    curve = scalars.Curve()
    for step in range(10_000):
        curve.add(step, float(step), 0.0)
    assert len(curve.points) <= 101 and curve.points[0][0] == 0 and curve.points[-1][0] == 9_999


def test_a_job_without_event_files_or_not_started_has_no_curves(cluster: Service, tmp_path: Path) -> None:
    run_job(cluster, tmp_path, "plain", "print('no curves')")
    assert view.job_details(cluster, "default", "e", "plain")["scalars"] == {}
    cluster.create_cluster("empty", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
    outputs = {"outputDirectories": [{"id": "CURVES", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}]}
    cluster.create_job("empty", "queued", load_job_spec({"properties": custom_job("true", **outputs)}, environ={}), "e")
    assert view.job_details(cluster, "default", "e", "queued")["scalars"] == {}


class FolderFiles:
    """A job's output files as the reader sees them, over one local folder (output directory OUT)."""

    def __init__(self, folder: Path) -> None:
        from types import SimpleNamespace

        self.folder = folder
        self.job = SimpleNamespace(uuid="job-uuid")
        self.spec = SimpleNamespace(output_directories=[SimpleNamespace(id="OUT")])

    def list(self, output_id: str, directory: str = ".", expiry_minutes: int = 60, urls: bool = True) -> list[object]:
        from airflow_batchai.data import OutputFile

        found = []
        for path in sorted((self.folder / directory).iterdir()):
            found.append(OutputFile.file(path.name, path.stat().st_size, None, None) if path.is_file() else OutputFile.directory(path.name))
        return found

    def read(self, output_id: str, path: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self.folder / path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length if length is not None else -1)


def test_two_pages_reading_the_same_bytes_at_once_add_them_once(tmp_path: Path) -> None:
    from tensorboard.summary import Writer

    writer = Writer(str(tmp_path / "out"))
    for step in range(3):
        writer.add_scalar("loss", float(step), step=step)
    writer.close()
    reader = ScalarReader()
    files = FolderFiles(tmp_path / "out")
    read = files.read
    reads: list[int] = []

    def read_while_another_page_reads(output_id: str, path: str, offset: int = 0, length: int | None = None) -> bytes:
        reads.append(offset)
        if len(reads) == 1:  # the other page's read starts and ends while this one waits for its bytes
            reader.curves(files)  # type: ignore[arg-type]
        return read(output_id, path, offset, length)

    files.read = read_while_another_page_reads  # type: ignore[method-assign]
    curves = reader.curves(files)  # type: ignore[arg-type]
    assert reads == [0, 0], "both pages read the file's bytes from the start"
    assert [p[0] for p in curves["loss"]["OUT"]] == [0, 1, 2], "not [0, 1, 2, 0, 1, 2]"
