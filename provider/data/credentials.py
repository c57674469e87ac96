"""How we reach an Azure Storage account, and the short-lived SAS we hand to nodes.

Four ways in, as the az CLI and Airflow's wasb hook accept them: a connection string, an
account name plus key, an account SAS, or Entra ID through ``DefaultAzureCredential``. The
control plane may hold a key; nodes never get one (seed 003's advice): they get SAS tokens
minted per job, scoped to one container, with only the permissions the volume needs and an
expiry of the job's wall-clock limit plus a margin. With Entra ID those are user-delegation
SAS. With only an account SAS there is nothing to mint from, so that SAS is passed on as it is
(a warning says so once per process).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, ExponentialRetry, generate_container_sas

from ..errors import BatchAIError, ErrorCode

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 10  # the longest silence inside one answer, not the length of a transfer
RETRIES = 4  # 5xx answers and timeouts are retried this many times, inside the call's deadline
CONTROL_DEADLINE_S = 12.0  # one record read or write, all retries included: a hung account is an error within ~15 s
DATA_DEADLINE_S = 120.0  # one data request (a block of at most a few MiB), all retries included
SAS_MARGIN = timedelta(minutes=30)
_warned_account_sas: set[str] = set()


def _check_account_key(key: str, field_name: str) -> None:
    """A key that is not base64 would fail every signed request later with a misleading 403; say so now, without the key."""
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        where = "the AccountKey of storage_connection_string" if field_name != "storage_account_key" else "storage_account_key"
        raise BatchAIError(
            ErrorCode.INVALID_STORAGE_CREDENTIAL,
            f"{where} is not base64 (an account key is the 88-character text the portal shows)",
            field_name,
        ) from None


class BoundedRetry(ExponentialRetry):
    """The SDK's exponential retry with a deadline over the whole call.

    Without it a frozen account holds a caller for (read timeout + backoff) times retries, two
    minutes and more. Here each attempt's connect and read timeouts are cut to what is left of
    the deadline, and no retry starts that could not finish before it.
    """

    def __init__(self, deadline_s: float) -> None:
        super().__init__(initial_backoff=0.5, increment_base=1.6, retry_total=RETRIES, random_jitter_range=0.5)  # type: ignore[arg-type]  # floats work; the stubs say int
        self.deadline_s = deadline_s

    def configure_retries(self, request: Any) -> dict[str, Any]:
        settings = super().configure_retries(request)
        settings["deadline"] = time.monotonic() + self.deadline_s
        settings["options"] = request.context.options
        self._cut_timeouts(settings, 0.0)
        return settings

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        if not super().increment(settings, request, response=response, error=error):
            return False
        settings["backoff"] = backoff = self.get_backoff_time(settings)
        if settings["deadline"] - time.monotonic() - backoff < 1.0:
            return False
        self._cut_timeouts(settings, backoff)
        return True

    def sleep(self, settings: dict[str, Any], transport: Any) -> None:
        transport.sleep(settings.pop("backoff", 0.0))  # the backoff the deadline was checked against, not a new random one

    def _cut_timeouts(self, settings: dict[str, Any], backoff: float) -> None:
        left = max(0.5, settings["deadline"] - time.monotonic() - backoff)
        settings["options"]["connection_timeout"] = min(CONNECT_TIMEOUT_S, left)
        settings["options"]["read_timeout"] = min(READ_TIMEOUT_S, left)


@dataclass(frozen=True)
class StorageCredential:
    """One account and how to authenticate to it. ``repr`` never shows the secret parts."""

    account: str
    blob_endpoint: str  # https://<account>.blob.core.windows.net, or Azurite's http://127.0.0.1:<port>/<account>
    account_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    entra: bool = False  # DefaultAzureCredential
    file_endpoint: str = ""  # https://<account>.file.core.windows.net unless given

    @classmethod
    def parse(
        cls,
        *,
        account: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        connection_string: str | None = None,
        blob_endpoint: str | None = None,
        file_endpoint: str | None = None,
    ) -> StorageCredential:
        """From the connection's fields; errors name the field and never echo a value."""
        if connection_string:
            parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
            name = parts.get("AccountName") or account
            if not name:
                raise BatchAIError(
                    ErrorCode.INVALID_STORAGE_CREDENTIAL, "storage_connection_string has no AccountName", "storage_connection_string"
                )
            protocol = parts.get("DefaultEndpointsProtocol", "https")
            endpoint = parts.get("BlobEndpoint") or _default_endpoint(name, protocol, parts)
            files = parts.get("FileEndpoint") or _default_endpoint(name, protocol, parts, "file")
            sas = parts.get("SharedAccessSignature")
            key = parts.get("AccountKey", "").strip() or None
            if key:
                _check_account_key(key, "storage_connection_string")
            return cls(name, endpoint.rstrip("/"), key, sas.lstrip("?") if sas else None, file_endpoint=files.rstrip("/"))
        if not account:
            raise BatchAIError(
                ErrorCode.INVALID_STORAGE_CREDENTIAL, "storage_account is required with a key, a SAS or Entra ID", "storage_account"
            )
        endpoint = (blob_endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")
        files = (file_endpoint or f"https://{account}.file.core.windows.net").rstrip("/")
        if account_key and account_key.strip():
            _check_account_key(account_key.strip(), "storage_account_key")
            return cls(account, endpoint, account_key=account_key.strip(), file_endpoint=files)
        if sas_token:
            return cls(account, endpoint, sas_token=sas_token.lstrip("?"), file_endpoint=files)
        return cls(account, endpoint, entra=True, file_endpoint=files)

    @property
    def secrets(self) -> list[str]:
        return [value for value in (self.account_key, self.sas_token) if value]

    def service(self, deadline_s: float = CONTROL_DEADLINE_S, **options: Any) -> BlobServiceClient:
        """A client whose every call ends within ``deadline_s``; ``options`` go to the client (e.g.
        ``raw_response_hook``, which the benchmarks use to count requests)."""
        if self.account_key:
            credential: Any = {"account_name": self.account, "account_key": self.account_key}
        elif self.sas_token:
            credential = self.sas_token
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return BlobServiceClient(
            self.blob_endpoint,
            credential=credential,
            retry_policy=BoundedRetry(deadline_s),
            connection_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            **options,
        )

    def container_url(self, container: str) -> str:
        return f"{self.blob_endpoint}/{quote(container)}"

    def container_sas(self, container: str, permission: str, lifetime: timedelta, service: BlobServiceClient | None = None) -> str:
        """A SAS for one container: ``permission`` in Azure's letters (r, a, c, w, d, l), valid for ``lifetime`` + margin."""
        start = datetime.now(timezone.utc) - timedelta(minutes=5)  # clock skew between us and the nodes
        expiry = datetime.now(timezone.utc) + lifetime + SAS_MARGIN
        permissions = ContainerSasPermissions.from_string(permission)
        if self.account_key:
            return generate_container_sas(
                self.account, container, account_key=self.account_key, permission=permissions, expiry=expiry, start=start
            )
        if self.sas_token:
            if self.account not in _warned_account_sas:
                _warned_account_sas.add(self.account)
                log.warning("only an account SAS is configured for %s: nodes get that SAS, not one scoped to their job", self.account)
            return self.sas_token
        try:
            delegation = (service or self.service()).get_user_delegation_key(start, expiry)
        except AzureError as error:
            raise BatchAIError(
                ErrorCode.STORAGE_AUTHORIZATION_FAILED,
                f"cannot get a user delegation key for {self.account}: {type(error).__name__}",
                "storage_account",
            ) from None
        return generate_container_sas(
            self.account, container, user_delegation_key=delegation, permission=permissions, expiry=expiry, start=start
        )


def share_sas(credential: StorageCredential, share: str, permission: str, lifetime: timedelta) -> str:
    """A SAS for one Azure Files share. Files has no user-delegation SAS, so Entra ID alone cannot serve shares."""
    from azure.storage.fileshare import ShareSasPermissions, generate_share_sas

    if credential.account_key:
        start = datetime.now(timezone.utc) - timedelta(minutes=5)
        expiry = datetime.now(timezone.utc) + lifetime + SAS_MARGIN
        permissions = ShareSasPermissions.from_string(permission)
        return generate_share_sas(credential.account, share, credential.account_key, permission=permissions, expiry=expiry, start=start)
    if credential.sas_token:
        return credential.sas_token
    raise BatchAIError(
        ErrorCode.STORAGE_AUTHORIZATION_FAILED,
        f"share {share}: Azure Files needs an account key or an account SAS (it has no user-delegation SAS for Entra ID)",
        "storage_account_key",
    )


def _default_endpoint(account: str, protocol: str, parts: dict[str, str], service: str = "blob") -> str:
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{protocol}://{account}.{service}.{suffix}"
