"""Node-seconds by UTC day and state: how usage is counted, without a store of its own.

A node's record already says which state it is in and since when (``state_transition_time``); every
state change goes through ``records.move_node``, which closes the interval that ends there into the
record it writes anyway. What is open is counted at read time from the same timestamp. So no second
is counted twice (a closed interval is added in the one write that moves the node, compare-and-swap)
and none is lost when a controller dies (the open interval's start is in the record), and accounting
costs no request of its own.

Usage is ``{"2026-12-07": {"running": 812.4, "idle": 60.0, ...}}``: by day, so "today" and a daily
budget read the same numbers; an interval that crosses midnight is split there.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

STATES = ("starting", "preparing", "idle", "running", "leaving", "unusable")  # a member node's states, and a VM's boot
GPU_SECONDS = "gpuSeconds"  # beside the states: seconds times the node's GPUs, whatever its state
DAYS_KEPT = 93  # a quarter: older days are dropped from records (bounded for clusters that live for years)

Usage = dict[str, dict[str, float]]


def day_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).date().isoformat()


def add_interval(usage: Usage, state: str, start: datetime, end: datetime, gpus: float = 0, nodes: int = 1) -> Usage:
    """``usage`` with the seconds from ``start`` to ``end`` in ``state`` added (times ``nodes``), split at UTC
    midnights, and as many GPU-seconds times ``gpus``."""
    found = {day: dict(states) for day, states in usage.items()}
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    while start < end:
        midnight = datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=timezone.utc)
        stop = min(end, midnight)
        states = found.setdefault(start.date().isoformat(), {})
        seconds = (stop - start).total_seconds()
        states[state] = round(states.get(state, 0.0) + seconds * nodes, 3)
        if gpus:
            states[GPU_SECONDS] = round(states.get(GPU_SECONDS, 0.0) + seconds * gpus, 3)
        start = stop
    return trimmed(found)


def add_seconds(usage: Usage, state: str, seconds: float, day: str) -> Usage:
    found = {d: dict(states) for d, states in usage.items()}
    states = found.setdefault(day, {})
    states[state] = round(states.get(state, 0.0) + max(0.0, seconds), 3)
    return trimmed(found)


def merge(*usages: Usage) -> Usage:
    found: Usage = {}
    for usage in usages:
        for day, states in usage.items():
            into = found.setdefault(day, {})
            for state, seconds in states.items():
                into[state] = round(into.get(state, 0.0) + seconds, 3)
    return found


def trimmed(usage: Usage, days: int = DAYS_KEPT) -> Usage:
    return dict(sorted(usage.items())[-days:])


def totals(usage: Usage, since: str | None = None, until: str | None = None) -> dict[str, float]:
    """Seconds by state over the days from ``since`` to ``until`` (UTC, inclusive; None: unbounded)."""
    found: dict[str, float] = {}
    for day, states in usage.items():
        if (since is None or day >= since) and (until is None or day <= until):
            for state, seconds in states.items():
                found[state] = round(found.get(state, 0.0) + seconds, 3)
    return found
