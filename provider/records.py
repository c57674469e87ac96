"""Cluster, node and job records as kept in the ControlStore, and their allowed transitions.

Records never hold secrets: spec copies are stripped of storage keys, registry passwords and
secret values before they are stored (see ``secretfields``). Every state change
goes through ``move_cluster``/``move_node``/``move_job`` so an illegal change raises instead of
silently corrupting the schedule.

Besides its spec, a cluster record carries what its owner's last pass published: the member
nodes with their states, and a digest of the jobs that run or changed lately. Readers answer
``cluster show`` from it and waiters learn from it which job records moved, so 1,000 waits on
one cluster cost one read of this record per interval. Each live job also has an entry under
``live/<ws>/<cluster>/`` so a pass finds the cluster's live jobs without reading its history.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .accounting import Usage, add_interval, add_seconds, day_of
from .errors import BatchAIError, ErrorCode, RecordExists
from .spec import STORED_SPEC, ClusterSpec, JobSpec

if TYPE_CHECKING:
    from .control import ControlStore

SPEC_CACHE_SIZE = 4096


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ExecutionState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    TERMINATING = "terminating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (ExecutionState.SUCCEEDED, ExecutionState.FAILED)

    @property
    def on_nodes(self) -> bool:
        """Holding nodes: its agents run (or are being stopped)."""
        return self in (ExecutionState.RUNNING, ExecutionState.TERMINATING)


class NodeState(str, Enum):
    FREE = "free"  # in the pool, in no cluster (not a Batch AI state: Batch AI had no pool)
    PREPARING = "preparing"
    IDLE = "idle"
    RUNNING = "running"
    LEAVING = "leaving"
    UNUSABLE = "unusable"


class AllocationState(str, Enum):
    STEADY = "steady"
    RESIZING = "resizing"


JOB_TRANSITIONS: dict[ExecutionState, set[ExecutionState]] = {
    ExecutionState.QUEUED: {ExecutionState.RUNNING, ExecutionState.FAILED},
    ExecutionState.RUNNING: {ExecutionState.TERMINATING, ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.QUEUED},
    ExecutionState.TERMINATING: {ExecutionState.FAILED},
    ExecutionState.SUCCEEDED: set(),
    ExecutionState.FAILED: set(),
}

NODE_TRANSITIONS: dict[NodeState, set[NodeState]] = {
    NodeState.FREE: {NodeState.PREPARING},
    NodeState.PREPARING: {NodeState.IDLE, NodeState.UNUSABLE, NodeState.LEAVING},
    NodeState.IDLE: {NodeState.RUNNING, NodeState.LEAVING, NodeState.UNUSABLE},
    NodeState.RUNNING: {NodeState.IDLE, NodeState.LEAVING, NodeState.UNUSABLE},
    NodeState.LEAVING: {NodeState.FREE, NodeState.UNUSABLE},  # a draining node can be lost too
    NodeState.UNUSABLE: {NodeState.LEAVING, NodeState.FREE, NodeState.PREPARING},  # preparing: a lost node answered again
}

ALLOCATION_TRANSITIONS: dict[AllocationState, set[AllocationState]] = {
    AllocationState.STEADY: {AllocationState.RESIZING},
    AllocationState.RESIZING: {AllocationState.STEADY},
}


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)  # a newer version's fields do not break an older reader

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class NodeSummary(Record):
    """A member node as the cluster's last pass saw it."""

    node_id: str
    address: str
    state: NodeState
    errors: list[dict[str, Any]] = Field(default_factory=list)
    unreachable: bool = False  # the last pass could not reach it (a watcher need not report that again)
    since: datetime | None = None  # in this state since: what is open of its usage is counted from here
    gpus: int = 0
    usage: Usage = Field(default_factory=dict)  # closed seconds of its membership (see accounting)


class JobDigest(Record):
    """A job as the cluster's last pass left it: enough for a waiter to know whether to re-read it,
    and for a watcher to know which agent runs to look at."""

    state: ExecutionState
    etag: str
    changed: datetime
    nodes: list[str] = Field(default_factory=list)
    run: str | None = None  # the agent run id while on nodes
    done_nodes: list[str] = Field(default_factory=list)  # nodes whose run the last pass already saw end
    started: datetime | None = None  # this attempt's start, while on nodes (a Slurm cluster's usage counts from it)
    usage: Usage | None = None  # once finished, on a Slurm cluster: its running node-seconds by day, every attempt


class ClusterRecord(Record):
    workspace: str
    name: str
    uuid: str
    spec: dict[str, Any]  # ClusterSpec JSON, secrets removed
    spec_hash: str
    creation_time: datetime
    provisioning_state: str = "succeeded"
    provisioning_state_transition_time: datetime
    allocation_state: AllocationState = AllocationState.STEADY
    allocation_state_transition_time: datetime
    target_node_count: int = 0
    errors: list[dict[str, Any]] = Field(default_factory=list)
    nodes: list[NodeSummary] = Field(default_factory=list)  # published by the last pass
    jobs: dict[str, JobDigest] = Field(default_factory=dict)  # job key -> digest, published by the last pass
    live_index: bool = False  # every live job has its live/ entry (clusters from before the entries get them once)
    usage: Usage = Field(default_factory=dict)  # node-seconds of nodes that left it (members' are in ``nodes``)
    absorbed: list[str] = Field(default_factory=list)  # the memberships counted in ``usage``, the latest ABSORBED_KEPT
    accounting: str = "nodes"  # "jobs" where nodes are not ours to follow (Slurm): its usage is its jobs' running seconds

    @property
    def key(self) -> str:
        return cluster_key(self.workspace, self.name)

    @property
    def member(self) -> str:
        """How member nodes name their cluster."""
        return f"{self.workspace}/{self.name}"

    def parsed_spec(self) -> ClusterSpec:
        return _parsed(ClusterSpec, self.spec_hash, self.spec)


class NodeRecord(Record):
    """One machine of the pool. ``cluster`` is set while it belongs to a cluster."""

    node_id: str
    address: str
    root: str  # folder on the node under which everything of ours lives
    gpus: int = 0
    state: NodeState = NodeState.FREE
    state_transition_time: datetime
    cluster: str | None = None  # "<workspace>/<cluster>"
    job: str | None = None  # job key while running one
    idle_since: datetime | None = None
    unreachable_since: datetime | None = None  # first failed contact in a row; cleared on success
    probed_at: datetime | None = None  # an unusable node's last try to reach it again (scheduling/decisions.py heals)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    cluster_uuid: str | None = None  # the cluster it belongs to, as created (a cluster made again has another)
    membership: str | None = None  # this stay in a cluster; its usage is counted once, by that id
    usage: Usage = Field(default_factory=dict)  # seconds of this membership, closed at each state change
    departed: dict[str, Any] | None = None  # the last membership that ended: {membership, cluster_uuid, usage}

    @property
    def key(self) -> str:
        return node_key(self.node_id)


class JobOrigin(Record):
    """The Airflow task instance that submitted a job, so its page links back and the task's view finds it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int | None = None

    @property
    def key(self) -> str:
        return origin_key(self.dag_id, self.run_id, self.task_id, self.map_index)


class JobRecord(Record):
    workspace: str
    experiment: str
    name: str
    uuid: str
    cluster: str  # cluster name in the same workspace
    spec: dict[str, Any]  # JobSpec JSON, secrets removed
    spec_hash: str
    priority: int = 0
    creation_time: datetime
    execution_state: ExecutionState = ExecutionState.QUEUED
    execution_state_transition_time: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
    nodes: list[str] = Field(default_factory=list)  # node ids, node rank order
    attempt: int = 0
    attempts: list[dict[str, Any]] = Field(default_factory=list)  # earlier attempts that were requeued, and why
    fence: dict[str, Any] | None = None  # a lost attempt not yet seen stopped: {"run", "nodes", "until"} (scheduling waits)
    segment: str  # jobOutputDirectoryPathSegment
    slurm_job_id: str | None = None  # on a Slurm cluster: the batch job that runs this attempt
    queue_reason: str | None = None  # why a queued job waits, where its scheduler says (Slurm's reason)
    gpus: int = 0  # GPUs of this attempt's nodes, all together (node discovery's count)
    rate: dict[str, Any] | None = None  # a node-hour's price when this attempt started (prices.Rate.to_json)
    origin: JobOrigin | None = None  # submitted by an Airflow task (operators); None from the CLI and the REST API

    @property
    def key(self) -> str:
        return job_key(self.workspace, self.experiment, self.name)

    @property
    def live_key(self) -> str:
        return live_key(self.workspace, self.cluster, self.experiment, self.name)

    @property
    def shown(self) -> str:
        """The job as a user names it, for log lines (not its record's key)."""
        where = f"experiment {self.experiment}" + ("" if self.workspace == "default" else f", workspace {self.workspace}")
        return f"{self.name} ({where})"

    @property
    def run_id(self) -> str:
        """The agent run of this attempt (a requeued job runs again under a new one)."""
        return f"{self.uuid}-{self.attempt}"

    def parsed_spec(self) -> JobSpec:
        """The stored spec as a model, parsed once per process (passes look at every queued job)."""
        return _parsed(JobSpec, self.spec_hash, self.spec)


_SPECS: dict[tuple[type, str], Any] = {}


def _parsed(model: type[Any], digest: str, spec: dict[str, Any]) -> Any:
    found = _SPECS.get((model, digest))
    if found is None:
        if len(_SPECS) >= SPEC_CACHE_SIZE:
            _SPECS.clear()
        try:
            found = _SPECS[(model, digest)] = model.model_validate(spec, context=STORED_SPEC)
        except ValidationError as error:  # a record no rule of today can read: this job or cluster only, named
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise BatchAIError(ErrorCode.INVALID_SPEC, f"the stored spec no longer loads: {where}: {first['msg'][:160]}", where) from None
    return found


def cluster_key(workspace: str, name: str) -> str:
    return f"clusters/{workspace}/{name}"


def job_key(workspace: str, experiment: str, name: str) -> str:
    return f"jobs/{workspace}/{experiment}/{name}"


def origin_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The index entry naming the job a task instance submitted; hashed, as run ids hold ``:`` and ``+``."""
    digest = hashlib.sha256(json.dumps([dag_id, run_id, task_id, map_index]).encode()).hexdigest()[:40]
    return f"origins/{digest}"


def node_key(node_id: str) -> str:
    return f"pool/{node_id}"


def lease_name(workspace: str, cluster: str) -> str:
    """The lease that lets one process at a time run the cluster's passes (and writers change it)."""
    return f"cluster/{workspace}/{cluster}"


def live_key(workspace: str, cluster: str, experiment: str, name: str) -> str:
    return f"live/{workspace}/{cluster}/{experiment}/{name}"


def live_prefix(workspace: str, cluster: str) -> str:
    return f"live/{workspace}/{cluster}/"


def job_key_of_live(key: str) -> str:
    """``live/ws/cluster/exp/name`` → ``jobs/ws/exp/name``."""
    _, workspace, _, experiment, name = key.split("/")
    return job_key(workspace, experiment, name)


def _check(kind: str, transitions: dict[Any, set[Any]], current: Any, target: Any, key: str) -> None:
    if target != current and target not in transitions[current]:
        raise BatchAIError(ErrorCode.INVALID_STATE_TRANSITION, f"{kind} {key} cannot go from {current.value} to {target.value}", key)


def move_job(job: JobRecord, state: ExecutionState, **changes: Any) -> JobRecord:
    """Return a copy of ``job`` in ``state`` (with ``changes``); raise on an illegal transition."""
    _check("job", JOB_TRANSITIONS, job.execution_state, state, job.key)
    now = utc_now()
    update: dict[str, Any] = {"execution_state": state, **changes}
    if state != job.execution_state:
        update["execution_state_transition_time"] = now
    if state == ExecutionState.RUNNING and job.execution_state == ExecutionState.QUEUED:
        update.setdefault("start_time", now)
    if state.finished:
        update.setdefault("end_time", now)
    return job.model_copy(update=update)


MAX_ATTEMPTS_KEPT = 20


def next_attempt(job: JobRecord, why: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The changes that send a running ``job`` back to queued for a fresh attempt (a requeue); the
    attempt that ends here stays in its history, the last ``MAX_ATTEMPTS_KEPT`` of them."""
    ended = {
        "attempt": job.attempt,
        "nodes": list(job.nodes),
        "startTime": job.start_time.isoformat() if job.start_time else None,
        "endTime": now.isoformat(),
        "errors": [why],
        "gpus": job.gpus,
        "rate": job.rate,
    }
    return {
        "nodes": [],
        "attempt": job.attempt + 1,
        "start_time": None,
        "gpus": 0,
        "rate": None,
        "attempts": [*job.attempts, ended][-MAX_ATTEMPTS_KEPT:],
    }


def record_new_node(store: ControlStore, node_id: str, address: str, root: str, gpus: int) -> tuple[NodeRecord, str] | None:
    """A pool machine's first record, free: (it, its ETag), or None when another process wrote one first."""
    record = NodeRecord(node_id=node_id, address=address, root=root, gpus=gpus, state_transition_time=utc_now())
    try:
        return record, store.create(record.key, record.to_doc())
    except RecordExists:
        return None


ABSORBED_KEPT = 1000


def move_node(node: NodeRecord, state: NodeState, boot_s: float = 0.0, **changes: Any) -> NodeRecord:
    """A copy of ``node`` in ``state``. The interval it spent in its old state is closed into its usage
    in the same write; joining a cluster starts a membership (with the VM's ``boot_s``, which the
    cluster asked for), leaving one keeps its usage in ``departed`` until the cluster has counted it."""
    _check("node", NODE_TRANSITIONS, node.state, state, node.node_id)
    now = utc_now()
    update: dict[str, Any] = {"state": state, **changes}
    if state != node.state:
        update["state_transition_time"] = now
        usage = node.usage
        if node.state != NodeState.FREE:
            usage = add_interval(usage, node.state.value, node.state_transition_time, now, node.gpus)
        if node.state == NodeState.FREE:  # joins a cluster
            update["membership"] = f"{node.node_id}@{now.isoformat()}"
            usage = add_seconds({}, "starting", boot_s, day_of(now)) if boot_s > 0 else {}
        elif state == NodeState.FREE:  # leaves it
            update["departed"] = {"membership": node.membership, "cluster_uuid": node.cluster_uuid, "usage": usage}
            update.update(membership=None, cluster_uuid=None)
            usage = {}
        update["usage"] = usage
    if state == NodeState.IDLE and node.state != NodeState.IDLE:
        update["idle_since"] = now
    if state == NodeState.FREE:
        update.update(cluster=None, job=None, idle_since=None)
    return node.model_copy(update=update)


def move_cluster(cluster: ClusterRecord, allocation: AllocationState, **changes: Any) -> ClusterRecord:
    _check("cluster", ALLOCATION_TRANSITIONS, cluster.allocation_state, allocation, cluster.key)
    update: dict[str, Any] = {"allocation_state": allocation, **changes}
    if allocation != cluster.allocation_state:
        update["allocation_state_transition_time"] = utc_now()
    return cluster.model_copy(update=update)


def spec_hash(spec_json: dict[str, Any]) -> str:
    """Stable hash of a redacted spec, for 'same spec?' checks on idempotent create."""
    return hashlib.sha256(json.dumps(spec_json, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_cluster(store: ControlStore, workspace: str, name: str) -> tuple[ClusterRecord, str]:
    """The cluster record and its ETag; ClusterNotFound names the cluster."""
    found = store.read(cluster_key(workspace, name))
    if found is None:
        raise BatchAIError(ErrorCode.CLUSTER_NOT_FOUND, f"The specified cluster {name} is not found", name)
    return ClusterRecord.model_validate(found.data), found.etag


def read_job(store: ControlStore, workspace: str, experiment: str, name: str) -> tuple[JobRecord, str]:
    """The job record and its ETag; JobNotFound names the job and experiment."""
    found = store.read(job_key(workspace, experiment, name))
    if found is None:
        raise BatchAIError(ErrorCode.JOB_NOT_FOUND, f"The specified job {name} is not found in experiment {experiment}", name)
    return JobRecord.model_validate(found.data), found.etag


def read_node(store: ControlStore, node_id: str) -> NodeRecord | None:
    found = store.read(node_key(node_id))
    return NodeRecord.model_validate(found.data) if found else None
