"""Workspaces: list, create, get, update tags, delete (a long-running operation)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..api import GROUP, WORKSPACE, Api
from ..arm import PROVIDER, Scope, page, skip_token
from ..envelopes import workspace_body
from ..inputs import Body, MaxResults, SkipToken, query_of


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.get("/subscriptions/{subscription}/providers/" + PROVIDER + "/workspaces")
    def list_workspaces(request: Request, subscription: str, maxresults: MaxResults = None, token: SkipToken = None) -> dict[str, Any]:
        found = [workspace_body(Scope(subscription, w.resource_group), w) for w in r.workspaces().all()]
        return page(found, r.link(request), query_of(request), maxresults, skip_token(token))

    @router.get(GROUP + "/workspaces")
    def list_group_workspaces(
        request: Request, subscription: str, resource_group: str, maxresults: MaxResults = None, token: SkipToken = None
    ) -> dict[str, Any]:
        scope = Scope(subscription, resource_group)
        found = [workspace_body(scope, w) for w in r.workspaces().all(resource_group)]
        return page(found, r.link(request), query_of(request), maxresults, skip_token(token))

    @router.put(WORKSPACE)
    def create_workspace(subscription: str, resource_group: str, workspace: str, body: Body) -> dict[str, Any]:
        record, _ = r.workspaces().create(workspace, resource_group, body.get("location") or "", body.get("tags"))
        return workspace_body(Scope(subscription, resource_group), record)

    @router.get(WORKSPACE)
    def get_workspace(subscription: str, resource_group: str, workspace: str) -> dict[str, Any]:
        return workspace_body(Scope(subscription, resource_group), r.workspaces().get(workspace, resource_group))

    @router.patch(WORKSPACE)
    def update_workspace(subscription: str, resource_group: str, workspace: str, body: Body) -> dict[str, Any]:
        record = r.workspaces().update_tags(workspace, resource_group, body.get("tags"))
        return workspace_body(Scope(subscription, resource_group), record)

    @router.delete(WORKSPACE)
    def delete_workspace(request: Request, subscription: str, resource_group: str, workspace: str) -> Response:
        location = r.workspaces().get(workspace, resource_group).location
        return r.start(request, "deleteWorkspace", subscription, location, resource_group, workspace)

    return router
