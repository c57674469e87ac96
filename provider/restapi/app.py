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

import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import BatchAIError, ErrorCode, shown
from ..service import Service
from .api import Api
from .arm import ArmError, from_batchai
from .inputs import api_version, check_names
from .routers import clusters, files, jobs, operations, provider, workspaces

log = logging.getLogger(__name__)
ROUTERS = (provider, workspaces, clusters, jobs, files, operations)  # one per resource, in this order


def create_app(service: Callable[[], Service], dependencies: Sequence[Any] = (), public_url: str | None = None) -> FastAPI:
    """The API over ``service()`` (called per request: the hook's shared Service, or one built once).

    ``dependencies`` run first on every request (authentication); the name and api-version
    checks after them. ``public_url``: where clients reach this API (``https://host/prefix``),
    the start of the URLs it hands out; without it they are relative to this server.
    """
    app = FastAPI(
        title="Batch AI REST API (2018-05-01)",
        description="Azure Batch AI's management API, served by airflow-provider-batchai",
        dependencies=[*dependencies, Depends(check_names), Depends(api_version)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _handlers(app)
    api = Api(service, public_url.rstrip("/") if public_url else None)
    for module in ROUTERS:
        app.include_router(module.router(api))
    api.operations.resume()
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
