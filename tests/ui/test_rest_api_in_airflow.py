"""Batch AI's REST API mounted in the real Airflow api-server (tests/airflowstack.py), at
/batchai/arm, behind Airflow's own auth: the SDK's bearer token is an Airflow API token."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.batchai import models

from tests.batchaiserve import sdk_client
from tests.conftest import kill_agents_under, wait_until

USERS = {"admin": "admin-password-for-tests", "viewer": "viewer-password-for-tests"}


@pytest.fixture(scope="module")
def signed_in_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An api-server alone, with real users (an admin and a viewer) instead of all-admins."""
    from tests import airflowstack
    from tests.azurite import _free_port

    folder = tmp_path_factory.mktemp("airflow-users")
    passwords = folder / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    extra = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    dags = folder / "dags"
    dags.mkdir()
    env = airflowstack.environment(folder, _free_port("127.0.0.1"), dags, folder / "batchai-home", extra)
    subprocess.run([airflowstack.AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    stack = airflowstack.AirflowStack(folder, int(env["AIRFLOW__API__PORT"]), env)
    stack.start_component("api-server")
    try:
        wait_until(lambda: listening(stack), 120, 0.5, what="the api-server")
        yield stack
    finally:
        stack.stop("api-server")
        kill_agents_under(folder / "batchai-home")


def listening(stack: Any) -> bool:
    if stack.processes["api-server"].poll() is not None:
        raise RuntimeError("the api-server exited:\n" + stack.log_of("api-server")[-3000:])
    try:
        return stack.get_text("/api/v2/monitor/health", timeout_s=5)[0] == 200
    except OSError:
        return False


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
