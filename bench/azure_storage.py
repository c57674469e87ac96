"""Azure Storage benchmark on one Azurite, in one run: uploads, listings with SAS, log lag.

    bash scripts/test.sh --co -q >/dev/null   # once: venv, Azurite (npm) ; and apt-get install rclone
    .venv/bin/python bench/azure_storage.py [--quick]

1. Upload 1,000 x 100 KB files and one 1 GB file: our upload-batch (8 parallel) vs
   ``rclone copy`` (--transfers 8, container SAS URL) vs a sequential SDK loop.
2. Listing 50,000 output blobs as Batch AI File objects with per-blob read-only SAS URLs vs a
   raw ``list_blobs`` loop over the same prefix.
3. Log lag: a job prints a timestamped line every 100 ms; the time until each line can be read
   back from storage (p50, p95).
Prints a table with ratios and writes bench/results/azure_storage.json. Not a test.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from airflow_batchai.config import ProviderConfig, service_from_config  # noqa: E402
from airflow_batchai.data import OutputFile  # noqa: E402
from airflow_batchai.data.links import Link, RemoteVolume  # noqa: E402
from airflow_batchai.data.upload import upload_batch  # noqa: E402
from airflow_batchai.spec import load_cluster_spec, load_job_spec  # noqa: E402
from tests import azurite as emulator  # noqa: E402

QUICK = "--quick" in sys.argv
SMALL_FILES = 200 if QUICK else 1000
SMALL_SIZE = 100 * 1024
BIG_SIZE = (128 if QUICK else 1024) * 1024 * 1024
LISTED = 5000 if QUICK else 50_000
LAG_LINES = 50 if QUICK else 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def make_sources(root: Path) -> tuple[Path, Path]:
    small, big = root / "small", root / "big"
    small.mkdir()
    big.mkdir()
    for index in range(SMALL_FILES):
        (small / f"f{index:05d}.bin").write_bytes(os.urandom(SMALL_SIZE))
    with open(big / "big.bin", "wb") as handle:
        chunk = os.urandom(8 * 1024 * 1024)
        for _ in range(BIG_SIZE // len(chunk)):
            handle.write(chunk)
    return small, big


def report(rows: list[tuple[str, float, float, float]]) -> None:
    print(f"\n{'measure':<62} {'ours':>10} {'peer':>10} {'ratio':>8}")
    for label, mine, peer, ratio in rows:
        print(f"{label:<62} {mine:>10.2f} {peer:>10.2f} {ratio:>8.2f}")
    print("(upload rows: MB/s, ratio = how many times faster we are; listing: seconds, ratio = ours / raw)", flush=True)


def main() -> None:
    if shutil.which("rclone") is None:
        raise SystemExit("rclone is needed for the comparison: apt-get install rclone")
    server = emulator.start()
    work = Path(tempfile.mkdtemp(prefix="batchai-bench-storage-"))
    try:
        credential = server.credential()  # each phase gets a fresh Azurite: an in-memory one slows down as it fills
        config = ProviderConfig(
            storage_connection_string=server.connection_string, control_container="bench-control", home=str(work / "home")
        )
        service = service_from_config(config)
        data = service.data
        blob_service = credential.service()
        small, big = make_sources(work)
        rows: list[tuple[str, float, float, float]] = []
        results: dict[str, object] = {"quick": QUICK}

        def fresh() -> str:
            name = f"scratch-{uuid.uuid4().hex[:12]}"
            blob_service.create_container(name)
            return name

        def ours(source: Path) -> float:
            container = fresh()
            return timed(lambda: upload_batch(data, source=str(source), account=credential.account, container=container, max_workers=8))

        def rclone(source: Path) -> float:
            container = fresh()
            sas = credential.container_sas(container, "racwdl", timedelta(hours=2))
            env = {
                **os.environ,
                "RCLONE_CONFIG_AZ_TYPE": "azureblob",
                "RCLONE_CONFIG_AZ_SAS_URL": f"{credential.container_url(container)}?{sas}",
            }
            argv = ["rclone", "copy", str(source), f"az:{container}", "--transfers", "8", "--checkers", "8", "--no-check-dest"]
            return timed(lambda: subprocess.run(argv, env=env, check=True, capture_output=True))

        def sequential(source: Path) -> float:
            client = blob_service.get_container_client(fresh())

            def loop() -> None:
                for path in sorted(source.iterdir()):
                    with open(path, "rb") as handle:
                        client.upload_blob(path.name, handle, overwrite=True)

            return timed(loop)

        for label, source, size in (("upload small files", small, SMALL_FILES * SMALL_SIZE), ("upload 1 big file", big, BIG_SIZE)):
            times = {"ours": ours(source), "rclone": rclone(source), "sequential SDK": sequential(source)}
            mb = size / 1e6
            results[label] = {k: {"seconds": round(v, 3), "MB_per_s": round(mb / v, 1)} for k, v in times.items()}
            rows.append((f"{label}: ours vs rclone", mb / times["ours"], mb / times["rclone"], times["rclone"] / times["ours"]))
            rows.append(
                (
                    f"{label}: ours vs sequential SDK",
                    mb / times["ours"],
                    mb / times["sequential SDK"],
                    times["sequential SDK"] / times["ours"],
                )
            )
            for name in [c.name for c in blob_service.list_containers() if c.name.startswith("scratch-")]:
                blob_service.delete_container(name)  # keep Azurite's memory small

        report(rows)
        # -- listing ------------------------------------------------------------------------
        emulator.stop(server)
        server = emulator.start()
        credential = server.credential()
        config = ProviderConfig(
            storage_connection_string=server.connection_string, control_container="bench-control", home=str(work / "home2")
        )
        service = service_from_config(config)
        data = service.data
        blob_service = credential.service()
        container = fresh()
        client = blob_service.get_container_client(container)
        prefix = "sub/rg/workspaces/ws/experiments/e/jobs/j/uuid/outputs"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: client.upload_blob(f"{prefix}/part-{i:06d}.bin", b"x", overwrite=True), range(LISTED)))
        volume = RemoteVolume(credential.account, container, credential.container_url(container))
        listed: list[OutputFile] = []
        ours_s = min(timed(lambda: listed.extend(data.list_files(Link("bench", "", volume), prefix))) for _ in range(3))
        raw_s = min(timed(lambda: list(client.list_blobs(name_starts_with=prefix + "/"))) for _ in range(3))
        assert len(listed) >= LISTED and all("sig=" in str(f.download_url) for f in listed[:LISTED])
        results["listing"] = {
            "blobs": LISTED,
            "ours_s": round(ours_s, 3),
            "raw_list_blobs_s": round(raw_s, 3),
            "ratio": round(ours_s / raw_s, 3),
        }
        rows.append((f"list {LISTED} blobs with SAS URLs (s): ours vs raw list_blobs", ours_s, raw_s, ours_s / raw_s))

        # -- log lag ------------------------------------------------------------------------
        service.create_cluster("lag", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
        command = f'for i in $(seq 1 {LAG_LINES}); do echo "line $i $(date +%s.%N)"; sleep 0.1; done'
        body = {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": command},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "mountVolumes": {
                "azureBlobFileSystems": [{"accountName": credential.account, "containerName": "lag-logs", "relativeMountPath": "logs"}]
            },
        }
        service.create_job("lag", "lag", load_job_spec({"properties": body}, environ={}))
        lags: dict[int, float] = {}
        offset, buffer = 0, ""
        deadline = time.monotonic() + 60 + LAG_LINES * 0.2
        while len(lags) < LAG_LINES and time.monotonic() < deadline:
            chunk = service.read_output_file("lag", "stdout.txt", offset=offset)
            now = time.time()
            if chunk:
                offset += len(chunk)
                buffer += chunk.decode()
                *complete, buffer = buffer.split("\n")
                for line in complete:
                    _, number, printed = line.split()
                    lags[int(number)] = now - float(printed)
            time.sleep(0.02)
        service.wait_job("lag", timeout_s=60)
        values = list(lags.values())
        results["log_lag"] = {
            "lines": len(values),
            "p50_s": round(statistics.median(values), 3),
            "p95_s": round(percentile(values, 0.95), 3),
        }
        rows.append(("log lag p50 / p95 (s), target p95 <= 1 s", statistics.median(values), percentile(values, 0.95), 0.0))

        report(rows)
        out = REPO / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "azure_storage.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        emulator.stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
