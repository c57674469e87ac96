"""Batch AI's resources as ARM answers them: the id, name and type around a resource's properties."""

from __future__ import annotations

from typing import Any

from ..workspaces import WorkspaceRecord
from .arm import Scope, enveloped, resource


def workspace_body(scope: Scope, record: WorkspaceRecord) -> dict[str, Any]:
    created = record.creation_time.isoformat()
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.workspace_id(record.name), record.name, "workspaces", properties, location=record.location, tags=record.tags)


def experiment_body(scope: Scope, workspace: str, name: str, created: str) -> dict[str, Any]:
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.experiment_id(workspace, name), name, "workspaces/experiments", properties)


def cluster_body(scope: Scope, workspace: str, view: dict[str, Any]) -> dict[str, Any]:
    return enveloped(view, scope.cluster_id(workspace, view["name"]))


def job_body(scope: Scope, workspace: str, experiment: str, view: dict[str, Any]) -> dict[str, Any]:
    body = enveloped(view, scope.job_id(workspace, experiment, view["name"]))
    cluster = (view.get("cluster") or {}).get("id", "").rsplit("/", 1)[-1]
    body["properties"]["cluster"] = {"id": scope.cluster_id(workspace, cluster)}
    return body


def file_body(found: dict[str, Any]) -> dict[str, Any]:
    """Batch AI's File: its size and time under ``properties``, as the SDK reads them."""
    body = {"name": found["name"], "fileType": found["fileType"], "downloadUrl": found.get("downloadUrl")}
    if found["fileType"] == "file":
        body["properties"] = {"lastModified": found.get("lastModified"), "contentLength": found.get("contentLength")}
    return body
