"""Azure Resource Manager for pools whose nodes are Azure VMs: the connection's settings, one client per
pool, and ARM's errors in our terms.

Every call has a deadline (``request_timeout_s``, retries included); ARM's 429 is retried after its
``Retry-After`` and never faster; every HTTP request is counted (``ArmClient.requests``), because ARM's
reads are rationed per subscription and hour: a pool with nothing to do should make next to none.
Azure's SDKs (azure-mgmt-compute, azure-identity) are imported only when a connection names Azure VMs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ..errors import BatchAIError, ErrorCode

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.compute import ComputeManagementClient

ARM_ENDPOINT = "https://management.azure.com"
RETRIES = 3  # per call, on 408/429/5xx and lost connections; 429 waits its Retry-After
NETWORK_API_VERSION = "2024-07-01"  # a scale set instance's network interfaces are the Network provider's


class AzureVMSettings(BaseModel):
    """The connection's ``azure_vms`` field: the scale set whose instances are the pool's nodes, or the
    VMs, named, that are."""

    model_config = ConfigDict(extra="forbid", strict=True)

    subscription_id: str = Field(pattern=r"^[0-9A-Za-z-]{1,64}$", description="the Azure subscription of the VMs")
    resource_group: str = Field(pattern=r"^[-\w.()]{1,90}$")
    scale_set: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][\w.-]{0,63}$", description="an existing VM scale set (Uniform or Flexible orchestration)"
    )
    vms: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][\w.-]{0,63}$")]] | None = Field(
        default=None, min_length=1, max_length=1000, description="else: existing VMs, by name, started and deallocated as needed"
    )
    max_nodes: int = Field(
        default=0, ge=0, le=1000, description="at most this many running at once (a scale set grows up to it); 0 with vms: all of them"
    )
    scale_in: Literal["deallocate", "delete"] = Field(
        default="deallocate", description="what an idle node's instance becomes: deallocated (disk kept, not billed) or deleted"
    )
    tenant_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z.-]{1,64}$")
    client_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z-]{1,64}$", description="a service principal's, with client_secret")
    client_secret: str | None = Field(
        default=None, description="the service principal's secret (else a managed identity, else the default chain)"
    )
    managed_identity_client_id: str | None = Field(default=None, pattern=r"^[0-9A-Za-z-]{1,64}$")
    arm_endpoint: str = Field(default=ARM_ENDPOINT, description="Resource Manager (another Azure cloud's, say); HTTPS only")
    arm_ca_bundle: str | None = Field(default=None, description="CA certificates for ARM's TLS, when a proxy or private endpoint signs it")
    ssh_port: int = Field(default=22, ge=1, le=65535)
    boot_timeout_s: float = Field(default=900.0, ge=10, le=7200, description="an instance not ready this long after it started is released")
    request_timeout_s: float = Field(default=60.0, ge=1, le=600, description="one ARM call, its retries included")

    @field_validator("arm_endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://") or any(c in value for c in " \n?#"):
            raise ValueError("must be an https:// URL (Azure sends its bearer token over nothing else)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_fleet(self) -> AzureVMSettings:
        if (self.scale_set is None) == (self.vms is None):
            raise ValueError("name either scale_set (a VM scale set) or vms (a list of VM names)")
        if self.vms is not None:
            if len({name.lower() for name in self.vms}) != len(self.vms):
                raise ValueError("vms: a VM is named twice")
            if self.scale_in == "delete":
                raise ValueError("scale_in: named VMs are deallocated, never deleted (they were made by hand)")
            self.max_nodes = self.max_nodes or len(self.vms)
        elif self.max_nodes < 1:
            raise ValueError("max_nodes: a scale set needs the most instances it may grow to (1 or more)")
        return self

    def secrets(self) -> list[str]:
        return [self.client_secret] if self.client_secret else []


def credential_for(settings: AzureVMSettings) -> TokenCredential:
    """A service principal (tenant_id, client_id, client_secret), a managed identity, or Azure's default chain."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

    if settings.client_secret or settings.tenant_id or settings.client_id:
        missing = [name for name in ("tenant_id", "client_id", "client_secret") if not getattr(settings, name)]
        if missing:
            raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"azure_vms: a service principal needs {', '.join(missing)} too", "azure_vms")
        assert settings.tenant_id and settings.client_id and settings.client_secret
        return ClientSecretCredential(settings.tenant_id, settings.client_id, settings.client_secret)
    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


class ArmClient:
    """One pool's compute client; ``requests`` counts ARM's HTTP requests by kind (retries included)."""

    def __init__(self, settings: AzureVMSettings, credential: TokenCredential | None = None) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.core.policies import ARMHttpLoggingPolicy

        self.settings = settings
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.compute: ComputeManagementClient = ComputeManagementClient(
            credential or credential_for(settings),
            settings.subscription_id,
            base_url=settings.arm_endpoint,
            credential_scopes=[settings.arm_endpoint + "/.default"],
            connection_verify=settings.arm_ca_bundle or True,
            connection_timeout=min(10.0, settings.request_timeout_s),
            read_timeout=settings.request_timeout_s,
            retry_total=RETRIES,
            retry_backoff_factor=1.0,
            retry_backoff_max=30,
            timeout=settings.request_timeout_s,  # the whole call, its retries and their waits included
            polling_interval=5,
            raw_request_hook=self._count,
            http_logging_policy=ARMHttpLoggingPolicy(http_logging_level=logging.DEBUG),  # each request: not a task log line
        )

    def _count(self, request: Any) -> None:
        http = request.http_request
        kind = http.url.split("?")[0].rsplit("/providers/", 1)[-1]
        with self._lock:
            self.requests[f"{http.method} {_without_ids(kind)}"] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def get(self, path: str) -> dict[str, Any]:
        """A GET of any ARM resource path (a scale set instance's network interfaces, say) through this client."""
        from azure.core.rest import HttpRequest

        separator = "&" if "?" in path else "?"
        response = self.compute.send_request(
            HttpRequest("GET", f"{self.settings.arm_endpoint}{path}{separator}api-version={NETWORK_API_VERSION}")
        )
        if response.status_code >= 400:
            raise arm_error_from(response.status_code, _json(response), path)
        return _json(response)


def _without_ids(path: str) -> str:
    """A request's kind: its path with instance numbers, VM and interface names and operation ids taken out."""
    parts = path.split("/")
    named = {i + 1 for i, part in enumerate(parts) if part.lower() in ("virtualmachines", "networkinterfaces")}
    return "/".join(
        "{id}" if i in named or part.isdigit() or (len(part) == 36 and part.count("-") == 4) else part for i, part in enumerate(parts)
    )


def _json(response: Any) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


CODES = {
    "allocationfailed": ErrorCode.ALLOCATION_FAILED,
    "zonalallocationfailed": ErrorCode.ALLOCATION_FAILED,
    "skunotavailable": ErrorCode.SKU_NOT_AVAILABLE,
    "overconstrainedallocationrequest": ErrorCode.OVERCONSTRAINED_ALLOCATION_REQUEST,
    "overconstrainedzonalallocationrequest": ErrorCode.OVERCONSTRAINED_ALLOCATION_REQUEST,
    "quotaexceeded": ErrorCode.QUOTA_EXCEEDED,
    "toomanyrequests": ErrorCode.ARM_THROTTLED,
    "authenticationfailed": ErrorCode.ARM_ACCESS_DENIED,
    "authorizationfailed": ErrorCode.ARM_ACCESS_DENIED,
    "invalidauthenticationtoken": ErrorCode.ARM_ACCESS_DENIED,
}


def arm_error_from(status: int, body: dict[str, Any], what: str) -> BatchAIError:
    """ARM's error body (``{"error": {"code", "message"}}``) as ours; ``what`` names the resource for the message."""
    inner = body.get("error")
    error: dict[str, Any] = inner if isinstance(inner, dict) else body
    code = str(error.get("code") or status)
    message = str(error.get("message") or "no message")
    return BatchAIError(our_code(status, code, message), f"{what}: {code}: {message}", what)


def our_code(status: int, code: str, message: str) -> ErrorCode:
    """ARM's error code (with its HTTP status and message, for the codes ARM words loosely) as ours."""
    if code.lower() == "operationnotallowed" and "quota" in message.lower():
        return ErrorCode.QUOTA_EXCEEDED  # how ARM says a core quota is used up
    if code.lower() in CODES:
        return CODES[code.lower()]
    if status == 429:
        return ErrorCode.ARM_THROTTLED
    if status in (401, 403):
        return ErrorCode.ARM_ACCESS_DENIED
    if status == 404:
        return ErrorCode.INVALID_POOL
    return ErrorCode.ALLOCATION_FAILED if status == 0 else ErrorCode.ARM_UNAVAILABLE  # 0: an operation that ended Failed


def arm_error(error: Exception, what: str) -> BatchAIError:
    """An exception of Azure's SDK (an HTTP error, a lost connection, a deadline) as ours."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(error, BatchAIError):
        return error
    if isinstance(error, ClientAuthenticationError) and getattr(error, "status_code", None) is None:
        return BatchAIError(ErrorCode.ARM_ACCESS_DENIED, f"{what}: no token for Azure Resource Manager: {_first_line(error)}", what)
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        inner = getattr(error, "error", None)
        body = {"error": {"code": getattr(inner, "code", None), "message": getattr(inner, "message", None) or error.message}}
        return arm_error_from(error.status_code, body, what)
    if isinstance(error, HttpResponseError):  # a long-running operation that ended Failed
        inner = getattr(error, "error", None)
        code = getattr(inner, "code", None) or "Failed"
        return BatchAIError(our_code(0, code, str(error)), f"{what}: {code}: {_first_line(error)}", what)
    return BatchAIError(ErrorCode.ARM_UNAVAILABLE, f"{what}: Azure Resource Manager did not answer: {_first_line(error)}", what)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
