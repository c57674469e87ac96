"""Workspace and experiment records, and the implicit ones that clusters and jobs made elsewhere imply."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service
from airflow_batchai.spec import load_cluster_spec
from airflow_batchai.workspaces import Workspaces


def test_a_workspace_is_created_once_per_resource_group_and_location(tmp_path: Path) -> None:
    workspaces = Workspaces(Service.embedded(tmp_path, nodes=1).store, "batchai")
    record, created = workspaces.create("ws", "rg", "eastus", {"team": "ml"})
    assert created and record.tags == {"team": "ml"}
    again, created = workspaces.create("ws", "RG", "EastUS", {"team": "vision"})  # ARM names are case-insensitive
    assert not created and again.tags == {"team": "vision"}
    with pytest.raises(BatchAIError) as moved:
        workspaces.create("ws", "rg", "westeurope")
    assert moved.value.code == "InvalidResourceLocation" and moved.value.target == "location"
    with pytest.raises(BatchAIError) as other_group:
        workspaces.get("ws", "another-rg")
    assert other_group.value.code == "WorkspaceNotFound"
    with pytest.raises(BatchAIError) as bad_tags:
        workspaces.create("ws2", "rg", "eastus", {"n": 3})  # type: ignore[dict-item]
    assert bad_tags.value.target == "tags.n"
    with pytest.raises(BatchAIError) as bad_name:
        workspaces.create("no/slashes", "rg", "eastus")
    assert bad_name.value.target == "workspace"


def test_clusters_and_jobs_made_elsewhere_imply_their_workspace_in_the_services_resource_group(tmp_path: Path) -> None:
    service = Service.embedded(tmp_path, nodes=1)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}), workspace="from-cli")
    workspaces = Workspaces(service.store, "batchai")
    [implicit] = workspaces.all()
    assert (implicit.name, implicit.resource_group, implicit.implicit) == ("from-cli", "batchai", True)
    assert workspaces.all("other-rg") == []
    assert workspaces.update_tags("from-cli", "batchai", {"owner": "me"}).implicit is False  # its first write records it
    assert workspaces.get("from-cli", "batchai").tags == {"owner": "me"}
    _, created = workspaces.create_experiment("from-cli", "e1")
    assert created and [e.name for e in workspaces.experiments("from-cli")] == ["e1"]
    assert workspaces.create_experiment("from-cli", "e1")[1] is False
    with pytest.raises(BatchAIError) as missing:
        workspaces.get_experiment("from-cli", "nope")
    assert missing.value.code == "ExperimentNotFound"
