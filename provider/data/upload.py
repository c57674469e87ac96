"""``az storage blob upload-batch`` parity: a folder (or a glob of it) into a container or share.

The data store names the target (a local folder, or a blob container and prefix); this module
only decides what to send and reports.

Files whose size and MD5 match what is already there are skipped unless ``overwrite``; the
copies run in parallel with bounded concurrency and report progress lines as they finish.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from ..errors import BatchAIError, ErrorCode

CHUNK_BYTES = 1024 * 1024


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FolderTarget:
    """A local storage folder (embedded default)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def unchanged(self, relative: str, path: Path) -> bool:
        target = self.folder / relative
        return target.is_file() and target.stat().st_size == path.stat().st_size and md5_of(target) == md5_of(path)

    def put(self, relative: str, path: Path) -> None:
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(descriptor, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class UploadTarget(Protocol):
    def unchanged(self, relative: str, path: Path) -> bool: ...

    def put(self, relative: str, path: Path) -> None: ...


def upload_batch(
    data: Any,
    *,
    source: str,
    account: str,
    container: str,
    destination_path: str = "",
    pattern: str = "*",
    overwrite: bool = False,
    max_workers: int = 8,
    kind: str = "blob",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Upload every file under ``source`` whose path relative to it matches ``pattern``."""
    root = Path(source)
    if not root.is_dir():
        raise BatchAIError(ErrorCode.SOURCE_NOT_FOUND, f"upload source {source} is not a folder", "source")
    parts = [p for p in destination_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BatchAIError(ErrorCode.INVALID_PATH, f"destination path {destination_path!r} must not contain '..'", "destination_path")
    target = data.upload_target(account, container, "/".join(parts), kind)
    files = sorted(p for p in root.rglob("*") if p.is_file() and fnmatch.fnmatch(p.relative_to(root).as_posix(), pattern))
    report: dict[str, Any] = {"uploaded": [], "skipped": [], "bytes": 0}
    progress = on_progress or (lambda _: None)

    def one(path: Path) -> tuple[str, int, bool]:
        relative = path.relative_to(root).as_posix()
        if not overwrite and target.unchanged(relative, path):
            return relative, 0, False
        target.put(relative, path)
        return relative, path.stat().st_size, True

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        futures = [pool.submit(one, path) for path in files]
        for done, future in enumerate(as_completed(futures), 1):
            relative, size, copied = future.result()
            report["uploaded" if copied else "skipped"].append(relative)
            report["bytes"] += size
            progress(f"[{done}/{len(files)}] {'uploaded' if copied else 'unchanged, skipped'} {relative} ({size} bytes)")
    report["uploaded"].sort()
    report["skipped"].sort()
    progress(
        f"uploaded {len(report['uploaded'])} file(s), {report['bytes']} bytes, skipped {len(report['skipped'])} to {account}/{container}/{'/'.join(parts)}"
    )
    return report
