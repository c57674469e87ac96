"""The Batch AI view's web app, mounted in Airflow's api-server under ``/batchai`` (ui/plugin.py).

Behind Airflow's own authentication: every route needs a user allowed to read DAGs (the session
cookie of the Airflow UI, or a bearer token). Its one write, a job page's Terminate button, needs edit
rights on the job's DAG, a same-origin request and the page's form token. Under ``/arm`` it also serves
Batch AI's REST API (restapi/), where writes need a user allowed to edit DAGs. It reads the control store of
the ``[batchai] ui_connection`` connection (``batchai_default`` unless set), never a node, and
signs no URL: a job's stdout/stderr are served through here, so no SAS token reaches a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import parse_qs

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from airflow.exceptions import AirflowException
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from airflow_batchai.errors import BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.names import check_segment
from airflow_batchai.overview import MAX_JOBS_SHOWN, STREAM_PREFIXES, job_details, overview
from airflow_batchai.records import JobRecord, read_job
from airflow_batchai.restapi.app import create_app as create_rest_api
from airflow_batchai.service import Service
from airflow_batchai.ui import pages
from airflow_batchai.ui_links import job_page_path

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

MAX_FILE_BYTES = 4 * 1024 * 1024  # a file page shows at most its last 4 MiB; ?offset= reads from elsewhere
NOT_FOUND = ("ClusterNotFound", "JobNotFound", "ExperimentNotFound")


def _names(request: Request) -> None:
    """Path segments by Batch AI's rules before anything is read: 400 naming the segment, never a 500."""
    for kind, value in request.path_params.items():
        if kind in ("workspace", "experiment", "name"):
            try:
                check_segment("job" if kind == "name" else kind, value)
            except BatchAIError as error:
                raise HTTPException(400, error.message) from None


app = FastAPI(
    title="Batch AI",
    description="Clusters, nodes and jobs of the Batch AI provider",
    dependencies=[Depends(requires_access_dag("GET")), Depends(_names)],
)


def service() -> Service:
    return BatchAIHook.shared_service(ui_connection_id())


READ_METHODS = ("GET", "HEAD")


def rest_api_access(request: Request, user: GetUserDep) -> None:
    """Airflow's auth for the REST API: reading needs DAG read access, everything else DAG edit access.

    A write must carry ``Authorization: Bearer``: a browser sends Airflow's session cookie with
    any cross-site form or link, but never this header, so a page elsewhere cannot write here
    in a signed-in user's name (the SDK always sends the header).
    """
    write = request.method not in READ_METHODS
    if write and not request.headers.get("authorization", "").lower().startswith("bearer "):
        raise HTTPException(403, "writes need an Authorization: Bearer token; a session cookie alone is not accepted")
    requires_access_dag("PUT" if write else "GET")(request, user)


def public_url() -> str | None:
    """Airflow's own ``[api] base_url`` when it is set: operation links start there, never at a request's Host."""
    base = conf.get("api", "base_url", fallback="") or ""
    return base.rstrip("/") if base.startswith(("http://", "https://")) else None


# What a job wrote is shown, never run: a stdout file holding "<script>" stays text in every browser.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'self'"
)


@app.middleware("http")
async def contained_pages(request: Request, call_next: Any) -> Any:
    response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# Batch AI's REST API for the azure-mgmt-batchai SDK (restapi/), at {UI_PREFIX}/arm: base_url=http://<airflow>/batchai/arm
app.mount("/arm", create_rest_api(service, [Depends(rest_api_access)], public_url()))


def _read(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return function(*args, **kwargs)
    except BatchAIError as error:
        raise HTTPException(404 if error.code in NOT_FOUND else 502, f"{error.code}: {error.message}") from error


def _page_or_error(build: Callable[[], str]) -> HTMLResponse:
    """A page, or one that names the connection and the error when the store cannot be read (never a bare 500)."""
    connection = ui_connection_id()
    try:
        return HTMLResponse(build())
    except HTTPException as error:
        if error.status_code != 502:
            raise
        message = str(error.detail)
    except (BatchAIError, AirflowException) as error:
        message = f"{error.code}: {error.message}" if isinstance(error, BatchAIError) else str(error)
    hint = (
        f"The Batch AI view reads the control store of the Airflow connection {connection!r} ([batchai] ui_connection)."
        " Check that its storage account is reachable from the api-server and that its key or identity is still valid;"
        f" this page tries again every {pages.REFRESH_S} s."
    )
    return HTMLResponse(pages.error_page(f"Cannot read Batch AI's store (connection {connection})", message, hint), status_code=503)


def ui_connection_id() -> str:
    return conf.get("batchai", "ui_connection", fallback=BatchAIHook.default_conn_name)


FilterValue = Annotated[str | None, Query(max_length=64, pattern=r"^[-\w.]*$")]


@app.get("/api/overview")
def overview_json(
    experiment: FilterValue = None,
    cluster: FilterValue = None,
    state: FilterValue = None,
    offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_JOBS_SHOWN)] = MAX_JOBS_SHOWN,
) -> dict[str, Any]:
    return _read(overview, service(), experiment or None, cluster or None, state or None, offset, limit)


@app.get("/api/jobs/{workspace}/{experiment}/{name}")
def job_json(workspace: str, experiment: str, name: str) -> dict[str, Any]:
    return _read(job_details, service(), workspace, experiment, name)


@app.get("/", response_class=HTMLResponse)
def overview_html(
    experiment: FilterValue = None,
    cluster: FilterValue = None,
    state: FilterValue = None,
    offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
) -> HTMLResponse:
    return _page_or_error(
        lambda: pages.overview_page(_read(overview, service(), experiment or None, cluster or None, state or None, offset, MAX_JOBS_SHOWN))
    )


@app.get("/jobs/{workspace}/{experiment}/{name}", response_class=HTMLResponse)
def job_html(workspace: str, experiment: str, name: str, user: GetUserDep) -> HTMLResponse:
    return _page_or_error(lambda: _job_page(user, workspace, experiment, name))


@app.get("/ti/{dag_id}/{run_id}/{task_id}/{map_index}", response_class=HTMLResponse)
def task_instance_html(dag_id: str, run_id: str, task_id: str, map_index: str, user: GetUserDep) -> HTMLResponse:
    """The job a task instance submitted, as the task instance's own tab in Airflow shows it (an external
    view whose destination is the task instance: Airflow fills in the ids)."""
    index = int(map_index) if map_index.lstrip("-").isdigit() else -1

    def build() -> str:
        record = _read(service().job_of_task, dag_id, run_id, task_id, index)
        if record is None:
            return pages.no_job_page(dag_id, task_id)
        return _job_page(user, record.workspace, record.experiment, record.name, record)

    return _page_or_error(build)


def _job_page(user: Any, workspace: str, experiment: str, name: str, record: JobRecord | None = None) -> str:
    """A job's page, with the Terminate form for a user who may edit its DAG."""
    details = _read(job_details, service(), workspace, experiment, name, record)
    token = terminate_token(user, workspace, experiment, name) if may_edit(user, details.get("origin")) else None
    return pages.job_page(details, workspace, experiment, token)


def may_edit(user: Any, origin: dict[str, Any] | None) -> bool:
    """Whether the user may edit the DAG that submitted the job (any DAG, for jobs of the CLI or REST API)."""
    details = DagDetails(id=origin["dag_id"]) if origin else None
    return bool(get_auth_manager().is_authorized_dag(method="PUT", details=details, user=user))


def terminate_token(user: Any, workspace: str, experiment: str, name: str, hour: int | None = None) -> str:
    """A form token bound to the user, the job and the hour: a page elsewhere cannot make one, so it
    cannot make a signed-in editor's browser terminate a job (with the session cookie's SameSite=Lax
    and the Origin check, the third guard)."""
    hour = int(time.time() // 3600) if hour is None else hour
    key = (conf.get("api", "secret_key", fallback="") or "").encode() or _PROCESS_KEY
    message = json.dumps([str(user.get_id()), workspace, experiment, name, hour]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


_PROCESS_KEY = secrets.token_bytes(32)


@app.post("/jobs/{workspace}/{experiment}/{name}/terminate")
async def terminate_html(workspace: str, experiment: str, name: str, request: Request, user: GetUserDep) -> RedirectResponse:
    """The job page's Terminate button: DAG edit rights, a same-origin request and the page's token."""
    origin_header = request.headers.get("origin")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none") or (
        origin_header and origin_header != f"{request.url.scheme}://{request.url.netloc}"
    ):
        raise HTTPException(403, "a Terminate must come from the job's own page on this server")
    form = (await request.body()).decode(errors="replace")[:4096]
    token = parse_qs(form).get("csrf", [""])[0]
    now = int(time.time() // 3600)
    if not any(hmac.compare_digest(token, terminate_token(user, workspace, experiment, name, hour)) for hour in (now, now - 1)):
        raise HTTPException(403, "the page's form token is missing or expired: reload the job's page and press Terminate again")
    await run_in_threadpool(_terminate, user, workspace, experiment, name)
    return RedirectResponse(job_page_path(workspace, experiment, name), status_code=303)


def _terminate(user: Any, workspace: str, experiment: str, name: str) -> None:
    svc = service()
    record = _read(lambda: read_job(svc.store, workspace, experiment, name)[0])
    if not may_edit(user, record.origin.model_dump() if record.origin else None):
        raise HTTPException(403, f"terminating job {name} needs edit rights on its DAG")
    _read(svc.terminate_job, name, experiment, workspace)
    log.info("job %s terminated from the Batch AI view by %s", record.shown, user.get_name())


@app.get("/static/time.js")
def time_script() -> Response:
    return Response(TIME_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


# Times as Airflow's UI shows them: in the zone its user chose (kept in localStorage, which this page
# shares, being served from the same origin), else the browser's own.
TIME_SCRIPT = """
(function () {
  var zone;
  try { zone = JSON.parse(window.localStorage.getItem("timezone") || "null"); } catch (e) { zone = null; }
  if (!zone) { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; }
  var format;
  try {
    format = new Intl.DateTimeFormat("sv-SE", {timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"});
  } catch (e) { return; }
  document.querySelectorAll("time[datetime]").forEach(function (node) {
    var moment = new Date(node.getAttribute("datetime"));
    if (!isNaN(moment.getTime())) { node.textContent = format.format(moment); }
  });
})();
"""


@app.get("/jobs/{workspace}/{experiment}/{name}/files/{file_name}", response_class=HTMLResponse)
def job_file(workspace: str, experiment: str, name: str, file_name: str, offset: Annotated[int | None, Query(ge=0)] = None) -> HTMLResponse:
    """A stdout/stderr file on a page of its own: its last 4 MiB, or from ``offset``; ``/raw`` gives the text alone."""
    text, start, size = _file_text(workspace, experiment, name, file_name, offset)
    return HTMLResponse(pages.file_page(workspace, experiment, name, file_name, text, start, size))


@app.get("/jobs/{workspace}/{experiment}/{name}/files/{file_name}/raw", response_class=PlainTextResponse)
def job_file_raw(workspace: str, experiment: str, name: str, file_name: str, offset: Annotated[int | None, Query(ge=0)] = None) -> str:
    return _file_text(workspace, experiment, name, file_name, offset)[0]


def _file_text(workspace: str, experiment: str, name: str, file_name: str, offset: int | None) -> tuple[str, int, int]:
    """(text, where it starts, the file's size)."""
    if "/" in file_name or not file_name.startswith(STREAM_PREFIXES):
        raise HTTPException(404, f"{file_name!r} is not a stdout/stderr file of the job")
    svc = service()
    files = _read(svc.output_files, name, experiment, workspace)
    sizes = {info.name: info.content_length for info in _read(files.list, "stdouterr", ".", 5, False)}
    if file_name not in sizes:
        raise HTTPException(404, f"job {name} has no file {file_name!r} yet")
    size = int(sizes[file_name] or 0)
    start = max(0, size - MAX_FILE_BYTES) if offset is None else offset
    data = _read(files.read, "stdouterr", file_name, start, MAX_FILE_BYTES)
    if data is None:
        raise HTTPException(404, f"job {name} has no file {file_name!r} yet")
    return data.decode(errors="replace"), start, size
