"""Long-running operations: their status and result, read only (the server carries them: ../operations.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...errors import ErrorCode
from ..api import LOCATION, POLL_AFTER_S, Api
from ..arm import ArmError


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.get(LOCATION + "/operationStatuses/{token}")
    def operation_state(token: str) -> JSONResponse:
        operation = r.operations.get(token)  # read only: the server carries it (operations.py)
        headers = {"Retry-After": str(POLL_AFTER_S)} if not operation.final else None
        return JSONResponse(operation.status_body(), headers=headers)

    @router.get(LOCATION + "/operationResults/{token}")
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

    return router
