"""What the Batch AI view of the Airflow UI shows: clusters, nodes and jobs, as the portal's blade did.

Read-only, and cheap to ask for often: three listings of the control store (clusters, pool
nodes, jobs), however many of each there are; no pass is kicked, no node is contacted, no URL
is signed. Job files are listed only for the one job a page shows.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .errors import BatchAIError
from .reading.readmodels import ClusterView, JobView, cluster_view, job_view
from .records import ClusterRecord, JobRecord, NodeRecord, read_job

if TYPE_CHECKING:
    from .service import Service

MAX_JOBS_SHOWN = 500  # newest first: a page stays quick with thousands of jobs in the store
MAX_NODES_CHARTED = 16
MAX_SERIES_BYTES = 2 * 2**20  # an agent's file stays near 100 KB (resources.py): anything larger is not read whole
STREAM_PREFIXES = ("stdout", "stderr", "execution")


def overview(service: Service) -> dict[str, Any]:
    """{clusters, nodes, jobs}: jobs newest first, each with its workspace and experiment."""
    sub, rg = service.settings.subscription, service.settings.resource_group
    clusters = [ClusterRecord.model_validate(found.data) for _, found in service.store.read_many("clusters/")]
    nodes = [NodeRecord.model_validate(found.data) for _, found in service.store.read_many("pool/")]
    jobs = [JobRecord.model_validate(found.data) for _, found in service.store.read_many("jobs/")]
    jobs.sort(key=lambda job: job.creation_time, reverse=True)
    return {
        "clusters": [
            {
                "workspace": record.workspace,
                "targetNodeCount": record.target_node_count,
                **_cluster_summary(cluster_view(record, sub, rg, service.cluster_rate(record))),
            }
            for record in clusters
        ],
        "nodes": [
            {
                "nodeId": node.node_id,
                "address": node.address,
                "state": node.state.value,
                "cluster": node.cluster,
                "job": node.job,
                "gpus": node.gpus,
                "errors": [error.get("code") for error in node.errors],
            }
            for node in nodes
        ],
        "jobs": [_job_summary(job, job_view(job, sub, rg)) for job in jobs[:MAX_JOBS_SHOWN]],
        "jobCount": len(jobs),
    }


def _cluster_summary(view: ClusterView) -> dict[str, Any]:
    keep = ("name", "vmSize", "allocationState", "allocationStateTransitionTime", "currentNodeCount", "nodeStateCounts", "errors")
    shown = view.to_json()
    return {**{key: shown.get(key) for key in keep}, "today": (shown.get("usage") or {}).get("today")}


def _job_summary(record: JobRecord, job: JobView) -> dict[str, Any]:
    view = job.to_json()
    info = view["executionInfo"]
    return {
        "workspace": record.workspace,
        "experiment": record.experiment,
        "name": record.name,
        "cluster": record.cluster,
        "toolType": view["toolType"],
        "nodeCount": view.get("nodeCount"),
        "executionState": view["executionState"],
        "creationTime": view["creationTime"],
        "startTime": info["startTime"],
        "endTime": info["endTime"],
        "exitCode": info["exitCode"],
        "errors": info["errors"],
    }


def job_details(service: Service, workspace: str, experiment: str, name: str) -> dict[str, Any]:
    """One job's view (secrets already out of it) and its stdout/stderr files, names and sizes only."""
    record, _ = read_job(service.store, workspace, experiment, name)
    view = job_view(record, service.settings.subscription, service.settings.resource_group)
    try:
        files = service.output_files(name, experiment, workspace).list("stdouterr", urls=False)
    except BatchAIError:
        files = []  # the folder does not exist before the job starts
    streams = [
        {
            "name": info.name,
            "contentLength": info.content_length,
            "lastModified": info.last_modified.isoformat() if info.last_modified else None,
        }
        for info in files
        if info.is_file and info.name.startswith(STREAM_PREFIXES)
    ]
    return {"job": view.to_json(), "files": sorted(streams, key=lambda info: info["name"]), "resources": resource_series(service, record)}


def resource_series(service: Service, record: JobRecord) -> list[dict[str, Any]]:
    """The agents' resource samples of the job's nodes (resources-<node>.json beside its logs), each bounded."""
    found = []
    for node in record.nodes[:MAX_NODES_CHARTED]:
        safe = re.sub(r"[^-\w.]", "_", node)  # as the agent names it
        name = f"resources-{safe}.json"
        try:
            raw = service.read_output_file(record.name, name, record.experiment, record.workspace, length=MAX_SERIES_BYTES)
            document = json.loads(raw) if raw else None
        except (BatchAIError, ValueError):
            continue  # not written yet, or cut mid-write by a reader's limit: the next refresh shows it
        if isinstance(document, dict) and isinstance(document.get("points"), list):
            found.append(document)
    return found
