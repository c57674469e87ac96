"""What a job page's training curves cost while a job trains: ours against TensorBoard's EventAccumulator, in one run.

    .venv/bin/python bench/training_curves.py [--points 100000] [--tags 4] [--looks 30] [--append 200]

A job's output folder holds an event file of ``--points`` scalar points per tag (``--tags`` tags, what
PyTorch's SummaryWriter writes); the job then appends ``--append`` points per tag between two looks, as
a page refreshed every 10 s would see. Timed, per look: ours (reading/scalars.py's ScalarReader, kept
by the api-server process, reading only what was appended) and the peer, TensorBoard's own
EventAccumulator (``size_guidance`` 0: every point, as our curves keep up to their bound), a fresh one
per look (what a page that keeps nothing would do) and one kept across looks (as ``tensorboard
--logdir`` does). Both read the same file through the same job folder listing. Prints a table with
ratios and writes bench/results/training_curves.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_batchai.data import OutputFile  # noqa: E402
from airflow_batchai.reading.scalars import ScalarReader  # noqa: E402


class FolderFiles:
    """A job's output directory OUT over a local folder, as OutputFiles shows it to the reader."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.job = SimpleNamespace(uuid="bench-job")
        self.spec = SimpleNamespace(output_directories=[SimpleNamespace(id="OUT")])
        self.bytes_read = 0

    def list(self, output_id: str, directory: str = ".", expiry_minutes: int = 60, urls: bool = True) -> list[OutputFile]:
        return [
            OutputFile.file(p.name, p.stat().st_size, None, None) if p.is_file() else OutputFile.directory(p.name)
            for p in sorted((self.folder / directory).iterdir())
        ]

    def read(self, output_id: str, path: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self.folder / path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(-1 if length is None else length)
        self.bytes_read += len(data)
        return data


def timed(function: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return (time.perf_counter() - started) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--looks", type=int, default=30)
    parser.add_argument("--append", type=int, default=200)
    args = parser.parse_args()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary import Writer

    with tempfile.TemporaryDirectory(prefix="bench-curves-") as scratch:
        folder = Path(scratch) / "out"
        run = folder / "tensorboard"
        writer = Writer(str(run))
        tags = [f"train/metric_{i}" for i in range(args.tags)]
        step = 0
        for step in range(args.points):
            for tag in tags:
                writer.add_scalar(tag, 1.0 / (step + 1), step=step)
        writer.flush()
        files = FolderFiles(folder)
        ours = ScalarReader()
        kept = EventAccumulator(str(run), size_guidance={"scalars": 0})

        first_ours, curves = timed(lambda: ours.curves(files))  # type: ignore[arg-type]
        first_fresh, _ = timed(lambda: EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload())
        first_kept, _ = timed(kept.Reload)
        assert sorted(curves) == sorted(tags)
        looks: dict[str, list[float]] = {"ours": [], "fresh": [], "kept": []}
        read_per_look = []
        for _ in range(args.looks):
            for _ in range(args.append):
                step += 1
                for tag in tags:
                    writer.add_scalar(tag, 1.0 / (step + 1), step=step)
            writer.flush()
            before = files.bytes_read
            elapsed, curves = timed(lambda: ours.curves(files))  # type: ignore[arg-type]
            read_per_look.append(files.bytes_read - before)
            looks["ours"].append(elapsed)
            looks["fresh"].append(timed(lambda: EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload())[0])
            looks["kept"].append(timed(kept.Reload)[0])
            assert curves[tags[0]]["OUT/tensorboard"][-1][0] == step, "ours saw the last step"
        writer.close()
        size = sum(p.stat().st_size for p in run.iterdir())

    median = {name: statistics.median(values) for name, values in looks.items()}
    result = {
        "points_per_tag": args.points,
        "tags": args.tags,
        "event_file_bytes": size,
        "first_look_ms": {"ours": first_ours, "tensorboard_fresh": first_fresh, "tensorboard_kept": first_kept},
        "refresh_ms_median": {"ours": median["ours"], "tensorboard_fresh": median["fresh"], "tensorboard_kept": median["kept"]},
        "refresh_bytes_read_median": statistics.median(read_per_look),
        "refresh_ratio_fresh_over_ours": median["fresh"] / median["ours"],
        "refresh_ratio_kept_over_ours": median["kept"] / median["ours"],
        "first_ratio_fresh_over_ours": first_fresh / first_ours,
    }
    print(f"event file: {size / 2**20:.1f} MiB, {args.tags} tags x {args.points} points; {args.append} points per tag appended per look")
    print(f"{'':28}{'ours':>12}{'TB fresh':>12}{'TB kept':>12}{'fresh/ours':>12}{'kept/ours':>12}")
    print(
        f"{'first look (ms)':28}{first_ours:12.1f}{first_fresh:12.1f}{first_kept:12.1f}{first_fresh / first_ours:12.2f}{first_kept / first_ours:12.2f}"
    )
    print(
        f"{'refresh, median (ms)':28}{median['ours']:12.2f}{median['fresh']:12.1f}{median['kept']:12.2f}"
        f"{result['refresh_ratio_fresh_over_ours']:12.1f}{result['refresh_ratio_kept_over_ours']:12.2f}"
    )
    print(f"ours reads {result['refresh_bytes_read_median'] / 1024:.1f} KiB per refresh (what was appended)")
    out = REPO / "bench" / "results" / "training_curves.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
