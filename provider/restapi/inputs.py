"""The parts of a request the routers read: query options, the JSON body (bounded, and checked
before use), the path's names, and the properties of a create body."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import ValidationError

from ..errors import BatchAIError, ErrorCode
from ..names import RULES, check_segment
from ..spec import ScaleSettings
from .arm import ArmError, check_api_version

MAX_BODY_BYTES = 1024 * 1024  # a job spec is a few KiB; nothing bigger is read
MAX_JSON_DEPTH = 32  # the deepest Batch AI body (a job's mountVolumes) nests 6 levels

ApiVersion = Annotated[str | None, Query(alias="api-version")]
MaxResults = Annotated[int | None, Query(alias="maxresults")]
SkipToken = Annotated[str | None, Query(alias="$skiptoken")]


def api_version(api_version: ApiVersion = None) -> None:
    check_api_version(api_version)


def check_names(request: Request) -> None:
    """Every path segment by Azure's naming rules, before anything is looked up (400 naming it)."""
    for kind, value in request.path_params.items():
        if kind in RULES:
            try:
                check_segment(kind, value)
            except BatchAIError as error:
                code = "InvalidResourceGroup" if kind == "resource_group" else "InvalidResourceName"
                raise ArmError(400, code, error.message, kind) from None


async def json_body(request: Request) -> dict[str, Any]:
    """The body as JSON, or an ARM error that quotes none of it (it may hold secrets).

    Read in chunks and refused (413) as soon as it passes MAX_BODY_BYTES, so an oversized body
    is never held whole; a declared Content-Length over the limit is refused unread.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ArmError(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, f"the request body is over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ArmError(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, f"the request body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "the request body must be a JSON object")
    if depth(body) > MAX_JSON_DEPTH:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def depth(document: Any) -> int:
    """How deep objects and lists nest (iteratively: the document may be deep enough to break recursion)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


Body = Annotated[dict[str, Any], Depends(json_body)]


def properties_of(body: dict[str, Any]) -> dict[str, Any]:
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "properties must be an object", "properties")
    return properties


def scale_settings_of(value: Any) -> ScaleSettings:
    try:
        return ScaleSettings.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = "properties.scaleSettings." + ".".join(str(p) for p in first["loc"])
        raise ArmError(400, ErrorCode.INVALID_SPEC, f"{where.rstrip('.')}: {first['msg']}", where.rstrip(".")) from None


def cluster_of(properties: dict[str, Any], workspace: str) -> str:
    """The cluster a job names by ARM id (``.../workspaces/{ws}/clusters/{name}``), in this workspace."""
    cluster = properties.get("cluster")
    cluster_id = cluster.get("id") if isinstance(cluster, dict) else None
    if not isinstance(cluster_id, str) or not cluster_id.strip("/"):
        raise ArmError(
            400, ErrorCode.INVALID_SPEC, "properties.cluster.id is required: the id of the cluster to run on", "properties.cluster.id"
        )
    parts = cluster_id.strip("/").split("/")
    if len(parts) >= 4 and parts[-2].lower() == "clusters" and parts[-4].lower() == "workspaces" and parts[-3] != workspace:
        raise ArmError(
            400,
            ErrorCode.INVALID_SPEC,
            f"the cluster is in workspace {parts[-3]}, the job in {workspace}: both must be in one",
            "properties.cluster.id",
        )
    return parts[-1]


def query_of(request: Request) -> dict[str, str]:
    return {key: value for key, value in request.query_params.items() if key != "$skiptoken"}
