"""``batchai controller``: the long-running owner of every cluster's reconcile passes.

Without it, passes happen only while someone looks (readers kick them). With it, autoscale
grows and shrinks clusters with nobody reading, idle nodes leave after
``idleSecondsBeforeScaledown`` down to zero, and a job's end reaches its record within about
half a second. Several controllers may run (on one machine or many): each cluster's lease lets
one act at a time, and when one dies (SIGKILL included) another takes over once its lease is
free. SIGTERM finishes the passes under way and exits.
"""

from __future__ import annotations

import logging
import threading
import time

from .service import Service

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often the loop looks whether a cluster is due (cheap: the lease note, in memory mostly)


class Controller:
    def __init__(self, service: Service, interval_s: float | None = None) -> None:
        """``interval_s``: a full pass per cluster at least this often (default: the service's ``pass_interval_s``)."""
        self.service = service
        if interval_s is not None:
            service.settings.pass_interval_s = interval_s
        self.interval_s = service.settings.pass_interval_s
        self.stop = threading.Event()

    def run(self) -> None:
        """Until ``stop`` is set: every cluster of the store gets its passes (kicked, in background threads)."""
        clusters: list[tuple[str, str]] = []
        listed = 0.0
        log.info("batchai controller %s: interval %.1f s", self.service.passes.holder, self.interval_s)
        while not self.stop.is_set():
            if time.monotonic() - listed >= self.interval_s:
                try:
                    clusters = self.service.all_clusters()
                except Exception as error:  # the store is unreachable: keep trying, say so
                    log.warning("cannot list clusters: %s", error)
                listed = time.monotonic()
            for workspace, name in clusters:
                self.service.passes.kick(workspace, name)
            self.stop.wait(TICK_S)
        self.service.passes.drain(timeout_s=None)
        log.info("batchai controller %s stopped", self.service.passes.holder)
