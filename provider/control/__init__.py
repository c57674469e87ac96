"""The ControlStore contract: JSON documents under string keys, with ETag compare-and-swap.

Operators run in different processes (and, with Celery or Kubernetes executors, on different
machines), so records live here and every update is read → modify → conditional write. A
backend must make ``replace`` fail with StaleRecord when the ETag moved, ``create`` fail with
RecordExists when the key exists, and leases exclude other holders of the same name across
processes. ``tests/provider/control/contract.py`` is the suite every backend passes.

Leases are how one process at a time owns a cluster's reconcile pass. ``try_lease`` never
waits (readers use it for opportunistic passes and must not be delayed); ``lock`` waits,
bounded, for writers such as terminate. A holder leaves a small note on the lease (when its
pass ended, when the next one is due) that anyone may read without taking the lease.
"""

from __future__ import annotations

import builtins  # the stores' own list() hides the builtin inside their classes
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import BatchAIError, ErrorCode, StaleRecord

CAS_RETRIES = 50
LOCK_POLL_S = 0.02


@dataclass(frozen=True)
class Versioned:
    data: dict[str, Any]
    etag: str


class Lease(Protocol):
    name: str

    def note(self, values: dict[str, str]) -> None:
        """Replace the lease's note (what ``lease_note`` returns to everyone)."""

    def check(self) -> None:
        """BatchAIError('LeaseLost') when the lease is no longer ours (it expired unrenewed)."""


class ControlStore(Protocol):
    def read(self, key: str) -> Versioned | None:
        """The current document, or None. On blob a repeated read is a conditional GET (304 when unchanged)."""

    def create(self, key: str, data: dict[str, Any]) -> str:
        """Write a new document; returns its ETag. RecordExists if the key is taken."""

    def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        """Write only if the stored ETag is still ``etag``; StaleRecord otherwise (or if deleted)."""

    def delete(self, key: str, etag: str | None = None) -> bool:
        """Delete (conditionally when ``etag`` is given); False if there was nothing to delete."""

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted; the cost grows with what lies under the prefix only."""

    def read_many(self, prefix: str) -> builtins.list[tuple[str, Versioned]]:
        """Every record under ``prefix``, sorted by key (one listing on blob, not one request per key)."""

    def try_lease(self, name: str) -> AbstractContextManager[Lease | None]:
        """The lease if nobody holds it now, else None at once. Renewed while held; a dead holder frees it."""

    def lease_note(self, name: str) -> dict[str, str]:
        """The note its last holder left ({} if none); read without taking the lease."""


class SecretVault(Protocol):
    """Where job secrets wait between submit and launch; never part of a record."""

    def put(self, name: str, values: dict[str, Any]) -> None: ...

    def get(self, name: str) -> dict[str, Any]: ...

    def delete(self, name: str) -> None: ...


@contextmanager
def lock(store: ControlStore, name: str, timeout_s: float = 30.0) -> Iterator[Lease]:
    """The lease, waiting for it at most ``timeout_s``; BatchAIError('LockTimeout') after that."""
    deadline = time.monotonic() + timeout_s
    while True:
        with store.try_lease(name) as lease:
            if lease is not None:
                yield lease
                return
        if time.monotonic() > deadline:
            raise BatchAIError(ErrorCode.LOCK_TIMEOUT, f"lock {name} still held after {timeout_s:.0f} s", name)
        time.sleep(LOCK_POLL_S)


def update(store: ControlStore, key: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
    """Read → change → conditional write, retried while others win the race.

    ``change`` gets the current document and returns the new one, or None to leave it as it is.
    Returns what is stored at the end, or None when the key does not exist.
    """
    for _ in range(CAS_RETRIES):
        current = store.read(key)
        if current is None:
            return None
        new = change(current.data)
        if new is None:
            return current.data
        try:
            store.replace(key, new, current.etag)
            return new
        except StaleRecord:
            continue
    raise StaleRecord(key)
