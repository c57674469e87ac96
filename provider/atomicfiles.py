"""Files replaced whole: a reader sees the old file or the new one, never half of one, even if the writer dies."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path: Path, payload: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """``durable`` False skips the fsync, for notes whose loss in a power cut costs nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
