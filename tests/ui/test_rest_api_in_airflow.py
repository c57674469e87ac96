"""Batch AI's REST API mounted in the real Airflow api-server (tests/airflowstack.py), at
/batchai/arm, behind Airflow's own auth: the SDK's bearer token is an Airflow API token."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batchai import models

from tests.batchaiserve import sdk_client
from tests.conftest import wait_until
from tests.ui.conftest import USERS


def signed_in_token(stack: Any, user: str) -> str:
    body = json.dumps({"username": user, "password": USERS[user]}).encode()
    request = urllib.request.Request(stack.url + "/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def test_without_an_airflow_token_nothing_and_with_a_viewers_only_reads(signed_in_airflow: Any) -> None:
    base = signed_in_airflow.url + "/batchai/arm"
    with pytest.raises(HttpResponseError) as anonymous:
        sdk_client(base, None, "s").workspaces.get("rg", "ws")
    assert anonymous.value.status_code == 401 and anonymous.value.error.code == "AuthenticationFailed"
    admin = sdk_client(base, signed_in_token(signed_in_airflow, "admin"), "s")
    admin.workspaces.begin_create("rg", "shared", models.WorkspaceCreateParameters(location="eastus")).result()
    viewer = sdk_client(base, signed_in_token(signed_in_airflow, "viewer"), "s")
    assert viewer.workspaces.get("rg", "shared").name == "shared"
    with pytest.raises(HttpResponseError) as read_only:
        viewer.experiments.begin_create("rg", "shared", "mine").result()
    assert read_only.value.status_code == 403 and read_only.value.error.code == "AuthorizationFailed"
    assert [e.name for e in viewer.experiments.list_by_workspace("rg", "shared")] == []


def airflow_token(stack: Any) -> str:
    """An Airflow API token, as ``POST /auth/token`` gives one (all admins here, so GET gives it with no password)."""
    with urllib.request.urlopen(stack.url + "/auth/token", timeout=30) as response:
        return json.loads(response.read())["access_token"]


def test_sdk_code_runs_against_airflow_with_an_airflow_token(airflow_stack: Any) -> None:
    client = sdk_client(airflow_stack.url + "/batchai/arm", airflow_token(airflow_stack), "11111111-2222-3333-4444-555555555555")
    client.workspaces.begin_create("ml", "in-airflow", models.WorkspaceCreateParameters(location="northeurope")).result()
    scale = models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=1))
    cluster = client.clusters.begin_create(
        "ml", "in-airflow", "c1", models.ClusterCreateParameters(vm_size="STANDARD_NC6", scale_settings=scale)
    ).result()
    wait_until(lambda: client.clusters.get("ml", "in-airflow", "c1").node_state_counts.idle_node_count == 1, 60, 0.3, what="an idle node")
    client.experiments.begin_create("ml", "in-airflow", "e1").result()
    job = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=1,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_TEMP",
        custom_toolkit_settings=models.CustomToolkitSettings(command_line="echo hello from $AZ_BATCHAI_JOB_NAME"),
    )
    client.jobs.begin_create("ml", "in-airflow", "e1", "hello", job).result()
    done = wait_until(
        lambda: (j := client.jobs.get("ml", "in-airflow", "e1", "hello")).execution_state in ("succeeded", "failed") and j, 60, 0.3
    )
    assert done.execution_state == "succeeded", done.execution_info.errors
    names = {
        f.name
        for f in client.jobs.list_output_files(
            "ml", "in-airflow", "e1", "hello", models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
        )
    }
    assert {"stdout.txt", "stderr.txt"} <= names
    assert "in-airflow" in {w.name for w in client.workspaces.list()}
    client.clusters.begin_delete("ml", "in-airflow", "c1").result()
    assert [c.name for c in client.clusters.list_by_workspace("ml", "in-airflow")] == []

    with pytest.raises(HttpResponseError) as refused:
        sdk_client(airflow_stack.url + "/batchai/arm", "not-an-airflow-token", "s").workspaces.get("ml", "in-airflow")
    assert refused.value.status_code in (401, 403) and refused.value.error.code in ("AuthenticationFailed", "AuthorizationFailed")
    request = urllib.request.Request(
        airflow_stack.url
        + "/batchai/arm/subscriptions/s/resourceGroups/ml/providers/Microsoft.BatchAI/workspaces/in-airflow?api-version=1",
        headers={"Authorization": f"Bearer {airflow_token(airflow_stack)}"},
    )
    with pytest.raises(urllib.error.HTTPError) as version:
        urllib.request.urlopen(request, timeout=30)
    assert version.value.code == 400 and json.loads(version.value.read())["error"]["code"] == "InvalidApiVersionParameter"


def arm(stack: Any, path: str, method: str = "GET", body: dict[str, Any] | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
    url = f"{stack.url}/batchai/arm/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI{path}?api-version=2018-05-01"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_a_cookie_alone_writes_nothing_a_forged_operation_deletes_nothing_and_local_nodes_refuse_api_jobs(signed_in_airflow: Any) -> None:
    stack = signed_in_airflow
    admin = {"Authorization": f"Bearer {signed_in_token(stack, 'admin')}"}
    assert arm(stack, "/workspaces/team", "PUT", {"location": "eastus"}, **admin)[0] == 200
    cluster = {"properties": {"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 0}}}}
    assert arm(stack, "/workspaces/team/clusters/c", "PUT", cluster, **admin)[0] == 200

    # A cross-site form or link carries the browser's session cookie, never an Authorization header.
    cookie = {"Cookie": f"_token={signed_in_token(stack, 'admin')}"}
    status, body = arm(stack, "/workspaces/team/clusters/c", "DELETE", **cookie)
    assert status == 403 and "Bearer" in body["error"]["message"]
    assert arm(stack, "/workspaces/team/clusters/c", **admin)[0] == 200, "still there"

    # A viewer composes an operation link: reading it changes nothing, whatever it names.
    viewer = {"Authorization": f"Bearer {signed_in_token(stack, 'viewer')}"}
    forged = base64.urlsafe_b64encode(json.dumps(["deleteCluster", "rg", "team", "", "c"]).encode()).decode().rstrip("=")
    for route in ("operationStatuses", "operationResults"):
        url = (
            f"{stack.url}/batchai/arm/subscriptions/s/providers/Microsoft.BatchAI/locations/eastus/{route}/{forged}?api-version=2018-05-01"
        )
        with pytest.raises(urllib.error.HTTPError) as unknown:
            urllib.request.urlopen(urllib.request.Request(url, headers=viewer), timeout=30)
        assert unknown.value.code in (400, 404)
    assert arm(stack, "/workspaces/team/clusters/c", "DELETE", **viewer)[0] == 403
    assert arm(stack, "/workspaces/team/clusters/c", **admin)[0] == 200, "still there"

    # A DAG author ("user" role) may submit, but not onto nodes that are the api-server's own machine.
    author = {"Authorization": f"Bearer {signed_in_token(stack, 'author')}"}
    assert arm(stack, "/workspaces/team/experiments/e", "PUT", {}, **author)[0] == 200
    job = {
        "properties": {
            "cluster": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/team/clusters/c"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            "customToolkitSettings": {"commandLine": "cat /proc/1/environ; env"},
        }
    }
    status, body = arm(stack, "/workspaces/team/experiments/e/jobs/peek", "PUT", job, **author)
    assert status == 400 and body["error"]["code"] == "LocalNodesRefused", body
    assert arm(stack, "/workspaces/team/experiments/e/jobs/peek", **author)[0] == 404
