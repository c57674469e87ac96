"""Many waiters on jobs in one process, one read per cluster per interval.

A triggerer runs every deferred wait of a deployment in one process: 1,000 of them must not
cost 1,000 record reads per interval. Waiters subscribe here instead; one thread per Service
reads, per interval, the record of each cluster they wait on. Its published digest
(records.JobDigest: state and ETag of every job on nodes or changed lately) tells which job
records moved, and only those are read again. A job queued behind others costs nothing until
it moves. Every subscriber is also re-read directly now and then (``FULL_REFRESH_S``), should
a digest ever miss a change.

The poller only reads. It kicks the clusters it watches (a background pass when one is due),
which is what moves the jobs along where no controller runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..control import ControlStore
from ..errors import BatchAIError
from ..records import JobRecord, cluster_key, job_key
from ..settings import WAIT_POLL_S

log = logging.getLogger(__name__)

FULL_REFRESH_S = 120.0
IDLE_STOP_S = 10.0  # the thread ends when nobody has waited this long
MAX_BACKOFF_S = 15.0  # an unreachable store is retried at most this far apart
MIN_INTERVAL_S = 0.1


@dataclass
class JobUpdate:
    """What a subscriber learns: the job's record (None: no such job), or why the store could not be read."""

    record: JobRecord | None
    error: BatchAIError | None = None


@dataclass(eq=False)
class Subscription:
    workspace: str
    experiment: str
    name: str
    notify: Callable[[JobUpdate], None]
    interval_s: float
    record: JobRecord | None = None
    etag: str | None = None
    read_at: float = field(default=float("-inf"))  # monotonic time of the last direct read
    seen: bool = False  # notified at least once

    @property
    def key(self) -> str:
        return job_key(self.workspace, self.experiment, self.name)


@dataclass
class PollerStats:
    ticks: int = 0
    late_ticks: int = 0  # started more than half an interval after they were due
    cluster_reads: int = 0
    job_reads: int = 0


class JobWaiters:
    def __init__(self, store: ControlStore, kick: Callable[[str, str], None], interval_s: float = WAIT_POLL_S) -> None:
        """``kick(workspace, cluster)`` is called for every cluster waited on, each interval (it must not block)."""
        self.store = store
        self.kick = kick
        self.interval_s = interval_s
        self.stats = PollerStats()
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(
        self, workspace: str, experiment: str, name: str, notify: Callable[[JobUpdate], None], interval_s: float | None = None
    ) -> Subscription:
        """``notify`` runs in the poller's thread: with the record at once, then whenever it changes (keep it short)."""
        subscription = Subscription(workspace, experiment, name, notify, max(MIN_INTERVAL_S, interval_s or self.interval_s))
        with self._lock:
            self._subscriptions.add(subscription)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="batchai-job-waiters", daemon=True)
                self._thread.start()
        self._wake.set()
        return subscription

    def wake(self, *_: object) -> None:
        """Look again now (a pass just ran: what it wrote should reach the waiters without waiting out the interval)."""
        self._wake.set()

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def _loop(self) -> None:
        backoff = 0.0
        idle_since: float | None = None
        due = time.monotonic()
        while True:
            with self._lock:
                subscriptions = list(self._subscriptions)
                if not subscriptions:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > IDLE_STOP_S:
                        self._thread = None
                        return
            if subscriptions:
                idle_since = None
                interval = min(s.interval_s for s in subscriptions)
                started = time.monotonic()
                self.stats.ticks += 1
                if started - due > interval / 2:
                    self.stats.late_ticks += 1
                failed = self._tick(subscriptions)
                backoff = min(MAX_BACKOFF_S, max(interval, backoff * 2)) if failed else 0.0
                due += max(interval, backoff)
                if due < time.monotonic():  # fell behind: the next round starts now, without a burst to catch up
                    due = time.monotonic()
            else:
                due = time.monotonic() + self.interval_s
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def _tick(self, subscriptions: list[Subscription]) -> bool:
        """One round: True when the store failed somewhere (the next round then backs off)."""
        now = time.monotonic()
        to_read: dict[str, list[Subscription]] = {}
        by_cluster: dict[tuple[str, str], list[Subscription]] = {}
        for sub in subscriptions:
            if sub.record is None or now - sub.read_at > FULL_REFRESH_S:
                to_read.setdefault(sub.key, []).append(sub)
            elif not sub.record.execution_state.finished:
                by_cluster.setdefault((sub.workspace, sub.record.cluster), []).append(sub)
        failed = False
        for (workspace, cluster), group in by_cluster.items():
            self.kick(workspace, cluster)
            try:
                found = self.store.read(cluster_key(workspace, cluster))
                self.stats.cluster_reads += 1
            except BatchAIError as error:
                failed = True
                self._tell(group, JobUpdate(None, error))
                continue
            digest = found.data.get("jobs") or {} if found else None
            for sub in group:
                entry = digest.get(sub.key) if digest is not None else None
                moved = digest is None or (entry is not None and entry.get("etag") != sub.etag)
                left = entry is None and sub.record is not None and sub.record.execution_state.on_nodes
                if moved or left:
                    to_read.setdefault(sub.key, []).append(sub)
        for key, group in to_read.items():
            try:
                found = self.store.read(key)
                self.stats.job_reads += 1
            except BatchAIError as error:
                failed = True
                self._tell(group, JobUpdate(None, error))
                continue
            record = JobRecord.model_validate(found.data) if found else None
            etag = found.etag if found else None
            for sub in group:
                changed = not sub.seen or etag != sub.etag
                sub.record, sub.etag, sub.read_at = record, etag, now
                if record is None:
                    with self._lock:
                        self._subscriptions.discard(sub)
                if changed:
                    sub.seen = True
                    self._tell([sub], JobUpdate(record))
            if record is not None and not record.execution_state.finished:
                self.kick(record.workspace, record.cluster)
        return failed

    def _tell(self, subscriptions: list[Subscription], update: JobUpdate) -> None:
        for sub in subscriptions:
            try:
                sub.notify(update)
            except Exception:  # a subscriber's bug must not stop the others' waits
                log.exception("job waiter for %s failed", sub.key)
