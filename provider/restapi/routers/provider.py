"""The provider's own routes: the operations it offers, its usages, and file servers (refused)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...errors import ErrorCode
from ..api import FILE_SERVERS_REFUSED, LOCATION, OPERATIONS, WORKSPACE, Api
from ..arm import PROVIDER, ArmError


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.get("/providers/" + PROVIDER + "/operations")
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

    @router.get(LOCATION + "/usages")
    def usages(subscription: str, location: str) -> dict[str, Any]:
        svc = r.service()
        clusters = [c for ws in r.workspaces().all() for c in svc.list_clusters(ws.name)]
        in_use = sum(c.current_node_count for c in clusters)
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

    @router.api_route(WORKSPACE + "/fileServers", methods=["GET"])
    @router.api_route(WORKSPACE + "/fileServers/{file_server}", methods=["GET", "PUT", "DELETE"])
    def file_servers() -> None:
        raise ArmError(400, ErrorCode.FILE_SERVERS_NOT_SUPPORTED, FILE_SERVERS_REFUSED, "fileServers")

    return router
