"""HTML of the Batch AI view: plain server-rendered pages, every value escaped.

No JavaScript bundle to build or ship: the pages render in the Airflow UI's frame (an
external view) and on their own (the extra link opens a job's page), and refresh themselves
every ``REFRESH_S`` while anything is still moving.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from airflow_batchai.ui.charts import byte_unit, resource_charts, training_charts
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
.muted{color:#7b8794} pre{background:#f5f7fa;padding:8px;overflow:auto;font-size:12px;max-height:320px}
.error{background:#fde2e1;padding:8px;border-radius:4px} form.filters{margin:0 0 8px;font-size:13px}
form.filters select,form.filters button{font-size:13px;margin-right:8px}
button.danger{background:#d64545;color:#fff;border:0;border-radius:4px;padding:4px 12px;cursor:pointer}
pre.whole{max-height:none} .charts{display:flex;flex-wrap:wrap;gap:8px} .pager a{margin-right:12px}
"""


def _state(value: Any) -> str:
    text = escape(str(value))
    return f'<span class="state {text}">{text}</span>'


def _cell(value: Any) -> str:
    if value is None or value == "":
        return '<span class="muted">&ndash;</span>'
    return escape(str(value))


def _time(value: str | None) -> str:
    """A moment as ``2026-12-02 05:27:14 UTC``, put in the viewer's zone by time.js (Airflow's own zone
    setting, else the browser's); the stored value on hover."""
    if not value:
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value).astimezone(timezone.utc)
    except ValueError:
        return _cell(value)
    return f'<time datetime="{escape(moment.isoformat())}" title="{escape(value)}">{moment:%Y-%m-%d %H:%M:%S} UTC</time>'


def _duration(seconds: float | None) -> str:
    """``3 h 05 min``, ``4 min 07 s``, ``12 s``."""
    if seconds is None:
        return _cell(None)
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _between(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    try:
        until = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
        return (until - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


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
        f'<style>{STYLE}</style><script src="{UI_PREFIX}/static/time.js" defer></script></head><body>{body}</body></html>'
    )


def error_page(title: str, message: str, hint: str) -> str:
    """What the view says when it cannot read: which connection, what failed, what to check."""
    body = (
        f'<p><a href="{UI_PREFIX}/">← Batch AI</a></p><h1>{escape(title)}</h1>'
        f'<p class="error">{escape(message)}</p><p class="muted">{escape(hint)}</p>'
    )
    return _page(title, body, moving=True)


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _job_link(job: dict[str, Any]) -> str:
    return f'<a href="{escape(job_page_path(job["workspace"], job["experiment"], job["name"]))}">{escape(job["name"])}</a>'


def _gpu_now(job: dict[str, Any]) -> str:
    """A running job's GPUs as last sampled: ``87%`` (the mean), every GPU's value on hover."""
    values = job.get("gpuNow")
    if job["executionState"] != "running" or values is None:
        return _cell(None)
    if not values:
        return '<span class="muted" title="nvidia-smi found no GPU on its first node">no GPU</span>'
    mean = sum(values) / len(values)
    return f'<span title="{escape(", ".join(f"GPU {i}: {v:g}%" for i, v in enumerate(values)))}">{mean:.0f}%</span>'


def _filters(data: dict[str, Any]) -> str:
    """A GET form (no side effect): experiment, cluster and state, each from what the store holds."""
    chosen = data.get("filters") or {}
    choices = data.get("choices") or {}
    selects = []
    for field, label in (("experiment", "Experiment"), ("cluster", "Cluster"), ("state", "State")):
        options = [f'<option value="">any {label.lower()}</option>']
        for value in choices.get(field) or []:
            selected = " selected" if value == chosen.get(field) else ""
            options.append(f'<option value="{escape(value)}"{selected}>{escape(value)}</option>')
        selects.append(f'<label>{label} <select name="{field}">{"".join(options)}</select></label>')
    return f'<form class="filters" method="get" action="{UI_PREFIX}/">{"".join(selects)}<button type="submit">Show</button></form>'


def _pager(data: dict[str, Any]) -> str:
    offset, shown, total = data.get("offset", 0), len(data["jobs"]), data["jobCount"]
    if total <= shown and not offset:
        return ""
    chosen = {k: v for k, v in (data.get("filters") or {}).items() if v}
    limit = data.get("limit") or max(shown, 1)
    links = [f'<span class="muted">jobs {offset + 1 if shown else 0}&ndash;{offset + shown} of {total}, newest first</span>']
    if offset > 0:
        links.insert(0, f'<a href="{escape(_query(chosen, max(0, offset - limit)))}">← newer</a>')
    if offset + shown < total:
        links.append(f'<a href="{escape(_query(chosen, offset + limit))}">older →</a>')
    return f'<p class="pager">{"".join(links)}</p>'


def _query(filters: dict[str, str], offset: int) -> str:
    return f"{UI_PREFIX}/?" + urlencode({**filters, **({"offset": offset} if offset else {})})


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
                _gpu_now(j),
                _time(j["creationTime"]),
                _time(j["startTime"]),
                _time(j["endTime"]),
                _duration(_between(j["startTime"], j["endTime"])),
                _cell(j["exitCode"]),
            ]
            for j in jobs
        ]
        headers = ["Job", "Cluster", "Toolkit", "Nodes", "State", "GPU now", "Created", "Started", "Ended", "Duration", "Exit code"]
        sections.append(f"<h3>Experiment {escape(experiment)} <span class='muted'>(workspace {escape(workspace)})</span></h3>")
        sections.append(_table(headers, rows, "no jobs"))
    cluster_headers = ["Workspace", "Cluster", "VM size", "Allocation", "Nodes / target", "Idle", "Running", "Preparing"]
    filtered = any((data.get("filters") or {}).values())
    body = (
        "<h1>Batch AI</h1><h2>Clusters</h2>"
        + _table([*cluster_headers, "Unusable", "Leaving", "Node-h today", "Idle-h today", "Cost today", "Errors"], clusters, "no clusters")
        + "<h2>Nodes</h2>"
        + _table(["Node", "Address", "State", "Cluster", "Current job", "GPUs", "Errors"], nodes, "no nodes in the pool")
        + "<h2>Jobs</h2>"
        + _filters(data)
        + ("".join(sections) or f'<p class="muted">{"no jobs match" if filtered else "no jobs"}</p>')
        + _pager(data)
    )
    moving = any(c["allocationState"] != "steady" for c in data["clusters"]) or any(
        j["executionState"] in ("queued", "running", "terminating") for j in data["jobs"]
    )
    return _page("Batch AI", body, moving)


def job_page(details: dict[str, Any], workspace: str, experiment: str, terminate: str | None = None) -> str:
    """``terminate``: the form's CSRF token, for a user who may edit the job's DAG (None: no button)."""
    job, files = details["job"], details["files"]
    info = job["executionInfo"]
    base = job_page_path(workspace, experiment, job["name"])
    state = job["executionState"]
    usage = job.get("usage") or {}
    queued_until = info.get("startTime") or (None if state == "queued" else info.get("endTime"))
    facts = [
        ("State", _state(state) + _terminate_form(base, state, terminate)),
        ("Cluster", escape(job["cluster"]["id"].rsplit("/", 1)[-1])),
        ("Experiment", escape(experiment)),
        ("Workspace", escape(workspace)),
        ("Submitted by", _origin_link(details.get("origin"))),
        ("Toolkit", escape(job["toolType"])),
        ("Nodes", _cell(job.get("nodeCount"))),
        ("Ran on", _cell(", ".join(details.get("nodes") or []))),
        ("Created", _time(job["creationTime"])),
        ("Queued for", _duration(_between(job["creationTime"], queued_until))),
        ("Started", _time(info["startTime"])),
        ("Ended", _time(info["endTime"])),
        ("Duration", _duration(_between(info["startTime"], info["endTime"]))),
        ("Exit code", _cell(info["exitCode"])),
        ("Errors", _cell("; ".join(f"{e.get('code')}: {e.get('message')}" for e in info.get("errors") or []))),
        ("Waiting because", _cell(info.get("queueReason"))),
        ("Node-hours", _hours(usage.get("nodeSeconds"))),
        ("GPU-hours", _cell(usage.get("gpuHours"))),
        ("Estimated cost", _cost(usage.get("estimatedCost"))),
        ("Output segment", escape(job["jobOutputDirectoryPathSegment"])),
    ]
    rows = [
        [f'<a href="{escape(base)}/files/{quote(f["name"])}">{escape(f["name"])}</a>', _size(f["contentLength"]), _time(f["lastModified"])]
        for f in files
    ]
    tail = details.get("stderrTail")
    body = (
        f'<p><a href="{UI_PREFIX}/">← Batch AI</a></p><h1>Job {escape(job["name"])}</h1>'
        + "<table>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
        + "</table>"
        + (f"<h2>The end of its stderr</h2><pre>{escape(tail)}</pre>" if tail else "")
        + '<h2 id="training">Training curves</h2>'
        + f'<div class="charts">{training_charts(details.get("scalars") or {})}</div>'
        + '<h2 id="resources">Resources</h2>'
        + f'<div class="charts">{resource_charts(details.get("resources") or [])}</div>'
        + "<h2>stdout / stderr</h2>"
        + _table(["File", "Size", "Modified"], rows, "no output yet")
        + _outputs(details.get("outputs") or [])
        + _attempts(details.get("attempts") or [])
        + _toolkit(details.get("toolkit") or {})
    )
    return _page(f"Batch AI job {job['name']}", body, state in ("queued", "running", "terminating"))


def _terminate_form(base: str, state: str, token: str | None) -> str:
    if token is None or state not in ("queued", "running"):
        return ""
    return (
        f' <form method="post" action="{escape(base)}/terminate" style="display:inline">'
        f'<input type="hidden" name="csrf" value="{escape(token)}">'
        '<button class="danger" type="submit" title="Stops the job on every node; it ends failed">Terminate</button></form>'
    )


def _origin_link(origin: dict[str, Any] | None) -> str:
    """The Airflow task instance that submitted the job, in Airflow's own UI."""
    if not origin:
        return '<span class="muted">not an Airflow task (the CLI or the REST API)</span>'
    path = f"/dags/{quote(origin['dag_id'], safe='')}/runs/{quote(origin['run_id'], safe='')}/tasks/{quote(origin['task_id'], safe='')}"
    if origin.get("map_index", -1) >= 0:
        path += f"/mapped/{origin['map_index']}"
    text = f"{origin['dag_id']} / {origin['task_id']}" + (f" [{origin['map_index']}]" if origin.get("map_index", -1) >= 0 else "")
    tries = f" (try {origin['try_number']})" if origin.get("try_number") else ""
    return f'<a href="{escape(path)}" target="_top">{escape(text)}</a>{escape(tries)} <span class="muted">run {escape(origin["run_id"])}</span>'


def _outputs(outputs: list[dict[str, Any]]) -> str:
    parts = []
    for directory in outputs:
        rows = [
            [escape(f["name"] + ("/" if f["type"] == "directory" else "")), _size(f.get("contentLength")), _time(f.get("lastModified"))]
            for f in directory["files"]
        ]
        parts.append(f"<h3>{escape(directory['id'])}</h3>" + _table(["Name", "Size", "Modified"], rows, "nothing written yet"))
    return ("<h2>Output directories</h2>" + "".join(parts)) if parts else ""


def _attempts(attempts: list[dict[str, Any]]) -> str:
    if not attempts:
        return ""
    rows = [
        [
            _cell(a.get("attempt", 0) + 1 if isinstance(a.get("attempt"), int) else None),
            _cell(", ".join(a.get("nodes") or [])),
            _time(a.get("startTime")),
            _time(a.get("endTime")),
            _cell("; ".join(f"{e.get('code')}: {e.get('message')}" for e in a.get("errors") or [])),
        ]
        for a in attempts
    ]
    return "<h2>Earlier attempts</h2>" + _table(["Attempt", "Nodes", "Started", "Ended", "Why it ended"], rows, "")


def _toolkit(settings: dict[str, Any]) -> str:
    """The toolkit's settings as the spec gave them (the command line, script, arguments): no secret is in them."""
    if not settings:
        return ""
    rows = [[escape(key), f"<code>{escape(value if isinstance(value, str) else str(value))}</code>"] for key, value in settings.items()]
    return "<h2>Command</h2>" + _table(["Setting", "Value"], rows, "")


def _size(size: int | None) -> str:
    if size is None:
        return _cell(None)
    unit, scale = byte_unit(size)
    return f"{size} bytes" if scale == 1 else f"{size / scale:.1f} {unit}"


def no_job_page(dag_id: str, task_id: str) -> str:
    body = (
        f"<h1>No Batch AI job</h1><p>Task {escape(task_id)} of DAG {escape(dag_id)} submitted no Batch AI job in this run"
        " (it may not have run yet, or it only waits for a job another task submitted).</p>"
        f'<p><a href="{UI_PREFIX}/">All Batch AI jobs</a></p>'
    )
    return _page("No Batch AI job", body, moving=False)


def file_page(workspace: str, experiment: str, job: str, file_name: str, text: str, start: int, size: int) -> str:
    """A stdout/stderr file with where it is from and a way back; an empty file says so."""
    base = job_page_path(workspace, experiment, job)
    raw = f"{base}/files/{quote(file_name)}/raw"
    where = f"the last {_size(size - start)} of {_size(size)}" if start else _size(size)
    earlier = f' &middot; <a href="{escape(raw)}?offset=0">from the start (raw)</a>' if start else ""
    content = (
        f"<pre>{escape(text)}</pre>" if text else f'<p class="muted">{escape(file_name)} is empty: the job wrote nothing to it yet.</p>'
    )
    body = (
        f'<p><a href="{escape(base)}">← job {escape(job)}</a></p>'
        f"<h1>{escape(file_name)}</h1>"
        f'<p class="muted">{where} &middot; <a href="{escape(raw)}">raw text</a>{earlier}</p>'
        f"{content}"
    )
    return _page(f"{file_name} of job {job}", body, moving=False)
