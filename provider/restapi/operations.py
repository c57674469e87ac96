"""Long-running operations (deletes, terminate): started by the authorized write, carried to the
end by the server, only read by polls.

An operation is a record in the control store under a random id (``secrets.token_urlsafe``,
192 bits): the id is the whole capability to *read* its status, and nothing can be done with
one, so a viewer who guesses or composes an id learns nothing and changes nothing. The write
that starts it takes its first step at once (a delete whose job already ended finishes
there); what is left is stepped by a carrier thread of the process that started it, every
``STEP_INTERVAL_S`` until it ends or ``OPERATION_DEADLINE_S`` passes. A process that starts
later picks up operations left in progress (a server restart loses none). Finished records
are kept ``KEEP_FINISHED_S`` for late polls, then removed when a carrier next starts.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..control import ControlStore, update
from ..errors import BatchAIError, ErrorCode, RecordExists
from ..records import utc_now

log = logging.getLogger(__name__)

OPERATIONS = "operations/"
STEP_INTERVAL_S = 1.0
OPERATION_DEADLINE_S = 6 * 3600.0  # a terminate waits for the job's processes; none takes this long
KEEP_FINISHED_S = 24 * 3600.0
RETRIED_CODES = (
    ErrorCode.CONTROL_STORE_UNAVAILABLE,
    ErrorCode.STORAGE_UNAVAILABLE,
    ErrorCode.LOCK_TIMEOUT,
    ErrorCode.LEASE_LOST,
)  # worth another step

Kind = Literal["deleteWorkspace", "deleteCluster", "deleteExperiment", "deleteJob", "terminateJob"]
Status = Literal["InProgress", "Succeeded", "Failed"]


class OperationRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Kind
    resource_group: str
    workspace: str
    name: str = ""
    experiment: str = ""
    status: Status = "InProgress"
    error: dict[str, Any] | None = None
    start_time: datetime
    end_time: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status != "InProgress"

    def status_body(self) -> dict[str, Any]:
        """The Azure-AsyncOperation body."""
        body: dict[str, Any] = {"name": self.id, "status": self.status, "startTime": self.start_time.isoformat()}
        if self.end_time:
            body["endTime"] = self.end_time.isoformat()
        if self.error:
            body["error"] = self.error
        return body


def operation_key(operation_id: str) -> str:
    return f"{OPERATIONS}{operation_id}"


Step = Callable[[OperationRecord], bool]  # one step; True once the operation is done; BatchAIError when it failed


class Operations:
    """The operations of one control store; ``step`` does one step of one (the REST app's)."""

    def __init__(self, store: Callable[[], ControlStore], step: Step) -> None:
        self.store = store
        self.step = step
        self._carried: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._resumed = False

    def start(self, kind: Kind, resource_group: str, workspace: str, name: str = "", experiment: str = "") -> OperationRecord:
        """Record the operation, take its first step, and carry the rest in the background."""
        record = OperationRecord(
            id=secrets.token_urlsafe(24),
            kind=kind,
            resource_group=resource_group,
            workspace=workspace,
            name=name,
            experiment=experiment,
            start_time=utc_now(),
        )
        try:
            self.store().create(operation_key(record.id), record.model_dump(mode="json"))
        except RecordExists:  # 192 random bits: never; but never overwrite either
            raise BatchAIError(ErrorCode.INTERNAL_SERVER_ERROR, "operation id collision", "operationId") from None
        record = self.advance(record)
        if not record.final:
            self.carry(record.id)
        return record

    def get(self, operation_id: str) -> OperationRecord:
        """The stored operation; read only (a poll never moves it)."""
        found = self.store().read(operation_key(operation_id))
        if found is None:
            raise BatchAIError(ErrorCode.OPERATION_NOT_FOUND, "no such operation", "operationId")
        try:
            return OperationRecord.model_validate(found.data)
        except ValidationError:
            raise BatchAIError(ErrorCode.OPERATION_NOT_FOUND, "no such operation", "operationId") from None

    def advance(self, record: OperationRecord) -> OperationRecord:
        """One step, its outcome written to the record (a record already final is left as it is)."""
        status: Status = "InProgress"
        error: dict[str, Any] | None = None
        try:
            if self.step(record):
                status = "Succeeded"
        except BatchAIError as failure:
            if failure.code not in RETRIED_CODES:
                status, error = "Failed", failure.to_json()
        if status == "InProgress" and (utc_now() - record.start_time).total_seconds() > OPERATION_DEADLINE_S:
            status = "Failed"
            error = {"code": ErrorCode.OPERATION_TIMED_OUT, "message": f"the operation did not end within {OPERATION_DEADLINE_S:.0f} s"}
        if status == "InProgress":
            return record

        def finish(current: dict[str, Any]) -> dict[str, Any] | None:
            if current.get("status") != "InProgress":
                return None
            return {**current, "status": status, "error": error, "end_time": utc_now().isoformat()}

        stored = update(self.store(), operation_key(record.id), finish)
        return OperationRecord.model_validate(stored) if stored else record

    def carry(self, operation_id: str) -> None:
        with self._lock:
            self._carried.add(operation_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="batchai-operations", daemon=True)
                self._thread.start()

    def resume(self) -> None:
        """Carry what an earlier process left in progress (once per process), and forget old finished ones."""
        with self._lock:
            if self._resumed:
                return
            self._resumed = True
        self.carry("")  # starts the carrier, which looks in the store first

    def _run(self) -> None:
        while True:
            with self._lock:
                look = "" in self._carried  # resume() asked: look in the store for what others left
                self._carried.discard("")
            if look:
                self._pick_up_left_over()
            with self._lock:
                pending = sorted(self._carried)
                if not pending:
                    self._thread = None
                    return
            for operation_id in pending:
                try:
                    done = self.advance(self.get(operation_id)).final
                except BatchAIError as error:  # the store is down, or the record vanished: try again, or drop it
                    done = error.code == ErrorCode.OPERATION_NOT_FOUND
                except Exception:  # a carrier must outlive one bad step; the next one retries
                    log.warning("operation %s: a step failed unexpectedly; retrying", operation_id, exc_info=True)
                    done = False
                if done:
                    with self._lock:
                        self._carried.discard(operation_id)
            threading.Event().wait(STEP_INTERVAL_S)

    def _pick_up_left_over(self) -> None:
        """Once per process: carry what an earlier process left in progress, forget day-old finished ones."""
        try:
            store = self.store()
            found = store.read_many(OPERATIONS)
        except Exception as error:  # the carrier must outlive a store that is down: the next start looks again
            log.warning("operations: cannot look for unfinished ones (%s); they are picked up later", type(error).__name__)
            with self._lock:
                self._resumed = False
            return
        old = utc_now() - timedelta(seconds=KEEP_FINISHED_S)
        for key, versioned in found:
            try:
                record = OperationRecord.model_validate(versioned.data)
                if not record.final:
                    with self._lock:
                        self._carried.add(record.id)
                elif record.end_time and record.end_time < old:
                    store.delete(key, versioned.etag)
            except (ValidationError, BatchAIError):  # another process moved it first, or not ours to read
                continue
