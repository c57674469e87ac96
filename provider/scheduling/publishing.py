"""What a pass publishes into the cluster record for readers: its nodes, allocation state and a digest of its jobs.

Every ``cluster show`` and every waiter answers from that one record.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from ..accounting import Usage, merge, trimmed
from ..errors import ErrorCode, StaleRecord
from ..pools import CAPACITY_CODES
from ..records import (
    ABSORBED_KEPT,
    AllocationState,
    ClusterRecord,
    JobDigest,
    JobRecord,
    NodeState,
    NodeSummary,
    move_cluster,
    utc_now,
)
from ..usage import job_running_usage

if TYPE_CHECKING:
    from .reconcile import Reconciler

RECENT = timedelta(minutes=5)  # a job that changed stays in the digest this long, so every waiter sees the change
DIGEST_MAX_RECENT = 2000  # and at most this many of them (a waiter whose job fell out re-reads it)

INSUFFICIENT_NODES = ErrorCode.INSUFFICIENT_NODES


def insufficient_nodes(target: int, shortfall: int, vm_size: str | None) -> dict[str, str]:
    labels = f" labelled {vm_size!r} (or unlabelled)" if vm_size else ""
    message = f"the cluster wants {target} node(s) and the pool has {shortfall} too few hosts{labels}: add hosts, or lower the target"
    return {"code": INSUFFICIENT_NODES, "message": message}


def digest_of(job: JobRecord, etag: str, done_nodes: set[str] | None = None, with_usage: bool = False) -> JobDigest:
    """``with_usage``: an ended job's running seconds ride along, for a cluster that counts its jobs (Slurm)."""
    on_nodes = job.execution_state.on_nodes
    return JobDigest(
        state=job.execution_state,
        etag=etag,
        changed=job.execution_state_transition_time,
        nodes=job.nodes if on_nodes else [],
        run=job.run_id if on_nodes else None,
        done_nodes=sorted(done_nodes or ()) if on_nodes else [],
        started=job.start_time if on_nodes else None,
        usage=job_running_usage(job, utc_now()) if with_usage and job.execution_state.finished and job.start_time else None,
    )


class Publishing:
    def __init__(self, p: Reconciler) -> None:
        self.p = p

    def publish(self, target: int, shortfall: int = 0, nodes: list[NodeSummary] | None = None) -> None:
        """Write what readers see into the cluster record, if it changed; a user's resize meanwhile is kept.

        A target the pool cannot meet is said in the cluster's errors (``InsufficientNodes``), not
        left for the user to notice from a count.
        """
        members = self.p.snapshot.members()
        summary = nodes
        if summary is None:
            summary = [
                NodeSummary(
                    node_id=n.node_id,
                    address=n.address,
                    state=n.state,
                    errors=n.errors,
                    unreachable=n.unreachable_since is not None,
                    since=n.state_transition_time,
                    usage=n.usage,
                    gpus=n.gpus,
                )
                for n in members
            ]
            current = [n for n in members if n.state != NodeState.LEAVING]
            moving = any(n.state in (NodeState.PREPARING, NodeState.LEAVING) for n in members) or len(current) != target
        else:  # nodes someone else schedules (Slurm): resizing while some power up or down (a cloud partition's power saving)
            moving = any(n.state in (NodeState.PREPARING, NodeState.LEAVING) for n in summary)
        by_jobs = self.p.counts_jobs  # a partition's nodes are not ours to follow: usage is what our jobs ran
        allocation = AllocationState.RESIZING if moving else AllocationState.STEADY
        key = self.p.cluster.key
        record, etag = self.p.cluster, self.p.snapshot.etags[key]
        problems = self.p.pool.problems()  # an elastic pool's: why the nodes it was asked for did not come
        for _ in range(10):
            jobs = self.digest(record.jobs)
            errors = [e for e in record.errors if e.get("code") != INSUFFICIENT_NODES and e.get("code") not in CAPACITY_CODES]
            if shortfall:
                errors.append(insufficient_nodes(target, shortfall, self.p.spec.vm_size))
            errors += problems
            usage, absorbed = self.absorb(record, jobs if by_jobs else {})
            new = move_cluster(
                record,
                allocation,
                nodes=summary,
                jobs=jobs,
                live_index=record.live_index or self.p.snapshot.backfilled,
                errors=errors,
                usage=usage,
                absorbed=absorbed,
                accounting="jobs" if by_jobs else "nodes",
            )
            if new == record:
                return
            try:
                self.p.snapshot.etags[key] = self.p.store.replace(key, new.to_doc(), etag)
                self.p.snapshot.cluster = self.p.cluster = new
                return
            except StaleRecord:
                found = self.p.store.read(key)
                if found is None:
                    return  # deleted meanwhile
                record, etag = ClusterRecord.model_validate(found.data), found.etag
        raise StaleRecord(key)

    def absorb(self, record: ClusterRecord, jobs: dict[str, JobDigest]) -> tuple[Usage, list[str]]:
        """The usage of nodes that left the cluster, counted once per membership (the node keeps it
        until then, so a pass that died between the node's write and this one loses nothing); on a
        Slurm cluster, of jobs that ended, once per job."""
        usage, absorbed = record.usage, list(record.absorbed)
        for key, digest in jobs.items():
            ended = f"job:{key}@{digest.changed.isoformat()}"
            if digest.usage and ended not in absorbed:
                usage = trimmed(merge(usage, digest.usage))
                absorbed.append(ended)
        for node in self.p.snapshot.nodes.values():
            gone = node.departed or {}
            membership = gone.get("membership")
            if gone.get("cluster_uuid") == record.uuid and membership and membership not in absorbed:
                usage = trimmed(merge(usage, gone.get("usage") or {}))
                absorbed.append(membership)
        return usage, absorbed[-ABSORBED_KEPT:]

    def digest(self, previous: dict[str, JobDigest]) -> dict[str, JobDigest]:
        now = utc_now()
        on_nodes = {
            key: digest_of(job, self.p.snapshot.etags[key], self.p.seen_done.get(job.run_id))
            for key, job in self.p.snapshot.jobs.items()
            if job.execution_state.on_nodes
        }
        recent = {key: d for key, d in previous.items() if key not in on_nodes and now - d.changed < RECENT and not d.state.on_nodes}
        recent.update({key: d for key, d in self.p.changed.items() if key not in on_nodes})
        if len(recent) > DIGEST_MAX_RECENT:
            recent = dict(sorted(recent.items(), key=lambda item: item[1].changed)[-DIGEST_MAX_RECENT:])
        return {**dict(sorted(recent.items())), **on_nodes}
