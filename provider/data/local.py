"""Local DataStore: Azure storage accounts as folders, ``$BATCHAI_HOME/storage/<account>/<container or share>``.

The embedded default has no Azure account; a blob container or file share named in a job is a
folder here, linked under the job's (or the node's) mount root, so job.json files written for
Batch AI run unchanged. NFS file servers and user mount commands have no local meaning and are
refused with an error naming the mount.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BatchAIError, ErrorCode
from ..spec import MountVolumes
from ..transport.local import LocalTransport
from . import DEFAULT_LINK_EXPIRY_MINUTES, OutputFile, Staging, file_object
from .links import Link, node_mounted_links
from .watch import StoredObject, checked_size

_SEGMENT = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")


class LocalDataStore:
    def __init__(self, root: str | os.PathLike[str], default_account: str = "local") -> None:
        self.root = Path(root)
        self.default_account = default_account
        self.secret_sink: Callable[[str], None] = lambda _: None  # local folders need no SAS: nothing is minted
        self._files = LocalTransport()

    def folder(self, account: str, container: str, where: str) -> Path:
        """The folder standing in for a container or share; names are checked so none escapes the root."""
        for value, what in ((account, "accountName"), (container, "container or share name")):
            if not _SEGMENT.match(value):
                raise BatchAIError(ErrorCode.INVALID_STORAGE_NAME, f"{where}: {what} {value!r} is not a valid storage name", where)
        return self.root / account / container

    def links(self, volumes: MountVolumes | None, where: str) -> list[Link]:
        """Mount volumes as links to local folders; ``where`` is the JSON path for errors."""
        if volumes is None:
            return []
        links = node_mounted_links(volumes, where)
        for index, share in enumerate(volumes.azure_file_shares or []):
            path = f"{where}.azureFileShares[{index}]"
            folder = self.folder(share.account_name, share.share_name, path)
            links.append(Link(share.relative_mount_path.strip("/"), str(folder)))
        for index, blob in enumerate(volumes.azure_blob_file_systems or []):
            path = f"{where}.azureBlobFileSystems[{index}]"
            folder = self.folder(blob.account_name, blob.container_name, path)
            links.append(Link(blob.relative_mount_path.strip("/"), str(folder)))
        return links

    def ensure(self, links: list[Link]) -> None:
        for link in links:
            if link.local_folder:
                Path(link.source).mkdir(parents=True, exist_ok=True)

    def stage_plan(self, reads: Any, writes: Any, mounts: Any, lifetime: Any) -> tuple[Staging, dict[str, str]]:
        """Local folders are linked, never staged."""
        return Staging(), {}

    def list_files(self, link: Link, folder: str, expiry_minutes: int = DEFAULT_LINK_EXPIRY_MINUTES, urls: bool = True) -> list[OutputFile]:
        """File objects with ``file://`` download URLs (no expiry: nothing to sign)."""
        inside = self._inside(folder)
        infos = self._files.list_inside(link.source, inside) or []
        target = Path(link.source, inside)
        return [file_object(info, self.download_url(target / info.name) if urls else None) for info in infos]

    def read(self, link: Link, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """A file of the volume; None for one that is missing or not there in truth (a link a job made)."""
        return self._files.read_inside(link.source, self._inside(path), offset, length)

    @staticmethod
    def _inside(relative: str) -> str:
        parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
        if ".." in parts:
            raise BatchAIError(ErrorCode.INVALID_PATH, f"{relative!r} must stay inside the volume", relative)
        return posixpath.join(*parts) if parts else ""

    def objects(self, account: str, container: str, prefix: str = "", kind: str = "blob") -> list[StoredObject]:
        """A folder's files below the prefix. Its change time (ctime) counts, so a copy that keeps an old
        mtime (``cp -p``, rsync) is still new here; a chmod is a change too."""
        folder = self.folder(account, container, "container")
        start = folder / prefix.rsplit("/", 1)[0] if "/" in prefix else folder
        found: list[StoredObject] = []
        for directory, _, names in os.walk(start):
            for file_name in names:
                path = Path(directory) / file_name
                name = path.relative_to(folder).as_posix()
                try:
                    stat = path.stat()
                except OSError:  # gone between the listing and the look
                    continue
                if name.startswith(prefix):
                    version = f"{stat.st_ino}-{stat.st_ctime_ns}-{stat.st_mtime_ns}-{stat.st_size}"  # made anew: another file
                    found.append(StoredObject(name, version, stat.st_size, max(stat.st_mtime, stat.st_ctime)))
            checked_size(found, f"{account}/{container}/{prefix}")
        return found

    def lists_unfinished_writes(self, kind: str = "blob") -> bool:
        return True  # a file is in its folder from its first byte

    def upload_target(self, account: str, container: str, destination_path: str, kind: str = "blob") -> Any:
        from .upload import FolderTarget

        folder = self.folder(account, container, "destination")
        return FolderTarget(folder / destination_path if destination_path else folder)

    @staticmethod
    def download_url(path: Path) -> str:
        """The file's own path (absolute, links not resolved: listings hold no links)."""
        return Path(os.path.abspath(path)).as_uri()
