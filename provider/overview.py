"""What the Batch AI view of the Airflow UI shows: clusters, nodes and jobs, as the portal's blade did.

Read-only, and cheap to ask for often: three listings of the control store (clusters, pool
nodes, jobs), however many of each there are; no pass is kicked, no node is contacted, no URL
is signed. Job files are listed only for the one job a page shows.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .agent.protocol import resources_file
from .data import OutputFile
from .errors import BatchAIError
from .reading.outputs import OutputFiles
from .reading.readmodels import ClusterView, JobView, cluster_view, job_view
from .reading.scalars import ScalarReader
from .records import ClusterRecord, ExecutionState, JobRecord, NodeRecord, read_job, utc_now

if TYPE_CHECKING:
    from .service import Service

MAX_JOBS_SHOWN = 500  # newest first: a page stays quick with thousands of jobs in the store
MAX_NODES_CHARTED = 16
MAX_GPU_READS = 25  # running jobs on one page whose GPUs are shown
GPU_TAIL_BYTES = 2048  # the last point of a resources file, with up to 16 GPUs
MAX_OUTPUT_FILES_SHOWN = 100  # per output directory, its top folder: the CLI lists the rest
STDERR_TAIL_BYTES = 4096
MAX_SERIES_BYTES = 2 * 2**20  # an agent's file stays near 100 KB (resources.py): anything larger is not read whole
STREAM_PREFIXES = ("stdout", "stderr", "execution")
SCALARS = ScalarReader()  # what each job's event files yielded so far, kept for the next refresh of its page


def overview(
    service: Service,
    experiment: str | None = None,
    cluster: str | None = None,
    state: str | None = None,
    offset: int = 0,
    limit: int = MAX_JOBS_SHOWN,
) -> dict[str, Any]:
    """{clusters, nodes, jobs}: the jobs that match the filters, newest first, ``limit`` of them from
    ``offset``; with what the filters may choose from, and each running job's GPUs as last sampled."""
    sub, rg = service.settings.subscription, service.settings.resource_group
    clusters = [ClusterRecord.model_validate(found.data) for _, found in service.store.read_many("clusters/")]
    nodes = [NodeRecord.model_validate(found.data) for _, found in service.store.read_many("pool/")]
    jobs = [JobRecord.model_validate(found.data) for _, found in service.store.read_many("jobs/")]
    choices = {
        "experiment": sorted({job.experiment for job in jobs}),
        "cluster": sorted({job.cluster for job in jobs} | {record.name for record in clusters}),
        "state": [value.value for value in ExecutionState],
    }
    matching = [
        job
        for job in jobs
        if (not experiment or job.experiment == experiment)
        and (not cluster or job.cluster == cluster)
        and (not state or job.execution_state.value == state)
    ]
    matching.sort(key=lambda job: job.creation_time, reverse=True)
    shown = matching[offset : offset + limit]
    running = [job for job in shown if job.execution_state == ExecutionState.RUNNING and job.nodes][:MAX_GPU_READS]
    gpu_now = {job.key: latest_gpus(service, job) for job in running}
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
        "jobs": [{**_job_summary(job, job_view(job, sub, rg)), "gpuNow": gpu_now.get(job.key)} for job in shown],
        "jobCount": len(matching),
        "offset": offset,
        "limit": limit,
        "filters": {"experiment": experiment, "cluster": cluster, "state": state},
        "choices": choices,
    }


def latest_gpus(service: Service, record: JobRecord) -> list[float] | None:
    """The GPU utilisation (%) of a running job's first node as its agent last sampled it; [] with no GPU.

    Reads only the end of the node's resources file, where the last point is (the agent writes the
    points last, compactly): a page of many running jobs costs a small read each, not their series.
    """
    name = resources_file(record.nodes[0])
    try:
        files = service.files_of(record)
        size = next((f.content_length for f in files.list("stdouterr", urls=False) if f.name == name), None)
        if not size:
            return None
        tail = files.read("stdouterr", name, max(0, size - GPU_TAIL_BYTES), GPU_TAIL_BYTES) or b""
    except BatchAIError:
        return None
    points = re.findall(rb"\{[^{}]*\}", tail)
    try:
        last = json.loads(points[-1]) if points else None
    except ValueError:
        return None
    if not isinstance(last, dict):
        return None
    values = last.get("gpu") or []
    return [float(v) for v in values if isinstance(v, (int, float))]


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


def job_details(service: Service, workspace: str, experiment: str, name: str, record: JobRecord | None = None) -> dict[str, Any]:
    """What a job's page shows: its view (secrets already out of it), its stdout/stderr files, its output
    directories' files, its nodes' resource samples and its training curves; names and sizes, never URLs.

    Costs a handful of reads: the record, a listing per folder, and only the bytes of event files
    appended since this process last looked (reading/scalars.py). ``record``: the job's, when the caller has it.
    """
    if record is None:
        record, _ = read_job(service.store, workspace, experiment, name)
    spec = record.parsed_spec()
    view = job_view(record, service.settings.subscription, service.settings.resource_group)
    files = service.files_of(record)
    streams = [
        {"name": info.name, "contentLength": info.content_length, "lastModified": _when(info)}
        for info in _listing(files, "stdouterr")
        if info.is_file and info.name.startswith(STREAM_PREFIXES)
    ]
    streams.sort(key=lambda info: str(info["name"]))
    outputs = [
        {
            "id": directory.id,
            "files": [
                {"name": info.name, "type": info.file_type, "contentLength": info.content_length, "lastModified": _when(info)}
                for info in _listing(files, directory.id)[:MAX_OUTPUT_FILES_SHOWN]
            ],
        }
        for directory in spec.output_directories or []
    ]
    failed = record.execution_state == ExecutionState.FAILED
    return {
        "job": view.to_json(),
        "files": streams,
        "outputs": outputs,
        "toolkit": spec.toolkit.model_dump(mode="json", by_alias=True, exclude_none=True),
        "nodes": list(record.nodes),
        "attempts": [{**attempt, "rate": None} for attempt in record.attempts],
        "origin": record.origin.model_dump(mode="json") if record.origin else None,
        "stderrTail": _stderr_tail(files, streams) if failed else None,
        "resources": resource_series(files, record),
        "scalars": SCALARS.curves(files, ended=settled(record)),
    }


def _listing(files: OutputFiles, output_id: str) -> list[OutputFile]:
    try:
        return files.list(output_id, urls=False)
    except BatchAIError:
        return []  # the folder does not exist before the job starts, or its storage is unreachable


def _when(info: OutputFile) -> str | None:
    return info.last_modified.isoformat() if info.last_modified else None


def _stderr_tail(files: OutputFiles, streams: list[dict[str, Any]]) -> str | None:
    """The last lines of a failed job's first stderr file: usually the traceback that says why."""
    stderr = next((s for s in streams if s["name"].startswith("stderr")), None)
    if stderr is None:
        return None
    offset = max(0, int(stderr["contentLength"] or 0) - STDERR_TAIL_BYTES)
    try:
        data = files.read("stdouterr", stderr["name"], offset, STDERR_TAIL_BYTES)
    except BatchAIError:
        return None
    if not data:
        return None
    text = data.decode(errors="replace")
    return text.split("\n", 1)[-1] if offset else text  # from a whole line


def resource_series(files: OutputFiles, record: JobRecord) -> list[dict[str, Any]]:
    """The agents' resource samples of the job's nodes (resources-<node>.json beside its logs), each bounded.
    An ended job's are read once per process: its page costs no more reads of them."""
    ended = settled(record)
    with _SERIES_LOCK:
        kept = _ENDED_SERIES.get(record.uuid) if ended else None
    if kept is not None:
        return kept
    found = []
    for node in record.nodes[:MAX_NODES_CHARTED]:
        try:
            raw = files.read("stdouterr", resources_file(node), 0, MAX_SERIES_BYTES)
            document = json.loads(raw) if raw else None
        except (BatchAIError, ValueError):
            continue  # not written yet, or cut mid-write by a reader's limit: the next refresh shows it
        if isinstance(document, dict) and isinstance(document.get("points"), list):
            found.append(document)
    if ended:
        with _SERIES_LOCK:
            _ENDED_SERIES[record.uuid] = found
            while len(_ENDED_SERIES) > MAX_ENDED_KEPT:
                _ENDED_SERIES.popitem(last=False)
    return found


def settled(record: JobRecord) -> bool:
    """Ended long enough ago that its files are all in storage (a node's last uploads follow the job's end)."""
    end = record.end_time
    return record.execution_state.finished and end is not None and (utc_now() - end).total_seconds() > SETTLE_S


SETTLE_S = 120.0
MAX_ENDED_KEPT = 32  # ended jobs whose resource series a process keeps (each at most ~100 KB per node)
_ENDED_SERIES: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_SERIES_LOCK = threading.Lock()
