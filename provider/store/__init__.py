"""The ControlStore contract: JSON documents under string keys, with ETag compare-and-swap.

Operators run in different processes (and, with Celery or Kubernetes executors, on different
machines), so records live here and every update is read → modify → conditional write. A
backend must make ``replace`` fail with StaleRecord when the ETag moved, ``create`` fail with
RecordExists when the key exists, and ``lock`` exclude other holders of the same name across
processes. ``tests/provider/store/contract.py`` is the suite every backend passes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_batchai.errors import StaleRecord

CAS_RETRIES = 50


@dataclass(frozen=True)
class Versioned:
    data: dict[str, Any]
    etag: str


class ControlStore(Protocol):
    def read(self, key: str) -> Versioned | None: ...

    def create(self, key: str, data: dict[str, Any]) -> str:
        """Write a new document; returns its ETag. RecordExists if the key is taken."""

    def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        """Write only if the stored ETag is still ``etag``; StaleRecord otherwise (or if deleted)."""

    def delete(self, key: str, etag: str | None = None) -> bool:
        """Delete (conditionally when ``etag`` is given); False if there was nothing to delete."""

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    def read_many(self, prefix: str) -> list[tuple[str, Versioned]]:
        """Every record under ``prefix``, sorted by key (one listing on blob, not one request per key)."""

    def lock(self, name: str, timeout_s: float = 30.0) -> AbstractContextManager[None]:
        """Exclusive across processes while held; BatchAIError('LockTimeout') after ``timeout_s``."""


class SecretVault(Protocol):
    """Where job secrets wait between submit and launch; never part of a record."""

    def put(self, name: str, values: dict[str, str]) -> None: ...

    def get(self, name: str) -> dict[str, str]: ...

    def delete(self, name: str) -> None: ...


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
