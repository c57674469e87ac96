"""Azure Resource Manager's conventions, as the Batch AI SDK expects them: resource ids, the
``{id, name, type, properties}`` envelope, ``{"error": {code, message, target}}`` with the
right HTTP status, ``value``/``nextLink`` pages and long-running operations.

Pure: no Service, no I/O; app.py puts these around the Service's answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..errors import BatchAIError, ErrorCode

API_VERSION = "2018-05-01"
PROVIDER = "Microsoft.BatchAI"
MAX_PAGE = 1000  # Batch AI's maxresults limit and default page size

NOT_FOUND_RESOURCES = {ErrorCode.WORKSPACE_NOT_FOUND, ErrorCode.CLUSTER_NOT_FOUND, ErrorCode.JOB_NOT_FOUND, ErrorCode.EXPERIMENT_NOT_FOUND}
CONFLICT_CODES = {
    ErrorCode.CLUSTER_ALREADY_EXISTS,
    ErrorCode.JOB_ALREADY_EXISTS,
    ErrorCode.CONFLICT,
    ErrorCode.JOB_NOT_TERMINATED,
    ErrorCode.INVALID_STATE_TRANSITION,
    ErrorCode.STALE_RECORD,
}
UNAVAILABLE_CODES = {
    ErrorCode.STORAGE_UNAVAILABLE,
    ErrorCode.CONTROL_STORE_UNAVAILABLE,
    ErrorCode.SLURM_UNAVAILABLE,
    ErrorCode.LOCK_TIMEOUT,
    ErrorCode.LEASE_LOST,
    ErrorCode.NODE_UNREACHABLE,
}
SERVER_CODES = {ErrorCode.SLURM_ERROR, ErrorCode.UPLOAD_FAILED, ErrorCode.INTERNAL_SERVER_ERROR}


class ArmError(Exception):
    """An answer that is an ARM error: ``status`` and the body's ``code``, ``message`` and ``target``."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}


def http_status(code: str) -> int:
    if code.endswith("NotFound"):
        return 404
    if code in CONFLICT_CODES or code.endswith("AlreadyExists"):
        return 409
    if code in UNAVAILABLE_CODES:
        return 503
    if code in SERVER_CODES:
        return 500
    return 400  # InvalidSpec, InvalidPath, InsufficientNodes, NotSupported, ...: the request's fault


def from_batchai(error: BatchAIError, resource: str | None = None, resource_group: str | None = None) -> ArmError:
    """Our error in ARM's shape; a missing workspace, cluster, experiment or job is ARM's ``ResourceNotFound``."""
    if error.code in NOT_FOUND_RESOURCES and resource:
        where = f" under resource group '{resource_group}'" if resource_group else ""
        return ArmError(404, ErrorCode.RESOURCE_NOT_FOUND, f"The Resource '{resource}'{where} was not found. {error.message}", error.target)
    return ArmError(http_status(error.code), error.code, error.message, error.target)


def check_api_version(version: str | None) -> None:
    if not version:
        raise ArmError(
            400,
            ErrorCode.MISSING_API_VERSION_PARAMETER,
            f"The api-version query parameter (?api-version=) is required. Supported: '{API_VERSION}'.",
        )
    if version != API_VERSION:
        raise ArmError(
            400,
            ErrorCode.INVALID_API_VERSION_PARAMETER,
            f"The api-version '{version[:40]}' is invalid. The supported versions are '{API_VERSION}'.",
            "api-version",
        )


@dataclass(frozen=True)
class Scope:
    """Where a request points: its subscription and resource group, as the caller spelled them."""

    subscription: str
    resource_group: str

    def workspace_id(self, workspace: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/{PROVIDER}/workspaces/{workspace}"

    def cluster_id(self, workspace: str, cluster: str) -> str:
        return f"{self.workspace_id(workspace)}/clusters/{cluster}"

    def experiment_id(self, workspace: str, experiment: str) -> str:
        return f"{self.workspace_id(workspace)}/experiments/{experiment}"

    def job_id(self, workspace: str, experiment: str, job: str) -> str:
        return f"{self.experiment_id(workspace, experiment)}/jobs/{job}"


def resource(resource_id: str, name: str, kind: str, properties: dict[str, Any], **top: Any) -> dict[str, Any]:
    """The ARM envelope; ``top`` adds top-level fields (a workspace's location and tags)."""
    return {"id": resource_id, "name": name, "type": f"{PROVIDER}/{kind}", **top, "properties": properties}


FLAT_TOP = ("id", "name", "type", "resourceGroup")


def enveloped(view: dict[str, Any], resource_id: str) -> dict[str, Any]:
    """A Service view (az CLI's flattened form) in ARM's envelope, its id in the caller's scope."""
    properties = {key: value for key, value in view.items() if key not in FLAT_TOP}
    return {"id": resource_id, "name": view["name"], "type": view["type"], "properties": properties}


def page(items: list[dict[str, Any]], url: str, query: dict[str, str], max_results: int | None, skip: int) -> dict[str, Any]:
    """``{"value": [...], "nextLink": ...}``: ``max_results`` (1-1000, default 1000) after ``skip``; nextLink carries the rest."""
    size = page_size(max_results)
    chunk = items[skip : skip + size]
    body: dict[str, Any] = {"value": chunk}
    if skip + size < len(items):
        body["nextLink"] = f"{url}?{urlencode({**query, '$skiptoken': str(skip + size)}, safe='$')}"
    return body


def page_size(max_results: int | None) -> int:
    size = MAX_PAGE if max_results is None else max_results
    if not 1 <= size <= MAX_PAGE:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, f"maxresults must be 1-{MAX_PAGE}, got {max_results}", "maxresults")
    return size


def skip_token(token: str | None) -> int:
    if token is None:
        return 0
    if not token.isdigit():
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "$skiptoken must come from a nextLink", "$skiptoken")
    return int(token)
