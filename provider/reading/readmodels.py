"""Records → the JSON Batch AI returned (the az CLI's flattened form): what users, the CLI and XCom see.

Records hold specs already without their secrets (secretfields.py removes them before anything
is stored), so a view can show a record's spec as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..launch import process_count
from ..prices import Rate
from ..records import AllocationState, ClusterRecord, ExecutionState, JobRecord, NodeState, NodeSummary, utc_now
from ..spec import BatchAIView
from ..usage import cluster_usage, job_usage

ARM_PREFIX = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.BatchAI/workspaces/{ws}"


class ErrorView(BatchAIView):
    """Batch AI's BatchAIError: ``target`` and ``details`` appear where the error has them."""

    code: str
    message: str


class AttemptView(BatchAIView):
    """Ours: an earlier attempt of a job that was requeued (NodeLost, scale-down), and why it ended."""

    attempt: int
    nodes: list[str]
    start_time: datetime | None
    end_time: datetime | None
    errors: list[ErrorView]


class ExecutionInfo(BatchAIView):
    start_time: datetime | None
    end_time: datetime | None
    exit_code: int | None
    errors: list[ErrorView] | None
    attempts: list[AttemptView] | None
    queue_reason: str | None = None  # ours: why a queued job waits, where its scheduler says (Slurm)


class ResourceRef(BatchAIView):
    id: str


class NodeView(BatchAIView):
    node_id: str
    ip_address: str
    state: NodeState


class NodeStateCounts(BatchAIView):
    idle_node_count: int
    running_node_count: int
    preparing_node_count: int
    unusable_node_count: int
    leaving_node_count: int


class ClusterView(BatchAIView):
    """A cluster as ``az batchai cluster show`` printed it: its spec's fields (``vmSize``, ``scaleSettings``
    and the rest, as submitted) beside what the service reports. Spec fields not named here are in
    ``model_extra`` under their camelCase names."""

    id: str
    name: str
    type: str
    resource_group: str
    vm_size: str | None = None
    vm_priority: str | None = None
    scale_settings: dict[str, Any] | None = None
    creation_time: datetime
    provisioning_state: str
    provisioning_state_transition_time: datetime
    allocation_state: AllocationState
    allocation_state_transition_time: datetime
    current_node_count: int
    node_state_counts: NodeStateCounts
    errors: list[ErrorView] | None
    nodes: list[NodeView]
    usage: dict[str, Any] | None = None  # ours (the SDK ignores it): node-seconds, GPU-hours and cost, since creation and today

    def idle_nodes(self) -> int:
        return self.node_state_counts.idle_node_count


class JobView(BatchAIView):
    """A job as ``az batchai job show`` printed it: its spec's fields as submitted (``nodeCount``, the
    toolkit's settings, ``constraints``...) beside its state. Spec fields not named here are in
    ``model_extra`` under their camelCase names."""

    id: str
    name: str
    type: str
    resource_group: str
    node_count: int
    scheduling_priority: str
    constraints: dict[str, Any]
    cluster: ResourceRef
    tool_type: str
    job_output_directory_path_segment: str
    creation_time: datetime
    provisioning_state: str
    provisioning_state_transition_time: datetime
    execution_state: ExecutionState
    execution_state_transition_time: datetime
    execution_info: ExecutionInfo
    usage: dict[str, Any] | None = None  # ours (the SDK ignores it): node-seconds, GPU-hours and cost, each attempt apart

    @property
    def finished(self) -> bool:
        return self.execution_state.finished

    @property
    def cluster_name(self) -> str:
        return self.cluster.id.rsplit("/", 1)[-1]


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


def cluster_view(record: ClusterRecord, sub: str, rg: str, rate: Rate | None = None, now: datetime | None = None) -> ClusterView:
    """Nodes as the cluster's last pass published them: reading a cluster is one record read (its usage too)."""
    nodes = record.nodes
    node_errors = [error for node in nodes for error in node.errors]
    return ClusterView.model_validate(
        {
            "id": cluster_id(sub, rg, record.workspace, record.name),
            "name": record.name,
            "type": "Microsoft.BatchAI/workspaces/clusters",
            "resourceGroup": rg,
            **record.spec,
            "creationTime": record.creation_time,
            "provisioningState": record.provisioning_state,
            "provisioningStateTransitionTime": record.provisioning_state_transition_time,
            "allocationState": record.allocation_state.value,
            "allocationStateTransitionTime": record.allocation_state_transition_time,
            "currentNodeCount": sum(1 for node in nodes if node.state != NodeState.LEAVING),
            "nodeStateCounts": node_state_counts(nodes),
            "errors": (record.errors + node_errors) or None,
            "nodes": [{"nodeId": node.node_id, "ipAddress": node.address, "state": node.state.value} for node in nodes],
            **({"usage": cluster_usage(record, rate, now or utc_now())} if rate is not None else {}),
        }
    )


def job_view(record: JobRecord, sub: str, rg: str, now: datetime | None = None, currency: str = "USD") -> JobView:
    spec = {key: (dict(value) if isinstance(value, dict) else value) for key, value in record.spec.items()}
    spec.pop("cluster", None)
    model = record.parsed_spec()
    if "process_count" in type(model.toolkit).model_fields:  # echoed filled in, as the service did
        toolkit_key = next(key for key in spec if key.endswith("Settings") and key != "containerSettings")
        spec[toolkit_key]["processCount"] = process_count(model)
    spec.setdefault("constraints", {"maxWallClockTime": "P7D"})
    spec.setdefault("schedulingPriority", "normal")
    tool_type = model.tool_type
    return JobView.model_validate(
        {
            "id": job_id(sub, rg, record.workspace, record.experiment, record.name),
            "name": record.name,
            "type": "Microsoft.BatchAI/workspaces/experiments/jobs",
            "resourceGroup": rg,
            **spec,
            "cluster": {"id": cluster_id(sub, rg, record.workspace, record.cluster)},
            "toolType": tool_type,
            "jobOutputDirectoryPathSegment": record.segment,
            "creationTime": record.creation_time,
            "provisioningState": "succeeded",
            "provisioningStateTransitionTime": record.creation_time,
            "executionState": record.execution_state.value,
            "executionStateTransitionTime": record.execution_state_transition_time,
            "executionInfo": {
                "startTime": record.start_time,
                "endTime": record.end_time,
                "exitCode": record.exit_code,
                "errors": record.errors or None,
                "attempts": record.attempts or None,  # ours: earlier attempts that were requeued (NodeLost, scale-down), and why
                **({"queueReason": record.queue_reason} if record.queue_reason and record.execution_state == ExecutionState.QUEUED else {}),
            },
            "usage": job_usage(record, now or utc_now(), currency),
        }
    )
