"""Records → the JSON Batch AI returned (the az CLI's flattened form): what users, the CLI and XCom see.

Records hold specs already without their secrets (secretfields.py removes them before anything
is stored), so a view can show a record's spec as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..launch import process_count
from ..records import ClusterRecord, JobRecord, NodeState, NodeSummary

ARM_PREFIX = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.BatchAI/workspaces/{ws}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


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
            "attempts": record.attempts or None,  # ours: earlier attempts that were requeued (NodeLost, scale-down), and why
        },
    }
