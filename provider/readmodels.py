"""Records → the JSON Batch AI returned (the az CLI's flattened form), and specs → storable copies.

What users, the CLI and XCom see is built here, so this is also where secrets are removed:
secret values become name-only entries, storage credentials ``{}``, passwords dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_batchai.errors import InvalidSpec
from airflow_batchai.launch import process_count
from airflow_batchai.records import ClusterRecord, JobRecord, NodeState, NodeSummary
from airflow_batchai.spec import ClusterSpec, JobSpec

ARM_PREFIX = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.BatchAI/workspaces/{ws}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _redact_mounts(volumes: dict[str, Any] | None) -> None:
    for kind in ("azureFileShares", "azureBlobFileSystems"):
        for mount in (volumes or {}).get(kind) or []:
            if "credentials" in mount:
                mount["credentials"] = {}


def _secret_values(entries: list[Any] | None, where: str) -> dict[str, str]:
    values = {}
    for index, entry in enumerate(entries or []):
        if entry.value_secret_reference is not None:
            raise InvalidSpec(
                f"{where}[{index}].valueSecretReference: Key Vault references are not supported; give the value", f"{where}[{index}]"
            )
        if entry.value is None:
            raise InvalidSpec(f"{where}[{index}]: a secret needs a value", f"{where}[{index}]")
        values[entry.name] = entry.value
    return values


def storage_keys(volumes: Any) -> dict[str, str]:
    keys = {}
    for mount in [*(getattr(volumes, "azure_file_shares", None) or []), *(getattr(volumes, "azure_blob_file_systems", None) or [])]:
        if mount.credentials and mount.credentials.account_key:
            keys[mount.account_name] = mount.credentials.account_key
    return keys


def split_job_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(storable spec JSON without secrets, the secrets) for a job."""
    secrets = {"env": _secret_values(spec.secrets, "secrets"), "storage_keys": storage_keys(spec.mount_volumes)}
    registry = spec.container_settings.image_source_registry.credentials if spec.container_settings else None
    if registry and registry.password:
        secrets["registry_password"] = registry.password
    stored = spec.to_json()
    if stored.get("secrets"):
        stored["secrets"] = [{"name": entry["name"]} for entry in stored["secrets"]]
    _redact_mounts(stored.get("mountVolumes"))
    credentials = stored.get("containerSettings", {}).get("imageSourceRegistry", {}).get("credentials")
    if credentials:
        credentials.pop("password", None)
    return stored, secrets


def split_cluster_secrets(spec: ClusterSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    setup = spec.node_setup.setup_task if spec.node_setup else None
    secrets = {
        "env": _secret_values(setup.secrets if setup else None, "nodeSetup.setupTask.secrets"),
        "storage_keys": storage_keys(spec.node_setup.mount_volumes if spec.node_setup else None),
    }
    stored = spec.to_json()
    node_setup = stored.get("nodeSetup") or {}
    task = node_setup.get("setupTask") or {}
    if task.get("secrets"):
        task["secrets"] = [{"name": entry["name"]} for entry in task["secrets"]]
    _redact_mounts(node_setup.get("mountVolumes"))
    if (stored.get("userAccountSettings") or {}).pop("adminUserPassword", None):
        secrets["admin_password"] = spec.user_account_settings.admin_user_password  # type: ignore[union-attr]
    counters = (node_setup.get("performanceCountersSettings") or {}).get("appInsightsReference") or {}
    counters.pop("instrumentationKey", None)
    return stored, secrets


def cluster_id(sub: str, rg: str, workspace: str, name: str) -> str:
    return ARM_PREFIX.format(sub=sub, rg=rg, ws=workspace) + f"/clusters/{name}"


def job_id(sub: str, rg: str, workspace: str, experiment: str, name: str) -> str:
    return ARM_PREFIX.format(sub=sub, rg=rg, ws=workspace) + f"/experiments/{experiment}/jobs/{name}"


def node_state_counts(nodes: list[NodeSummary]) -> dict[str, int]:
    def count(state: NodeState) -> int:
        return sum(1 for node in nodes if node.state == state)

    return {
        "idleNodeCount": count(NodeState.IDLE),
        "runningNodeCount": count(NodeState.RUNNING),
        "preparingNodeCount": count(NodeState.PREPARING),
        "unusableNodeCount": count(NodeState.UNUSABLE),
        "leavingNodeCount": count(NodeState.LEAVING),
    }


def cluster_view(record: ClusterRecord, sub: str, rg: str) -> dict[str, Any]:
    """Nodes as the cluster's last pass published them: reading a cluster is one record read."""
    nodes = record.nodes
    node_errors = [error for node in nodes for error in node.errors]
    return {
        "id": cluster_id(sub, rg, record.workspace, record.name),
        "name": record.name,
        "type": "Microsoft.BatchAI/workspaces/clusters",
        "resourceGroup": rg,
        **record.spec,
        "creationTime": _iso(record.creation_time),
        "provisioningState": record.provisioning_state,
        "provisioningStateTransitionTime": _iso(record.provisioning_state_transition_time),
        "allocationState": record.allocation_state.value,
        "allocationStateTransitionTime": _iso(record.allocation_state_transition_time),
        "currentNodeCount": sum(1 for node in nodes if node.state != NodeState.LEAVING),
        "nodeStateCounts": node_state_counts(nodes),
        "errors": (record.errors + node_errors) or None,
        "nodes": [{"nodeId": node.node_id, "ipAddress": node.address, "state": node.state.value} for node in nodes],
    }


def job_view(record: JobRecord, sub: str, rg: str) -> dict[str, Any]:
    spec = {key: (dict(value) if isinstance(value, dict) else value) for key, value in record.spec.items()}
    spec.pop("cluster", None)
    model = record.parsed_spec()
    if "process_count" in type(model.toolkit).model_fields:  # echoed filled in, as the service did
        toolkit_key = next(key for key in spec if key.endswith("Settings") and key != "containerSettings")
        spec[toolkit_key]["processCount"] = process_count(model)
    spec.setdefault("constraints", {"maxWallClockTime": "P7D"})
    spec.setdefault("schedulingPriority", "normal")
    tool_type = model.tool_type
    return {
        "id": job_id(sub, rg, record.workspace, record.experiment, record.name),
        "name": record.name,
        "type": "Microsoft.BatchAI/workspaces/experiments/jobs",
        "resourceGroup": rg,
        **spec,
        "cluster": {"id": cluster_id(sub, rg, record.workspace, record.cluster)},
        "toolType": tool_type,
        "jobOutputDirectoryPathSegment": record.segment,
        "creationTime": _iso(record.creation_time),
        "provisioningState": "succeeded",
        "provisioningStateTransitionTime": _iso(record.creation_time),
        "executionState": record.execution_state.value,
        "executionStateTransitionTime": _iso(record.execution_state_transition_time),
        "executionInfo": {
            "startTime": _iso(record.start_time),
            "endTime": _iso(record.end_time),
            "exitCode": record.exit_code,
            "errors": record.errors or None,
        },
    }
