"""A cluster as one reconcile pass sees it: its record, the pool's nodes and its live jobs, read once.

The pass decides on this snapshot and writes each change as a compare-and-swap against the
ETag kept here, so a record that moved meanwhile is noticed instead of overwritten. What it
reads grows with the cluster's live jobs and the pool's nodes, never with finished jobs: live
jobs are found through their ``live/`` entries, not by listing the workspace's history. A
process that ran the cluster's previous pass too may hand in the job records it kept
(``known_jobs``): between passes of one owner nothing else changes a live job's record, so
only entries new since then are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from airflow_batchai.nodes import NodePool, eligible
from airflow_batchai.records import (
    ClusterRecord,
    JobRecord,
    NodeRecord,
    job_key_of_live,
    live_prefix,
    read_cluster,
    utc_now,
)
from airflow_batchai.store import ControlStore

ORPHAN_GRACE = timedelta(seconds=60)  # a live entry without its job record: a submit between its two writes, or one that died there


@dataclass
class Snapshot:
    cluster: ClusterRecord
    nodes: dict[str, NodeRecord]  # every node of the current pool, by id
    jobs: dict[str, JobRecord]  # the cluster's live jobs, by job key
    eligible: frozenset[str] = frozenset()  # pool nodes this cluster may claim (labels match its vmSize)
    etags: dict[str, str] = field(default_factory=dict)  # record key -> ETag as read (or as last written)
    stale_live: list[str] = field(default_factory=list)  # live entries to remove: their job ended or is gone

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
    now: datetime | None = None,
) -> Snapshot:
    """One read of everything a pass needs; ClusterNotFound when the cluster is gone."""
    now = now or utc_now()
    cluster, cluster_etag = read_cluster(store, workspace, name)
    etags = {cluster.key: cluster_etag}
    inventory = {node_id for node_id, *_ in pool.inventory()}
    nodes = {}
    for key, found in store.read_many("pool/"):
        node = NodeRecord.model_validate(found.data)
        if node.node_id in inventory:
            nodes[node.node_id] = node
            etags[key] = found.etag
    jobs: dict[str, JobRecord] = {}
    stale: list[str] = []
    known = known_jobs or {}
    for live in store.list(live_prefix(workspace, name)):
        key = job_key_of_live(live)
        if key in known:
            job, etag = known[key]
        else:
            found = store.read(key)
            if found is None:
                if _older_than(store, live, now, ORPHAN_GRACE):
                    stale.append(live)
                continue
            job, etag = JobRecord.model_validate(found.data), found.etag
        if job.cluster != name or job.execution_state.finished:
            stale.append(live)
            continue
        jobs[key] = job
        etags[key] = etag
    vm_size = cluster.parsed_spec().vm_size
    claimable = frozenset(node_id for node_id in nodes if eligible(pool.labels(node_id), vm_size))
    return Snapshot(cluster, nodes, jobs, claimable, etags, stale)


def _older_than(store: ControlStore, live: str, now: datetime, age: timedelta) -> bool:
    found = store.read(live)
    if found is None:
        return False
    try:
        created = datetime.fromisoformat(found.data["created"])
    except (KeyError, TypeError, ValueError):
        return True
    return now - created > age
