"""The one exception type of the project, carrying Batch AI's error codes.

Users of Batch AI matched on codes such as ``JobFailed`` or ``ClusterNotFound``; keeping the
codes lets their scripts and DAG callbacks keep working. ``target`` names the field, host or
resource the error is about, so a message can always point at what to fix.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

SHOWN_CHARS = 80


class ErrorCode(str, Enum):
    """Every error code the project gives: Batch AI's, Azure Resource Manager's (the REST API), and ours.

    A str, so a code compares equal to its text (``error.code == "JobNotFound"`` in users' scripts
    keeps working) and is written as that text into records, JSON and messages. The node agent,
    which runs on the standard library alone, writes the job codes as text;
    tests/provider/test_errors.py checks that each of those is one of these.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    # Batch AI's own (a job's executionInfo.errors, and the service's errors)
    CLUSTER_ALREADY_EXISTS = "ClusterAlreadyExists"
    CLUSTER_DELETED = "ClusterDeleted"
    CLUSTER_NOT_FOUND = "ClusterNotFound"
    EXPERIMENT_NOT_FOUND = "ExperimentNotFound"
    FAILED_STARTING_CONTAINER = "FailedStartingContainer"
    INTERNAL_ERROR = "InternalError"
    INVALID_SPEC = "InvalidSpec"
    JOB_ALREADY_EXISTS = "JobAlreadyExists"
    JOB_FAILED = "JobFailed"
    JOB_NOT_FOUND = "JobNotFound"
    JOB_PREPARATION_FAILED = "JobPreparationFailed"
    JOB_TERMINATED = "JobTerminated"
    MAX_WALL_CLOCK_TIME_EXCEEDED = "MaxWallClockTimeExceeded"
    MOUNT_FAILED = "MountFailed"
    NODE_SETUP_FAILED = "NodeSetupFailed"
    OUTPUT_UPLOAD_FAILED = "OutputUploadFailed"
    USER_ERROR = "UserError"
    WORKSPACE_NOT_FOUND = "WorkspaceNotFound"
    # Azure Resource Manager's, for the REST API
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    AUTHORIZATION_FAILED = "AuthorizationFailed"
    BAD_REQUEST = "BadRequest"
    CONFLICT = "Conflict"
    FILE_SERVERS_NOT_SUPPORTED = "FileServersNotSupported"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    INVALID_API_VERSION_PARAMETER = "InvalidApiVersionParameter"
    INVALID_REQUEST_CONTENT = "InvalidRequestContent"
    INVALID_RESOURCE_GROUP = "InvalidResourceGroup"
    INVALID_RESOURCE_LOCATION = "InvalidResourceLocation"
    INVALID_RESOURCE_NAME = "InvalidResourceName"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    MISSING_API_VERSION_PARAMETER = "MissingApiVersionParameter"
    NOT_FOUND = "NotFound"
    OPERATION_NOT_FOUND = "OperationNotFound"
    OPERATION_TIMED_OUT = "OperationTimedOut"
    PRECONDITION_FAILED = "PreconditionFailed"
    REQUEST_ENTITY_TOO_LARGE = "RequestEntityTooLarge"
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    # Azure's compute API (a pool of Azure VMs): why capacity could not be had
    ALLOCATION_FAILED = "AllocationFailed"
    OVERCONSTRAINED_ALLOCATION_REQUEST = "OverconstrainedAllocationRequest"
    QUOTA_EXCEEDED = "QuotaExceeded"
    SKU_NOT_AVAILABLE = "SkuNotAvailable"
    # ours: connections, nodes, storage, Slurm, Azure's API, the control plane
    AGENT_ERROR = "AgentError"
    ARM_ACCESS_DENIED = "ArmAccessDenied"
    ARM_THROTTLED = "ArmThrottled"
    ARM_UNAVAILABLE = "ArmUnavailable"
    COMMAND_TIMEOUT = "CommandTimeout"
    CONNECTION_UNAVAILABLE = "ConnectionUnavailable"
    CONTACT_LOST = "ContactLost"
    CONTROL_STORE_UNAVAILABLE = "ControlStoreUnavailable"
    DISK_FULL = "DiskFull"
    FILE_NOT_FOUND = "FileNotFound"
    HEARTBEAT_LOST = "HeartbeatLost"
    HOST_KEY_MISMATCH = "HostKeyMismatch"
    INSUFFICIENT_NODES = "InsufficientNodes"
    INVALID_ARGUMENTS = "InvalidArguments"
    INVALID_CONNECTION = "InvalidConnection"
    INVALID_HOST = "InvalidHost"
    INVALID_KEY = "InvalidKey"
    INVALID_MOUNT = "InvalidMount"
    INVALID_NAME = "InvalidName"
    INVALID_PATH = "InvalidPath"
    INVALID_POOL = "InvalidPool"
    INVALID_SSH_KEY = "InvalidSSHKey"
    INVALID_STATE_TRANSITION = "InvalidStateTransition"
    INVALID_STORAGE_CREDENTIAL = "InvalidStorageCredential"
    INVALID_STORAGE_NAME = "InvalidStorageName"
    INVALID_TAGS = "InvalidTags"
    INVALID_VM_SIZE = "InvalidVmSize"
    INVALID_WATCH = "InvalidWatch"
    JOB_LOST = "JobLost"
    JOB_NOT_TERMINATED = "JobNotTerminated"
    JOB_OUT_OF_MEMORY = "JobOutOfMemory"
    JOB_PREEMPTED = "JobPreempted"
    JOB_REQUEUED = "JobRequeued"
    BUDGET_EXCEEDED = "BudgetExceeded"  # ours: the cluster's daily budget is spent, new jobs wait
    GPU_UNDERUTILIZED = "GpuUnderutilized"  # ours: every GPU of the job stayed below its utilizationPolicy's threshold
    JOB_TIMED_OUT = "JobTimedOut"
    LAUNCH_FAILED = "LaunchFailed"
    LEASE_LOST = "LeaseLost"
    LOCAL_NODES_REFUSED = "LocalNodesRefused"
    LOCK_TIMEOUT = "LockTimeout"
    NODE_FAILED = "NodeFailed"
    NODE_LOST = "NodeLost"
    NODE_BOOT_TIMEOUT = "NodeBootTimeout"
    NODE_EVICTED = "NodeEvicted"
    NODE_NOT_FOUND = "NodeNotFound"
    NODE_UNREACHABLE = "NodeUnreachable"
    NOT_SUPPORTED = "NotSupported"
    OUTPUT_DIRECTORY_NOT_FOUND = "OutputDirectoryNotFound"
    SSH_AUTHENTICATION_FAILED = "SSHAuthenticationFailed"
    SECRETS_UNREADABLE = "SecretsUnreadable"
    SLURM_ERROR = "SlurmError"
    SLURM_UNAVAILABLE = "SlurmUnavailable"
    SOURCE_NOT_FOUND = "SourceNotFound"
    STALE_RECORD = "StaleRecord"
    START_FAILED = "StartFailed"
    STORAGE_AUTHORIZATION_FAILED = "StorageAuthorizationFailed"
    STORAGE_UNAVAILABLE = "StorageUnavailable"
    STORAGE_UNREACHABLE = "StorageUnreachable"
    UNKNOWN_HOST_KEY = "UnknownHostKey"
    UNSUPPORTED_MOUNT = "UnsupportedMount"
    UPLOAD_FAILED = "UploadFailed"
    WAIT_TIMEOUT = "WaitTimeout"


TRANSIENT_CODES = frozenset(
    {ErrorCode.CONTROL_STORE_UNAVAILABLE, ErrorCode.STORAGE_UNAVAILABLE}
)  # worth waiting through: storage is down or slow


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message may quote it: its repr, cut to ``limit``, so a 5 MB input gives a short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


class BatchAIError(Exception):
    """An error with a Batch AI code, a human message and the thing it is about."""

    def __init__(self, code: ErrorCode, message: str, target: str | None = None, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (at {target})" if target else ""))
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []

    def to_json(self) -> dict[str, Any]:
        """Batch AI's error body: ``{code, message, target?, details?}``."""
        body: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.target:
            body["target"] = self.target
        if self.details:
            body["details"] = self.details
        return body


class InvalidSpec(BatchAIError):
    """A job or cluster spec that cannot be accepted; raised before anything is created."""

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(ErrorCode.INVALID_SPEC, message, target)


class StaleRecord(BatchAIError):
    """A conditional write lost a race: someone else changed the record first."""

    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.PRECONDITION_FAILED, f"record {key} changed since it was read", key)


class RecordExists(BatchAIError):
    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.CONFLICT, f"record {key} already exists", key)
