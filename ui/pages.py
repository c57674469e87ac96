"""HTML of the Batch AI view: plain server-rendered pages, every value escaped.

No JavaScript bundle to build or ship: the pages render in the Airflow UI's frame (an
external view) and on their own (the extra link opens a job's page), and refresh themselves
every ``REFRESH_S`` while anything is still moving.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from airflow_batchai.ui.charts import resource_charts
from airflow_batchai.ui_links import UI_PREFIX, job_page_path

REFRESH_S = 10
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:20px 0 8px} h3{font-size:14px;margin:14px 0 6px;color:#52606d}
table{border-collapse:collapse;width:100%;font-size:13px;margin-bottom:8px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f5f7fa;font-weight:600} a{color:#0b6bcb;text-decoration:none} a:hover{text-decoration:underline}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#e4e7eb}
.succeeded,.steady,.idle{background:#d1f2dc}.failed,.unusable{background:#fde2e1}.running{background:#d6e9ff}
.queued,.preparing,.resizing{background:#fff3c4}.terminating,.leaving{background:#ffe3c4}
.muted{color:#7b8794} pre{background:#f5f7fa;padding:8px;overflow:auto;font-size:12px}
"""


def _state(value: Any) -> str:
    text = escape(str(value))
    return f'<span class="state {text}">{text}</span>'


def _cell(value: Any) -> str:
    if value is None or value == "":
        return '<span class="muted">&ndash;</span>'
    return escape(str(value))


def _time(value: str | None) -> str:
    """``2026-12-02T05:27:14.767633+00:00`` → ``2026-12-02 05:27:14 UTC`` (the full value on hover)."""
    if not value:
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return _cell(value)
    return f'<span title="{escape(value)}">{moment:%Y-%m-%d %H:%M:%S} UTC</span>'


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.3f}"


def _cost(cost: dict[str, Any] | None) -> str:
    """An estimate with its currency, or why there is none (never a made-up 0)."""
    if not cost:
        return ""
    if cost.get("amount") is None:
        return f'<span class="muted" title="{escape(str(cost.get("reason") or ""))}">unknown</span>'
    return escape(f"{cost['amount']:.2f} {cost.get('currency') or ''}".strip())


def _page(title: str, body: str, moving: bool) -> str:
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if moving else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>{refresh}'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _job_link(job: dict[str, Any]) -> str:
    return f'<a href="{escape(job_page_path(job["workspace"], job["experiment"], job["name"]))}">{escape(job["name"])}</a>'


def overview_page(data: dict[str, Any]) -> str:
    counts = ("idleNodeCount", "runningNodeCount", "preparingNodeCount", "unusableNodeCount", "leavingNodeCount")
    clusters = [
        [
            escape(c["workspace"]),
            f"<b>{escape(c['name'])}</b>",
            _cell(c.get("vmSize")),
            _state(c["allocationState"]),
            f"{c['currentNodeCount']} / {c['targetNodeCount']}",
            *[_cell(c["nodeStateCounts"][key]) for key in counts],
            _hours((c.get("today") or {}).get("nodeSeconds")),
            _hours(((c.get("today") or {}).get("byState") or {}).get("idle", {}).get("nodeSeconds")),
            _cost((c.get("today") or {}).get("estimatedCost")),
            _cell("; ".join(f"{e.get('code')}: {e.get('message')}" for e in c.get("errors") or [])),
        ]
        for c in data["clusters"]
    ]
    nodes = [
        [
            escape(n["nodeId"]),
            escape(n["address"]),
            _state(n["state"]),
            _cell(n["cluster"]),
            _cell(n["job"]),
            _cell(n["gpus"]),
            _cell(", ".join(n["errors"])),
        ]
        for n in data["nodes"]
    ]
    sections = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job in data["jobs"]:
        groups.setdefault((job["workspace"], job["experiment"]), []).append(job)
    for (workspace, experiment), jobs in sorted(groups.items()):
        rows = [
            [
                _job_link(j),
                escape(j["cluster"]),
                escape(j["toolType"]),
                _cell(j["nodeCount"]),
                _state(j["executionState"]),
                _time(j["creationTime"]),
                _time(j["startTime"]),
                _time(j["endTime"]),
                _cell(j["exitCode"]),
            ]
            for j in jobs
        ]
        headers = ["Job", "Cluster", "Toolkit", "Nodes", "State", "Created", "Started", "Ended", "Exit code"]
        sections.append(f"<h3>Experiment {escape(experiment)} <span class='muted'>(workspace {escape(workspace)})</span></h3>")
        sections.append(_table(headers, rows, "no jobs"))
    shown = len(data["jobs"])
    more = f'<p class="muted">the newest {shown} of {data["jobCount"]} jobs</p>' if data["jobCount"] > shown else ""
    cluster_headers = ["Workspace", "Cluster", "VM size", "Allocation", "Nodes / target", "Idle", "Running", "Preparing"]
    body = (
        "<h1>Batch AI</h1><h2>Clusters</h2>"
        + _table([*cluster_headers, "Unusable", "Leaving", "Node-h today", "Idle-h today", "Cost today", "Errors"], clusters, "no clusters")
        + "<h2>Nodes</h2>"
        + _table(["Node", "Address", "State", "Cluster", "Current job", "GPUs", "Errors"], nodes, "no nodes in the pool")
        + "<h2>Jobs</h2>"
        + ("".join(sections) or '<p class="muted">no jobs</p>')
        + more
    )
    moving = any(c["allocationState"] != "steady" for c in data["clusters"]) or any(
        j["executionState"] in ("queued", "running", "terminating") for j in data["jobs"]
    )
    return _page("Batch AI", body, moving)


def job_page(details: dict[str, Any], workspace: str, experiment: str) -> str:
    job, files = details["job"], details["files"]
    info = job["executionInfo"]
    base = job_page_path(workspace, experiment, job["name"])
    facts = [
        ("State", _state(job["executionState"])),
        ("Cluster", escape(job["cluster"]["id"].rsplit("/", 1)[-1])),
        ("Experiment", escape(experiment)),
        ("Workspace", escape(workspace)),
        ("Toolkit", escape(job["toolType"])),
        ("Nodes", _cell(job.get("nodeCount"))),
        ("Created", _time(job["creationTime"])),
        ("Started", _time(info["startTime"])),
        ("Ended", _time(info["endTime"])),
        ("Exit code", _cell(info["exitCode"])),
        ("Errors", _cell("; ".join(f"{e.get('code')}: {e.get('message')}" for e in info.get("errors") or []))),
        ("Output segment", escape(job["jobOutputDirectoryPathSegment"])),
        ("Waiting because", _cell(info.get("queueReason"))),
        ("Node-hours", _hours((job.get("usage") or {}).get("nodeSeconds"))),
        ("GPU-hours", _cell((job.get("usage") or {}).get("gpuHours"))),
        ("Estimated cost", _cost((job.get("usage") or {}).get("estimatedCost"))),
    ]
    rows = [
        [f'<a href="{escape(base)}/files/{quote(f["name"])}">{escape(f["name"])}</a>', _cell(f["contentLength"]), _time(f["lastModified"])]
        for f in files
    ]
    body = (
        f'<p><a href="{UI_PREFIX}/">← Batch AI</a></p><h1>Job {escape(job["name"])}</h1>'
        + "<table>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
        + "</table><h2>Resources</h2>"
        + resource_charts(details.get("resources") or [])
        + "<h2>stdout / stderr</h2>"
        + _table(["File", "Size (bytes)", "Modified"], rows, "no output yet")
    )
    return _page(f"Batch AI job {job['name']}", body, job["executionState"] in ("queued", "running", "terminating"))
