"""Workspaces and experiments as records: the two levels above clusters and jobs that Batch AI's
REST API creates, lists and deletes (restapi/).

The CLI, the operators and the DAGs never needed them: a cluster or a job names its workspace
and experiment and they exist from then on. So a workspace or an experiment *exists* when it
has a record, or when a cluster or job lives in it (an implicit one, in the service's own
resource group). Records hold no secret: a workspace has a location and tags, an experiment
only its times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .control import ControlStore, update
from .errors import BatchAIError, ErrorCode, RecordExists
from .names import check_segment
from .records import utc_now
from .spec import check_name

WORKSPACES = "workspaces/"
EXPERIMENTS = "experiments/"
MAX_TAGS = 50


class WorkspaceRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    resource_group: str
    location: str
    tags: dict[str, str] = Field(default_factory=dict)
    creation_time: datetime
    implicit: bool = False  # not created through the API: it holds clusters or jobs made elsewhere

    @property
    def key(self) -> str:
        return workspace_key(self.name)


class ExperimentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workspace: str
    name: str
    creation_time: datetime
    implicit: bool = False


def workspace_key(name: str) -> str:
    return f"{WORKSPACES}{name}"


def experiment_key(workspace: str, name: str) -> str:
    return f"{EXPERIMENTS}{workspace}/{name}"


def check_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """ARM's tags: at most 50, names up to 512 characters, values up to 256, all strings."""
    tags = tags or {}
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise BatchAIError(ErrorCode.INVALID_TAGS, f"tags must be an object of at most {MAX_TAGS} names", "tags")
    for name, value in tags.items():
        if not isinstance(value, str) or not 1 <= len(name) <= 512 or len(value) > 256:
            raise BatchAIError(
                ErrorCode.INVALID_TAGS, f"tag {name[:40]!r}: names are 1-512 characters, values strings up to 256", f"tags.{name[:40]}"
            )
    return dict(tags)


class Workspaces:
    """Workspace and experiment records in the control store; ``default_group`` owns the implicit ones."""

    def __init__(self, store: ControlStore, default_group: str) -> None:
        self.store = store
        self.default_group = default_group

    # -- workspaces ---------------------------------------------------------------------
    def create(self, name: str, resource_group: str, location: str, tags: dict[str, Any] | None = None) -> tuple[WorkspaceRecord, bool]:
        """(the workspace, whether it was created now). A PUT again with the same location replaces its tags."""
        check_name(name, "workspace")
        tags = check_tags(tags)
        if not location or not isinstance(location, str):
            raise BatchAIError(ErrorCode.INVALID_REQUEST_CONTENT, "a workspace needs a location", "location")
        check_segment("location", location)  # it becomes a path segment of the workspace's operation links
        existing = self.find(name)
        if existing is not None and not existing.implicit:
            if existing.resource_group.lower() != resource_group.lower():
                raise BatchAIError(ErrorCode.CONFLICT, f"workspace {name} exists in resource group {existing.resource_group}", "name")
            if existing.location.lower() != location.lower():
                raise BatchAIError(
                    ErrorCode.INVALID_RESOURCE_LOCATION,
                    f"workspace {name} exists in location {existing.location}, not {location}",
                    "location",
                )
            return self.update_tags(name, resource_group, tags), False
        if existing is not None and existing.resource_group.lower() != resource_group.lower():
            raise BatchAIError(
                ErrorCode.CONFLICT, f"workspace {name} holds clusters or jobs of resource group {existing.resource_group}", "name"
            )
        record = WorkspaceRecord(name=name, resource_group=resource_group, location=location, tags=tags, creation_time=utc_now())
        try:
            self.store.create(record.key, record.model_dump(mode="json"))
        except RecordExists:
            return self.create(name, resource_group, location, tags)  # created meanwhile: as a repeated PUT
        return record, True

    def find(self, name: str) -> WorkspaceRecord | None:
        found = self.store.read(workspace_key(name))
        if found is not None:
            return WorkspaceRecord.model_validate(found.data)
        if self._holds_anything(name):
            return WorkspaceRecord(name=name, resource_group=self.default_group, location="local", creation_time=utc_now(), implicit=True)
        return None

    def get(self, name: str, resource_group: str) -> WorkspaceRecord:
        found = self.find(name)
        if found is None or found.resource_group.lower() != resource_group.lower():
            raise BatchAIError(ErrorCode.WORKSPACE_NOT_FOUND, f"The workspace {name} is not found in resource group {resource_group}", name)
        return found

    def all(self, resource_group: str | None = None) -> list[WorkspaceRecord]:
        """Every workspace (one key listing per level, no record of a cluster or job read), by name."""
        recorded = {r.name: r for r in (WorkspaceRecord.model_validate(v.data) for _, v in self.store.read_many(WORKSPACES))}
        implicit = {key.split("/")[1] for prefix in ("clusters/", "jobs/", EXPERIMENTS) for key in self.store.list(prefix)}
        for name in sorted(implicit - set(recorded)):
            recorded[name] = WorkspaceRecord(
                name=name, resource_group=self.default_group, location="local", creation_time=utc_now(), implicit=True
            )
        found = sorted(recorded.values(), key=lambda w: w.name)
        if resource_group is None:
            return found
        return [w for w in found if w.resource_group.lower() == resource_group.lower()]

    def update_tags(self, name: str, resource_group: str, tags: dict[str, Any] | None) -> WorkspaceRecord:
        current = self.get(name, resource_group)
        tags = check_tags(tags)
        if current.implicit:  # the first write of an implicit workspace records it
            record = current.model_copy(update={"tags": tags, "implicit": False})
            try:
                self.store.create(record.key, record.model_dump(mode="json"))
                return record
            except RecordExists:
                pass
        stored = update(self.store, workspace_key(name), lambda doc: {**doc, "tags": tags})
        if stored is None:
            raise BatchAIError(ErrorCode.WORKSPACE_NOT_FOUND, f"The workspace {name} is not found", name)
        return WorkspaceRecord.model_validate(stored)

    def delete_record(self, name: str) -> None:
        self.store.delete(workspace_key(name))

    def _holds_anything(self, name: str) -> bool:
        return any(self.store.list(f"{prefix}{name}/") for prefix in ("clusters/", "jobs/", EXPERIMENTS))

    # -- experiments --------------------------------------------------------------------
    def create_experiment(self, workspace: str, name: str) -> tuple[ExperimentRecord, bool]:
        check_name(name, "experiment")
        existing = self.find_experiment(workspace, name)
        if existing is not None and not existing.implicit:
            return existing, False
        record = ExperimentRecord(workspace=workspace, name=name, creation_time=utc_now())
        try:
            self.store.create(experiment_key(workspace, name), record.model_dump(mode="json"))
        except RecordExists:
            return self.create_experiment(workspace, name)
        return record, True

    def find_experiment(self, workspace: str, name: str) -> ExperimentRecord | None:
        found = self.store.read(experiment_key(workspace, name))
        if found is not None:
            return ExperimentRecord.model_validate(found.data)
        if self.store.list(f"jobs/{workspace}/{name}/"):
            return ExperimentRecord(workspace=workspace, name=name, creation_time=utc_now(), implicit=True)
        return None

    def get_experiment(self, workspace: str, name: str) -> ExperimentRecord:
        found = self.find_experiment(workspace, name)
        if found is None:
            raise BatchAIError(ErrorCode.EXPERIMENT_NOT_FOUND, f"The experiment {name} is not found in workspace {workspace}", name)
        return found

    def experiments(self, workspace: str) -> list[ExperimentRecord]:
        recorded = {
            r.name: r for r in (ExperimentRecord.model_validate(v.data) for _, v in self.store.read_many(f"{EXPERIMENTS}{workspace}/"))
        }
        for key in self.store.list(f"jobs/{workspace}/"):
            name = key.split("/")[2]
            if name not in recorded:
                recorded[name] = ExperimentRecord(workspace=workspace, name=name, creation_time=utc_now(), implicit=True)
        return sorted(recorded.values(), key=lambda e: e.name)

    def delete_experiment_record(self, workspace: str, name: str) -> None:
        self.store.delete(experiment_key(workspace, name))
