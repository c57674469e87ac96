"""Local ControlStore: one JSON file per record under a folder, CAS under an fcntl lock.

Used by the embedded default and by tests. Writes go to a temporary file and are renamed into
place, so a reader never sees half a record, even if the writer is killed mid-write. Leases
are ``flock`` locks: the kernel frees them the moment their holder dies, SIGKILL included.
"""

from __future__ import annotations

import builtins  # the stores' own list() hides the builtin inside their classes
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomicfiles import write_atomically
from ..errors import BatchAIError, ErrorCode, RecordExists, StaleRecord
from . import Versioned


class LocalControlStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Creates nothing: folders appear with the first write or lease, so a reader of an empty
        home (the UI, a connection test) leaves it empty."""
        self.root = Path(root)

    def _locks(self) -> Path:
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise BatchAIError(ErrorCode.INVALID_KEY, f"bad record key {key!r}", key)
        return self.root / "records" / (key + ".json")

    @contextmanager
    def _cas_lock(self) -> Iterator[None]:
        with open(self._locks() / ".cas", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_file(self, path: Path) -> Versioned | None:
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return Versioned(data=document["data"], etag=document["etag"])

    def _write_file(self, path: Path, data: dict[str, Any]) -> str:
        etag = uuid.uuid4().hex
        write_atomically(path, json.dumps({"etag": etag, "data": data}, sort_keys=True).encode())
        return etag

    def read(self, key: str) -> Versioned | None:
        return self._read_file(self._path(key))

    def create(self, key: str, data: dict[str, Any]) -> str:
        path = self._path(key)
        with self._cas_lock():
            if path.exists():
                raise RecordExists(key)
            return self._write_file(path, data)

    def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        path = self._path(key)
        with self._cas_lock():
            current = self._read_file(path)
            if current is None or current.etag != etag:
                raise StaleRecord(key)
            return self._write_file(path, data)

    def delete(self, key: str, etag: str | None = None) -> bool:
        path = self._path(key)
        with self._cas_lock():
            current = self._read_file(path)
            if current is None:
                return False
            if etag is not None and current.etag != etag:
                raise StaleRecord(key)
            path.unlink()
            return True

    def list(self, prefix: str) -> list[str]:
        """Walks only the folder the prefix names, so 5,000 finished jobs elsewhere cost nothing here."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        keys: list[str] = []
        pending = [folder]
        while pending:
            relative = pending.pop()
            try:
                entries = os.scandir(os.path.join(self.root, "records", relative))
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    key = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(key)
                    elif entry.name.endswith(".json") and not entry.name.startswith(".") and key.startswith(prefix):
                        keys.append(key[: -len(".json")])
        return sorted(keys)

    def read_many(self, prefix: str) -> builtins.list[tuple[str, Versioned]]:
        found = ((key, self.read(key)) for key in self.list(prefix))
        return [(key, record) for key, record in found if record is not None]

    def _lock_path(self, name: str) -> Path:
        return self.root / "locks" / (name.replace("/", "__") + ".lock")

    @contextmanager
    def try_lease(self, name: str) -> Iterator[LocalLease | None]:
        self._locks()
        with open(self._lock_path(name), "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                yield LocalLease(name, self._lock_path(name).with_suffix(".note"))
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lease_note(self, name: str) -> dict[str, str]:
        try:
            return json.loads(self._lock_path(name).with_suffix(".note").read_bytes())
        except (FileNotFoundError, ValueError):
            return {}


class LocalLease:
    """A held flock: it cannot be lost while the process lives, and dies with it."""

    def __init__(self, name: str, note_path: Path) -> None:
        self.name = name
        self.note_path = note_path

    def note(self, values: dict[str, str]) -> None:
        write_atomically(self.note_path, json.dumps(values).encode(), durable=False)

    def check(self) -> None:
        return None


class LocalSecretVault:
    """Secrets of queued jobs, one 0600 file each, removed once the job has been launched or ended."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)  # made 0700 with the first secret, not before: a reader creates nothing

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise BatchAIError(ErrorCode.INVALID_KEY, f"bad secret name {name!r}", name)
        return self.root / f"{name}.json"

    def put(self, name: str, values: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        write_atomically(self._path(name), json.dumps(values).encode(), mode=0o600)

    def get(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(name).read_bytes())
        except FileNotFoundError:
            return {}

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
