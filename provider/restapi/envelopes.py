"""Batch AI's resources as ARM answers them: the id, name and type around a resource's properties."""

from __future__ import annotations

from typing import Any

from ..data import OutputFile
from ..reading.readmodels import ClusterView, JobView
from ..workspaces import WorkspaceRecord
from .arm import Scope, enveloped, resource


def workspace_body(scope: Scope, record: WorkspaceRecord) -> dict[str, Any]:
    created = record.creation_time.isoformat()
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.workspace_id(record.name), record.name, "workspaces", properties, location=record.location, tags=record.tags)


def experiment_body(scope: Scope, workspace: str, name: str, created: str) -> dict[str, Any]:
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.experiment_id(workspace, name), name, "workspaces/experiments", properties)


def cluster_body(scope: Scope, workspace: str, view: ClusterView) -> dict[str, Any]:
    return enveloped(view.to_json(), scope.cluster_id(workspace, view.name))


def job_body(scope: Scope, workspace: str, experiment: str, view: JobView) -> dict[str, Any]:
    body = enveloped(view.to_json(), scope.job_id(workspace, experiment, view.name))
    body["properties"]["cluster"] = {"id": scope.cluster_id(workspace, view.cluster_name)}
    return body


def file_body(found: OutputFile) -> dict[str, Any]:
    """Batch AI's File: its size and time under ``properties``, as the SDK reads them."""
    shown = found.to_json()
    body: dict[str, Any] = {"name": found.name, "fileType": found.file_type, "downloadUrl": found.download_url}
    if found.is_file:
        body["properties"] = {"lastModified": shown.get("lastModified"), "contentLength": found.content_length}
    return body
