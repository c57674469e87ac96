"""The one exception type of the project, carrying Batch AI's error codes.

Users of Batch AI matched on codes such as ``JobFailed`` or ``ClusterNotFound``; keeping the
codes lets their scripts and DAG callbacks keep working. ``target`` names the field, host or
resource the error is about, so a message can always point at what to fix.
"""

from __future__ import annotations

from typing import Any

SHOWN_CHARS = 80
TRANSIENT_CODES = frozenset({"ControlStoreUnavailable", "StorageUnavailable"})  # worth waiting through: storage is down or slow


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message may quote it: its repr, cut to ``limit``, so a 5 MB input gives a short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


class BatchAIError(Exception):
    """An error with a Batch AI code, a human message and the thing it is about."""

    def __init__(self, code: str, message: str, target: str | None = None, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (at {target})" if target else ""))
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []

    def to_json(self) -> dict[str, Any]:
        """Batch AI's error body: ``{code, message, target?, details?}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            body["target"] = self.target
        if self.details:
            body["details"] = self.details
        return body


class InvalidSpec(BatchAIError):
    """A job or cluster spec that cannot be accepted; raised before anything is created."""

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__("InvalidSpec", message, target)


class StaleRecord(BatchAIError):
    """A conditional write lost a race: someone else changed the record first."""

    def __init__(self, key: str) -> None:
        super().__init__("PreconditionFailed", f"record {key} changed since it was read", key)


class RecordExists(BatchAIError):
    def __init__(self, key: str) -> None:
        super().__init__("Conflict", f"record {key} already exists", key)
