"""Experiments and their jobs: list, create, get, delete, terminate, and the nodes' remote logins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import BatchAIError
from ...records import read_job
from ...spec import load_job_spec
from ..api import EXPERIMENT, JOB, WORKSPACE, Api
from ..arm import Scope, page, skip_token
from ..envelopes import experiment_body, job_body
from ..inputs import Body, MaxResults, SkipToken, cluster_of, properties_of, query_of


def router(r: Api) -> APIRouter:
    router = APIRouter()

    @router.get(WORKSPACE + "/experiments")
    def list_experiments(
        request: Request, subscription: str, resource_group: str, workspace: str, maxresults: MaxResults = None, token: SkipToken = None
    ) -> dict[str, Any]:
        ws = r.workspaces()
        ws.get(workspace, resource_group)
        scope = Scope(subscription, resource_group)
        found = [experiment_body(scope, e.workspace, e.name, e.creation_time.isoformat()) for e in ws.experiments(workspace)]
        return page(found, r.link(request), query_of(request), maxresults, skip_token(token))

    @router.put(EXPERIMENT)
    def create_experiment(subscription: str, resource_group: str, workspace: str, experiment: str) -> dict[str, Any]:
        ws = r.workspaces()
        ws.get(workspace, resource_group)
        record, _ = ws.create_experiment(workspace, experiment)
        return experiment_body(Scope(subscription, resource_group), workspace, experiment, record.creation_time.isoformat())

    @router.get(EXPERIMENT)
    def get_experiment(subscription: str, resource_group: str, workspace: str, experiment: str) -> dict[str, Any]:
        ws = r.workspaces()
        ws.get(workspace, resource_group)
        record = ws.get_experiment(workspace, experiment)
        return experiment_body(Scope(subscription, resource_group), workspace, experiment, record.creation_time.isoformat())

    @router.delete(EXPERIMENT)
    def delete_experiment(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str) -> Response:
        ws = r.workspaces()
        location = ws.get(workspace, resource_group).location
        ws.get_experiment(workspace, experiment)
        return r.start(request, "deleteExperiment", subscription, location, resource_group, workspace, experiment=experiment)

    @router.get(EXPERIMENT + "/jobs")
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
        found = [job_body(scope, workspace, experiment, view) for view in r.service().list_jobs(experiment, workspace)]
        return page(sorted(found, key=lambda j: j["name"]), r.link(request), query_of(request), maxresults, skip_token(token))

    @router.put(JOB)
    def create_job(subscription: str, resource_group: str, workspace: str, experiment: str, job: str, body: Body) -> dict[str, Any]:
        r.experiment_of(resource_group, workspace, experiment)
        properties = properties_of(body)
        cluster = cluster_of(properties, workspace)
        spec = load_job_spec(properties, environ={})
        view = r.service().create_job(cluster, job, spec, experiment, workspace, scope=(subscription, resource_group), shared_surface=True)
        return job_body(Scope(subscription, resource_group), workspace, experiment, view)

    @router.get(JOB)
    def get_job(subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> dict[str, Any]:
        r.experiment_of(resource_group, workspace, experiment)
        return job_body(Scope(subscription, resource_group), workspace, experiment, r.service().show_job(job, experiment, workspace))

    @router.delete(JOB)
    def delete_job(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> Response:
        location = r.experiment_of(resource_group, workspace, experiment).location
        r.service().show_job(job, experiment, workspace)
        return r.start(request, "deleteJob", subscription, location, resource_group, workspace, job, experiment)

    @router.post(JOB + "/terminate")
    def terminate_job(request: Request, subscription: str, resource_group: str, workspace: str, experiment: str, job: str) -> Response:
        location = r.experiment_of(resource_group, workspace, experiment).location
        r.service().show_job(job, experiment, workspace)
        return r.start(request, "terminateJob", subscription, location, resource_group, workspace, job, experiment)

    @router.api_route(JOB + "/listRemoteLoginInformation", methods=["POST", "GET"])
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
            addresses = {n.node_id: n.ip_address for n in svc.show_cluster(record.cluster, workspace).nodes}
        except BatchAIError:
            addresses = {}
        logins = [r.login(node, addresses.get(node, "")) for node in record.nodes]
        return page(logins, r.link(request), query_of(request), maxresults, skip_token(token))

    return router
