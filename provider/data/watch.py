"""What is new or changed under a prefix of a container or share: the storage event trigger's logic.

Seed 003 starts batch scoring when a trigger file lands in Blob storage. Storage here keeps no
feed of changes we may consume, and a trigger must have no side effects, so the trigger lists
the prefix on every poll and compares with a small cursor: the newest modification time it has
reported (the watermark) and the versions (ETag, or mtime and size) of the objects modified in
the ``WINDOW_S`` before it. Objects older than that window when first seen were already there
and are never reported; within it, a name whose version the cursor does not hold is reported
once. The window absorbs what a plain watermark would miss: Last-Modified has a resolution of
one second, and several writers commit out of order.

The cursor is JSON, so the trigger can keep it in Airflow's asset state store and report
nothing twice, and miss nothing, across a triggerer restart.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ..errors import BatchAIError, ErrorCode

WINDOW_S = 120.0
FUTURE_ALLOWANCE_S = 60.0  # a time further ahead than this is a skewed clock or `touch -d`, and is read as now
MAX_WATCHED_OBJECTS = 200_000  # one poll lists at most this many (40 pages of 5,000)
MAX_CURSOR_ENTRIES = 20_000  # a burst of uploads keeps the cursor at most this big (the newest are kept)


@dataclass(frozen=True)
class StoredObject:
    name: str  # within the container or share
    version: str  # ETag, or "<mtime_ns>-<size>" for a local folder
    size: int
    modified: float  # epoch seconds of its last change, as storage saw it


@dataclass
class Cursor:
    watermark: float = 0.0
    recent: dict[str, str] = field(default_factory=dict)  # name -> version, for objects modified within the window

    def to_json(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "recent": self.recent}

    @classmethod
    def from_json(cls, document: Any) -> Cursor | None:
        if not isinstance(document, dict) or not isinstance(document.get("recent"), dict):
            return None
        return cls(float(document.get("watermark") or 0.0), {str(k): str(v) for k, v in document["recent"].items()})


def matching(objects: list[StoredObject], prefix: str, pattern: str) -> list[StoredObject]:
    """Objects under ``prefix`` whose name after it matches the glob ``pattern`` (``*`` crosses folders)."""
    return [o for o in objects if o.name.startswith(prefix) and fnmatch.fnmatchcase(o.name[len(prefix) :], pattern)]


def checked_size(objects: list[StoredObject], where: str) -> list[StoredObject]:
    if len(objects) > MAX_WATCHED_OBJECTS:
        raise BatchAIError(
            ErrorCode.INVALID_WATCH, f"{where} holds more than {MAX_WATCHED_OBJECTS} objects: watch a narrower prefix", where
        )
    return objects


def _capped(objects: list[StoredObject], now: float) -> list[StoredObject]:
    """Times from the future (a skewed clock, ``touch -d``) would lift the watermark past everything that
    comes next: they count as now."""
    limit = now + FUTURE_ALLOWANCE_S
    return [o if o.modified <= limit else StoredObject(o.name, o.version, o.size, now) for o in objects]


def _window(objects: list[StoredObject], watermark: float) -> dict[str, str]:
    inside = sorted((o for o in objects if o.modified > watermark - WINDOW_S), key=lambda o: o.modified)[-MAX_CURSOR_ENTRIES:]
    return {o.name: o.version for o in inside}


def baseline(objects: list[StoredObject], now: float) -> Cursor:
    """The first look: everything already there counts as reported."""
    objects = _capped(objects, now)
    watermark = max((o.modified for o in objects), default=0.0)
    return Cursor(watermark, _window(objects, watermark))


def advance(
    cursor: Cursor, objects: list[StoredObject], now: float, settled: dict[str, str] | None = None
) -> tuple[list[StoredObject], Cursor]:
    """The objects to report (oldest first), and the cursor that covers them.

    ``settled``: where a half-written object is visible (folders, Files), the versions of the
    previous poll; an object is reported only once it is unchanged since then, and until then it
    stays out of the cursor so the next poll looks at it again.
    """
    objects = _capped(objects, now)
    edge = cursor.watermark - WINDOW_S
    new = [o for o in objects if o.modified > edge and cursor.recent.get(o.name) != o.version]
    if settled is not None:
        unsettled = {o.name for o in new if settled.get(o.name) != o.version}
        new = [o for o in new if o.name not in unsettled]
        objects = [o for o in objects if o.name not in unsettled]
    watermark = max([cursor.watermark, *(o.modified for o in objects)])
    return sorted(new, key=lambda o: (o.modified, o.name)), Cursor(watermark, _window(objects, watermark))
