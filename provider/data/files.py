"""Azure Files shares as job volumes: staged, listed, read and uploaded like blob containers.

Batch AI mounted shares over SMB; our nodes stage them instead (or mount them with
``mount -t cifs`` where the user's node setup does), so a job sees the same folder either way.
The control plane creates shares and mints SAS with ``azure-storage-file-share``; reading,
listing and writing go through the agent's ``FileShare``, the same standard-library client the
nodes use, so the control plane and the nodes cannot disagree about the REST calls.
"""

from __future__ import annotations

import base64
import posixpath
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.fileshare import FileSasPermissions, ShareClient, generate_file_sas

from ..agent.storageclient import BlobError, FileShare
from ..errors import BatchAIError, ErrorCode
from . import OutputFile
from .credentials import StorageCredential, share_sas
from .links import RemoteVolume


class ShareVolumes:
    def __init__(self, credential: StorageCredential) -> None:
        self.credential = credential

    def volume(self, account: str, share: str) -> RemoteVolume:
        return RemoteVolume(account, share, f"{self.credential.file_endpoint}/{quote(share)}", kind="file")

    def ensure(self, volume: RemoteVolume) -> None:
        secret: Any = self.credential.account_key and {"account_name": self.credential.account, "account_key": self.credential.account_key}
        client = ShareClient(self.credential.file_endpoint, volume.container, credential=secret or self.credential.sas_token)
        try:
            client.create_share()
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            raise BatchAIError(
                ErrorCode.STORAGE_UNAVAILABLE, f"cannot open share {volume.label}: {error.status_code} {error.reason}", volume.label
            ) from None

    def sas(self, volume: RemoteVolume, permission: str, lifetime: timedelta) -> str:
        return share_sas(self.credential, volume.container, permission, lifetime)

    def client(self, volume: RemoteVolume, permission: str = "rl") -> FileShare:
        return FileShare(volume.url, self.sas(volume, permission, timedelta(minutes=5)))

    def list_files(self, volume: RemoteVolume, folder: str, expiry_minutes: int, urls: bool = True) -> list[OutputFile]:
        prefix = folder.strip("/")
        expiry = datetime.now(timezone.utc) + timedelta(minutes=expiry_minutes)
        try:
            items = self.client(volume).entries(prefix, "/")
        except BlobError as error:
            raise BatchAIError(ErrorCode.STORAGE_UNAVAILABLE, f"listing {volume.label}/{prefix}: {error}", volume.label) from None
        entries: list[OutputFile] = []
        for item in items:
            name = item["name"][len(prefix) :].strip("/") if prefix else item["name"].strip("/")
            if item["is_prefix"]:
                entries.append(OutputFile.directory(name))
                continue
            url = f"{volume.url}/{quote(item['name'], safe='/~')}?{self._file_sas(volume, item['name'], expiry)}" if urls else None
            modified = parsedate_to_datetime(item["last_modified"]) if item["last_modified"] else None
            entries.append(OutputFile.file(name, item["size"], modified, url))
        return sorted(entries, key=lambda e: e.name)

    def _file_sas(self, volume: RemoteVolume, path: str, expiry: datetime) -> str:
        if not self.credential.account_key:
            return self.sas(volume, "r", expiry - datetime.now(timezone.utc))
        parts = path.split("/")
        return generate_file_sas(
            self.credential.account,
            volume.container,
            parts,
            self.credential.account_key,
            permission=FileSasPermissions(read=True),
            expiry=expiry,
        )

    def read(self, volume: RemoteVolume, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        share = self.client(volume, "r")
        status, headers = share.head(path)
        if status != 200:
            return None
        size = int(headers.get("Content-Length", "0"))
        if offset >= size:
            return b""
        end = size - 1 if length is None else min(size, offset + length) - 1
        status, payload = share.request("GET", path, headers={"x-ms-range": f"bytes={offset}-{end}"})
        if status == 404:
            return None
        if status not in (200, 206):
            raise BatchAIError(ErrorCode.STORAGE_UNAVAILABLE, f"reading {volume.label}/{path}: HTTP {status}", volume.label)
        return payload

    def upload_target(self, volume: RemoteVolume, destination_path: str) -> FileTarget:
        self.ensure(volume)
        return FileTarget(FileShare(volume.url, self.sas(volume, "rcwl", timedelta(hours=2))), destination_path)


class FileTarget:
    """A share and folder for upload-batch; unchanged files (size and Content-MD5) are skipped."""

    def __init__(self, share: FileShare, prefix: str) -> None:
        self.share = share
        self.prefix = prefix.strip("/")

    def name(self, relative: str) -> str:
        return posixpath.join(self.prefix, relative) if self.prefix else relative

    def unchanged(self, relative: str, path: Path) -> bool:
        status, headers = self.share.head(self.name(relative))
        if status != 200:
            return False
        return int(headers.get("Content-Length", "-1")) == path.stat().st_size and headers.get("Content-MD5") == _md5_base64(path)

    def put(self, relative: str, path: Path) -> None:
        try:
            self.share.upload(self.name(relative), str(path), md5=_md5_base64(path))
        except BlobError as error:
            raise BatchAIError(ErrorCode.UPLOAD_FAILED, f"uploading {relative}: {error}", relative) from None


def _md5_base64(path: Path) -> str:
    from .upload import md5_of

    return base64.b64encode(bytes.fromhex(md5_of(path))).decode()
