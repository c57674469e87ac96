"""What every router of the REST API shares: the Service, the public URL and the links built
from it, and the long-running operations (started by a write, carried by the server's thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import BatchAIError, ErrorCode
from ..service import Service
from ..workspaces import WorkspaceRecord, Workspaces
from .arm import API_VERSION, PROVIDER
from .operations import Kind, OperationRecord, Operations

GROUP = "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/" + PROVIDER
WORKSPACE = GROUP + "/workspaces/{workspace}"
EXPERIMENT = WORKSPACE + "/experiments/{experiment}"
JOB = EXPERIMENT + "/jobs/{job}"
LOCATION = "/subscriptions/{subscription}/providers/" + PROVIDER + "/locations/{location}"
POLL_AFTER_S = 1  # Retry-After of an operation in progress (the SDK's own default is 30 s)
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


class Api:
    """The routers' shared state and helpers: one per app."""

    def __init__(self, service: Callable[[], Service], public_url: str | None) -> None:
        self.service = service
        self.public_url = public_url
        self.operations = Operations(lambda: self.service().store, self._step)

    def workspaces(self) -> Workspaces:
        svc = self.service()
        return Workspaces(svc.store, svc.settings.resource_group)

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
        done = all([self._delete_cluster(svc, ws, view.name) for view in svc.list_clusters(ws)])  # their jobs fail at once
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
        done = all([self._end_job(svc, workspace, experiment, view.name, delete=True) for view in svc.list_jobs(experiment, workspace)])
        if done:
            self.workspaces().delete_experiment_record(workspace, experiment)
        return done

    def _end_job(self, svc: Service, workspace: str, experiment: str, name: str, delete: bool) -> bool:
        """Terminate (and delete) the job; True once it has failed (or is gone)."""
        try:
            view = svc.refresh_job(name, experiment, workspace)
            if not view.finished:
                view = svc.terminate_job(name, experiment, workspace)
            if not view.finished:
                return False
            if delete:
                svc.delete_job(name, experiment, workspace)
        except BatchAIError as error:
            if error.code != ErrorCode.JOB_NOT_FOUND:
                raise
        return True
