"""Blob ControlStore: one JSON blob per record in a control container, ETags for compare-and-swap.

Workers of Celery or Kubernetes executors share nothing but the storage account, so this is
the production backend. ``replace`` is a conditional write (``If-Match``): a 412 means another
writer moved first and surfaces as StaleRecord, which ``store.update`` answers by re-reading.
``create`` is ``If-None-Match: *``. A record read before is read again with ``If-None-Match``, so
an unchanged record costs a 304 and no body. Leases are blob leases on one small blob per name,
renewed while held, so a holder that dies frees the lease within one lease period; their notes
are that blob's metadata (a HEAD reads them). azure-core retries 5xx answers and timeouts with
exponential backoff, inside a deadline per call (credentials.BoundedRetry): a frozen account is an
error within ``CONTROL_DEADLINE_S``, not minutes later.
"""

from __future__ import annotations

import base64
import builtins  # the stores' own list() hides the builtin inside their classes
import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient
from cryptography.fernet import Fernet, InvalidToken

from ..data.credentials import CONTROL_DEADLINE_S, StorageCredential
from ..errors import BatchAIError, ErrorCode, RecordExists, StaleRecord
from . import Versioned

T = TypeVar("T")
LEASE_S = 15  # the shortest lease Azure grants: a dead holder blocks others at most this long
CACHE_ENTRIES = 20_000
RECORDS = "records/"
LOCKS = "locks/"
SECRETS = "secrets/"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise BatchAIError(ErrorCode.INVALID_KEY, f"bad record key {key!r}", key)
    return key


def _etag(value: str) -> str:
    """Listings give ETags bare, downloads and uploads quoted: keep them quoted, as HTTP sends them."""
    return '"' + value.strip('"') + '"'


def _conflict(error: HttpResponseError) -> bool:
    return error.status_code in (409, 412)


def _answers(method: Callable[..., T]) -> Callable[..., T]:
    """After azure-core's bounded retries, an unreachable or failing service is one clear error."""

    @functools.wraps(method)
    def call(self: BlobControlStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (ServiceRequestError, ServiceResponseError) as error:
            raise self.unavailable(type(error).__name__) from None
        except HttpResponseError as error:
            if error.status_code is not None and error.status_code >= 500:
                raise self.unavailable(f"{error.status_code} {error.reason}") from None
            raise

    return call


class BlobControlStore:
    def __init__(self, credential: StorageCredential, container: str, service: BlobServiceClient | None = None) -> None:
        self.credential = credential
        self.container_name = container
        self.service = service or credential.service()
        self.container: ContainerClient = self.service.get_container_client(container)
        self._ensure_container()
        self._cache: dict[str, tuple[str, bytes]] = {}  # key -> (etag, payload): each read parses its own copy

    def unavailable(self, why: str) -> BatchAIError:
        where = f"control container {self.container_name!r} at {self.credential.blob_endpoint}"
        return BatchAIError(
            ErrorCode.CONTROL_STORE_UNAVAILABLE, f"{where} did not answer within {CONTROL_DEADLINE_S:.0f} s: {why}", "control_container"
        )

    @_answers
    def _ensure_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            raise BatchAIError(
                ErrorCode.CONTROL_STORE_UNAVAILABLE,
                f"cannot open control container {self.container_name!r} on {self.credential.account}: {error.status_code} {error.reason}",
                "control_container",
            ) from None

    def __reduce__(self) -> tuple[Any, ...]:  # processes racing in tests (and executors) rebuild their own client
        return (BlobControlStore, (self.credential, self.container_name))

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(RECORDS + _check_key(key) + ".json")

    @_answers
    def read(self, key: str) -> Versioned | None:
        cached = self._cache.get(key)
        conditions: dict[str, Any] = {"etag": cached[0], "match_condition": MatchConditions.IfModified} if cached else {}
        try:
            downloader = self._blob(key).download_blob(**conditions)
            payload = downloader.readall()
        except ResourceNotModifiedError:
            return Versioned(data=json.loads(cached[1]), etag=cached[0])  # type: ignore[index]
        except ResourceNotFoundError:
            self._cache.pop(key, None)
            return None
        except HttpResponseError as error:
            if error.status_code == 304 and cached:
                return Versioned(data=json.loads(cached[1]), etag=cached[0])
            raise
        etag = _etag(downloader.properties.etag)
        self._remember(key, etag, payload)
        return Versioned(data=json.loads(payload), etag=etag)

    def _remember(self, key: str, etag: str, payload: bytes) -> None:
        if len(self._cache) >= CACHE_ENTRIES and key not in self._cache:
            self._cache.clear()  # a long-lived reader (triggerer, controller) keeps what it reads again, not all it ever read
        self._cache[key] = (etag, payload)

    @_answers
    def read_many(self, prefix: str) -> builtins.list[tuple[str, Versioned]]:
        """Every record under ``prefix`` in one listing; only blobs whose ETag moved are downloaded."""
        found = []
        for item in self.container.list_blobs(name_starts_with=RECORDS + prefix):
            key = item.name[len(RECORDS) : -len(".json")]
            cached = self._cache.get(key)
            if cached and cached[0] == _etag(item.etag):
                found.append((key, Versioned(data=json.loads(cached[1]), etag=cached[0])))
                continue
            current = self.read(key)
            if current is not None:
                found.append((key, current))
        return sorted(found, key=lambda pair: pair[0])

    def _upload(self, key: str, data: dict[str, Any], **conditions: Any) -> str:
        payload = json.dumps(data, sort_keys=True).encode()
        result = self._blob(key).upload_blob(payload, **{"overwrite": True, **conditions})
        etag = _etag(result["etag"])
        self._remember(key, etag, payload)
        return etag

    @_answers
    def create(self, key: str, data: dict[str, Any]) -> str:
        try:
            return self._upload(key, data, overwrite=False)  # If-None-Match: *
        except (ResourceExistsError, ResourceModifiedError):
            raise RecordExists(key) from None
        except HttpResponseError as error:
            if _conflict(error):
                raise RecordExists(key) from None
            raise

    @_answers
    def replace(self, key: str, data: dict[str, Any], etag: str) -> str:
        try:
            return self._upload(key, data, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise StaleRecord(key) from None
        except HttpResponseError as error:
            if _conflict(error):
                raise StaleRecord(key) from None
            raise

    @_answers
    def delete(self, key: str, etag: str | None = None) -> bool:
        conditions: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            self._blob(key).delete_blob(**conditions)
        except ResourceNotFoundError:
            if etag is not None:
                raise StaleRecord(key) from None
            return False
        except ResourceModifiedError:
            raise StaleRecord(key) from None
        self._cache.pop(key, None)
        return True

    @_answers
    def list(self, prefix: str) -> list[str]:
        names = self.container.list_blob_names(name_starts_with=RECORDS + prefix)
        return sorted(name[len(RECORDS) : -len(".json")] for name in names if name.endswith(".json"))

    def _lease_blob(self, name: str) -> Any:
        return self.container.get_blob_client(LOCKS + name.replace("/", "__"))

    @contextmanager
    def try_lease(self, name: str) -> Iterator[BlobLease | None]:
        blob = self._lease_blob(name)
        lease = self._acquire(blob)
        if lease is None:
            yield None
            return
        held = BlobLease(name, blob, lease)
        try:
            yield held
        finally:
            held.release()

    @_answers
    def _acquire(self, blob: Any) -> Any:
        for _ in range(2):
            try:
                return blob.acquire_lease(lease_duration=LEASE_S)
            except ResourceNotFoundError:  # first use of this lease: one request more, once
                try:
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass  # another process made it first
                except HttpResponseError as error:
                    if not _conflict(error):
                        raise  # e.g. 403: a clear error, not a lease that looks forever held
            except HttpResponseError as error:
                if error.status_code == 409:
                    return None
                raise
        return None

    @_answers
    def lease_note(self, name: str) -> dict[str, str]:
        try:
            return dict(self._lease_blob(name).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return {}


class BlobLease:
    """A held blob lease, renewed every third of its period by a thread until released."""

    def __init__(self, name: str, blob: Any, lease: Any) -> None:
        self.name = name
        self.blob = blob
        self.lease = lease
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                self.lease.renew()
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
                self.lost_reason = f"renewing it failed: {type(error).__name__}"
                return  # the holder's writes are still guarded by ETags; check() tells it to stop

    def note(self, values: dict[str, str]) -> None:
        self.check()
        try:
            self.blob.set_blob_metadata(values, lease=self.lease)
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as error:
            status = getattr(error, "status_code", None)
            if status in (409, 412):
                raise BatchAIError(ErrorCode.LEASE_LOST, f"lease {self.name} is no longer ours ({status})", self.name) from None
            raise BatchAIError(
                ErrorCode.CONTROL_STORE_UNAVAILABLE, f"cannot note on lease {self.name}: {status or type(error).__name__}", self.name
            ) from None

    def check(self) -> None:
        if self.lost_reason:
            raise BatchAIError(ErrorCode.LEASE_LOST, f"lease {self.name} was lost: {self.lost_reason}", self.name)

    def release(self) -> None:
        self._stop.set()
        self._renewer.join(timeout=5)
        try:
            self.lease.release()
        except (HttpResponseError, ServiceRequestError, ServiceResponseError):
            pass  # expired meanwhile, or unreachable: it frees itself within LEASE_S


class BlobSecretVault:
    """Secrets of queued jobs and clusters as encrypted blobs next to the records.

    Any worker may launch a queued job, so its secrets must be where all workers can read them,
    but a reader of the control container must not learn them: each blob is Fernet-encrypted
    with a key only the connection holds (``vault_key``, or one derived from the storage
    credential). Rotating that credential makes waiting secrets unreadable, which fails those
    jobs with a clear error rather than exposing anything.
    """

    def __init__(self, store: BlobControlStore, key_material: str) -> None:
        self.container = store.container
        self.fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"batchai-vault\0" + key_material.encode()).digest()))

    def _blob(self, name: str) -> Any:
        if "/" in name or name.startswith("."):
            raise BatchAIError(ErrorCode.INVALID_KEY, f"bad secret name {name!r}", name)
        return self.container.get_blob_client(SECRETS + name)

    def put(self, name: str, values: dict[str, Any]) -> None:
        self._blob(name).upload_blob(self.fernet.encrypt(json.dumps(values).encode()), overwrite=True)

    def get(self, name: str) -> dict[str, Any]:
        try:
            token = self._blob(name).download_blob().readall()
        except ResourceNotFoundError:
            return {}
        try:
            return json.loads(self.fernet.decrypt(token))
        except InvalidToken:
            raise BatchAIError(
                ErrorCode.SECRETS_UNREADABLE,
                f"secrets {name} were sealed with another vault key (was the storage credential rotated?)",
                name,
            ) from None

    def delete(self, name: str) -> None:
        try:
            self._blob(name).delete_blob()
        except ResourceNotFoundError:
            pass
