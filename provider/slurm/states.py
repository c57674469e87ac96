"""What Slurm's states mean in Batch AI's words (pure: tested without Slurm)."""

from __future__ import annotations

from typing import Any

from ..errors import ErrorCode
from ..records import ExecutionState, NodeState
from .commands import SlurmJob, SlurmNode

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
FAILED_CODES = {
    "FAILED": ErrorCode.JOB_FAILED,
    "TIMEOUT": ErrorCode.JOB_TIMED_OUT,  # maxWallClockTime reached: Slurm's --time
    "NODE_FAIL": ErrorCode.NODE_FAILED,
    "PREEMPTED": ErrorCode.JOB_PREEMPTED,
    "CANCELLED": ErrorCode.JOB_TERMINATED,
    "OUT_OF_MEMORY": ErrorCode.JOB_OUT_OF_MEMORY,
    "BOOT_FAIL": ErrorCode.NODE_FAILED,
    "DEADLINE": ErrorCode.JOB_TIMED_OUT,
    "REVOKED": ErrorCode.JOB_TERMINATED,
    "SPECIAL_EXIT": ErrorCode.JOB_FAILED,
}


NODE_LOSS = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}  # the job ended because Slurm took its nodes, not by its own doing


def lost_its_nodes(job: SlurmJob) -> bool:
    return job.state.split()[0].upper() in NODE_LOSS


def execution_state(job: SlurmJob) -> tuple[ExecutionState, dict[str, Any] | None]:
    """(Batch AI state, the error of a failed job naming Slurm's state and reason)."""
    state = job.state.split()[0].upper()
    if state in QUEUED:
        return ExecutionState.QUEUED, None
    if state in RUNNING:
        return ExecutionState.RUNNING, None
    if state == "COMPLETED":
        return ExecutionState.SUCCEEDED, None
    code = FAILED_CODES.get(state, ErrorCode.JOB_FAILED)
    reason = f", reason {job.reason}" if job.reason else ""
    exit_part = f", exit code {job.exit_code}" if job.exit_code else ""
    signal_part = f", signal {job.signal}" if job.signal else ""
    return ExecutionState.FAILED, {"code": code, "message": f"Slurm job {job.job_id} ended {state}{reason}{exit_part}{signal_part}"}


def queue_reason(job: SlurmJob) -> str:
    """Why a job Slurm holds is not running yet, in words: its nodes powering up (a cloud partition's
    power saving), or Slurm's pending reason (Resources, Priority, ...)."""
    state = job.state.split()[0].upper()
    if state == "CONFIGURING":
        return f"Slurm job {job.job_id} has its nodes and waits for them to power up"
    reason = job.reason if job.reason and job.reason != "None" else None
    return f"Slurm job {job.job_id} is {state}" + (f": {reason}" if reason else "")


def node_state_counts(nodes: list[SlurmNode]) -> dict[str, int]:
    """A partition's nodes as Batch AI's nodeStateCounts: idle; running (alloc, mix); unusable
    (down, drain, fail, ...); preparing (powering up, or not registered yet); leaving (powering
    down). A node powered down with nothing to do is not counted: like a deallocated VM, it is not
    one of the cluster's nodes until a job wakes it."""
    counts = {"idleNodeCount": 0, "runningNodeCount": 0, "preparingNodeCount": 0, "unusableNodeCount": 0, "leavingNodeCount": 0}
    for node in nodes:
        key = _count_key(node)
        if key is not None:
            counts[key] += 1
    return counts


def _count_key(node: SlurmNode) -> str | None:
    state = node.state
    if "~" in node.flags and "#" not in node.flags and state.startswith("idle"):
        return None  # powered down, and no job asked for it
    if "#" in node.flags or "~" in node.flags or state.startswith(("powering_up", "power_up", "future")):
        return "preparingNodeCount"  # being powered up (a job has it, or is about to)
    if (
        state.startswith(("down", "drain", "fail", "maint", "reboot", "unknown", "inval", "not_responding", "no_respond"))
        or "*" in node.flags
    ):
        return "unusableNodeCount"
    if "%" in node.flags or state.startswith(("powering_down", "power_down")):
        return "leavingNodeCount"
    if state.startswith(("alloc", "mix", "completing", "planned", "reserved")):
        return "runningNodeCount"
    return "idleNodeCount"


COUNT_STATES = {
    "idleNodeCount": NodeState.IDLE,
    "runningNodeCount": NodeState.RUNNING,
    "preparingNodeCount": NodeState.PREPARING,
    "unusableNodeCount": NodeState.UNUSABLE,
    "leavingNodeCount": NodeState.LEAVING,
}


def node_state(node: SlurmNode) -> NodeState | None:
    """A partition node as one of a Batch AI cluster's nodes (what ``nodeStateCounts`` counts); None for
    one powered down and not asked for (no node of the cluster now, as a deallocated VM)."""
    key = _count_key(node)
    return COUNT_STATES[key] if key is not None else None
