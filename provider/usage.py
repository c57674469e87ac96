"""Usage and estimated cost of jobs and clusters, from their records alone (accounting.py says how
the seconds are kept): no read beyond the record a view already reads.

A job's node-seconds are its nodes' running seconds: for each attempt (a requeued job keeps its lost
ones apart), its nodes times the time from its start to its end (or now). A cluster's are its nodes'
seconds in every state while members, boot and idle time included: that is what the machines cost,
and what a team wants to see idleness cost. Where no price is known the amount is null with the
reason, never 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .accounting import GPU_SECONDS, STATES, Usage, add_interval, day_of, merge, totals
from .prices import Rate
from .records import ClusterRecord, ExecutionState, JobRecord


def cost_json(amount: float | None, currency: str, reasons: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {"amount": amount, "currency": currency}
    if amount is None and reasons:
        found["reason"] = reasons[0]
    return found


def _rate_of(data: dict[str, Any] | None) -> Rate | None:
    if not data:
        return None
    return Rate(data.get("perNodeHour"), str(data.get("currency") or ""), str(data.get("source") or ""), data.get("reason"))


def _stretches(job: JobRecord, now: datetime) -> list[tuple[int, datetime, datetime, int, int, Rate | None]]:
    """(attempt, start, end, nodes, GPUs, rate) of each attempt that ran: the requeued ones, then the current one."""
    found = []
    for attempt in job.attempts:
        start, end = attempt.get("startTime"), attempt.get("endTime")
        if start and end:
            nodes, gpus = len(attempt.get("nodes") or []), int(attempt.get("gpus") or 0)
            found.append((int(attempt.get("attempt", 0)), _moment(start), _moment(end), nodes, gpus, _rate_of(attempt.get("rate"))))
    if job.start_time is not None and job.execution_state != ExecutionState.QUEUED:
        nodes = len(job.nodes) or job.parsed_spec().node_count
        found.append((job.attempt, job.start_time, job.end_time or now, nodes, job.gpus, _rate_of(job.rate)))
    return found


def _moment(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def job_usage(job: JobRecord, now: datetime, currency: str = "USD") -> dict[str, Any]:
    """``usage`` of a job's view: node-seconds, GPU-hours and estimated cost, its attempts apart."""
    parts = [
        _part(attempt, nodes, max(0.0, (end - start).total_seconds()), gpus, rate)
        for attempt, start, end, nodes, gpus, rate in _stretches(job, now)
    ]
    node_seconds = round(sum(p["nodeSeconds"] for p in parts), 1)
    amounts = [p["estimatedCost"]["amount"] for p in parts]
    currencies = {p["estimatedCost"]["currency"] for p in parts if p["estimatedCost"]["currency"]}
    reasons = [p["estimatedCost"]["reason"] for p in parts if "reason" in p["estimatedCost"]]
    if len(currencies) > 1:
        reasons, amounts = [f"its attempts were priced in {' and '.join(sorted(currencies))}"], [None]
    amount = None if (None in amounts) else round(sum(a for a in amounts if a is not None), 4)
    return {
        "nodeSeconds": node_seconds,
        "gpuHours": round(sum(p["gpuHours"] for p in parts), 4),
        "estimatedCost": cost_json(amount if parts else 0.0, next(iter(currencies), currency), reasons),  # not run yet: nothing spent
        "attempts": parts,
    }


def _part(attempt: int, nodes: int, duration: float, gpus: int, rate: Rate | None) -> dict[str, Any]:
    node_seconds = nodes * duration
    if rate is None:
        cost = cost_json(None, "", ["it started before prices were kept"])
    else:
        cost = cost_json(rate.cost(node_seconds), rate.currency, [rate.reason or "no price known"])
    return {"attempt": attempt, "nodeSeconds": round(node_seconds, 1), "gpuHours": round(gpus * duration / 3600, 4), "estimatedCost": cost}


def job_running_usage(job: JobRecord, now: datetime) -> Usage:
    """A job's running node-seconds by day, every attempt (what a Slurm cluster counts of it)."""
    usage: Usage = {}
    for day, node_seconds, gpu_seconds, _ in job_seconds_by_day(job, now):
        usage = merge(usage, {day: {"running": node_seconds, GPU_SECONDS: gpu_seconds}})
    return usage


def cluster_seconds(record: ClusterRecord, now: datetime) -> Usage:
    """Every node-second of the cluster by day and state: nodes that left it, and its members until now
    (a Slurm cluster: its ended jobs, and its running ones until now)."""
    usage = record.usage
    if record.accounting == "jobs":
        for digest in record.jobs.values():
            if digest.started is not None and digest.state.on_nodes and digest.started < now:
                usage = merge(usage, add_interval({}, "running", digest.started, now, nodes=len(digest.nodes)))
        return usage
    for node in record.nodes:
        mine = node.usage
        if node.since is not None and node.since < now:
            mine = add_interval(mine, node.state.value, node.since, now, node.gpus)
        usage = merge(usage, mine)
    return usage


def summary(usage: Usage, rate: Rate, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    found = totals(usage, since, until)
    by_state = {state: round(found[state], 1) for state in STATES if found.get(state)}
    node_seconds = sum(by_state.values())
    gpu_seconds = found.get(GPU_SECONDS, 0.0) or node_seconds * (rate.gpus_per_node or 0)  # discovered GPUs, else the size's
    reason = [rate.reason] if rate.reason else []
    return {
        "nodeSeconds": round(node_seconds, 1),
        "gpuHours": round(gpu_seconds / 3600, 4),
        "estimatedCost": cost_json(rate.cost(node_seconds), rate.currency, reason),
        "byState": {state: {"nodeSeconds": seconds, "estimatedCost": rate.cost(seconds)} for state, seconds in by_state.items()},
    }


def cluster_usage(record: ClusterRecord, rate: Rate, now: datetime) -> dict[str, Any]:
    """``usage`` of a cluster's view: since creation (as far as records keep: accounting.DAYS_KEPT) and today (UTC)."""
    usage = cluster_seconds(record, now)
    today = day_of(now)
    return {"sinceCreation": summary(usage, rate), "today": summary(usage, rate, today, today), "rate": rate.to_json()}


def today_cost(record: ClusterRecord, rate: Rate, now: datetime) -> float | None:
    today = day_of(now)
    amount = summary(cluster_seconds(record, now), rate, today, today)["estimatedCost"]["amount"]
    return None if amount is None else float(amount)


def job_seconds_by_day(job: JobRecord, now: datetime) -> list[tuple[str, float, float, Rate | None]]:
    """(day, node-seconds, GPU-seconds, rate) of each attempt's stretch on each UTC day it ran."""
    found: list[tuple[str, float, float, Rate | None]] = []
    for _, start, end, nodes, gpus, rate in _stretches(job, now):
        for day, states in add_interval({}, "running", start, end, gpus, nodes).items():
            found.append((day, states.get("running", 0.0), states.get(GPU_SECONDS, 0.0), rate))
    return found


def usage_report(clusters: list[tuple[ClusterRecord, Rate]], jobs: list[JobRecord], since: str, now: datetime) -> dict[str, Any]:
    """``batchai usage``: node-seconds and cost by day and cluster (every state, idle and boot apart) and by
    day, cluster and experiment (the jobs' running seconds), from ``since`` (a UTC day) to now."""
    rows = []
    for record, rate in clusters:
        usage = cluster_seconds(record, now)
        for day in sorted(d for d in usage if d >= since):
            rows.append({"day": day, "cluster": record.name, **summary(usage, rate, day, day)})
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for job in jobs:
        for day, node_seconds, gpu_seconds, priced in job_seconds_by_day(job, now):
            if day < since:
                continue
            row = runs.setdefault((day, job.cluster, job.experiment), {"jobs": set(), "nodeSeconds": 0.0, "gpuSeconds": 0.0, "costs": []})
            row["jobs"].add(job.name)
            row["nodeSeconds"] += node_seconds
            row["gpuSeconds"] += gpu_seconds
            row["costs"].append((priced.cost(node_seconds), priced.currency, priced.reason) if priced else (None, "", None))
    experiments = []
    for (day, cluster, experiment), row in sorted(runs.items()):
        amounts = [amount for amount, _, _ in row["costs"]]
        currencies = sorted({currency for _, currency, _ in row["costs"] if currency})
        reasons = [reason for _, _, reason in row["costs"] if reason] or ["no price when it started"]
        known = None not in amounts and len(currencies) <= 1
        experiments.append(
            {
                "day": day,
                "cluster": cluster,
                "experiment": experiment,
                "jobs": len(row["jobs"]),
                "nodeSeconds": round(row["nodeSeconds"], 1),
                "gpuHours": round(row["gpuSeconds"] / 3600, 4),
                "estimatedCost": cost_json(
                    round(sum(a for a in amounts if a is not None), 4) if known else None, currencies[0] if currencies else "", reasons
                ),
            }
        )
    return {"since": since, "clusters": rows, "experiments": experiments}
