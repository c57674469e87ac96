"""Clusters: list, create, get, scale, delete, and their nodes' remote login information."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...spec import load_cluster_spec
from ..api import WORKSPACE, Api
from ..arm import Scope, page, skip_token
from ..envelopes import cluster_body
from ..inputs import Body, MaxResults, SkipToken, properties_of, query_of, scale_settings_of


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.get(WORKSPACE + "/clusters")
    def list_clusters(
        request: Request, subscription: str, resource_group: str, workspace: str, maxresults: MaxResults = None, token: SkipToken = None
    ) -> dict[str, Any]:
        r.workspaces().get(workspace, resource_group)
        scope = Scope(subscription, resource_group)
        found = [cluster_body(scope, workspace, view) for view in r.service().list_clusters(workspace)]
        return page(sorted(found, key=lambda c: c["name"]), r.link(request), query_of(request), maxresults, skip_token(token))

    @router.put(WORKSPACE + "/clusters/{cluster}")
    def create_cluster(subscription: str, resource_group: str, workspace: str, cluster: str, body: Body) -> dict[str, Any]:
        r.workspaces().get(workspace, resource_group)
        spec = load_cluster_spec(properties_of(body), environ={})
        view = r.service().create_cluster(cluster, spec, workspace, shared_surface=True)
        return cluster_body(Scope(subscription, resource_group), workspace, view)

    @router.get(WORKSPACE + "/clusters/{cluster}")
    def get_cluster(subscription: str, resource_group: str, workspace: str, cluster: str) -> dict[str, Any]:
        r.workspaces().get(workspace, resource_group)
        return cluster_body(Scope(subscription, resource_group), workspace, r.service().show_cluster(cluster, workspace))

    @router.patch(WORKSPACE + "/clusters/{cluster}")
    def update_cluster(subscription: str, resource_group: str, workspace: str, cluster: str, body: Body) -> dict[str, Any]:
        r.workspaces().get(workspace, resource_group)
        properties = properties_of(body)
        svc = r.service()
        if properties.get("scaleSettings") is None:
            view = svc.show_cluster(cluster, workspace)  # nothing to change: Batch AI's PATCH updates scaleSettings only
        else:
            view = svc.update_cluster_scale(cluster, scale_settings_of(properties["scaleSettings"]), workspace)
        return cluster_body(Scope(subscription, resource_group), workspace, view)

    @router.delete(WORKSPACE + "/clusters/{cluster}")
    def delete_cluster(request: Request, subscription: str, resource_group: str, workspace: str, cluster: str) -> Response:
        ws = r.workspaces().get(workspace, resource_group)
        r.service().show_cluster(cluster, workspace)  # 404 for a cluster that is not there
        return r.start(request, "deleteCluster", subscription, ws.location, resource_group, workspace, cluster)

    @router.api_route(WORKSPACE + "/clusters/{cluster}/listRemoteLoginInformation", methods=["POST", "GET"])
    def cluster_logins(
        request: Request, resource_group: str, workspace: str, cluster: str, maxresults: MaxResults = None, token: SkipToken = None
    ) -> dict[str, Any]:
        r.workspaces().get(workspace, resource_group)
        view = r.service().show_cluster(cluster, workspace)
        logins = [r.login(node.node_id, node.ip_address) for node in view.nodes]
        return page(logins, r.link(request), query_of(request), maxresults, skip_token(token))

    return router
