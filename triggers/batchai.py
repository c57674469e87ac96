"""Async waits for deferrable operators and sensors. They only read, and report.

Each trigger takes an absolute deadline (``end_time``, epoch seconds) and serialises by class
path, so the triggerer can run it anywhere and run it twice. All triggers of one connection in
a triggerer process share one Service (its connections and caches) and, for jobs, one poller
(provider/waiting.py): 1,000 deferred waits on one cluster cost about one record read per
interval, not 1,000. A store that does not answer is retried with backoff until the deadline;
then the trigger ends with an ``error`` event that the operator turns into a clear failure.
Nothing here writes a record or touches a node (the poller may start a background pass, which
runs under the cluster's lease and is harmless twice), with one exception asked for by the user:
a job trigger made with ``terminate_on_kill`` terminates its job from ``on_kill()``, which
Airflow calls when a user marks the deferred task failed or success, or clears it (never on a
triggerer restart or a timeout).

A job trigger with ``follow_logs`` copies the job's new stdout/stderr lines into the task log
while it waits (read-only, from offsets; every ``LOG_POLL_S`` while the job runs) and hands the
offsets it reached to the resumed task in its event, so no line is copied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from airflow_batchai.data.watch import Cursor, StoredObject, advance, baseline, matching
from airflow_batchai.errors import BatchAIError, ErrorCode
from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.logtail import JobLogFollower, log_job_lines
from airflow_batchai.reading.waiting import JobUpdate
from airflow_batchai.records import ExecutionState
from airflow_batchai.service import Service
from airflow_batchai.settings import WAIT_POLL_S
from airflow_batchai.taskjobs import cluster_ready

FINAL = tuple(state.value for state in ExecutionState if state.finished)
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0
LOG_POLL_S = 2.0  # a listing per following trigger this often while its job runs


def class_path(kind: type) -> str:
    """How Airflow names a trigger class (in serialize(), and in a sensor's StartTriggerArgs)."""
    return f"{kind.__module__}.{kind.__qualname__}"


def _path(trigger: BaseTrigger) -> str:
    return class_path(type(trigger))


async def _shared_service(conn_id: str, end_time: float | None) -> Service | BatchAIError:
    """The process's Service for the connection; transient failures are retried until ``end_time``."""
    delay = RETRY_FIRST_S
    while True:
        try:
            return await asyncio.to_thread(BatchAIHook.shared_service, conn_id)
        except BatchAIError as error:
            if error.code in (ErrorCode.INVALID_CONNECTION, ErrorCode.INVALID_STORAGE_CREDENTIAL, ErrorCode.INVALID_POOL) or (
                end_time is not None and time.time() + delay > end_time
            ):
                return error
        except Exception as error:  # e.g. the connection lookup itself failed
            if end_time is not None and time.time() + delay > end_time:
                return BatchAIError(ErrorCode.CONNECTION_UNAVAILABLE, f"connection {conn_id}: {type(error).__name__}: {error}", conn_id)
        await asyncio.sleep(delay)
        delay = min(RETRY_MAX_S, delay * 2)


def _error_event(error: BatchAIError, **fields: Any) -> TriggerEvent:
    return TriggerEvent({"status": "error", "code": error.code, "message": error.message, **fields})


class BatchAIJobTrigger(BaseTrigger):
    def __init__(
        self,
        job_name: str,
        experiment: str,
        workspace: str,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = WAIT_POLL_S,
        end_time: float | None = None,
        target_states: list[str] | None = None,
        terminate_on_kill: bool = False,
        follow_logs: bool = False,
        log_offsets: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.experiment = experiment
        self.workspace = workspace
        self.batchai_conn_id = batchai_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.target_states = list(target_states or FINAL)
        self.terminate_on_kill = terminate_on_kill
        self.follow_logs = follow_logs
        self.log_offsets = dict(log_offsets or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _path(self),
            {
                "job_name": self.job_name,
                "experiment": self.experiment,
                "workspace": self.workspace,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "target_states": self.target_states,
                "terminate_on_kill": self.terminate_on_kill,
                "follow_logs": self.follow_logs,
                "log_offsets": self.log_offsets,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await _shared_service(self.batchai_conn_id, self.end_time)
        if isinstance(service, BatchAIError):
            yield _error_event(service, job_name=self.job_name)
            return
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[JobUpdate] = asyncio.Queue()

        def notify(update: JobUpdate) -> None:  # called in the poller's thread
            loop.call_soon_threadsafe(updates.put_nowait, update)

        subscription = service.waiters.subscribe(self.workspace, self.experiment, self.job_name, notify, self.poll_interval)
        follower = JobLogFollower(service, self.job_name, self.experiment, self.workspace, self.log_offsets) if self.follow_logs else None
        state, error = None, None
        try:
            while True:
                remaining = None if self.end_time is None else self.end_time - time.time()
                if remaining is not None and remaining <= 0:
                    if error is not None:
                        yield _error_event(error, job_name=self.job_name)
                    else:
                        yield TriggerEvent({"status": "timeout", "job_name": self.job_name, "state": state, **_offsets(follower)})
                    return
                wait = remaining
                if follower is not None and state in ("running", "terminating"):
                    wait = LOG_POLL_S if remaining is None else min(remaining, LOG_POLL_S)
                try:
                    update = await asyncio.wait_for(updates.get(), wait)
                except asyncio.TimeoutError:
                    if follower is not None and state in ("running", "terminating"):
                        await self._copy_lines(follower)
                    continue
                if update.error is not None:
                    if error is None:
                        self.log.warning("job %s: %s (retrying)", self.job_name, update.error.message)
                    error = update.error
                    continue
                error = None
                if update.record is None:
                    message = f"The specified job {self.job_name} is not found in experiment {self.experiment}"
                    yield _error_event(BatchAIError(ErrorCode.JOB_NOT_FOUND, message, self.job_name), job_name=self.job_name)
                    return
                state = update.record.execution_state.value
                if state in self.target_states or state in FINAL:
                    if follower is not None:
                        await self._copy_lines(follower)  # complete lines only: the resumed task reads the rest
                    where = {"experiment": self.experiment, "workspace": self.workspace}
                    yield TriggerEvent({"status": state, "job_name": self.job_name, **where, **_offsets(follower)})
                    return
        finally:
            service.waiters.unsubscribe(subscription)

    async def _copy_lines(self, follower: JobLogFollower) -> None:
        try:
            lines = await asyncio.to_thread(follower.poll)
        except BatchAIError as error:  # storage down: the lines are read next time
            self.log.debug("job %s: output not readable now: %s", self.job_name, error.message)
            return
        log_job_lines(lines)

    async def on_kill(self) -> None:
        """The user marked the deferred task failed or success, or cleared it: its job is terminated."""
        if not self.terminate_on_kill:
            return
        self.log.info("task killed while deferred: terminating job %s", self.job_name)
        service = await _shared_service(self.batchai_conn_id, time.time() + 20)
        if isinstance(service, BatchAIError):
            self.log.warning("cannot terminate job %s: %s", self.job_name, service.message)
            return
        try:
            await asyncio.to_thread(service.terminate_job, self.job_name, self.experiment, self.workspace)
        except BatchAIError as error:
            self.log.warning("cannot terminate job %s: %s: %s", self.job_name, error.code, error.message)


def _offsets(follower: JobLogFollower | None) -> dict[str, Any]:
    return {"log_offsets": follower.position()} if follower is not None else {}


class BatchAIClusterTrigger(BaseTrigger):
    def __init__(
        self,
        cluster_name: str,
        workspace: str,
        min_idle_nodes: int = 1,
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = WAIT_POLL_S,
        end_time: float | None = None,
    ) -> None:
        super().__init__()
        self.cluster_name = cluster_name
        self.workspace = workspace
        self.min_idle_nodes = min_idle_nodes
        self.batchai_conn_id = batchai_conn_id
        self.poll_interval = poll_interval
        self.end_time = end_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _path(self),
            {
                "cluster_name": self.cluster_name,
                "workspace": self.workspace,
                "min_idle_nodes": self.min_idle_nodes,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await _shared_service(self.batchai_conn_id, self.end_time)
        if isinstance(service, BatchAIError):
            yield _error_event(service, cluster_name=self.cluster_name)
            return
        delay, error = self.poll_interval, None
        while True:
            try:
                view = await asyncio.to_thread(service.show_cluster, self.cluster_name, self.workspace)
                error, delay = None, self.poll_interval
                if cluster_ready(view, self.min_idle_nodes):
                    yield TriggerEvent({"status": "ready", "cluster_name": self.cluster_name})
                    return
            except BatchAIError as failure:
                if failure.code == ErrorCode.CLUSTER_NOT_FOUND:
                    yield _error_event(failure, cluster_name=self.cluster_name)
                    return
                error, delay = failure, min(RETRY_MAX_S, max(self.poll_interval, delay * 2))
            remaining = None if self.end_time is None else self.end_time - time.time()
            if remaining is not None and remaining <= 0:
                if error is not None:
                    yield _error_event(error, cluster_name=self.cluster_name)
                else:
                    yield TriggerEvent({"status": "timeout", "cluster_name": self.cluster_name})
                return
            await asyncio.sleep(delay if remaining is None else min(delay, remaining))


STORAGE_POLL_S = 30.0
CURSOR_KEY_PREFIX = "batchai_storage_cursor"


class BatchAIStorageEventTrigger(BaseEventTrigger):
    """Fires when an object matching ``prefix`` + ``pattern`` appears or changes in a container or share
    of the connection's storage (embedded folders, Azure Blob, Azure Files): a batch-scoring trigger file.

    Use it in an ``AssetWatcher``. It only lists (by prefix, with markers, every ``poll_interval``)
    and reports: each new or changed object once, as ``{account, container, name, version, size,
    lastModified}``; objects already there when it first looks are not reported. On folders and
    Azure Files, where a file being written is visible, an object is reported once it held still
    for one poll. The cursor (data/watch.py) lives in Airflow's asset state store, written one
    poll after the events it covers (and when the trigger is stopped), so a restart reports what
    landed meanwhile and, short of a triggerer killed within a poll of an event (which then comes
    again), nothing twice: at least once. Without a state store (a trigger not run by a watcher,
    or one watcher for several assets) the cursor is in memory only.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        pattern: str = "*",
        account: str | None = None,
        kind: str = "blob",
        batchai_conn_id: str = BatchAIHook.default_conn_name,
        poll_interval: float = STORAGE_POLL_S,
    ) -> None:
        super().__init__()
        if kind not in ("blob", "file"):
            raise ValueError(f"kind must be 'blob' or 'file', got {kind!r}")
        self.container = container
        self.prefix = prefix
        self.pattern = pattern
        self.account = account
        self.kind = kind
        self.batchai_conn_id = batchai_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            _path(self),
            {
                "container": self.container,
                "prefix": self.prefix,
                "pattern": self.pattern,
                "account": self.account,
                "kind": self.kind,
                "batchai_conn_id": self.batchai_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    @property
    def cursor_key(self) -> str:
        """One key per watched place: an asset may have several watchers."""
        what = json.dumps([self.batchai_conn_id, self.account, self.container, self.prefix, self.pattern, self.kind])
        return f"{CURSOR_KEY_PREFIX}_{hashlib.sha256(what.encode()).hexdigest()[:16]}"

    async def load_cursor(self) -> Cursor | None:
        store = self.asset_state_store
        if store is None:
            return None
        try:
            return Cursor.from_json(await store.aget(self.cursor_key))
        except ValueError as error:  # a watcher of several assets: no single store to use
            self.log.warning("storage watch keeps its cursor in memory only: %s", error)
            self.asset_state_store = None
            return None

    async def save_cursor(self, cursor: Cursor) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(self.cursor_key, cursor.to_json())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        service = await _shared_service(self.batchai_conn_id, None)
        if isinstance(service, BatchAIError):
            raise AirflowException(f"{service.code}: {service.message}")
        account = self.account or service.settings.default_storage_account
        self.unsaved: Cursor | None = None
        try:
            async for found in self.polls(service, account):
                modified = datetime.fromtimestamp(found.modified, timezone.utc).isoformat()
                self.log.info("%s/%s: %s", account, self.container, found.name)
                yield TriggerEvent(
                    {
                        "account": account,
                        "container": self.container,
                        "name": found.name,
                        "version": found.version,
                        "size": found.size,
                        "lastModified": modified,
                    }
                )
        finally:  # stopped (a shutdown, the watcher removed): what was reported is not reported again
            if self.unsaved is not None:
                with contextlib.suppress(Exception):
                    await self.save_cursor(self.unsaved)

    async def polls(self, service: Service, account: str) -> AsyncIterator[StoredObject]:
        """One listing per ``poll_interval``, and what it found to report. A storage error is logged and the
        next poll tries again, backing off (a watcher that raised would be restarted, to list it all anew)."""
        where = f"{account}/{self.container}/{self.prefix}"
        settles = service.data.lists_unfinished_writes(self.kind)
        cursor = await self.load_cursor()
        previous: dict[str, str] = {}
        delay = self.poll_interval
        while True:
            if self.unsaved is not None:  # a poll later: the events it covers have been handed to the triggerer
                await self.save_cursor(self.unsaved)
                self.unsaved = None
            try:
                listed = await asyncio.to_thread(service.data.objects, account, self.container, self.prefix, self.kind)
                delay = self.poll_interval
            except Exception as error:
                message = error.message if isinstance(error, BatchAIError) else f"{type(error).__name__}: {error}"
                self.log.warning("watching %s: %s (trying again in %.0f s)", where, message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(self.poll_interval, 600.0))
                continue
            now = time.time()
            if cursor is None:
                objects = matching(listed, self.prefix, self.pattern)
                cursor = self.unsaved = await asyncio.to_thread(baseline, objects, now)
                self.log.info("watching %s for %r: %d object(s) already there", where, self.pattern, len(objects))
            else:
                new, moved = await asyncio.to_thread(self._advance, listed, cursor, now, previous if settles else None)
                if moved != cursor:
                    cursor = self.unsaved = moved
                for found in new:
                    yield found
            previous = {o.name: o.version for o in listed}
            await asyncio.sleep(self.poll_interval)

    def _advance(
        self, listed: list[StoredObject], cursor: Cursor, now: float, settled: dict[str, str] | None
    ) -> tuple[list[StoredObject], Cursor]:
        return advance(cursor, matching(listed, self.prefix, self.pattern), now, settled)
