"""Who runs a cluster's reconcile pass, and when: the lease, its note, and opportunistic passes.

A pass runs only under the cluster's lease. The ``batchai controller`` runs them for every
cluster; so that the embedded default and a plain Airflow install need no extra process, any
reader may start one too (``kick``): in a background thread, never delaying its own answer,
never raising into it, and only when the lease's note says one is due or the watch below saw
a job end. Whatever the number of readers, that is about one pass per cluster per interval.

Between passes, running jobs are *watched*: their agents' status files are read (no lease, no
record writes) every ``watch_interval_s``; an ended run, a silent agent or a finished node
setup starts a pass at once, which is how a job's end reaches its record within about half a
second. With a controller running, readers leave the watching to it.

Who runs the pass that launches a newly queued job is decided in one place, ``launcher``: the
controller when one looks after the cluster, else the process that submitted it, at once. A
submitter that finds a live controller in the note marks the cluster due there instead of passing,
and readers leave a live controller's clusters to it altogether.

The note a holder leaves on the lease: ``seq`` (a new random token when a pass starts, so a
process that finds its own last token knows no one else changed the cluster's jobs since),
``holder``, ``kind`` (controller, reader or writer), ``ended`` and ``next_due`` (epoch seconds);
``controller``, the controller that looks after the cluster (kept by other holders' passes while it
lives), and ``wanted_by`` once a submitter asked it for a pass.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..agent.protocol import CONTACT_RENEW_S
from ..control import ControlStore, Lease, SecretVault, lock
from ..data import DataStore
from ..errors import BatchAIError, ErrorCode, StaleRecord
from ..layout import NodeLayout
from ..pools import NodePool
from ..records import ClusterRecord, JobRecord, NodeState, lease_name, read_cluster
from ..settings import Settings
from ..transport.handle import NodeHandle
from .reconcile import PassOutcome, Reconciler
from .scaling import setup_run_id
from .snapshot import read_snapshot

log = logging.getLogger(__name__)

CHECK_GAP_S = 0.2  # a reader looks at a cluster's note at most this often
WATCH_SLACK = 0.8
FOLLOW_UPS = 2  # passes run again at once while runs were just stopped (terminate sees the end)
CONFLICT_RETRIES = 3  # a pass that met a record moved by someone else runs again on a fresh snapshot
URGENT_WAIT_S = 2.0  # an urgent kick (a new job) waits this long for a busy lease before leaving it to its holder
BURST_GAP_S = 0.02  # back-to-back urgent passes (a burst of submits) start at least this far apart,
BURST_SHARE = 0.2  # and take at most this share of the time, whatever the queue's length
FAILED_PASS_BACKOFF_MAX_S = 30.0
CONTROLLER_GRACE_S = 5.0  # a controller starts a due pass within a few tenths of a second: one this late has stopped

ClusterRef = tuple[str, str]  # (workspace, cluster name)


def next_seq() -> str:
    """A token no earlier pass had (a counter could start again from a lost note and match by chance)."""
    return uuid.uuid4().hex


def identity(kind: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{kind}"


def live_controller(note: dict[str, str], now: float) -> str | None:
    """The controller that looks after the cluster, as its lease note shows it; None when none does.

    A controller looks at its clusters every few tenths of a second and runs the pass the note says
    is due: between passes, one whose pass is CONTROLLER_GRACE_S overdue has stopped (SIGKILL, a lost
    machine). During a pass the note cannot tell: whoever next gets the lease and still finds the pass
    under way knows its holder died in it."""
    controller = note.get("controller")
    if not controller or "ended" not in note:
        return controller or None
    return controller if now <= float(note.get("next_due") or 0) + CONTROLLER_GRACE_S else None


def launcher(note: dict[str, str], holder: str, now: float) -> Literal["controller", "here"]:
    """Who runs the pass that launches a newly queued job, stated once for every submit: the deployment's
    controller when one looks after the cluster, else the process that submitted (``holder``), at once.
    The same answer every time for a deployment: the machine that reaches the nodes, with their keys, is
    the controller's wherever one runs, and a submitter never races it for the lease."""
    controller = live_controller(note, now)
    return "controller" if controller is not None and controller != holder else "here"


@dataclass
class _Owner:
    """What this process knows of a cluster it ran passes for."""

    seq: str | None = None
    jobs: dict[str, tuple[JobRecord, str]] = field(default_factory=dict)
    last_check: float = 0.0  # monotonic
    last_watch: float = 0.0
    pass_started: float = float("-inf")  # monotonic, of the last pass this process ran
    pass_took: float = 0.0
    failures: int = 0  # passes in a row that raised: readers back off instead of retrying every watch
    retry_after: float = float("-inf")


class Passes:
    """This process's passes: run now under the lease (writers), or kick one in the background (readers)."""

    def __init__(
        self,
        store: ControlStore,
        vault: SecretVault,
        pool: NodePool,
        data: DataStore,
        settings: Settings,
        kind: str = "reader",
        scheduler: type[Reconciler] = Reconciler,
    ) -> None:
        """``scheduler``: who decides a pass (our reconcile over our pool, or Slurm's mapping), chosen by config.backends."""
        self.scheduler = scheduler
        self.store = store
        self.vault = vault
        self.pool = pool
        self.data = data
        self.settings = settings
        self.kind = kind
        self.holder = identity(kind)
        self._owners: dict[ClusterRef, _Owner] = {}
        self._lock = threading.Lock()
        self._inflight: dict[ClusterRef, threading.Thread] = {}
        self._again: set[ClusterRef] = set()
        self.listeners: list[Callable[[ClusterRef], None]] = []  # told after every pass this process ran (e.g. to wake waiters)
        self._contacted: dict[str, float] = {}  # node id -> when this controller last renewed its contact file
        self._machines_seen: frozenset[str] = frozenset()  # an elastic pool's inventory at the last watch

    def owner(self, ref: ClusterRef) -> _Owner:
        with self._lock:
            return self._owners.setdefault(ref, _Owner())

    # -- writers: a pass now, waiting for the lease ------------------------------------------------
    def run_now(
        self, workspace: str, name: str, terminations: dict[str, dict[str, Any]] | None = None, timeout_s: float = 30.0
    ) -> ClusterRecord:
        """One pass (with the user's terminations) under the lease, waiting for it; returns the published record."""
        with lock(self.store, lease_name(workspace, name), timeout_s) as lease:
            return self.run_pass(lease, workspace, name, terminations)

    def run_pass(self, lease: Lease, workspace: str, name: str, terminations: dict[str, dict[str, Any]] | None = None) -> ClusterRecord:
        """Passes under a held lease: the first with ``terminations``, follow-ups while runs were just stopped."""
        ref = (workspace, name)
        owner = self.owner(ref)
        note = self.store.lease_note(lease.name)
        trusted = owner.seq is not None and note.get("seq") == owner.seq
        seq = next_seq()
        started, owner.pass_started = time.time(), time.monotonic()
        controller = self.holder if self.kind == "controller" else live_controller(note, started)
        mine = {"seq": seq, "holder": self.holder, "kind": self.kind, **({"controller": controller} if controller else {})}
        lease.note({**mine, "started": f"{started:.3f}"})
        log.debug("pass %s/%s seq %s by %s started at %.6f", workspace, name, seq, self.holder, started)
        owner.seq = seq
        if not trusted:
            owner.jobs = {}
        outcome: PassOutcome | None = None
        reconciler: Reconciler | None = None
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                snapshot = read_snapshot(self.store, self.pool, workspace, name, owner.jobs, also=terminations or ())
                written = reconciler.changed if reconciler else {}  # what an attempt stopped by a conflict wrote stays in the digest
                reconciler = self.scheduler(self.store, self.vault, self.pool, self.data, self.settings, snapshot, lease)
                reconciler.changed.update(written)
                reconciler.controlled = self.kind == "controller" or note.get("kind") == "controller"
                outcome = reconciler.run(terminations)
                for _ in range(FOLLOW_UPS):
                    if not outcome.stopped:
                        break
                    outcome = reconciler.run()
                break
            except StaleRecord as error:  # someone moved a record this pass read: decide again on fresh records
                owner.jobs = {}
                if attempt == CONFLICT_RETRIES:
                    raise
                log.info("pass over cluster %s/%s met a moved record (%s): running it again", workspace, name, error.target)
            except BaseException:
                owner.jobs = {}
                raise
        assert reconciler is not None and outcome is not None
        owner.jobs = reconciler.snapshot.known_jobs()
        if self.kind == "controller":
            self.renew_contacts(reconciler)
        owner.pass_took = time.monotonic() - owner.pass_started
        wait = self.settings.pass_interval_s
        if outcome.plan.next_due_s is not None:
            wait = max(self.settings.watch_interval_s, min(wait, outcome.plan.next_due_s + 0.05))
        now = time.time()
        lease.note({**mine, "ended": f"{now:.3f}", "next_due": f"{now + wait:.3f}"})
        log.debug("pass %s/%s seq %s by %s ended at %.6f", workspace, name, seq, self.holder, now)
        for listener in self.listeners:
            listener(ref)
        for member in outcome.plan.held_elsewhere:  # their passes may free nodes this cluster waits for
            other_workspace, other_name = member.split("/", 1)
            self.kick(other_workspace, other_name)
        return reconciler.cluster

    def renew_contacts(self, reconciler: Reconciler) -> None:
        """Tell the agents of nodes running jobs that their controller still reaches them (fencing:
        one that stops hearing stops its job, protocol.AGENT_CONTACT_FENCE_S). One small write per
        node every CONTACT_RENEW_S, not per pass; an unreachable node is the pass's to report."""
        now = time.monotonic()
        for node in reconciler.snapshot.nodes.values():
            if node.state != NodeState.RUNNING or now - self._contacted.get(node.node_id, -1e9) < CONTACT_RENEW_S:
                continue
            try:
                self.pool.transport(node.node_id).write_file(NodeLayout(node.root).contact_path, b"", 0o644)
                self._contacted[node.node_id] = now
            except (BatchAIError, OSError) as error:
                log.debug("could not renew the contact of node %s: %s", node.node_id, error)

    def forget(self, lease: Lease, workspace: str, name: str) -> None:
        """Before and after the cluster is deleted under ``lease``: nobody's kept records of it are any good."""
        lease.note({"seq": next_seq(), "holder": self.holder, "kind": "writer"})
        with self._lock:
            self._owners.pop((workspace, name), None)

    # -- readers: maybe a pass, in the background --------------------------------------------------
    def kick(self, workspace: str, name: str, urgent: bool = False) -> None:
        """Start a background look at the cluster: a pass if one is due (``urgent``: at once). Never raises, never waits."""
        ref = (workspace, name)
        now = time.monotonic()
        with self._lock:
            owner = self._owners.setdefault(ref, _Owner())
            if ref in self._inflight:
                if urgent:
                    self._again.add(ref)
                return
            if not urgent and now - owner.last_check < CHECK_GAP_S:
                return
            owner.last_check = now
            thread = threading.Thread(target=self._background, args=(ref, urgent), name=f"batchai-pass-{workspace}-{name}")
            self._inflight[ref] = thread
        thread.start()

    def _background(self, ref: ClusterRef, urgent: bool) -> None:
        try:
            while True:
                try:
                    self.maybe_pass(ref, urgent)
                except BatchAIError as error:
                    if error.code != ErrorCode.CLUSTER_NOT_FOUND:
                        log.warning("background pass over cluster %s/%s: %s", *ref, error)
                except Exception:
                    log.exception("background pass over cluster %s/%s failed", *ref)
                with self._lock:
                    if ref not in self._again:
                        del self._inflight[ref]
                        return
                    self._again.discard(ref)
                owner = self.owner(ref)  # more work arrived meanwhile: one more pass, spaced so a burst is not starved
                spacing = max(BURST_GAP_S, owner.pass_took * (1 - BURST_SHARE) / BURST_SHARE)
                time.sleep(max(0.0, owner.pass_started + spacing - time.monotonic()))
                urgent = True
        finally:
            with self._lock:
                if self._inflight.get(ref) is threading.current_thread():
                    del self._inflight[ref]

    def maybe_pass(self, ref: ClusterRef, urgent: bool = False) -> bool:
        """A pass if the note says one is due, the watch saw a change, or ``urgent`` (a new job: see
        ``launcher``); True if one ran."""
        workspace, name = ref
        lease = lease_name(workspace, name)
        owner = self.owner(ref)
        if urgent and launcher(self.store.lease_note(lease), self.holder, time.time()) == "controller":
            return self.ask_controller(ref)
        if not urgent and (time.monotonic() < owner.retry_after or not self.due(ref, self.store.lease_note(lease))):
            return False
        deadline = time.monotonic() + (URGENT_WAIT_S if urgent else 0)
        while True:
            with self.store.try_lease(lease) as held:
                if held is not None:
                    try:
                        self.run_pass(held, workspace, name)
                    except Exception:
                        owner.failures += 1
                        owner.retry_after = time.monotonic() + min(FAILED_PASS_BACKOFF_MAX_S, 0.5 * 2**owner.failures)
                        raise
                    owner.failures, owner.retry_after = 0, float("-inf")
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def ask_controller(self, ref: ClusterRef) -> bool:
        """Mark the cluster due on its lease note (taken for a moment; a pass under way is waited for, as
        an urgent pass waits): the controller's next look runs the pass. True if the pass ran here after
        all, because the controller died in the middle of its last one."""
        lease = lease_name(*ref)
        deadline = time.monotonic() + URGENT_WAIT_S
        while True:
            with self.store.try_lease(lease) as held:
                if held is not None:
                    note = self.store.lease_note(lease)
                    if "ended" not in note:  # the lease is ours, yet a pass is under way: its holder died in it
                        self.run_pass(held, *ref)
                        return True
                    held.note({**note, "next_due": f"{time.time():.3f}", "wanted_by": self.holder})
                    return False
            if time.monotonic() >= deadline:
                return False  # still busy: the pass under way, or the controller's next one, sees the job
            time.sleep(0.05)

    def due(self, ref: ClusterRef, note: dict[str, str]) -> bool:
        now = time.time()
        if self.kind != "controller" and "ended" in note and live_controller(note, now) not in (None, self.holder):
            return False  # a live controller runs the cluster's passes when due: see launcher
        if float(note.get("next_due", 0) or 0) <= now:
            return True
        other_controller = note.get("kind") == "controller" and note.get("holder") != self.holder
        if other_controller:
            return False  # it watches; we would only read the same agents again
        owner = self.owner(ref)
        if time.monotonic() - owner.last_watch < self.settings.watch_interval_s * WATCH_SLACK:
            return False  # (readers polling at the watch interval would otherwise miss every other turn by a hair)
        owner.last_watch = time.monotonic()
        cluster, _ = read_cluster(self.store, *ref)
        return self.watch(cluster)

    def watch(self, cluster: ClusterRecord) -> bool:
        """Read-only look at the agents the last pass left running: True when a pass should see them now
        (and, on an elastic pool, when a machine joined or left: a started VM is claimed at once)."""
        roots = {node_id: root for node_id, _, root, _ in self.pool.inventory()}
        if self.pool.elastic and frozenset(roots) != self._machines_seen:
            self._machines_seen = frozenset(roots)
            return True
        now = time.time()
        checks: list[tuple[str, str, float]] = []  # (node id, run id, seconds since it should have reported)
        cut_off = {node.node_id for node in cluster.nodes if node.unreachable}
        for digest in cluster.jobs.values():
            if digest.state.on_nodes and digest.run:
                age = now - digest.changed.timestamp()
                done = set(digest.done_nodes)
                checks += [(node_id, digest.run, age) for node_id in digest.nodes if node_id not in done]
        for node in cluster.nodes:
            if node.state == NodeState.PREPARING:  # a setup that never reports is the full pass's to judge
                checks.append((node.node_id, setup_run_id(cluster), 0.0))
        for node_id, run, age in checks:
            root = roots.get(node_id) or self.pool.node_root(node_id)
            if root is None:
                return True
            try:
                status = NodeHandle(node_id, self.pool.transport(node_id), NodeLayout(root)).status(run)
            except BatchAIError:
                if node_id in cut_off:
                    continue  # the pass already counts its silence; the next full pass judges it
                return True
            if node_id in cut_off:
                return True  # back: the pass clears its count
            if status is None:
                if age > self.settings.launch_timeout_s:
                    return True
                continue
            if status.final:
                return True
            if now - status.heartbeat > self.settings.heartbeat_timeout_s:
                return True
        return False

    def drain(self, timeout_s: float | None = 60.0) -> None:
        """Wait for background passes this process started (a CLI does before it exits)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                threads = list(self._inflight.values())
            if not threads:
                return
            for thread in threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                return
