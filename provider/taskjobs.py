"""What an orchestrator's task needs to know of its job, without the orchestrator.

A task run submits one job and every try of it re-attaches to that job; a cleared task run
submits a new one. Its name, the decision to re-attach, and the message a failed job gives
are worked out here, so the Airflow operator, sensor and trigger only carry Airflow's context
in and its exceptions out, and all of this is tested without Airflow.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .errors import BatchAIError, ErrorCode
from .logtail import JobLogFollower, stderr_tail
from .reading.readmodels import ClusterView, JobView
from .records import AllocationState, ExecutionState
from .service import Service

log = logging.getLogger(__name__)

MAX_NAME = 64
STDERR_TAIL_LINES = 20


def job_name_for(dag_id: str, task_id: str, run_id: str, map_index: int | None = -1) -> str:
    """A Batch AI job name (``^[-\\w]{1,64}$``) that is the same for every try of one task run.

    A mapped task's index is part of it (and stays visible when a long name is shortened with a
    hash), so ``.expand()`` over N specs gives N jobs, and each try re-attaches to its own.
    """
    suffix = f"-{map_index}" if map_index is not None and map_index >= 0 else ""
    run = _compact_run_id(run_id)
    name = re.sub(r"[^-\w]", "_", f"{dag_id}-{task_id}-{run}")
    if run == run_id and len(name) + len(suffix) <= MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(f"{dag_id}\0{task_id}\0{run_id}{suffix}".encode()).hexdigest()[:8]
    run_part = re.sub(r"[^-\w]", "_", run)[:32] + f"-{digest}{suffix}"
    room = MAX_NAME - len(run_part) - 2  # what the DAG and task ids may take; the run's date is never the part cut
    dag_part, task_part = re.sub(r"[^-\w]", "_", dag_id), re.sub(r"[^-\w]", "_", task_id)
    if len(dag_part) + len(task_part) > room:
        task_part = _shortened(task_part, max(room // 2, room - len(dag_part)))
        dag_part = _shortened(dag_part, room - len(task_part))
    return f"{dag_part}-{task_part}-{run_part}"


def _shortened(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut after a whole word where one ends past its first third
    (``batchai_distributed``, not ``batchai_distributed_pytorc``); the name's hash keeps it unique."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    boundary = max(cut.rfind("_"), cut.rfind("-"))
    return cut[:boundary] if boundary >= max(1, limit // 3) else cut


def state_said(name: str, state: str, why: str | None = None) -> str:
    """A job's state in a task log line, as a user says it ("job x succeeded", not "is succeeded"); a queued
    job's line says what it waits for, where that is known."""
    phrases = {
        "queued": "is queued",
        "running": "is running",
        "terminating": "is being terminated",
        "succeeded": "succeeded",
        "failed": "failed",
    }
    said = f"job {name} {phrases.get(state, 'is ' + state)}"
    return f"{said}: {why}" if why and state == "queued" else said


def _compact_run_id(run_id: str) -> str:
    """``manual__2026-12-02T01:31:18.123456+00:00`` → ``manual_20261202T013118``: the date whole, in few characters."""
    stamp = re.search(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)?", run_id)
    if not stamp:
        return run_id
    kind = run_id[: stamp.start()].rstrip("_") or "run"
    return f"{kind}_{''.join(stamp.groups())[:8]}T{''.join(stamp.groups())[8:]}{run_id[stamp.end() :]}"


def generation_name(base: str, generation: int) -> str:
    """The name of the ``generation``-th new job of one task run (0: the first): a cleared task's
    new job never takes the name of the one it replaces, and stays within Batch AI's 64 characters."""
    if not generation:
        return base
    suffix = f"-g{generation}"
    return base + suffix if len(base) + len(suffix) <= MAX_NAME else base[: MAX_NAME - len(suffix) - 9] + "-" + _digest(base) + suffix


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Reattach:
    """What a task run does with the job an earlier try saved: ``saved`` to re-attach to (None:
    submit a new job), the ``generation`` of a new job's name, and why (for the task log)."""

    saved: dict[str, Any] | None
    generation: int
    reason: str | None = None


def reattach(saved: Any, max_tries: int, show_job: Callable[[str, str, str], JobView], experiment: str, workspace: str) -> Reattach:
    """Decide from the task state store's entry (``saved``) whether this try re-attaches to its job.

    Airflow keeps the task state store across retries and clears alike; a clear is told apart by
    ``max_tries``, which a retry leaves as it was and a clear raises. A saved job that no longer
    exists, or that was replaced by another of its name, is not re-attached to either. Errors other
    than JobNotFound are raised: storage down is not a reason to submit a second job.
    """
    if not isinstance(saved, dict) or not saved.get("name"):
        return Reattach(None, 0)
    generation = int(saved.get("generation") or 0)
    name = saved["name"]
    if saved.get("maxTries") != max_tries:
        return Reattach(None, generation + 1, f"the task was cleared since it submitted job {name}: submitting a new job")
    try:
        view = show_job(name, saved.get("experiment", experiment), saved.get("workspace", workspace))
    except BatchAIError as error:
        if error.code != ErrorCode.JOB_NOT_FOUND:
            raise
        return Reattach(None, generation + 1, f"job {name}, submitted by an earlier try, no longer exists: submitting a new job")
    if view.job_output_directory_path_segment != saved.get("segment"):
        return Reattach(None, generation + 1, f"job {name} was deleted and created again by someone else since an earlier try submitted it")
    return Reattach(saved, generation)


def failed_earlier(service: Service, name: str, experiment: str, workspace: str, try_number: int) -> JobView | None:
    """The job of this name from an earlier try, or None; one that failed is deleted first, so a
    retry runs the job again instead of re-attaching to its failure."""
    try:
        before = service.show_job(name, experiment, workspace)
    except BatchAIError as error:
        if error.code != ErrorCode.JOB_NOT_FOUND:
            raise
        return None
    if before.execution_state == ExecutionState.FAILED and try_number > 1:
        log.info("job %s failed in an earlier try: deleting it and submitting again", name)
        service.delete_job(name, experiment, workspace)
        return None
    return before


def failure_message(service: Service, view: JobView, experiment: str, workspace: str) -> str:
    """A failed job as one message: its error codes, its exit code and the tail of its stderr."""
    info = view.execution_info
    errors = "; ".join(f"{e.code}: {e.message}" for e in info.errors or []) or "no error reported"
    tail = stderr_tail(service, view.name, experiment, workspace, STDERR_TAIL_LINES)
    lines = [f"Batch AI job {view.name} failed: {errors} (exit code {info.exit_code})"]
    if tail:
        lines += ["last lines of stderr:", *tail]
    return "\n".join(lines)


class WaitFailed(Exception):
    """A wait that can never end well: the job failed (the message has its error codes, exit code and
    stderr tail), or it ended in a state the wait was not for."""


@dataclass
class JobWait:
    """One wait for a job, as each shell waits: the blocking operator, the sensor's pokes and the
    resumed deferrable task all take the same steps here, so they read, log and decide alike.

    ``look`` reads the job once (``refresh`` lets a due pass run first, for a caller that waits
    anyway) and the output lines that are new since the last look (all of them once the job has
    ended); ``over`` says whether the wait is done, or raises WaitFailed.
    """

    service: Service
    name: str
    experiment: str
    workspace: str
    targets: Collection[str] = (ExecutionState.SUCCEEDED,)
    follower: JobLogFollower | None = None

    def look(self, refresh: bool = False) -> tuple[JobView, list[tuple[str, str]]]:
        read = self.service.refresh_job if refresh else self.service.show_job
        view = read(self.name, self.experiment, self.workspace)
        finished = view.finished
        if self.follower is None:
            return view, []
        try:
            return view, self.follower.poll(final=finished)
        except BatchAIError:
            if finished:
                raise  # the last lines: the caller looks again rather than lose them
            return view, []  # output not readable now: the follower keeps its place, the lines come next time

    def over(self, view: JobView) -> bool:
        state = view.execution_state
        if state in self.targets:
            return True
        if state == ExecutionState.FAILED:
            raise WaitFailed(failure_message(self.service, view, self.experiment, self.workspace))
        if state.finished:
            raise WaitFailed(f"job {self.name} {state.value}, which is not one of {sorted(str(t) for t in self.targets)}")
        return False


def cluster_ready(view: ClusterView, min_idle_nodes: int) -> bool:
    """Whether a cluster is ready for a task that waits for it: steady, with ``min_idle_nodes`` idle."""
    return view.allocation_state == AllocationState.STEADY and view.node_state_counts.idle_node_count >= min_idle_nodes
