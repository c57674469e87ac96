"""Azure DataStore: job volumes in Blob containers, staged on nodes through per-job SAS tokens.

The control plane uses the connection's credential; a node gets, per job and container, a SAS
that can only read (containers the job only reads) or also add, create and write (containers
it writes logs or outputs to), never delete, valid for the job's wall-clock limit plus a
margin. Blob SAS cannot be narrowed to a folder without hierarchical namespace, so "its own
prefixes" is enforced by what the agent writes, not by the token; the token never outlives
the job by more than the margin.

Azure Files shares (``azureFileShares``) are staged the same way over the File REST API
(data/files.py). Azurite has no File service: with ``files_on_blob`` a share is served by
the blob container of the same name, which is how the quickstart runs on Azurite.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, ContainerClient, ContentSettings, generate_blob_sas

from ..agent.protocol import ACCOUNT_KEY_SECRET, SAS_KEY_PREFIX, Transfer
from ..agent.storageclient import BlobError, Container
from ..errors import BatchAIError, ErrorCode
from ..spec import MountVolumes
from . import DEFAULT_LINK_EXPIRY_MINUTES, OutputFile, Staging
from .credentials import DATA_DEADLINE_S, StorageCredential
from .files import FileTarget, ShareVolumes
from .links import Link, RemoteVolume, node_mounted_links
from .staging import Located, transfers
from .watch import MAX_WATCHED_OBJECTS, StoredObject, checked_size

log = logging.getLogger(__name__)

LISTING_SAS_REUSE = timedelta(minutes=5)  # each is valid 30 min longer (credentials.SAS_MARGIN)
CONTAINER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _remote(link: Link) -> RemoteVolume:
    if link.remote is None:
        raise BatchAIError(
            ErrorCode.INVALID_MOUNT, f"{link.relative_mount_path} is not a volume of the storage account", link.relative_mount_path
        )
    return link.remote


def _bad_field(path: str, message: str) -> BatchAIError:
    return BatchAIError(ErrorCode.INVALID_MOUNT, f"{path}: {message}", path)


class AzureDataStore:
    def __init__(
        self, credential: StorageCredential, files_on_blob: bool = False, volume_mode: str = "auto", files_mount: str = "stage"
    ) -> None:
        """``volume_mode`` "auto" mounts containers a job only reads where the node has blobfuse2 or rclone
        with FUSE; "stage" always stages. ``files_mount`` "cifs" mounts shares a job only reads over SMB
        where the node can, which hands the node the account key (SMB has no SAS): opt-in only.
        Volumes a job writes are always staged, so logs stream."""
        if files_mount == "cifs" and not credential.account_key:
            raise BatchAIError(
                ErrorCode.INVALID_STORAGE_CREDENTIAL,
                "azure_files_mount 'cifs' needs the storage account key (SMB has no SAS); connect with a key or use 'stage'",
                "azure_files_mount",
            )
        self.credential = credential
        self.files_on_blob = files_on_blob
        self.volume_mode = volume_mode
        self.files_mount = files_mount
        self.default_account = credential.account
        self._service = credential.service(DATA_DEADLINE_S)
        self.shares = ShareVolumes(credential)
        self._ensured: set[RemoteVolume] = set()
        self._listing_tokens: dict[str, tuple[datetime, str]] = {}
        self.secret_sink: Callable[[str], None] = lambda _: None  # Airflow's hook sets mask_secret here

    # -- volumes ------------------------------------------------------------------------
    def volume(self, account: str, container: str, where: str) -> RemoteVolume:
        if not CONTAINER_NAME.match(container) or "--" in container:
            raise BatchAIError(
                ErrorCode.INVALID_STORAGE_NAME,
                f"{where}: {container!r} is not a valid container or share name (3-63 lowercase letters, digits and single hyphens)",
                where,
            )
        if account != self.credential.account:
            raise _bad_field(where, f"account {account!r} is not the connection's storage account {self.credential.account!r}")
        return RemoteVolume(account, container, self.credential.container_url(container))

    def links(self, volumes: MountVolumes | None, where: str) -> list[Link]:
        if volumes is None:
            return []
        links = node_mounted_links(volumes, where)
        for index, share in enumerate(volumes.azure_file_shares or []):
            path = f"{where}.azureFileShares[{index}]"
            volume = self.volume(share.account_name, share.share_name, path)
            if not self.files_on_blob:
                volume = self.shares.volume(volume.account, volume.container)
            modes = (share.file_mode or "0777", share.directory_mode or "0777")
            links.append(Link(share.relative_mount_path.strip("/"), "", volume, modes=modes))
        for index, blob in enumerate(volumes.azure_blob_file_systems or []):
            path = f"{where}.azureBlobFileSystems[{index}]"
            links.append(Link(blob.relative_mount_path.strip("/"), "", self.volume(blob.account_name, blob.container_name, path)))
        return links

    def container(self, volume: RemoteVolume | str) -> ContainerClient:
        return self._service.get_container_client(volume if isinstance(volume, str) else volume.container)

    def ensure(self, links: list[Link]) -> None:
        """Create missing containers, as Batch AI's mount of an empty share would have shown an empty folder."""
        for link in links:
            if link.remote is None or link.remote in self._ensured:  # each launch asks again: one request per process is enough
                continue
            if link.remote.kind == "file":
                self.shares.ensure(link.remote)
                self._ensured.add(link.remote)
                continue
            try:
                self.container(link.remote).create_container()
            except ResourceExistsError:
                pass
            except HttpResponseError as error:
                raise BatchAIError(
                    ErrorCode.STORAGE_UNAVAILABLE,
                    f"cannot open container {link.remote.label}: {error.status_code} {error.reason}",
                    link.remote.label,
                ) from None
            self._ensured.add(link.remote)

    # -- staging ------------------------------------------------------------------------
    def stage_plan(
        self, reads: list[str], writes: list[tuple[str, bool]], mounts: dict[str, list[Link]], lifetime: timedelta
    ) -> tuple[Staging, dict[str, str]]:
        """Plan entries (mounts, downloads, uploads) for the agent and the SAS secrets they name (see staging.transfers)."""
        downloads, uploads = transfers(reads, writes, mounts)
        written_to = {t.located.link.remote for t in uploads}
        sas_names: dict[RemoteVolume, str] = {}
        secrets: dict[str, str] = {}

        def entry(located: Located) -> dict[str, Any]:
            volume = located.link.remote
            assert volume is not None
            if volume not in sas_names:
                name = sas_names[volume] = f"{SAS_KEY_PREFIX}{len(sas_names)}"
                if volume.kind == "file":
                    secrets[name] = self.shares.sas(volume, "rcwl" if volume in written_to else "rl", lifetime)
                else:
                    permission = "racwl" if volume in written_to else "rl"
                    secrets[name] = self.credential.container_sas(volume.container, permission, lifetime, self._service)
                self.secret_sink(secrets[name])
            return {"url": volume.url, "sas": sas_names[volume], "label": volume.label, "kind": volume.kind}

        staging = Staging()
        output_prefixes: dict[str, list[str]] = {t.located.link.remote.container: [] for t in uploads if t.located.link.remote}
        for transfer in uploads:
            output_prefixes[transfer.located.link.remote.container].append(transfer.located.inside)  # type: ignore[union-attr]
        for transfer in downloads:
            volume = transfer.located.link.remote
            if volume is not None and volume not in written_to and self._mountable(volume):
                mount = {
                    **entry(transfer.located),
                    "local": transfer.located.mount,
                    "account": volume.account,
                    "container": volume.container,
                }
                if volume.kind == "file":
                    file_mode, dir_mode = transfer.located.link.modes or ("0777", "0777")
                    unc = f"//{urlsplit(self.credential.file_endpoint).hostname}/{volume.container}"
                    mount.update(unc=unc, key=ACCOUNT_KEY_SECRET, file_mode=file_mode, dir_mode=dir_mode)
                    secrets[ACCOUNT_KEY_SECRET] = self.credential.account_key or ""
                else:
                    mount["endpoint"] = self.credential.blob_endpoint
                staging.mounts.append(Transfer(**mount))
        for transfer in downloads:
            located = transfer.located
            skip = [p + "/" for p in output_prefixes.get(located.link.remote.container, []) if p]  # type: ignore[union-attr]
            staging.downloads.append(Transfer(**entry(located), local=located.mount, prefix=located.inside, skip=skip))
        for transfer in uploads:
            located = transfer.located
            local = posixpath.join(located.mount, located.inside) if located.inside else located.mount
            staging.uploads.append(Transfer(**entry(located), local=local, prefix=located.inside, log=transfer.log))
        return staging, secrets

    def _mountable(self, volume: RemoteVolume) -> bool:
        return self.files_mount == "cifs" if volume.kind == "file" else self.volume_mode == "auto"

    # -- reading what jobs wrote ----------------------------------------------------------
    def list_files(self, link: Link, folder: str, expiry_minutes: int = DEFAULT_LINK_EXPIRY_MINUTES, urls: bool = True) -> list[OutputFile]:
        """Batch AI File objects one level below ``folder``, files with read-only per-blob SAS download URLs
        (none with ``urls`` False: a log follower needs only names and sizes)."""
        volume = _remote(link)
        if volume.kind == "file":
            return self.shares.list_files(volume, folder, expiry_minutes, urls)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        expiry = datetime.now(timezone.utc) + timedelta(minutes=expiry_minutes)
        sign = self._signer(volume.container, expiry) if urls else None
        lister = Container(volume.url, self._listing_sas(volume.container))
        try:
            items = lister.entries(prefix, "/")
        except BlobError as error:
            if error.status == 404:
                return []
            raise BatchAIError(ErrorCode.STORAGE_UNAVAILABLE, f"listing {volume.label}/{prefix}: {error}", volume.label) from None
        entries: list[OutputFile] = []
        for item in items:
            name = item["name"][len(prefix) :]
            if item["is_prefix"]:
                entries.append(OutputFile.directory(name.rstrip("/")))
                continue
            url = f"{volume.url}/{quote(item['name'], safe='/~')}?{sign(item['name'])}" if sign else None
            entries.append(OutputFile.file(name, item["size"], parsedate_to_datetime(item["last_modified"]), url))
        return sorted(entries, key=lambda e: e.name)

    def _listing_sas(self, container: str) -> str:
        """A read/list SAS for the control plane's own listings, reused for a few minutes: with Entra ID
        each new one costs a user delegation key request, and a log follower lists every second."""
        now = datetime.now(timezone.utc)
        cached = self._listing_tokens.get(container)
        if cached is None or cached[0] <= now:
            cached = self._listing_tokens[container] = (
                now + LISTING_SAS_REUSE,
                self.credential.container_sas(container, "rl", LISTING_SAS_REUSE, self._service),
            )
        return cached[1]

    def _signer(self, container: str, expiry: datetime) -> Callable[[str], str]:
        """Per-blob read-only SAS; one user delegation key serves a whole listing."""
        permission = BlobSasPermissions(read=True)
        account = self.credential.account
        if self.credential.account_key:
            key = self.credential.account_key
            return lambda blob: generate_blob_sas(account, container, blob, account_key=key, permission=permission, expiry=expiry)
        if self.credential.sas_token:
            token = self.credential.sas_token
            return lambda blob: token
        delegation = self._service.get_user_delegation_key(datetime.now(timezone.utc) - timedelta(minutes=5), expiry)
        return lambda blob: generate_blob_sas(
            account, container, blob, user_delegation_key=delegation, permission=permission, expiry=expiry
        )

    def read(self, link: Link, blob: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes of a blob from ``offset`` (a range request: streaming logs re-reads only what is new)."""
        volume = _remote(link)
        blob = blob.lstrip("/")
        if volume.kind == "file":
            return self.shares.read(volume, blob, offset, length)
        client = self.container(volume).get_blob_client(blob)
        try:  # one request per poll: a range past the end answers 416, which means "nothing new yet"
            return client.download_blob(offset=offset, length=length).readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            if error.status_code == 416:
                return b""
            raise

    # -- uploads ------------------------------------------------------------------------
    def objects(self, account: str, container: str, prefix: str = "", kind: str = "blob") -> list[StoredObject]:
        """List Blobs by prefix (5,000 a page, with markers), or a share's folder walk; ETags as versions."""
        volume = self.volume(account, container, "container")
        where = f"{account}/{container}/{prefix}"
        if kind == "file" and not self.files_on_blob:
            share = self.shares.volume(account, container)
            lister: Container = self.shares.client(share)
        else:
            lister = Container(volume.url, self._listing_sas(volume.container))
        try:
            items = lister.entries(prefix, limit=MAX_WATCHED_OBJECTS)
        except BlobError as error:
            if error.status == 404:
                return []
            raise BatchAIError(ErrorCode.STORAGE_UNAVAILABLE, f"listing {where}: {error}", volume.label) from None
        found = []
        for item in items:
            if item["is_prefix"]:
                continue
            modified = parsedate_to_datetime(item["last_modified"]).timestamp() if item["last_modified"] else 0.0
            version = item.get("etag") or f"{item['last_modified']}-{item['size']}"
            found.append(StoredObject(item["name"], version, item["size"], modified))
        return checked_size(found, where)

    def lists_unfinished_writes(self, kind: str = "blob") -> bool:
        return kind == "file" and not self.files_on_blob  # a share's file is listed at full length before it is written

    def upload_target(self, account: str, container: str, destination_path: str, kind: str = "blob") -> BlobTarget | FileTarget:
        """``kind`` "file" uploads to the share of that name (``az storage file upload-batch``)."""
        volume = self.volume(account, container, "destination")
        if kind == "file" and not self.files_on_blob:
            return self.shares.upload_target(self.shares.volume(account, container), destination_path)
        self.ensure([Link("upload", "", volume)])
        return BlobTarget(self.container(volume), destination_path)


class BlobTarget:
    """A container and prefix; what is there is listed once, with sizes and MD5s, to skip unchanged files."""

    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self.client = container
        self.prefix = prefix.strip("/")
        listing = container.list_blobs(name_starts_with=self.prefix + "/" if self.prefix else None)
        self.present = {b.name: (b.size, bytes(b.content_settings.content_md5 or b"")) for b in listing}

    def name(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def unchanged(self, relative: str, path: Path) -> bool:
        present = self.present.get(self.name(relative))
        return present is not None and present[0] == path.stat().st_size and present[1] == md5_bytes(path)

    def put(self, relative: str, path: Path) -> None:
        """Each file is read from disk once: small ones into memory, big ones hashed as the SDK streams them."""
        size = path.stat().st_size
        if size <= IN_MEMORY_LIMIT:
            data = path.read_bytes()
            settings = ContentSettings(content_md5=bytearray(hashlib.md5(data, usedforsecurity=False).digest()))
            self.client.upload_blob(self.name(relative), data, overwrite=True, content_settings=settings)
            return
        blob = self.client.get_blob_client(self.name(relative))
        with open(path, "rb") as handle:
            reader = HashingReader(handle)
            written = blob.upload_blob(reader, length=size, overwrite=True, max_concurrency=4)
        digest = reader.digest() if reader.position == size else md5_bytes(path)  # the SDK read out of order: hash again
        blob.set_http_headers(
            ContentSettings(content_md5=bytearray(digest)), etag=written["etag"], match_condition=MatchConditions.IfNotModified
        )


IN_MEMORY_LIMIT = 32 * 1024 * 1024


class HashingReader:
    """A file object that hashes what is read from it, as long as reads run front to back."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.hash = hashlib.md5(usedforsecurity=False)
        self.position = 0
        self.in_order = True

    def read(self, size: int = -1) -> bytes:
        if self.handle.tell() != self.position:
            self.in_order = False
        data = self.handle.read(size)
        if self.in_order:
            self.hash.update(data)
            self.position += len(data)
        return data

    def digest(self) -> bytes:
        return self.hash.digest() if self.in_order else b""

    def __getattr__(self, name: str) -> Any:  # seekable(), tell(), fileno() ... of the file
        return getattr(self.handle, name)


def md5_bytes(path: Path) -> bytes:
    from .upload import md5_of

    return bytes.fromhex(md5_of(path))
