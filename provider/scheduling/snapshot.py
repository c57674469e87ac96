"""A cluster as one reconcile pass sees it: its record, the pool's nodes and its live jobs, read once.

The pass decides on this snapshot and writes each change as a compare-and-swap against the
ETag kept here, so a record that moved meanwhile is noticed instead of overwritten. What it
reads grows with the cluster's live jobs and the pool's nodes, never with finished jobs: live
jobs are found through their ``live/`` entries, not by listing the workspace's history. A
process that ran the cluster's previous pass too may hand in the job records it kept
(``known_jobs``): between passes of one owner nothing else changes a live job's record, so
only entries new since then are read.

A submit writes the job's record first and its live entry second, so an entry without a
record belongs to a deleted job. A live job without an entry (its submitter died in between,
or the cluster predates the entries) is adopted: once per cluster by one scan of the
workspace's jobs, and whenever a node or a termination names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..control import ControlStore
from ..errors import RecordExists
from ..pools import NodeChange, NodePool, eligible
from ..records import ClusterRecord, JobRecord, NodeRecord, NodeState, job_key_of_live, live_prefix, read_cluster, utc_now


@dataclass
class Snapshot:
    cluster: ClusterRecord
    nodes: dict[str, NodeRecord]  # every node of the current pool, by id
    jobs: dict[str, JobRecord]  # the cluster's live jobs, by job key
    eligible: frozenset[str] = frozenset()  # pool nodes this cluster may claim (labels match its vmSize)
    etags: dict[str, str] = field(default_factory=dict)  # record key -> ETag as read (or as last written)
    stale_live: list[str] = field(default_factory=list)  # live entries to remove: their job ended or is gone
    ended_secrets: list[str] = field(default_factory=list)  # vault names of ended jobs whose secrets may have stayed
    backfilled: bool = False  # this read gave every live job of an older cluster its entry
    startable: int = 0  # nodes of this cluster's vmSize an elastic pool could still start (beyond those starting)
    joined: list[tuple[str, str, str, int]] = field(default_factory=list)  # an elastic pool's new machines, no record yet
    elastic: bool = False  # the pool starts and stops its machines (its free ones cost money)
    coming: int = 0  # nodes of this cluster's vmSize an elastic pool is starting now
    lost: dict[str, dict[str, str]] = field(default_factory=dict)  # machines an elastic pool lost on its own (evicted): their error

    @property
    def member(self) -> str:
        return self.cluster.member

    def members(self) -> list[NodeRecord]:
        return sorted((n for n in self.nodes.values() if n.cluster == self.member), key=lambda n: n.node_id)

    def known_jobs(self) -> dict[str, tuple[JobRecord, str]]:
        """What a later pass of the same owner may start from."""
        return {key: (job, self.etags[key]) for key, job in self.jobs.items() if key in self.etags}


def read_snapshot(
    store: ControlStore,
    pool: NodePool,
    workspace: str,
    name: str,
    known_jobs: dict[str, tuple[JobRecord, str]] | None = None,
    also: Iterable[str] = (),
) -> Snapshot:
    """One read of everything a pass needs; ClusterNotFound when the cluster is gone. ``also``: job keys to adopt if live."""
    cluster, cluster_etag = read_cluster(store, workspace, name)
    etags = {cluster.key: cluster_etag}
    machines = pool.inventory()
    addresses = {node_id: address for node_id, address, *_ in machines}
    nodes = {}
    for key, found in store.read_many("pool/"):
        node = NodeRecord.model_validate(found.data)
        if node.node_id in addresses:
            if node.address != addresses[node.node_id]:  # a VM started again may have another address: the next write keeps it
                node = node.model_copy(update={"address": addresses[node.node_id]})
            nodes[node.node_id] = node
            etags[key] = found.etag
    snapshot = Snapshot(cluster, nodes, {}, frozenset(), etags)
    known = known_jobs or {}
    for live in store.list(live_prefix(workspace, name)):
        key = job_key_of_live(live)
        if key in known:
            job, etag = known[key]
        else:
            read = store.read(key)
            if read is None:  # deleted: its submit wrote the record before this entry
                snapshot.stale_live.append(live)
                continue
            job, etag = JobRecord.model_validate(read.data), read.etag
        if job.cluster != name or job.execution_state.finished:
            snapshot.stale_live.append(live)
            if job.execution_state.finished:
                snapshot.ended_secrets.append(f"job-{job.uuid}")
            continue
        snapshot.jobs[key] = job
        etags[key] = etag
    wanted = set(also)
    wanted |= {n.job for n in nodes.values() if n.cluster == cluster.member and n.state in (NodeState.RUNNING, NodeState.LEAVING) and n.job}
    if not cluster.live_index:
        wanted |= {key for key, found in store.read_many(f"jobs/{workspace}/") if found.data.get("cluster") == name}
        snapshot.backfilled = True
    for key in sorted(wanted - set(snapshot.jobs)):
        adopt(store, snapshot, key)
    vm_size = cluster.parsed_spec().vm_size
    snapshot.eligible = frozenset(node_id for node_id in nodes if eligible(pool.labels(node_id), vm_size))
    if pool.elastic:
        snapshot.elastic = True
        snapshot.lost = pool.lost()
        snapshot.joined = [machine for machine in machines if machine[0] not in nodes]
        starting = [node_id for node_id, change in pool.changing().items() if change == NodeChange.STARTING]
        coming = sum(1 for node_id in starting if eligible(pool.labels(node_id), vm_size))
        snapshot.coming = coming
        snapshot.startable = max(0, pool.capacity(vm_size) - len(snapshot.eligible) - coming)
    return snapshot


def adopt(store: ControlStore, snapshot: Snapshot, key: str) -> None:
    """A live job of this cluster that has no live entry gets one, and joins the snapshot."""
    found = store.read(key)
    if found is None:
        return
    job = JobRecord.model_validate(found.data)
    if job.cluster != snapshot.cluster.name or job.execution_state.finished:
        return
    try:
        store.create(job.live_key, {"created": utc_now().isoformat()})
    except RecordExists:
        pass
    snapshot.jobs[key] = job
    snapshot.etags[key] = found.etag
