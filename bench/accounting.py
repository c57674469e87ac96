"""What accounting adds to a pass: store requests and milliseconds, with it and with it taken out, in one run.

    .venv/bin/python bench/accounting.py [--nodes 8] [--passes 200]

An embedded cluster of ``--nodes`` nodes with jobs moving through it: each round submits a job per
node, lets the passes launch and finish them (every node goes idle -> running -> idle, each change a
write that now also closes its interval), then times ``--passes`` passes at rest and ``cluster show``
(which now also computes usage). The same rounds run with accounting taken out (``move_node``'s
interval closing and the publish's absorbing replaced by no-ops, views without usage): the peer.
Requests are counted on the control store. Prints a table with ratios and writes
bench/results/accounting.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_batchai import accounting, records  # noqa: E402
from airflow_batchai.prices import PriceSettings  # noqa: E402
from airflow_batchai.reading import readmodels  # noqa: E402
from airflow_batchai.scheduling import publishing  # noqa: E402
from airflow_batchai.service import Service, Settings  # noqa: E402
from airflow_batchai.spec import load_cluster_spec, load_job_spec  # noqa: E402
from tests.conftest import custom_job, kill_agents_under  # noqa: E402


@contextmanager
def without_accounting() -> Iterator[None]:
    """The peer: the same passes with no interval closed, nothing absorbed and no usage computed."""
    saved = (records.add_interval, records.add_seconds, publishing.Publishing.absorb, readmodels.cluster_usage, readmodels.job_usage)
    records.add_interval = lambda usage, *args, **kwargs: usage  # type: ignore[assignment]
    records.add_seconds = lambda usage, *args, **kwargs: usage  # type: ignore[assignment]
    publishing.Publishing.absorb = lambda self, record, jobs: (record.usage, record.absorbed)  # type: ignore[method-assign]
    readmodels.cluster_usage = lambda *args, **kwargs: None  # type: ignore[assignment]
    readmodels.job_usage = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        (records.add_interval, records.add_seconds, publishing.Publishing.absorb, readmodels.cluster_usage, readmodels.job_usage) = saved


def counting(service: Service) -> Counter[str]:
    counts: Counter[str] = Counter()
    store = service.store
    for name in ("read", "create", "replace", "delete", "list", "read_many", "lease_note"):
        original = getattr(store, name)

        def wrapped(*args: Any, _original: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        setattr(store, name, wrapped)
    return counts


def run(nodes: int, rounds: int, passes: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-accounting-"))
    try:
        service = Service.embedded(folder / "home", nodes=nodes, settings=Settings(prices=PriceSettings(node_hour=2.0)))
        service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": nodes}}}))
        deadline = time.monotonic() + 120
        while service.show_cluster("c").idle_nodes() < nodes and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = counting(service)
        job = load_job_spec({"properties": custom_job("true")}, environ={})
        busy_s: list[float] = []
        for round_ in range(rounds):
            names = [f"r{round_}-{i}" for i in range(nodes)]
            started = time.perf_counter()
            for name in names:
                service.create_job("c", name, job, "e")
            for name in names:
                service.wait_job(name, "e", timeout_s=120, poll_s=0.02)
            busy_s.append(time.perf_counter() - started)
        busy_requests = sum(counts.values())
        counts.clear()
        pass_ms = []
        for _ in range(passes):
            started = time.perf_counter()
            service.reconcile_cluster("default", "c")
            pass_ms.append((time.perf_counter() - started) * 1000)
        pass_requests = sum(counts.values()) / passes
        show_ms = []
        for _ in range(passes):
            started = time.perf_counter()
            service.show_cluster("c")
            show_ms.append((time.perf_counter() - started) * 1000)
        return {
            "round_s": statistics.median(busy_s),
            "requests_per_round": busy_requests / rounds,
            "pass_ms": statistics.median(pass_ms),
            "requests_per_pass": pass_requests,
            "show_ms": statistics.median(show_ms),
        }
    finally:
        kill_agents_under(folder / "home")
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()
    with without_accounting():
        peer = run(args.nodes, args.rounds, args.passes)
    ours = run(args.nodes, args.rounds, args.passes)
    print(f"{'':28}{'without':>12}{'with':>12}{'ratio':>8}")
    for key, label in [
        ("requests_per_round", "store requests / round"),
        ("requests_per_pass", "store requests / pass"),
        ("round_s", f"{args.nodes} jobs through, s"),
        ("pass_ms", "pass at rest, ms"),
        ("show_ms", "cluster show, ms"),
    ]:
        ratio = ours[key] / peer[key] if peer[key] else float("nan")
        print(f"{label:28}{peer[key]:>12.3f}{ours[key]:>12.3f}{ratio:>8.2f}")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    results = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "passes": args.passes,
        "without": peer,
        "with": ours,
        "days_kept": accounting.DAYS_KEPT,
    }
    (REPO / "bench" / "results" / "accounting.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
