"""The Batch AI view's web app, mounted in Airflow's api-server under ``/batchai`` (ui/plugin.py).

Read-only, and behind Airflow's own authentication: every route needs a user allowed to read
DAGs (the session cookie of the Airflow UI, or a bearer token). Under ``/arm`` it also serves
Batch AI's REST API (restapi/), where writes need a user allowed to edit DAGs. It reads the control store of
the ``[batchai] ui_connection`` connection (``batchai_default`` unless set), never a node, and
signs no URL: a job's stdout/stderr are served through here, so no SAS token reaches a browser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from airflow_batchai.errors import BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook
from airflow_batchai.names import check_segment
from airflow_batchai.overview import STREAM_PREFIXES, job_details, overview
from airflow_batchai.restapi.app import create_app as create_rest_api
from airflow_batchai.service import Service
from airflow_batchai.ui import pages

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
    return BatchAIHook.shared_service(conf.get("batchai", "ui_connection", fallback=BatchAIHook.default_conn_name))


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
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
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


@app.get("/api/overview")
def overview_json() -> dict[str, Any]:
    return _read(overview, service())


@app.get("/api/jobs/{workspace}/{experiment}/{name}")
def job_json(workspace: str, experiment: str, name: str) -> dict[str, Any]:
    return _read(job_details, service(), workspace, experiment, name)


@app.get("/", response_class=HTMLResponse)
def overview_html() -> str:
    return pages.overview_page(_read(overview, service()))


@app.get("/jobs/{workspace}/{experiment}/{name}", response_class=HTMLResponse)
def job_html(workspace: str, experiment: str, name: str) -> str:
    return pages.job_page(_read(job_details, service(), workspace, experiment, name), workspace, experiment)


@app.get("/jobs/{workspace}/{experiment}/{name}/files/{file_name}", response_class=PlainTextResponse)
def job_file(workspace: str, experiment: str, name: str, file_name: str, offset: Annotated[int | None, Query(ge=0)] = None) -> str:
    """A stdout/stderr file as text: its last 4 MiB, or from ``offset``."""
    if "/" in file_name or not file_name.startswith(STREAM_PREFIXES):
        raise HTTPException(404, f"{file_name!r} is not a stdout/stderr file of the job")
    svc = service()
    files = _read(svc.output_files, name, experiment, workspace)
    if offset is None:
        sizes = {info.name: info.content_length for info in _read(files.list, "stdouterr", ".", 5, False)}
        if file_name not in sizes:
            raise HTTPException(404, f"job {name} has no file {file_name!r} yet")
        offset = max(0, int(sizes[file_name] or 0) - MAX_FILE_BYTES)
    data = _read(files.read, "stdouterr", file_name, offset, MAX_FILE_BYTES)
    if data is None:
        raise HTTPException(404, f"job {name} has no file {file_name!r} yet")
    return data.decode(errors="replace")
