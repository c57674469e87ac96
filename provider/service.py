"""The API of the provider: clusters, jobs, output files. What the CLI and the Airflow hooks call.

Each call reads records from the ControlStore, acts, and runs ``reconcile`` for the cluster it
touched, so state moves forward whenever anyone looks (there is no daemon to keep alive). All
validation happens before the first record is written: a bad spec creates nothing.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_batchai.clusterkeys import ClusterKey
from airflow_batchai.errors import BatchAIError, InvalidSpec, RecordExists
from airflow_batchai.launch import JobContext, NodeSlot, job_plans
from airflow_batchai.layout import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, NodeLayout, job_output_segment
from airflow_batchai.nodeops import NodeHandle
from airflow_batchai.nodes import NodePool, eligible
from airflow_batchai.nodes.local import LocalNodePool
from airflow_batchai.outputs import OutputFiles
from airflow_batchai.readmodels import cluster_view, job_view, split_cluster_secrets, split_job_secrets
from airflow_batchai.reconcile import Reconciler
from airflow_batchai.records import (
    ClusterRecord,
    JobRecord,
    NodeRecord,
    cluster_key,
    job_key,
    node_key,
    spec_hash,
    utc_now,
)
from airflow_batchai.spec import (
    ClusterSpec,
    JobSpec,
    ManualScaleSettings,
    ScaleSettings,
    check_name,
    unfilled_placeholders,
)
from airflow_batchai.storage.local import LocalDataStore
from airflow_batchai.store import ControlStore, SecretVault, update
from airflow_batchai.store.local import LocalControlStore, LocalSecretVault

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = "default"
DEFAULT_EXPERIMENT = "default"
DEFAULT_LOCAL_NODES = 2
WAIT_POLL_S = 1.0


def default_home() -> Path:
    return Path(os.environ.get("BATCHAI_HOME") or Path.home() / ".batchai")


@dataclass
class Settings:
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    heartbeat_timeout_s: float = 30.0  # agents beat every 2 s; silence this long means the node is lost
    launch_timeout_s: float = 60.0  # a started agent must have written its status by then
    default_storage_account: str = "local"


class Service:
    def __init__(self, store: ControlStore, vault: SecretVault, pool: NodePool, data: LocalDataStore, settings: Settings | None = None):
        self.store = store
        self.vault = vault
        self.pool = pool
        self.data = data
        self.settings = settings or Settings()
        self._ensure_pool()

    @classmethod
    def embedded(
        cls,
        home: str | os.PathLike[str] | None = None,
        nodes: int | None = None,
        settings: Settings | None = None,
        pool: NodePool | None = None,
    ) -> Service:
        """The embedded default: local store, local storage folders and N local nodes under ``home``.

        ``pool`` replaces the local nodes (an SSH pool whose hosts see ``home/storage`` at the
        same path, e.g. over NFS, until Azure Storage arrives).
        """
        root = Path(home) if home else default_home()
        count = nodes if nodes is not None else int(os.environ.get("BATCHAI_LOCAL_NODES", DEFAULT_LOCAL_NODES))
        return cls(
            LocalControlStore(root / "control"),
            LocalSecretVault(root / "secrets"),
            pool or LocalNodePool(root, count),
            LocalDataStore(root / "storage"),
            settings,
        )

    # -- pool ---------------------------------------------------------------------------
    def _ensure_pool(self) -> None:
        for node_id, address, root, gpus in self.pool.inventory():
            if self.store.read(node_key(node_id)) is None:
                record = NodeRecord(node_id=node_id, address=address, root=root, gpus=gpus, state_transition_time=utc_now())
                try:
                    self.store.create(record.key, record.to_doc())
                except RecordExists:
                    pass

    def pool_nodes(self) -> list[NodeRecord]:
        """Records of the machines in the current pool (records of machines no longer configured are ignored)."""
        current = {node_id for node_id, *_ in self.pool.inventory()}
        return [NodeRecord.model_validate(found.data) for key, found in self.store.read_many("pool/") if key[len("pool/") :] in current]

    def node_handle(self, node: NodeRecord) -> NodeHandle:
        return NodeHandle(node.node_id, self.pool.transport(node.node_id), NodeLayout(node.root))

    # -- records ------------------------------------------------------------------------
    def _cluster(self, workspace: str, name: str) -> ClusterRecord:
        found = self.store.read(cluster_key(workspace, name))
        if found is None:
            raise BatchAIError("ClusterNotFound", f"The specified cluster {name} is not found", name)
        return ClusterRecord.model_validate(found.data)

    def _job(self, workspace: str, experiment: str, name: str) -> JobRecord:
        found = self.store.read(job_key(workspace, experiment, name))
        if found is None:
            raise BatchAIError("JobNotFound", f"The specified job {name} is not found in experiment {experiment}", name)
        return JobRecord.model_validate(found.data)

    def cluster_nodes(self, workspace: str, name: str) -> list[NodeRecord]:
        member = f"{workspace}/{name}"
        return [node for node in self.pool_nodes() if node.cluster == member]

    def cluster_jobs(self, workspace: str, name: str) -> list[JobRecord]:
        found = self.store.read_many(f"jobs/{workspace}/")
        return [JobRecord.model_validate(record.data) for _, record in found if record.data["cluster"] == name]

    def save_job(self, job: JobRecord) -> None:
        """Callers hold the cluster's lock, the only writer of a submitted job's state."""
        update(self.store, job.key, lambda _: job.to_doc())

    def node_record(self, node_id: str) -> NodeRecord | None:
        found = self.store.read(node_key(node_id))
        return NodeRecord.model_validate(found.data) if found else None

    def save_node(self, node: NodeRecord) -> None:
        update(self.store, node.key, lambda _: node.to_doc())

    # -- clusters -----------------------------------------------------------------------
    def create_cluster(
        self, name: str, spec: ClusterSpec, workspace: str = DEFAULT_WORKSPACE, update_existing: bool = False
    ) -> dict[str, Any]:
        """Create (idempotently: the same spec returns the existing cluster) and start allocating nodes."""
        check_name(name, "cluster")
        check_name(workspace, "workspace")
        stored, secrets = split_cluster_secrets(spec)
        self._check_storage(spec)
        self._check_vm_size(spec)
        if self.pool.cluster_ssh:
            key = ClusterKey.generate()
            secrets["ssh_key"] = {"private": key.private, "public": key.public}
        self.data.links(spec.node_setup.mount_volumes if spec.node_setup else None, "nodeSetup.mountVolumes")
        digest = spec_hash(stored)
        now = utc_now()
        scale = spec.scale_settings
        target = (
            scale.manual.target_node_count if scale.manual else (scale.auto_scale.initial_node_count or scale.auto_scale.minimum_node_count)
        )  # type: ignore[union-attr]
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
        )
        try:
            self.vault.put(f"cluster-{record.uuid}", secrets)
            self.store.create(record.key, record.to_doc())
        except RecordExists:
            self.vault.delete(f"cluster-{record.uuid}")
            existing = self._cluster(workspace, name)
            if existing.spec_hash != digest:
                if not update_existing:
                    raise BatchAIError("ClusterAlreadyExists", f"cluster {name} exists with a different spec", name) from None
                return self.update_cluster_scale(name, spec.scale_settings, workspace)
        return self.reconcile_cluster(workspace, name)

    def _check_vm_size(self, spec: ClusterSpec) -> None:
        if not any(eligible(self.pool.labels(node_id), spec.vm_size) for node_id, *_ in self.pool.inventory()):
            raise BatchAIError(
                "InvalidVmSize",
                f"no host of the pool serves vmSize {spec.vm_size!r}: label a host with it, or leave a host without labels",
                "vmSize",
            )

    def _check_storage(self, spec: JobSpec | ClusterSpec) -> None:
        missing = unfilled_placeholders(spec)
        if missing:
            raise InvalidSpec(
                f"{missing[0]}: storage account placeholder not filled; pass --storage-account-name or set AZURE_BATCHAI_STORAGE_ACCOUNT",
                missing[0],
            )

    def show_cluster(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        return self.reconcile_cluster(workspace, name)

    def list_clusters(self, workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        return [self.show_cluster(key.rsplit("/", 1)[1], workspace) for key in self.store.list(f"clusters/{workspace}/")]

    def resize_cluster(self, name: str, target: int, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """``az batchai cluster resize -t``: manual scale to ``target`` (keeps the deallocation option)."""
        if target < 0:
            raise InvalidSpec(f"target node count must be >= 0, got {target}", "targetNodeCount")
        current = ClusterSpec.model_validate(self._cluster(workspace, name).spec)
        option = current.scale_settings.manual.node_deallocation_option if current.scale_settings.manual else None
        manual = ManualScaleSettings(target_node_count=target, **({"node_deallocation_option": option} if option else {}))
        return self.update_cluster_scale(name, ScaleSettings(manual=manual), workspace)

    def update_cluster_scale(self, name: str, scale: ScaleSettings, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """Batch AI's cluster PATCH: replace ``scaleSettings`` only."""
        key = cluster_key(workspace, name)
        self._cluster(workspace, name)

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            record = ClusterRecord.model_validate(doc)
            spec = {**record.spec, "scaleSettings": scale.to_json()}
            target = scale.manual.target_node_count if scale.manual else record.target_node_count
            return record.model_copy(update={"spec": spec, "spec_hash": spec_hash(spec), "target_node_count": target}).to_doc()

        update(self.store, key, change)
        return self.reconcile_cluster(workspace, name)

    def delete_cluster(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> None:
        """Fail the cluster's queued and running jobs (``ClusterDeleted``), release every node, drop the record."""
        cluster = self._cluster(workspace, name)
        with self.store.lock(f"cluster/{workspace}/{name}"):
            Reconciler(self, cluster).delete_everything()
            self.store.delete(cluster.key)
        self.vault.delete(f"cluster-{cluster.uuid}")

    def reconcile_cluster(self, workspace: str, name: str) -> dict[str, Any]:
        """One idempotent step towards the desired state (see reconcile.py); returns the cluster view."""
        with self.store.lock(f"cluster/{workspace}/{name}"):
            Reconciler(self, self._cluster(workspace, name)).run()
            cluster = self._cluster(workspace, name)
        return cluster_view(cluster, self.cluster_nodes(workspace, name), self.settings.subscription, self.settings.resource_group)

    # -- jobs ---------------------------------------------------------------------------
    def create_job(
        self,
        cluster: str,
        name: str,
        spec: JobSpec,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
    ) -> dict[str, Any]:
        """Submit a job. The same name with the same spec returns the existing job (safe to retry)."""
        for value, what in ((name, "job"), (experiment, "experiment"), (workspace, "workspace")):
            check_name(value, what)
        if spec.cluster and spec.cluster.id.rsplit("/", 1)[-1] != cluster:
            raise InvalidSpec(f"cluster.id names {spec.cluster.id!r} but the job is submitted to cluster {cluster!r}", "cluster.id")
        cluster_record = self._cluster(workspace, cluster)
        self._check_feasible(cluster_record, spec)
        self._check_storage(spec)
        links = self.data.links(spec.mount_volumes, "mountVolumes")
        stored, secrets = split_job_secrets(spec)
        digest = spec_hash({"cluster": cluster, **stored})
        job_uuid = str(uuid.uuid4())
        segment = job_output_segment(self.settings.subscription, self.settings.resource_group, workspace, experiment, name, job_uuid)
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
        )
        self.vault.put(f"job-{job_uuid}", secrets)
        try:
            self.store.create(record.key, record.to_doc())
        except RecordExists:
            self.vault.delete(f"job-{job_uuid}")
            existing = self._job(workspace, experiment, name)
            if existing.spec_hash != digest:
                raise BatchAIError(
                    "JobAlreadyExists", f"job {name} exists in experiment {experiment} with a different spec", name
                ) from None
            return self.show_job(name, experiment, workspace)
        log.info("job %s queued on cluster %s", record.key, cluster)
        return self.show_job(name, experiment, workspace)

    def _check_feasible(self, cluster: ClusterRecord, spec: JobSpec) -> None:
        limit = len(self.pool.inventory())
        cluster_max = ClusterSpec.model_validate(cluster.spec).max_node_count
        if cluster_max is not None:
            limit = min(limit, cluster_max)
        if spec.node_count > limit:
            raise BatchAIError(
                "InsufficientNodes",
                f"nodeCount {spec.node_count} exceeds the {limit} node(s) cluster {cluster.name} can ever have",
                "nodeCount",
            )

    def show_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        job = self._job(workspace, experiment, name)
        if not job.execution_state.finished:
            try:
                self.reconcile_cluster(workspace, job.cluster)
            except BatchAIError as error:
                if error.code != "ClusterNotFound":
                    raise
            job = self._job(workspace, experiment, name)
        return job_view(job, self.settings.subscription, self.settings.resource_group)

    def list_jobs(self, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        return [self.show_job(key.rsplit("/", 1)[1], experiment, workspace) for key in self.store.list(f"jobs/{workspace}/{experiment}/")]

    def wait_job(
        self,
        name: str,
        experiment: str = DEFAULT_EXPERIMENT,
        workspace: str = DEFAULT_WORKSPACE,
        timeout_s: float | None = None,
        poll_s: float = WAIT_POLL_S,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job has succeeded or failed; BatchAIError('WaitTimeout') after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view = self.show_job(name, experiment, workspace)
            if on_poll:
                on_poll(view)
            if view["executionState"] in ("succeeded", "failed"):
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise BatchAIError("WaitTimeout", f"job {name} still {view['executionState']} after {timeout_s} s", name)
            time.sleep(poll_s)

    def terminate_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """running → terminating → failed; queued → failed; finished: unchanged."""
        job = self._job(workspace, experiment, name)
        if not job.execution_state.finished:
            with self.store.lock(f"cluster/{workspace}/{job.cluster}"):
                job = self._job(workspace, experiment, name)
                cluster = self._cluster(workspace, job.cluster)
                Reconciler(self, cluster).terminate(job, {"code": "JobTerminated", "message": "The job was terminated by the user"})
        return self.show_job(name, experiment, workspace)

    def delete_job(self, name: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> None:
        job = self._job(workspace, experiment, name)
        if not job.execution_state.finished:
            self.terminate_job(name, experiment, workspace)
        self.store.delete(job.key)
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
    ) -> list[dict[str, Any]]:
        """Batch AI File objects sorted by name: all of them, or a page of ``max_results`` (1-1000) after ``marker``.

        A page's last name is the marker of the next one, as Batch AI's ``nextLink`` carried it.
        """
        if not 5 <= link_expiry_minutes <= 600:
            raise InvalidSpec(f"linkexpiryinminutes must be 5..600, got {link_expiry_minutes}", "linkexpiryinminutes")
        if max_results is not None and not 1 <= max_results <= 1000:
            raise InvalidSpec(f"maxresults must be 1..1000, got {max_results}", "maxresults")
        files = OutputFiles(self, self._job(workspace, experiment, job)).list(output_directory_id, directory, link_expiry_minutes)
        files = sorted(files, key=lambda f: f["name"])
        if marker is not None:
            files = [f for f in files if f["name"] > marker]
        return files if max_results is None else files[:max_results]

    def output_files(self, job: str, experiment: str = DEFAULT_EXPERIMENT, workspace: str = DEFAULT_WORKSPACE) -> OutputFiles:
        """A job's output folders, located once: hold on to it to poll a job's files cheaply."""
        return OutputFiles(self, self._job(workspace, experiment, job))

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
        return OutputFiles(self, self._job(workspace, experiment, job)).read(output_directory_id, path, offset, length)
