"""The API of the provider: clusters, jobs, output files. What the CLI, the hooks and the controller call.

Reads (``show``, ``list``, ``wait``) answer from records: one record read, no lease, no write,
no node touched. They may kick a background pass for the cluster (passes.py), which never
delays their answer. Writes record the user's intent and, where the user expects to see it
take effect (create or resize a cluster, terminate a job, delete a cluster), run one pass under
the cluster's lease. Submitting a job writes its records and kicks a pass: its cost does not
depend on how many jobs wait. All validation happens before the first record is written: a
bad spec creates nothing.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .control import ControlStore, SecretVault, lock, update
from .control.local import LocalControlStore, LocalSecretVault
from .data import DataStore, OutputFile
from .data.local import LocalDataStore
from .errors import TRANSIENT_CODES, BatchAIError, ErrorCode, InvalidSpec, RecordExists
from .launch import JobContext, NodeSlot, job_plans
from .layout import NodeLayout, job_output_segment
from .names import check_scope
from .pools import NodePool, node_hour_rate
from .pools.local import LocalNodePool
from .prices import Rate
from .reading.outputs import OutputFiles
from .reading.readmodels import ClusterView, JobView, cluster_view, job_view
from .reading.waiting import JobWaiters
from .records import (
    ClusterRecord,
    ExecutionState,
    JobOrigin,
    JobRecord,
    NodeRecord,
    NodeState,
    cluster_key,
    job_key,
    lease_name,
    move_job,
    node_key,
    origin_key,
    read_cluster,
    read_job,
    read_node,
    record_new_node,
    spec_hash,
    utc_now,
)
from .scheduling.passes import Passes
from .scheduling.reconcile import Reconciler
from .scheduling.snapshot import read_snapshot
from .secretfields import split_cluster_secrets, split_job_secrets
from .settings import WAIT_POLL_S, Settings
from .spec import MAX_NODE_COUNT, ClusterSpec, JobSpec, ManualScaleSettings, ScaleSettings, check_name, unfilled_placeholders
from .transport.clusterkeys import ClusterKey
from .transport.handle import NodeHandle
from .usage import usage_report

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_WORKSPACE", "Service", "Settings"]

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = "default"
DEFAULT_EXPERIMENT = "default"
DEFAULT_LOCAL_NODES = 2
PARTITION_MAX_AGE_S = 30.0  # how old a partition's node list may be when a submit checks a job's size against it
TERMINATED = {"code": ErrorCode.JOB_TERMINATED, "message": "The job was terminated by the user"}


def default_home() -> Path:
    """$BATCHAI_HOME or ~/.batchai, made absolute: the agents it starts run elsewhere (cwd /)."""
    return Path(os.environ.get("BATCHAI_HOME") or Path.home() / ".batchai").absolute()


class Service:
    def __init__(
        self,
        store: ControlStore,
        vault: SecretVault,
        pool: NodePool,
        data: DataStore,
        settings: Settings | None = None,
        kind: str = "reader",
        scheduler: type[Reconciler] = Reconciler,
    ) -> None:
        """``kind`` says who runs passes here (reader, controller); ``scheduler`` who places jobs (config.backends)."""
        self.store = store
        self.vault = vault
        self.pool = pool
        pool.remember_in(store)
        self.data = data
        self.settings = settings or Settings()
        self.passes = Passes(store, vault, pool, data, self.settings, kind, scheduler)
        self.waiters = JobWaiters(store, self.passes.kick)
        self.passes.listeners.append(self.waiters.wake)
        self._pool_known = False
        if kind == "controller":
            self._ensure_pool()

    @classmethod
    def embedded(
        cls,
        home: str | os.PathLike[str] | None = None,
        nodes: int | None = None,
        settings: Settings | None = None,
        pool: NodePool | None = None,
        kind: str = "reader",
        scheduler: type[Reconciler] = Reconciler,
    ) -> Service:
        """The embedded default: local store, local storage folders and N local nodes under ``home``.

        ``pool`` (and its ``scheduler``) replaces the local nodes (an SSH pool whose hosts see
        ``home/storage`` at the same path, e.g. over NFS, or a Slurm partition).
        """
        root = Path(home).absolute() if home else default_home()
        count = nodes if nodes is not None else int(os.environ.get("BATCHAI_LOCAL_NODES", DEFAULT_LOCAL_NODES))
        return cls(
            LocalControlStore(root / "control"),
            LocalSecretVault(root / "secrets"),
            pool or LocalNodePool(root, count, env_allow=settings.job_env_allow if settings else ()),
            LocalDataStore(root / "storage"),
            settings,
            kind,
            scheduler,
        )

    # -- pool ---------------------------------------------------------------------------
    def _ensure_pool(self) -> None:
        """Records for the pool's machines that have none yet: written by the first write of a
        process (a cluster's creation or resize, a job's submit) or the controller, never by a
        reader, so a connection test or a page leaves the store as it found it."""
        if self._pool_known:
            return
        known = set(self.store.list("pool/"))
        for node_id, address, root, gpus in self.pool.inventory():
            if node_key(node_id) not in known:
                record_new_node(self.store, node_id, address, root, gpus)
        self._pool_known = True  # only once written: a store that failed halfway is tried again by the next write

    def pool_nodes(self) -> list[NodeRecord]:
        """Records of the machines in the current pool (records of machines no longer configured are ignored)."""
        current = {node_id for node_id, *_ in self.pool.inventory()}
        return [NodeRecord.model_validate(found.data) for key, found in self.store.read_many("pool/") if key[len("pool/") :] in current]

    def node_handle(self, node: NodeRecord) -> NodeHandle:
        return NodeHandle(node.node_id, self.pool.transport(node.node_id), NodeLayout(node.root))

    def node_record(self, node_id: str) -> NodeRecord | None:
        return read_node(self.store, node_id)

    def _view(self, cluster: ClusterRecord) -> ClusterView:
        return cluster_view(cluster, self.settings.subscription, self.settings.resource_group, self.cluster_rate(cluster))

    def _job_view(self, job: JobRecord) -> JobView:
        currency = self.settings.prices.currency if self.settings.prices else "USD"
        return job_view(job, self.settings.subscription, self.settings.resource_group, currency=currency)

    def cluster_rate(self, cluster: ClusterRecord) -> Rate:
        """A node-hour of the cluster: for Azure VMs, the size its nodes are (the pool's label of one of them)."""
        return node_hour_rate(self.pool, cluster, self.settings.prices, [node.node_id for node in cluster.nodes])

    # -- clusters -----------------------------------------------------------------------
    def create_cluster(
        self, name: str, spec: ClusterSpec, workspace: str = DEFAULT_WORKSPACE, update_existing: bool = False, shared_surface: bool = False
    ) -> ClusterView:
        """Create (idempotently: the same spec returns the existing cluster) and start allocating nodes.

        ``shared_surface``: from the REST API; a setup task or mount command on nodes that are this
        machine would run as our own user (see ``_check_shared_surface``)."""
        check_name(name, "cluster")
        check_name(workspace, "workspace")
        setup = spec.node_setup
        if shared_surface and setup and (setup.setup_task or (setup.mount_volumes and setup.mount_volumes.unmanaged_file_systems)):
            self._check_shared_surface("cluster", confined=False)
        stored, secrets = split_cluster_secrets(spec)
        self._check_storage(spec)
        self._check_vm_size(spec)
        self._check_elastic_pool_free(workspace, name)
        self._ensure_pool()
        if self.pool.cluster_ssh:
            key = ClusterKey.generate()
            secrets["ssh_key"] = {"private": key.private, "public": key.public}
        self.data.links(spec.node_setup.mount_volumes if spec.node_setup else None, "nodeSetup.mountVolumes")
        digest = spec_hash(stored)
        now = utc_now()
        scale = spec.scale_settings
        if scale.manual is not None:
            target = scale.manual.target_node_count
        else:
            assert scale.auto_scale is not None  # ScaleSettings holds one of the two
            target = scale.auto_scale.initial_node_count or scale.auto_scale.minimum_node_count
        record = ClusterRecord(
            workspace=workspace,
            name=name,
            uuid=str(uuid.uuid4()),
            spec=stored,
            spec_hash=digest,
            creation_time=now,
            provisioning_state_transition_time=now,
            allocation_state_transition_time=now,
            target_node_count=target,
            live_index=True,
        )
        try:
            self.vault.put(f"cluster-{record.uuid}", secrets)
            self.store.create(record.key, record.to_doc())
        except RecordExists:
            self.vault.delete(f"cluster-{record.uuid}")
            existing, _ = read_cluster(self.store, workspace, name)
            if existing.spec_hash != digest:
                if not update_existing:
                    raise BatchAIError(ErrorCode.CLUSTER_ALREADY_EXISTS, f"cluster {name} exists with a different spec", name) from None
                return self.update_cluster_scale(name, spec.scale_settings, workspace)
        return self.reconcile_cluster(workspace, name)

    def _check_vm_size(self, spec: ClusterSpec) -> None:
        priority = self.pool.priority_problem(spec.vm_priority)
        if priority:
            raise BatchAIError(ErrorCode.INVALID_SPEC, priority, "vmPriority")
        problem = self.pool.vm_size_problem(spec.vm_size)
        if problem:
            raise BatchAIError(
                ErrorCode.INVALID_VM_SIZE,
                problem,
                "vmSize",
            )

    def _check_elastic_pool_free(self, workspace: str, name: str) -> None:
        """One cluster per elastic pool: two clusters' autoscale would start and deallocate the same instances."""
        if not self.pool.elastic:
            return
        others = sorted(set(self.all_clusters()) - {(workspace, name)})
        if others:
            raise BatchAIError(
                ErrorCode.INVALID_POOL,
                f"the connection's pool of VMs serves one cluster, and cluster {'/'.join(others[0])} uses it: "
                "delete that one, or use another connection",
                "cluster",
            )

    def _check_storage(self, spec: JobSpec | ClusterSpec) -> None:
        missing = unfilled_placeholders(spec)
        if missing:
            raise InvalidSpec(
                f"{missing[0]}: storage account placeholder not filled; pass --storage-account-name or set AZURE_BATCHAI_STORAGE_ACCOUNT",
                missing[0],
            )

    def show_cluster(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> ClusterView:
        """As the cluster's last pass published it (one record read); may kick a pass in the background."""
        cluster, _ = read_cluster(self.store, workspace, name)
        self.passes.kick(workspace, name)
        return self._view(cluster)

    def list_clusters(self, workspace: str = DEFAULT_WORKSPACE) -> list[ClusterView]:
        clusters = [ClusterRecord.model_validate(found.data) for _, found in self.store.read_many(f"clusters/{workspace}/")]
        for cluster in clusters:
            self.passes.kick(workspace, cluster.name)
        return [self._view(cluster) for cluster in clusters]

    def all_clusters(self) -> list[tuple[str, str]]:
        """(workspace, name) of every cluster of the store (what a controller looks after)."""
        return [tuple(key.split("/")[1:3]) for key in self.store.list("clusters/")]  # type: ignore[misc]

    def resize_cluster(self, name: str, target: int, workspace: str = DEFAULT_WORKSPACE) -> ClusterView:
        """``az batchai cluster resize -t``: manual scale to ``target`` (keeps the deallocation option)."""
        if not 0 <= target <= MAX_NODE_COUNT:
            raise InvalidSpec(f"target node count must be 0-{MAX_NODE_COUNT}, got {target}", "targetNodeCount")
        current = read_cluster(self.store, workspace, name)[0].parsed_spec()
        option = current.scale_settings.manual.node_deallocation_option if current.scale_settings.manual else None
        manual = ManualScaleSettings(target_node_count=target, **({"node_deallocation_option": option} if option else {}))
        return self.update_cluster_scale(name, ScaleSettings(manual=manual), workspace)

    def update_cluster_scale(self, name: str, scale: ScaleSettings, workspace: str = DEFAULT_WORKSPACE) -> ClusterView:
        """Batch AI's cluster PATCH: replace ``scaleSettings`` only, then one pass to act on it."""
        read_cluster(self.store, workspace, name)
        self._ensure_pool()

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            record = ClusterRecord.model_validate(doc)
            spec = {**record.spec, "scaleSettings": scale.to_json()}
            target = scale.manual.target_node_count if scale.manual else record.target_node_count
            return record.model_copy(update={"spec": spec, "spec_hash": spec_hash(spec), "target_node_count": target}).to_doc()

        update(self.store, cluster_key(workspace, name), change)
        return self.reconcile_cluster(workspace, name)

    def delete_cluster(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> None:
        """Fail the cluster's queued and running jobs (``ClusterDeleted``), release every node, drop the record."""
        cluster, _ = read_cluster(self.store, workspace, name)
        with lock(self.store, lease_name(workspace, name)) as lease:
            self.passes.forget(lease, workspace, name)
            snapshot = read_snapshot(self.store, self.pool, workspace, name)
            self.passes.scheduler(self.store, self.vault, self.pool, self.data, self.settings, snapshot, lease).delete_everything()
            self.store.delete(cluster.key)
            self.passes.forget(lease, workspace, name)
        self.vault.delete(f"cluster-{cluster.uuid}")

    def reconcile_cluster(self, workspace: str, name: str) -> ClusterView:
        """One pass now, under the cluster's lease (waiting for it, bounded); returns the cluster view."""
        return self._view(self.passes.run_now(workspace, name))

    # -- jobs ---------------------------------------------------------------------------
    def create_job(
        self,
        cluster: str,
        name: str,
        spec: JobSpec,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
        scope: tuple[str, str] | None = None,
        shared_surface: bool = False,
        origin: JobOrigin | None = None,
    ) -> JobView:
        """Submit a job. The same name with the same spec returns the existing job (safe to retry).

        ``shared_surface``: the job comes from a surface many people reach (the REST API); see
        ``_check_shared_surface``. With ``job_user``, container jobs are refused: their processes
        would run as the Docker daemon's user.

        ``scope``: (subscription, resource group) of ``jobOutputDirectoryPathSegment`` when the
        caller names its own, as the REST API's paths do; default the service's settings.

        ``origin``: the Airflow task instance submitting it; its index entry lets the task's own
        view in the Airflow UI find the job (one more write, for DAG submits only).

        Three writes (the sealed secrets, the record, its live entry) and a kick: nothing here
        grows with the queue. The record comes before its live entry, so an entry always names a
        record; a submit that dies in between leaves a job that its retry, or the next pass that
        meets it, gives its entry.
        """
        for value, what in ((name, "job"), (experiment, "experiment"), (workspace, "workspace")):
            check_name(value, what)
        if scope is not None:
            check_scope(*scope)
        if shared_surface:
            mounts = bool(spec.mount_volumes and spec.mount_volumes.unmanaged_file_systems)
            self._check_shared_surface("job", confined=bool(self.settings.job_user) and not mounts)
        if self.settings.job_user and spec.container_settings:
            raise InvalidSpec(
                f"containerSettings: this connection runs jobs as job_user {self.settings.job_user}, and a container's"
                " processes would run as the Docker daemon's user instead",
                "containerSettings",
            )
        if spec.cluster and spec.cluster.id.rsplit("/", 1)[-1] != cluster:
            raise InvalidSpec(f"cluster.id names {spec.cluster.id!r} but the job is submitted to cluster {cluster!r}", "cluster.id")
        cluster_record, _ = read_cluster(self.store, workspace, cluster)
        self._ensure_pool()
        self._check_feasible(cluster_record, spec)
        self._check_storage(spec)
        links = self.data.links(spec.mount_volumes, "mountVolumes")
        stored, secrets = split_job_secrets(spec)
        digest = spec_hash({"cluster": cluster, **stored})
        job_uuid = str(uuid.uuid4())
        subscription, group = scope or (self.settings.subscription, self.settings.resource_group)
        segment = job_output_segment(subscription, group, workspace, experiment, name, job_uuid)
        probe_nodes = [NodeSlot(f"probe-{i}", "127.0.0.1", f"/probe/{i}") for i in range(spec.node_count)]
        job_plans(spec, probe_nodes, JobContext(workspace, experiment, name, job_uuid, segment, "probe", links), list(secrets["env"]))
        now = utc_now()
        record = JobRecord(
            workspace=workspace,
            experiment=experiment,
            name=name,
            uuid=job_uuid,
            cluster=cluster,
            spec=stored,
            spec_hash=digest,
            priority=spec.effective_priority,
            creation_time=now,
            execution_state_transition_time=now,
            segment=segment,
            origin=origin,
        )
        self.vault.put(f"job-{job_uuid}", secrets)
        try:
            self.store.create(record.key, record.to_doc())
        except RecordExists:
            self.vault.delete(f"job-{job_uuid}")
            existing, _ = read_job(self.store, workspace, experiment, name)
            if existing.spec_hash != digest:
                raise BatchAIError(
                    ErrorCode.JOB_ALREADY_EXISTS, f"job {name} exists in experiment {experiment} with a different spec", name
                ) from None
            if not existing.execution_state.finished:
                self._ensure_live_entry(existing)
                self.passes.kick(workspace, cluster)
            return self._job_view(existing)
        self._ensure_live_entry(record)
        if origin is not None:
            self._index_origin(origin, record)
        log.info("job %s queued on cluster %s", record.shown, cluster)
        self.passes.kick(workspace, cluster, urgent=True)
        return self._job_view(record)

    def _index_origin(self, origin: JobOrigin, job: JobRecord) -> None:
        """A task's newest try wins: its entry names the job that try submitted."""
        entry = {"workspace": job.workspace, "experiment": job.experiment, "name": job.name}
        try:
            self.store.create(origin.key, entry)  # a task's first try: one request
        except RecordExists:
            update(self.store, origin.key, lambda _: entry)

    def job_of_task(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> JobRecord | None:
        """The job an Airflow task instance submitted (its newest try's), None when it submitted none."""
        found = self.store.read(origin_key(dag_id, run_id, task_id, map_index))
        if found is None:
            return None
        try:
            return read_job(self.store, found.data["workspace"], found.data["experiment"], found.data["name"])[0]
        except BatchAIError as error:
            if error.code == ErrorCode.JOB_NOT_FOUND:
                return None  # deleted since
            raise

    def _ensure_live_entry(self, job: JobRecord) -> None:
        try:
            self.store.create(job.live_key, {"created": utc_now().isoformat()})
        except RecordExists:
            pass

    def _check_shared_surface(self, what: str, confined: bool) -> None:
        """A job or cluster from a surface many people reach (the REST API), not from a DAG or the CLI,
        whose authors already run code here: on nodes that are this machine, what it runs as our own
        user could read our processes' secrets. ``confined``: everything it runs runs as job_user."""
        if not self.pool.beside_control_plane or self.settings.local_jobs_from_shared_surfaces:
            return
        if confined and os.geteuid() == 0:
            return
        why = "sets job_user (and this service runs as root, so its agents can switch to it)" if what == "job" else "opts in"
        raise BatchAIError(
            ErrorCode.LOCAL_NODES_REFUSED,
            f"this service's nodes are the machine it runs on, and this {what} would run commands there as the service's"
            f" own user (setup tasks and mount commands always do): refused from the REST API unless the connection"
            f" {why}, or an admin sets local_jobs_from_shared_surfaces",
            "cluster",
        )

    def _check_feasible(self, cluster: ClusterRecord, spec: JobSpec) -> None:
        limit = self.pool.capacity(cluster.parsed_spec().vm_size, max_age_s=PARTITION_MAX_AGE_S)
        cluster_max = cluster.parsed_spec().max_node_count
        if cluster_max is not None:
            limit = min(limit, cluster_max)
        if spec.node_count > limit:
            raise BatchAIError(
                ErrorCode.INSUFFICIENT_NODES,
                f"nodeCount {spec.node_count} exceeds the {limit} node(s) cluster {cluster.name} can ever have",
                "nodeCount",
            )
        if spec.utilization_policy is not None:
            settled = [n for n in self.pool_nodes() if n.cluster == cluster.member and n.state not in (NodeState.FREE, NodeState.PREPARING)]
            if settled and not any(n.gpus for n in settled):
                raise BatchAIError(
                    ErrorCode.INVALID_SPEC,
                    f"cluster {cluster.name}'s nodes have no GPUs (nvidia-smi found none): an idle-GPU policy cannot apply",
                    "properties.utilizationPolicy",
                )

    def show_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> JobView:
        """From the job's record (one read); an unfinished job's cluster may get a pass in the background."""
        job, _ = read_job(self.store, workspace, experiment, name)
        if not job.execution_state.finished:
            self.passes.kick(workspace, job.cluster)
        return self._job_view(job)

    def refresh_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> JobView:
        """For a caller that waits anyway: a pass that is due (or a job end the watch sees) runs first, in this thread.

        Never waits for the lease (another process's pass is left to it) and never raises what
        the pass met; the answer is the job's record after it.
        """
        job, _ = read_job(self.store, workspace, experiment, name)
        if job.execution_state.finished:
            return self._job_view(job)
        try:
            ran = self.passes.maybe_pass((workspace, job.cluster))
        except Exception as error:  # the pass is best effort here; the record still answers
            log.warning("pass over cluster %s/%s while waiting for %s: %s", workspace, job.cluster, name, error)
            ran = False
        if ran:
            job, _ = read_job(self.store, workspace, experiment, name)
        return self._job_view(job)

    def usage_report(self, since: str, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """Usage and cost by day, cluster and experiment since ``since`` (a UTC day): two listings, no pass."""
        clusters = [ClusterRecord.model_validate(found.data) for _, found in self.store.read_many(f"clusters/{workspace}/")]
        jobs = [JobRecord.model_validate(found.data) for _, found in self.store.read_many(f"jobs/{workspace}/")]
        return usage_report([(c, self.cluster_rate(c)) for c in clusters], jobs, since, utc_now())

    def list_jobs(self, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> list[JobView]:
        jobs = [JobRecord.model_validate(found.data) for _, found in self.store.read_many(f"jobs/{workspace}/{experiment}/")]
        for cluster in sorted({job.cluster for job in jobs if not job.execution_state.finished}):
            self.passes.kick(workspace, cluster)
        return [self._job_view(job) for job in jobs]

    def wait_job(
        self,
        name: str,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
        timeout_s: float | None = None,
        poll_s: float = WAIT_POLL_S,
        on_poll: Callable[[JobView], None] | None = None,
    ) -> JobView:
        """Poll until the job has succeeded or failed; BatchAIError('WaitTimeout') after ``timeout_s``.

        Storage that is down (each call ends within its deadline) is waited through: the job
        runs on without it, and the wait only ends on its own deadline.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                view = self.refresh_job(name, experiment, workspace)
            except BatchAIError as error:
                if error.code not in TRANSIENT_CODES or (deadline is not None and time.monotonic() > deadline):
                    raise
                log.warning("waiting for job %s: %s (retrying)", name, error.message)
                time.sleep(max(poll_s, 1.0))
                continue
            if on_poll:
                on_poll(view)
            if view.finished:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise BatchAIError(ErrorCode.WAIT_TIMEOUT, f"job {name} still {view.execution_state.value} after {timeout_s} s", name)
            time.sleep(poll_s)

    def terminate_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> JobView:
        """running → terminating → failed; queued → failed; finished: unchanged. Done in a pass under the lease."""
        job, _ = read_job(self.store, workspace, experiment, name)
        if not job.execution_state.finished:
            try:
                self.passes.run_now(workspace, job.cluster, terminations={job.key: TERMINATED})
            except BatchAIError as error:
                if error.code == ErrorCode.CLUSTER_NOT_FOUND:
                    self._fail_orphan(job)
                elif read_job(self.store, workspace, experiment, name)[0].execution_state == ExecutionState.QUEUED:
                    raise  # nothing was done: say why
                else:  # the termination is written; what else the pass met is not this call's failure
                    log.warning("terminating job %s: the rest of the pass over cluster %s failed: %s", name, job.cluster, error)
        return self._job_view(read_job(self.store, workspace, experiment, name)[0])

    def _fail_orphan(self, job: JobRecord) -> None:
        """A live job whose cluster record is gone: nothing runs it any more, so it fails here."""

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            current = JobRecord.model_validate(doc)
            if current.execution_state.finished:
                return None
            if current.execution_state == ExecutionState.RUNNING:
                current = move_job(current, ExecutionState.TERMINATING)
            return move_job(current, ExecutionState.FAILED, errors=[TERMINATED], exit_code=-1 if current.nodes else None).to_doc()

        update(self.store, job.key, change)
        self.store.delete(job.live_key)
        self.vault.delete(f"job-{job.uuid}")

    def delete_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> None:
        job, _ = read_job(self.store, workspace, experiment, name)
        if not job.execution_state.finished and self.terminate_job(name, experiment, workspace).execution_state != ExecutionState.FAILED:
            raise BatchAIError(
                ErrorCode.JOB_NOT_TERMINATED,
                f"job {name} is still terminating (a node has not confirmed the stop): delete it once it has failed",
                name,
            )
        self.store.delete(job_key(workspace, experiment, name))
        self.store.delete(job.live_key)
        self.vault.delete(f"job-{job.uuid}")

    # -- files --------------------------------------------------------------------------
    def list_output_files(
        self,
        job: str,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
        output_directory_id: str = "stdouterr",
        directory: str = ".",
        link_expiry_minutes: int = 60,
        max_results: int | None = None,
        marker: str | None = None,
    ) -> list[OutputFile]:
        """Batch AI File objects sorted by name: all of them, or a page of ``max_results`` (1-1000) after ``marker``.

        A page's last name is the marker of the next one, as Batch AI's ``nextLink`` carried it.
        """
        if not 5 <= link_expiry_minutes <= 600:
            raise InvalidSpec(f"linkexpiryinminutes must be 5..600, got {link_expiry_minutes}", "linkexpiryinminutes")
        if max_results is not None and not 1 <= max_results <= 1000:
            raise InvalidSpec(f"maxresults must be 1..1000, got {max_results}", "maxresults")
        files = self.output_files(job, experiment, workspace).list(output_directory_id, directory, link_expiry_minutes)
        files = sorted(files, key=lambda f: f.name)
        if marker is not None:
            files = [f for f in files if f.name > marker]
        return files if max_results is None else files[:max_results]

    def output_files(self, job: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> OutputFiles:
        """A job's output folders, located once: hold on to it to poll a job's files cheaply."""
        return self.files_of(read_job(self.store, workspace, experiment, job)[0])

    def files_of(self, job: JobRecord) -> OutputFiles:
        """The output folders of a job whose record the caller has read already (no read again)."""
        return OutputFiles(self.store, self.pool, self.data, job)

    def read_output_file(
        self,
        job: str,
        path: str,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
        output_directory_id: str = "stdouterr",
        offset: int = 0,
        length: int | None = None,
    ) -> bytes | None:
        """Bytes of an output file from ``offset`` (for streaming); None while the file does not exist."""
        return self.output_files(job, experiment, workspace).read(output_directory_id, path, offset, length)
