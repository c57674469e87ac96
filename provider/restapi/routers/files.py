"""A job's output files, a page at a time, with download links."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from ..api import JOB, Api
from ..arm import page_size
from ..envelopes import file_body
from ..inputs import MaxResults, query_of


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.api_route(JOB + "/listOutputFiles", methods=["POST", "GET"])
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
        body: dict[str, Any] = {"value": [file_body(f) for f in files[:size]]}
        if len(files) > size:
            body["nextLink"] = f"{r.link(request)}?{urlencode({**query_of(request), '$skiptoken': files[size - 1].name}, safe='$')}"
        return body

    return router
