"""Batch AI's 2018-05-01 REST API under ARM paths, backed by the Service: what the
``azure-mgmt-batchai`` SDK (and ``az batchai`` before it) sends, answered as Azure answered it.

``create_app(service, dependencies)`` builds the FastAPI app; who may call it is the caller's
choice: ``batchai serve`` puts a bearer-token check in front (serve.py), the Airflow UI plugin
puts Airflow's own auth (ui/app.py). Bodies are read as raw JSON and validated by our spec
models, never echoed back: a create body holds secrets (``secrets``, ``accountKey``, the admin
password), and they reach only the Service, which seals them away from records and views.

Long-running operations (deletes, terminate) answer 202 with ``Azure-AsyncOperation`` and
``Location``; the write that starts one stores it under a random id and the server carries it
to the end (operations.py): a poll only reads. Creates answer 200 with ``provisioningState``
final: the SDK accepts only 200 or 202 there, and a cluster's allocation, like Batch AI's, goes
on after its creation has succeeded.

Nothing from the request is trusted before it is checked: every path segment against Azure's
naming rules (names.py), the body's size while it is read (``MAX_BODY_BYTES``, 413) and its
nesting (``MAX_JSON_DEPTH``, 400). URLs this API hands out (operation links, nextLink) start
with the configured public URL, or are relative: never built from the request's Host header.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..errors import BatchAIError, ErrorCode, shown
from ..names import RULES, check_segment
from ..records import read_job
from ..service import Service
from ..spec import ScaleSettings, load_cluster_spec, load_job_spec
from ..workspaces import WorkspaceRecord, Workspaces
from .arm import API_VERSION, PROVIDER, ArmError, Scope, check_api_version, enveloped, from_batchai, page, page_size, resource, skip_token
from .operations import Kind, OperationRecord, Operations

log = logging.getLogger(__name__)

GROUP = "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/" + PROVIDER
WORKSPACE = GROUP + "/workspaces/{workspace}"
EXPERIMENT = WORKSPACE + "/experiments/{experiment}"
JOB = EXPERIMENT + "/jobs/{job}"
LOCATION = "/subscriptions/{subscription}/providers/" + PROVIDER + "/locations/{location}"
POLL_AFTER_S = 1  # Retry-After of an operation in progress (the SDK's own default is 30 s)
MAX_BODY_BYTES = 1024 * 1024  # a job spec is a few KiB; nothing bigger is read
MAX_JSON_DEPTH = 32  # the deepest Batch AI body (a job's mountVolumes) nests 6 levels
FILE_SERVERS_REFUSED = (
    "file servers are not offered here (Batch AI created and ran an NFS VM for you): mount your own NFS "
    'with mountVolumes.unmanagedFileSystems, e.g. {"mountCommand": "mount -t nfs server:/export", "relativeMountPath": "nfs"}'
)
OPERATIONS = [
    ("workspaces/read", "Workspace", "List or get workspaces"),
    ("workspaces/write", "Workspace", "Create or update a workspace"),
    ("workspaces/delete", "Workspace", "Delete a workspace and what it holds"),
    ("workspaces/clusters/read", "Cluster", "List or get clusters"),
    ("workspaces/clusters/write", "Cluster", "Create a cluster or change its scale settings"),
    ("workspaces/clusters/delete", "Cluster", "Delete a cluster"),
    ("workspaces/clusters/remoteLoginInformation/action", "Cluster", "List the nodes' addresses and ports"),
    ("workspaces/experiments/read", "Experiment", "List or get experiments"),
    ("workspaces/experiments/write", "Experiment", "Create an experiment"),
    ("workspaces/experiments/delete", "Experiment", "Delete an experiment and its jobs"),
    ("workspaces/experiments/jobs/read", "Job", "List or get jobs"),
    ("workspaces/experiments/jobs/write", "Job", "Submit a job"),
    ("workspaces/experiments/jobs/delete", "Job", "Delete a job"),
    ("workspaces/experiments/jobs/terminate/action", "Job", "Terminate a job"),
    ("workspaces/experiments/jobs/listOutputFiles/action", "Job", "List a job's output files"),
    ("workspaces/experiments/jobs/remoteLoginInformation/action", "Job", "List the job's nodes' addresses and ports"),
]

ApiVersion = Annotated[str | None, Query(alias="api-version")]
MaxResults = Annotated[int | None, Query(alias="maxresults")]
SkipToken = Annotated[str | None, Query(alias="$skiptoken")]


def _api_version(api_version: ApiVersion = None) -> None:
    check_api_version(api_version)


def _check_names(request: Request) -> None:
    """Every path segment by Azure's naming rules, before anything is looked up (400 naming it)."""
    for kind, value in request.path_params.items():
        if kind in RULES:
            try:
                check_segment(kind, value)
            except BatchAIError as error:
                code = "InvalidResourceGroup" if kind == "resource_group" else "InvalidResourceName"
                raise ArmError(400, code, error.message, kind) from None


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as JSON, or an ARM error that quotes none of it (it may hold secrets).

    Read in chunks and refused (413) as soon as it passes MAX_BODY_BYTES, so an oversized body
    is never held whole; a declared Content-Length over the limit is refused unread.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ArmError(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, f"the request body is over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ArmError(413, ErrorCode.REQUEST_ENTITY_TOO_LARGE, f"the request body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "the request body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def _depth(document: Any) -> int:
    """How deep objects and lists nest (iteratively: the document may be deep enough to break recursion)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


Body = Annotated[dict[str, Any], Depends(_json_body)]


def create_app(service: Callable[[], Service], dependencies: Sequence[Any] = (), public_url: str | None = None) -> FastAPI:
    """The API over ``service()`` (called per request: the hook's shared Service, or one built once).

    ``dependencies`` run first on every request (authentication); the name and api-version
    checks after them. ``public_url``: where clients reach this API (``https://host/prefix``),
    the start of the URLs it hands out; without it they are relative to this server.
    """
    app = FastAPI(
        title="Batch AI REST API (2018-05-01)",
        description="Azure Batch AI's management API, served by airflow-provider-batchai",
        dependencies=[*dependencies, Depends(_check_names), Depends(_api_version)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _handlers(app)
    routes = _Routes(service, public_url.rstrip("/") if public_url else None)
    routes.register(app)
    routes.operations.resume()
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ArmError)
    async def arm_error(request: Request, error: ArmError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(BatchAIError)
    async def batchai_error(request: Request, error: BatchAIError) -> JSONResponse:
        path = request.url.path
        named = path.split("/providers/", 1)[1] if "/providers/" in path else None
        if named:
            named = "/".join(named.split("/")[:7])  # the resource, not its action (…/jobs/j/terminate)
        arm = from_batchai(error, named, request.path_params.get("resource_group"))
        return JSONResponse(arm.body(), status_code=arm.status, headers={"Retry-After": "5"} if arm.status == 503 else None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {
            401: ErrorCode.AUTHENTICATION_FAILED,
            403: ErrorCode.AUTHORIZATION_FAILED,
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.METHOD_NOT_ALLOWED,
        }.get(error.status_code, ErrorCode.BAD_REQUEST)
        return JSONResponse(ArmError(error.status_code, code, str(error.detail)).body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return JSONResponse(ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, message, where).body(), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("Batch AI API: %s %s failed: %s %s", request.method, shown(request.url.path), type(error).__name__, shown(str(error)))
        log.debug("the failure's traceback", exc_info=error)
        body = ArmError(500, ErrorCode.INTERNAL_SERVER_ERROR, "the server met an error; its log has the details").body()
        return JSONResponse(body, status_code=500)


class _Routes:
    def __init__(self, service: Callable[[], Service], public_url: str | None) -> None:
        self.service = service
        self.public_url = public_url
        self.operations = Operations(lambda: self.service().store, self._step)

    def workspaces(self) -> Workspaces:
        svc = self.service()
        return Workspaces(svc.store, svc.settings.resource_group)

    def register(self, app: FastAPI) -> None:
        r = self

        # -- the provider -------------------------------------------------------------------
        @app.get("/providers/" + PROVIDER + "/operations")
        def operations() -> dict[str, Any]:
            return {
                "value": [
                    {
                        "name": f"{PROVIDER}/{name}",
                        "display": {"provider": "Batch AI (airflow-provider-batchai)", "resource": what, "operation": text},
                        "origin": "user,system",
                    }
                    for name, what, text in OPERATIONS
                ]
            }

        @app.get(LOCATION + "/usages")
        def usages(subscription: str, location: str) -> dict[str, Any]:
            svc = r.service()
            clusters = [c for ws in r.workspaces().all() for c in svc.list_clusters(ws.name)]
            in_use = sum(c["currentNodeCount"] for c in clusters)
            limit = svc.pool.capacity()
            return {
                "value": [
                    {"unit": "Count", "currentValue": in_use, "limit": limit, "name": {"value": "nodes", "localizedValue": "Nodes"}},
                    {
                        "unit": "Count",
                        "currentValue": len(clusters),
                        "limit": 1000,
                        "name": {"value": "clusters", "localizedValue": "Clusters"},
                    },
                ]
            }

        # -- workspaces ---------------------------------------------------------------------
        @app.get("/subscriptions/{subscription}/providers/" + PROVIDER + "/workspaces")
        def list_workspaces(request: Request, subscription: str, maxresults: MaxResults = None, token: SkipToken = None) -> dict[str, Any]:
            found = [_workspace(Scope(subscription, w.resource_group), w) for w in r.workspaces().all()]
            return page(found, r.link(request), _query(request), maxresults, skip_token(token))

        @app.get(GROUP + "/workspaces")
        def list_group_workspaces(
            request: Request, subscription: str, resource_group: str, maxresults: MaxResults = None, token: SkipToken = None
        ) -> dict[str, Any]:
            scope = Scope(subscription, resource_group)
            found = [_workspace(scope, w) for w in r.workspaces().all(resource_group)]
            return page(found, r.link(request), _query(request), maxresults, skip_token(token))

        @app.put(WORKSPACE)
        def create_workspace(subscription: str, resource_group: str, workspace: str, body: Body) -> dict[str, Any]:
            record, _ = r.workspaces().create(workspace, resource_group, body.get("location") or "", body.get("tags"))
            return _workspace(Scope(subscription, resource_group), record)

        @app.get(WORKSPACE)
        def get_workspace(subscription: str, resource_group: str, workspace: str) -> dict[str, Any]:
            return _workspace(Scope(subscription, resource_group), r.workspaces().get(workspace, resource_group))

        @app.patch(WORKSPACE)
        def update_workspace(subscription: str, resource_group: str, workspace: str, body: Body) -> dict[str, Any]:
            record = r.workspaces().update_tags(workspace, resource_group, body.get("tags"))
            return _workspace(Scope(subscription, resource_group), record)

        @app.delete(WORKSPACE)
        def delete_workspace(request: Request, subscription: str, resource_group: str, workspace: str) -> Response:
            location = r.workspaces().get(workspace, resource_group).location
            return r.start(request, "deleteWorkspace", subscription, location, resource_group, workspace)

        # -- clusters -----------------------------------------------------------------------
        @app.get(WORKSPACE + "/clusters")
        def list_clusters(
            request: Request, subscription: str, resource_group: str, workspace: str, maxresults: MaxResults = None, token: SkipToken = None
        ) -> dict[str, Any]:
            r.workspaces().get(workspace, resource_group)
            scope = Scope(subscription, resource_group)
            found = [_cluster(scope, workspace, view) for view in r.service().list_clusters(workspace)]
            return page(sorted(found, key=lambda c: c["name"]), r.link(request), _query(request), maxresults, skip_token(token))

        @app.put(WORKSPACE + "/clusters/{cluster}")
        def create_cluster(subscription: str, resource_group: str, workspace: str, cluster: str, body: Body) -> dict[str, Any]:
            r.workspaces().get(workspace, resource_group)
            spec = load_cluster_spec(_properties(body), environ={})
            view = r.service().create_cluster(cluster, spec, workspace, shared_surface=True)
            return _cluster(Scope(subscription, resource_group), workspace, view)

        @app.get(WORKSPACE + "/clusters/{cluster}")
        def get_cluster(subscription: str, resource_group: str, workspace: str, cluster: str) -> dict[str, Any]:
            r.workspaces().get(workspace, resource_group)
            return _cluster(Scope(subscription, resource_group), workspace, r.service().show_cluster(cluster, workspace))

        @app.patch(WORKSPACE + "/clusters/{cluster}")
        def update_cluster(subscription: str, resource_group: str, workspace: str, cluster: str, body: Body) -> dict[str, Any]:
            r.workspaces().get(workspace, resource_group)
            properties = _properties(body)
            svc = r.service()
            if properties.get("scaleSettings") is None:
                view = svc.show_cluster(cluster, workspace)  # nothing to change: Batch AI's PATCH updates scaleSettings only
            else:
                view = svc.update_cluster_scale(cluster, _scale_settings(properties["scaleSettings"]), workspace)
            return _cluster(Scope(subscription, resource_group), workspace, view)

        @app.delete(WORKSPACE + "/clusters/{cluster}")
        def delete_cluster(request: Request, subscription: str, resource_group: str, workspace: str, cluster: str) -> Response:
            ws = r.workspaces().get(workspace, resource_group)
            r.service().show_cluster(cluster, workspace)  # 404 for a cluster that is not there
            return r.start(request, "deleteCluster", subscription, ws.location, resource_group, workspace, cluster)

        @app.api_route(WORKSPACE + "/clusters/{cluster}/listRemoteLoginInformation", methods=["POST", "GET"])
        def cluster_logins(
            request: Request, resource_group: str, workspace: str, cluster: str, maxresults: MaxResults = None, token: SkipToken = None
        ) -> dict[str, Any]:
            r.workspaces().get(workspace, resource_group)
            view = r.service().show_cluster(cluster, workspace)
            logins = [r.login(node["nodeId"], node["ipAddress"]) for node in view["nodes"]]
            return page(logins, r.link(request), _query(request), maxresults, skip_token(token))

        # -- file servers: refused ----------------------------------------------------------
        @app.api_route(WORKSPACE + "/fileServers", methods=["GET"])
        @app.api_route(WORKSPACE + "/fileServers/{file_server}", methods=["GET", "PUT", "DELETE"])
        def file_servers() -> None:
            raise ArmError(400, ErrorCode.FILE_SERVERS_NOT_SUPPORTED, FILE_SERVERS_REFUSED, "fileServers")

        # -- experiments --------------------------------------------------------------------
        @app.get(WORKSPACE + "/experiments")
        def list_experiments(
            request: Request, subscription: str, resource_group: str, workspace: str, maxresults: MaxResults = None, token: SkipToken = None
        ) -> dict[str, Any]:
            ws = r.workspaces()
            ws.get(workspace, resource_group)
            scope = Scope(subscription, resource_group)
            found = [_experiment(scope, e.workspace, e.name, e.creation_time.isoformat()) for e in ws.experiments(workspace)]
            return page(found, r.link(request), _query(request), maxresults, skip_token(token))

        @app.put(EXPERIMENT)
        def create_experiment(subscription: str, resource_group: str, workspace: str, experiment: str) -> dict[str, Any]:
            ws = r.workspaces()
            ws.get(workspace, resource_group)
            record, _ = ws.create_experiment(workspace, experiment)
            return _experiment(Scope(subscription, resource_group), workspace, experiment, record.creation_time.isoformat())

        @app.get(EXPERIMENT)
        def get_experiment(subscription: str, resource_group: str, workspace: str, experiment: str) -> dict[str, Any]:
            ws = r.workspaces()
            ws.get(workspace, resource_group)
            record = ws.get_experiment(workspace, experiment)
            return _experiment(Scope(subscription, resource_group), workspace, experiment, record.creation_time.isoformat())

        @app.delete(EXPERIMENT)
        def delete_experiment(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str) -> Response:
            ws = r.workspaces()
            location = ws.get(workspace, resource_group).location
            ws.get_experiment(workspace, experiment)
            return r.start(request, "deleteExperiment", subscription, location, resource_group, workspace, experiment=experiment)

        # -- jobs ---------------------------------------------------------------------------
        @app.get(EXPERIMENT + "/jobs")
        def list_jobs(
            request: Request,
            subscription: str,
            resource_group: str,
            workspace: str,
            experiment: str,
            maxresults: MaxResults = None,
            token: SkipToken = None,
        ) -> dict[str, Any]:
            r.experiment_of(resource_group, workspace, experiment)
            scope = Scope(subscription, resource_group)
            found = [_job(scope, workspace, experiment, view) for view in r.service().list_jobs(experiment, workspace)]
            return page(sorted(found, key=lambda j: j["name"]), r.link(request), _query(request), maxresults, skip_token(token))

        @app.put(JOB)
        def create_job(subscription: str, resource_group: str, workspace: str, experiment: str, job: str, body: Body) -> dict[str, Any]:
            r.experiment_of(resource_group, workspace, experiment)
            properties = _properties(body)
            cluster = _cluster_of(properties, workspace)
            spec = load_job_spec(properties, environ={})
            view = r.service().create_job(
                cluster, job, spec, experiment, workspace, scope=(subscription, resource_group), shared_surface=True
            )
            return _job(Scope(subscription, resource_group), workspace, experiment, view)

        @app.get(JOB)
        def get_job(subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> dict[str, Any]:
            r.experiment_of(resource_group, workspace, experiment)
            return _job(Scope(subscription, resource_group), workspace, experiment, r.service().show_job(job, experiment, workspace))

        @app.delete(JOB)
        def delete_job(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> Response:
            location = r.experiment_of(resource_group, workspace, experiment).location
            r.service().show_job(job, experiment, workspace)
            return r.start(request, "deleteJob", subscription, location, resource_group, workspace, job, experiment)

        @app.post(JOB + "/terminate")
        def terminate_job(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> Response:
            location = r.experiment_of(resource_group, workspace, experiment).location
            r.service().show_job(job, experiment, workspace)
            return r.start(request, "terminateJob", subscription, location, resource_group, workspace, job, experiment)

        @app.api_route(JOB + "/listOutputFiles", methods=["POST", "GET"])
        def list_output_files(
            request: Request,
            resource_group: str,
            workspace: str,
            experiment: str,
            job: str,
            outputdirectoryid: Annotated[str, Query()],
            directory: Annotated[str, Query()] = ".",
            linkexpiryinminutes: Annotated[int, Query()] = 60,
            maxresults: MaxResults = None,
            marker: Annotated[str | None, Query(alias="$skiptoken")] = None,
        ) -> dict[str, Any]:
            """A page of the directory's files by name; the nextLink's ``$skiptoken`` is the page's last name."""
            r.experiment_of(resource_group, workspace, experiment)
            size = page_size(maxresults)
            files = r.service().list_output_files(
                job, experiment, workspace, outputdirectoryid, directory, linkexpiryinminutes, max_results=None, marker=marker
            )
            body: dict[str, Any] = {"value": [_file(f) for f in files[:size]]}
            if len(files) > size:
                body["nextLink"] = f"{r.link(request)}?{urlencode({**_query(request), '$skiptoken': files[size - 1]['name']}, safe='$')}"
            return body

        @app.api_route(JOB + "/listRemoteLoginInformation", methods=["POST", "GET"])
        def job_logins(
            request: Request,
            resource_group: str,
            workspace: str,
            experiment: str,
            job: str,
            maxresults: MaxResults = None,
            token: SkipToken = None,
        ) -> dict[str, Any]:
            r.experiment_of(resource_group, workspace, experiment)
            svc = r.service()
            record, _ = read_job(svc.store, workspace, experiment, job)
            try:
                addresses = {n["nodeId"]: n["ipAddress"] for n in svc.show_cluster(record.cluster, workspace)["nodes"]}
            except BatchAIError:
                addresses = {}
            logins = [r.login(node, addresses.get(node, "")) for node in record.nodes]
            return page(logins, r.link(request), _query(request), maxresults, skip_token(token))

        # -- long-running operations ------------------------------------------------------
        @app.get(LOCATION + "/operationStatuses/{token}")
        def operation_state(token: str) -> JSONResponse:
            operation = r.operations.get(token)  # read only: the server carries it (operations.py)
            headers = {"Retry-After": str(POLL_AFTER_S)} if not operation.final else None
            return JSONResponse(operation.status_body(), headers=headers)

        @app.get(LOCATION + "/operationResults/{token}")
        def operation_result(request: Request, token: str) -> Response:
            operation = r.operations.get(token)
            if not operation.final:
                return Response(status_code=202, headers={"Location": r.link(request, query=True), "Retry-After": str(POLL_AFTER_S)})
            error = operation.error
            if error:
                status = 500 if error.get("code") in (ErrorCode.INTERNAL_SERVER_ERROR, ErrorCode.OPERATION_TIMED_OUT) else 400
                arm = ArmError(status, error["code"], error["message"], error.get("target"))
                return JSONResponse(arm.body(), status_code=arm.status)
            return Response(status_code=204 if operation.kind.startswith("delete") else 200)

    # -- helpers that need the Service ------------------------------------------------------
    def experiment_of(self, resource_group: str, workspace: str, experiment: str) -> WorkspaceRecord:
        """The experiment's workspace, after checking both exist (in this resource group)."""
        ws = self.workspaces()
        record = ws.get(workspace, resource_group)
        ws.get_experiment(workspace, experiment)
        return record

    def login(self, node_id: str, address: str) -> dict[str, Any]:
        """A node's SSH address and port, as Batch AI listed them for ``ssh -p``."""
        return {"nodeId": node_id, "ipAddress": address, "port": self.service().pool.login_port(node_id)}

    def prefix(self, request: Request) -> str:
        """What the URLs this API hands out start with: the public URL and the mount's prefix, or
        nothing (relative to the API's root: azure-core joins such links onto the client's
        base_url). Never the request's Host."""
        return self.public_url + quote(request.scope.get("root_path", ""), safe="/") if self.public_url else ""

    def link(self, request: Request, query: bool = False) -> str:
        """This request's URL as clients should use it."""
        root, path = request.scope.get("root_path", ""), request.scope["path"]  # path: the whole path, the mount's prefix included
        link = self.prefix(request) + quote(path[len(root) :] if path.startswith(root) else path, safe="/")
        return f"{link}?{request.url.query}" if query and request.url.query else link

    def start(
        self,
        request: Request,
        kind: Kind,
        subscription: str,
        location: str,
        resource_group: str,
        workspace: str,
        name: str = "",
        experiment: str = "",
    ) -> Response:
        """202 with the operation's two URLs, after its first step (often its only one)."""
        operation = self.operations.start(kind, resource_group, workspace, name, experiment)
        base = self.prefix(request) + LOCATION.format(subscription=subscription, location=location)
        headers = {
            "Azure-AsyncOperation": f"{base}/operationStatuses/{operation.id}?api-version={API_VERSION}",
            "Location": f"{base}/operationResults/{operation.id}?api-version={API_VERSION}",
            "Retry-After": str(POLL_AFTER_S),
        }
        return JSONResponse(operation.status_body(), status_code=202, headers=headers)

    def _step(self, operation: OperationRecord) -> bool:
        svc, kind, ws = self.service(), operation.kind, operation.workspace
        if kind == "deleteCluster":
            return self._delete_cluster(svc, ws, operation.name)
        if kind in ("deleteJob", "terminateJob"):
            return self._end_job(svc, ws, operation.experiment, operation.name, delete=kind == "deleteJob")
        if kind == "deleteExperiment":
            return self._delete_experiment(svc, ws, operation.experiment)
        assert kind == "deleteWorkspace"
        workspaces = self.workspaces()
        done = all([self._delete_cluster(svc, ws, view["name"]) for view in svc.list_clusters(ws)])  # their jobs fail at once
        done = all([self._delete_experiment(svc, ws, e.name) for e in workspaces.experiments(ws)]) and done
        if done:
            workspaces.delete_record(ws)
        return done

    def _delete_cluster(self, svc: Service, workspace: str, name: str) -> bool:
        try:
            svc.delete_cluster(name, workspace)
        except BatchAIError as error:
            if error.code != ErrorCode.CLUSTER_NOT_FOUND:
                raise
        return True

    def _delete_experiment(self, svc: Service, workspace: str, experiment: str) -> bool:
        done = all([self._end_job(svc, workspace, experiment, view["name"], delete=True) for view in svc.list_jobs(experiment, workspace)])
        if done:
            self.workspaces().delete_experiment_record(workspace, experiment)
        return done

    def _end_job(self, svc: Service, workspace: str, experiment: str, name: str, delete: bool) -> bool:
        """Terminate (and delete) the job; True once it has failed (or is gone)."""
        try:
            view = svc.refresh_job(name, experiment, workspace)
            if view["executionState"] not in ("succeeded", "failed"):
                view = svc.terminate_job(name, experiment, workspace)
            if view["executionState"] not in ("succeeded", "failed"):
                return False
            if delete:
                svc.delete_job(name, experiment, workspace)
        except BatchAIError as error:
            if error.code != ErrorCode.JOB_NOT_FOUND:
                raise
        return True


# -- read models ----------------------------------------------------------------------------
def _workspace(scope: Scope, record: WorkspaceRecord) -> dict[str, Any]:
    created = record.creation_time.isoformat()
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.workspace_id(record.name), record.name, "workspaces", properties, location=record.location, tags=record.tags)


def _experiment(scope: Scope, workspace: str, name: str, created: str) -> dict[str, Any]:
    properties = {"creationTime": created, "provisioningState": "succeeded", "provisioningStateTransitionTime": created}
    return resource(scope.experiment_id(workspace, name), name, "workspaces/experiments", properties)


def _cluster(scope: Scope, workspace: str, view: dict[str, Any]) -> dict[str, Any]:
    return enveloped(view, scope.cluster_id(workspace, view["name"]))


def _job(scope: Scope, workspace: str, experiment: str, view: dict[str, Any]) -> dict[str, Any]:
    body = enveloped(view, scope.job_id(workspace, experiment, view["name"]))
    cluster = (view.get("cluster") or {}).get("id", "").rsplit("/", 1)[-1]
    body["properties"]["cluster"] = {"id": scope.cluster_id(workspace, cluster)}
    return body


def _file(found: dict[str, Any]) -> dict[str, Any]:
    """Batch AI's File: its size and time under ``properties``, as the SDK reads them."""
    body = {"name": found["name"], "fileType": found["fileType"], "downloadUrl": found.get("downloadUrl")}
    if found["fileType"] == "file":
        body["properties"] = {"lastModified": found.get("lastModified"), "contentLength": found.get("contentLength")}
    return body


# -- request parts --------------------------------------------------------------------------
def _properties(body: dict[str, Any]) -> dict[str, Any]:
    properties = body.get("properties", {})
    if not isinstance(properties, dict):
        raise ArmError(400, ErrorCode.INVALID_REQUEST_CONTENT, "properties must be an object", "properties")
    return properties


def _scale_settings(value: Any) -> ScaleSettings:
    try:
        return ScaleSettings.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = "properties.scaleSettings." + ".".join(str(p) for p in first["loc"])
        raise ArmError(400, ErrorCode.INVALID_SPEC, f"{where.rstrip('.')}: {first['msg']}", where.rstrip(".")) from None


def _cluster_of(properties: dict[str, Any], workspace: str) -> str:
    """The cluster a job names by ARM id (``.../workspaces/{ws}/clusters/{name}``), in this workspace."""
    cluster = properties.get("cluster")
    cluster_id = cluster.get("id") if isinstance(cluster, dict) else None
    if not isinstance(cluster_id, str) or not cluster_id.strip("/"):
        raise ArmError(
            400, ErrorCode.INVALID_SPEC, "properties.cluster.id is required: the id of the cluster to run on", "properties.cluster.id"
        )
    parts = cluster_id.strip("/").split("/")
    if len(parts) >= 4 and parts[-2].lower() == "clusters" and parts[-4].lower() == "workspaces" and parts[-3] != workspace:
        raise ArmError(
            400,
            ErrorCode.INVALID_SPEC,
            f"the cluster is in workspace {parts[-3]}, the job in {workspace}: both must be in one",
            "properties.cluster.id",
        )
    return parts[-1]


def _query(request: Request) -> dict[str, str]:
    return {key: value for key, value in request.query_params.items() if key != "$skiptoken"}
