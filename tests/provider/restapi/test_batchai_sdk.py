"""Users' azure-mgmt-batchai code against ``batchai serve``: the real SDK (7.0.0), the real command,
Azurite for the storage account. Only the client's construction differs from code written for Azure."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.batchai import models

from tests import batchaiserve
from tests.conftest import wait_until

TOKEN = "test-token-" + uuid.uuid4().hex
ADMIN_PASSWORD = "Adm1n-pa55word-never-shown"
JOB_SECRET = "job-secret-value-never-shown"
SCRIPT = """\
import os, sys
data = open(os.path.join(os.environ["AZ_BATCHAI_INPUT_DATASET"], "numbers.txt")).read().split()
total = sum(int(n) for n in data)
print("sum of", len(data), "numbers:", total, "token set:", bool(os.environ.get("API_TOKEN")))
os.makedirs(os.environ["AZ_BATCHAI_OUTPUT_MODEL"], exist_ok=True)
with open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_MODEL"], "model.txt"), "w") as out:
    out.write(str(total))
print("tensorboard", file=open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_TENSORBOARD"], "events.txt"), "w"))
"""


@pytest.fixture(scope="module")
def served(azurite: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[batchaiserve.Served, Any]]:
    """``batchai serve`` on the embedded store and nodes, its volumes in Azurite (the user's storage account)."""
    folder = tmp_path_factory.mktemp("serve")
    connection = {
        "storage_connection_string": azurite.connection_string,
        "control_container": f"serve-{uuid.uuid4().hex[:8]}",
        "files_on_blob": True,
        "local_nodes": 3,
        "home": str(folder / "home"),
        "local_jobs_from_shared_surfaces": True,  # local nodes beside the server: an admin's opt-in (refused otherwise)
    }
    server = batchaiserve.start(folder, TOKEN, connection)
    try:
        yield server, azurite
    finally:
        batchaiserve.stop(server)
        from tests.conftest import kill_agents_under

        kill_agents_under(folder / "home")


def upload(azurite: Any, container: str, name: str, data: bytes) -> None:
    """What seed 004 did with BlockBlobService: the script and the dataset into the account."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    try:
        service.create_container(container)
    except ResourceExistsError:
        pass
    service.get_blob_client(container, name).upload_blob(data, overwrite=True)


def test_seed_004s_sequence_runs_against_our_api(served: tuple[batchaiserve.Served, Any]) -> None:
    server, azurite = served
    client = server.client()
    resource_group, workspace, location = "batchai-rg", "seed004", "eastus"
    account, key = azurite.credential().account, azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    azure_file_share, azure_blob = "afs", "bfs"
    azure_blob_container_name, script_directory, dataset_directory = "batchaisample", "samples", "dataset"
    upload(azurite, azure_blob_container_name, f"{script_directory}/train.py", SCRIPT.encode())
    upload(azurite, azure_blob_container_name, f"{dataset_directory}/numbers.txt", b"1 2 3 4 5 6 7 8 9 10")

    # Create workspaces
    _ = client.workspaces.begin_create(resource_group, workspace, models.WorkspaceCreateParameters(location=location)).result()

    # Create compute clusters
    nodes_count, cluster_name = 2, "nc6"
    parameters = models.ClusterCreateParameters(
        vm_size="STANDARD_NC6",
        scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=nodes_count)),
        user_account_settings=models.UserAccountSettings(admin_user_name="batchai", admin_user_password=ADMIN_PASSWORD),
    )
    _ = client.clusters.begin_create(resource_group, workspace, cluster_name, parameters).result()

    # Monitor status of your cluster
    cluster = wait_until(
        lambda: (c := client.clusters.get(resource_group, workspace, cluster_name)).node_state_counts.idle_node_count == nodes_count and c,
        60,
        0.3,
        what="the cluster's nodes to be idle",
    )
    assert cluster.allocation_state == "steady" and cluster.vm_size == "STANDARD_NC6"
    assert cluster.user_account_settings.admin_user_name == "batchai" and cluster.user_account_settings.admin_user_password is None

    # Create experiments
    experiment_name = "seed_experiment"
    experiment = client.experiments.begin_create(resource_group, workspace, experiment_name).result()

    # Submit jobs
    parameters = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=2,
        input_directories=[
            models.InputDirectory(id="SCRIPT", path=f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{azure_blob}/{script_directory}"),
            models.InputDirectory(id="DATASET", path=f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{azure_blob}/{dataset_directory}"),
        ],
        std_out_err_path_prefix=f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{azure_file_share}",
        output_directories=[
            models.OutputDirectory(id="MODEL", path_prefix=f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{azure_file_share}", path_suffix="Models"),
            models.OutputDirectory(id="TENSORBOARD", path_prefix=f"$AZ_BATCHAI_JOB_MOUNT_ROOT/{azure_file_share}", path_suffix="Logs"),
        ],
        mount_volumes=models.MountVolumes(
            azure_file_shares=[
                models.AzureFileShareReference(
                    account_name=account,
                    credentials=models.AzureStorageCredentialsInfo(account_key=key),
                    azure_file_url=f"https://{account}.file.core.windows.net/{azure_file_share}",
                    relative_mount_path=azure_file_share,
                )
            ],
            azure_blob_file_systems=[
                models.AzureBlobFileSystemReference(
                    account_name=account,
                    credentials=models.AzureStorageCredentialsInfo(account_key=key),
                    container_name=azure_blob_container_name,
                    relative_mount_path=azure_blob,
                )
            ],
        ),
        secrets=[models.EnvironmentVariableWithSecretValue(name="API_TOKEN", value=JOB_SECRET)],
        custom_toolkit_settings=models.CustomToolkitSettings(command_line="python $AZ_BATCHAI_INPUT_SCRIPT/train.py"),
    )
    job_name = time.strftime("job_%m_%d_%Y_%H%M%S")
    job = client.jobs.begin_create(resource_group, workspace, experiment_name, job_name, parameters).result()
    assert job.name == job_name and experiment.name == experiment_name
    assert job.cluster.id == cluster.id and job.secrets[0].name == "API_TOKEN" and job.secrets[0].value is None
    assert job.mount_volumes.azure_file_shares[0].credentials.account_key is None, "read models carry no secret"

    # Monitor runs
    job = wait_until(
        lambda: (
            (j := client.jobs.get(resource_group, workspace, experiment_name, job_name)).execution_state in ("succeeded", "failed") and j
        ),
        120,
        0.5,
        what="the job to end",
    )
    files = client.jobs.list_output_files(
        resource_group, workspace, experiment_name, job_name, models.JobsListOutputFilesOptions(outputdirectoryid="stdouterr")
    )
    logs = {f.name: f for f in files}
    stdout = urllib.request.urlopen(logs["stdout.txt"].download_url, timeout=10).read().decode()
    assert job.execution_state == "succeeded", ([(e.code, e.message) for e in job.execution_info.errors or []], stdout)
    assert "sum of 10 numbers: 55 token set: True" in stdout
    assert "sig=" in logs["stdout.txt"].download_url and logs["stdout.txt"].content_length == len(stdout.encode())
    model_options = models.JobsListOutputFilesOptions(outputdirectoryid="MODEL", link_expiry_in_minutes=5)
    [model] = client.jobs.list_output_files(resource_group, workspace, experiment_name, job_name, model_options)
    assert model.name == "model.txt" and urllib.request.urlopen(model.download_url, timeout=10).read() == b"55"
    assert job.job_output_directory_path_segment.startswith(f"{client._config.subscription_id}/{resource_group}/workspaces/{workspace}/")

    # a second, long job, terminated: its processes end
    marker = f"seed004-long-{uuid.uuid4().hex[:8]}"
    long_job = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=1,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_TEMP",
        custom_toolkit_settings=models.CustomToolkitSettings(command_line=f"sleep 300 # {marker}"),
    )
    client.jobs.begin_create(resource_group, workspace, experiment_name, "long", long_job).result()
    wait_until(lambda: client.jobs.get(resource_group, workspace, experiment_name, "long").execution_state == "running", 60, 0.3)
    client.jobs.begin_terminate(resource_group, workspace, experiment_name, "long").result()
    ended = client.jobs.get(resource_group, workspace, experiment_name, "long")
    assert ended.execution_state == "failed" and ended.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout, 20, 0.2, what="the job's processes to end")

    # Edit clusters: delete
    client.clusters.begin_delete(resource_group, workspace, cluster_name).result()
    with pytest.raises(ResourceNotFoundError) as gone:
        client.clusters.get(resource_group, workspace, cluster_name)
    assert gone.value.error.code == "ResourceNotFound"

    log = server.output()
    for secret in (ADMIN_PASSWORD, JOB_SECRET, key, TOKEN):
        assert secret not in log
    assert ADMIN_PASSWORD not in json.dumps(client.workspaces.get(resource_group, workspace).as_dict())
    stored = [p.read_bytes() for p in (Path(server.log).parent / "home").rglob("*") if p.is_file()]
    from azure.storage.blob import BlobServiceClient

    account_service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in account_service.list_containers():  # the records, the sealed secrets, the volumes
        box = account_service.get_container_client(container.name)
        stored += [box.download_blob(blob.name).readall() for blob in box.list_blobs()]
    assert len(stored) > 10
    for content in stored:
        for secret in (ADMIN_PASSWORD, JOB_SECRET):
            assert secret.encode() not in content


def raw(server: batchaiserve.Served, method: str, path: str, token: str | None = TOKEN, body: Any = None) -> tuple[int, dict[str, Any]]:
    """A request as any HTTP client sends it (the SDK checks some things before sending)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw_body = response.read()
            return response.status, json.loads(raw_body) if raw_body else {}
    except urllib.error.HTTPError as error:
        raw_body = error.read()
        return error.code, json.loads(raw_body) if raw_body else {}


GROUP = "/subscriptions/sub1/resourceGroups/rg-errors/providers/Microsoft.BatchAI"


def test_errors_are_arm_errors_with_codes_statuses_and_targets(served: tuple[batchaiserve.Served, Any]) -> None:
    server, _ = served
    with pytest.raises(ClientAuthenticationError):
        server.client(token="").workspaces.get("rg", "ws")
    with pytest.raises(ClientAuthenticationError) as wrong:
        server.client(token="not-the-token-at-all").workspaces.get("rg", "ws")
    assert wrong.value.status_code == 401 and wrong.value.error.code == "AuthenticationFailed"
    status, body = raw(server, "GET", f"{GROUP}/workspaces/ws?api-version=2017-09-01-preview")
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter" and "2018-05-01" in body["error"]["message"]
    status, body = raw(server, "GET", f"{GROUP}/workspaces/ws")
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"

    client = server.client()
    with pytest.raises(ResourceNotFoundError) as unknown:
        client.workspaces.get("rg-errors", "nowhere")
    assert unknown.value.status_code == 404 and unknown.value.error.code == "ResourceNotFound"
    assert "Microsoft.BatchAI/workspaces/nowhere" in unknown.value.error.message
    client.workspaces.begin_create(
        "rg-errors", "errs", models.WorkspaceCreateParameters(location="westeurope", tags={"team": "ml"})
    ).result()
    with pytest.raises(ResourceNotFoundError):
        client.workspaces.get("another-group", "errs")
    with pytest.raises(ResourceNotFoundError):
        client.clusters.get("rg-errors", "errs", "no-such-cluster")
    with pytest.raises(HttpResponseError) as servers:
        list(client.file_servers.list_by_workspace("rg-errors", "errs"))
    assert servers.value.status_code == 400 and "unmanagedFileSystems" in servers.value.error.message

    cluster = client.clusters.begin_create(
        "rg-errors",
        "errs",
        "c",
        models.ClusterCreateParameters(
            vm_size="STANDARD_NC6", scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=0))
        ),
    ).result()
    client.experiments.begin_create("rg-errors", "errs", "e").result()
    job = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=1,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_TEMP",
        custom_toolkit_settings=models.CustomToolkitSettings(command_line="echo one"),
    )
    first = client.jobs.begin_create("rg-errors", "errs", "e", "j", job).result()
    again = client.jobs.begin_create("rg-errors", "errs", "e", "j", job).result()
    assert again.creation_time == first.creation_time, "the same body again returns the job that exists"
    job.custom_toolkit_settings.command_line = "echo two"
    with pytest.raises(ResourceExistsError) as conflict:
        client.jobs.begin_create("rg-errors", "errs", "e", "j", job).result()
    assert conflict.value.status_code == 409 and conflict.value.error.code == "JobAlreadyExists"

    bad = {
        "properties": {"cluster": {"id": cluster.id}, "nodeCount": 1, "secrets": [{"name": "S", "value": JOB_SECRET}], "noSuchToolkit": {}}
    }
    status, body = raw(server, "PUT", f"{GROUP}/workspaces/errs/experiments/e/jobs/bad?api-version=2018-05-01", body=bad)
    assert status == 400 and body["error"]["code"] == "InvalidSpec" and JOB_SECRET not in json.dumps(body), body
    status, body = raw(server, "PUT", f"{GROUP}/workspaces/errs/experiments/e/jobs/bad?api-version=2018-05-01", body=None)
    assert status == 400 and body["error"]["target"] == "properties.cluster.id"
    too_big = json.loads(json.dumps(job.serialize()))
    too_big["properties"]["nodeCount"] = 50
    status, body = raw(server, "PUT", f"{GROUP}/workspaces/errs/experiments/e/jobs/big?api-version=2018-05-01", body=too_big)
    assert status == 400 and body["error"]["target"] == "nodeCount", body
    with pytest.raises(ResourceNotFoundError):
        client.jobs.begin_create("rg-errors", "errs", "no-experiment", "j", job).result()

    assert client.workspaces.get("rg-errors", "errs").tags == {"team": "ml"}
    updated = client.workspaces.update("rg-errors", "errs", models.WorkspaceUpdateParameters(tags={"team": "vision"}))
    assert updated.tags == {"team": "vision"}
    client.workspaces.begin_delete("rg-errors", "errs").result()
    with pytest.raises(ResourceNotFoundError):
        client.jobs.get("rg-errors", "errs", "e", "j")
    assert "errs" not in [w.name for w in client.workspaces.list_by_resource_group("rg-errors")]


def test_lists_page_with_next_links_and_the_sdk_follows_them(served: tuple[batchaiserve.Served, Any]) -> None:
    server, _ = served
    client = server.client()
    client.workspaces.begin_create("rg-pages", "pages", models.WorkspaceCreateParameters(location="eastus")).result()
    for index in range(3):
        client.experiments.begin_create("rg-pages", "pages", f"exp{index}").result()
    options = models.ExperimentsListByWorkspaceOptions(max_results=2)
    assert [e.name for e in client.experiments.list_by_workspace("rg-pages", "pages", options)] == ["exp0", "exp1", "exp2"]
    status, body = raw(
        server,
        "GET",
        "/subscriptions/s/resourceGroups/rg-pages/providers/Microsoft.BatchAI/workspaces/pages/experiments?api-version=2018-05-01&maxresults=2",
    )
    assert status == 200 and len(body["value"]) == 2 and "$skiptoken=2" in body["nextLink"]

    cluster = client.clusters.begin_create(
        "rg-pages",
        "pages",
        "c",
        models.ClusterCreateParameters(
            vm_size="STANDARD_NC6", scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=1))
        ),
    ).result()
    job = models.JobCreateParameters(
        cluster=models.ResourceId(id=cluster.id),
        node_count=1,
        std_out_err_path_prefix="$AZ_BATCHAI_JOB_TEMP",
        output_directories=[models.OutputDirectory(id="OUT", path_prefix="$AZ_BATCHAI_JOB_TEMP")],
        custom_toolkit_settings=models.CustomToolkitSettings(
            command_line="for i in 1 2 3 4 5; do echo $i > $AZ_BATCHAI_OUTPUT_OUT/f$i.txt; done"
        ),
    )
    client.jobs.begin_create("rg-pages", "pages", "exp0", "files", job).result()
    wait_until(lambda: client.jobs.get("rg-pages", "pages", "exp0", "files").execution_state == "succeeded", 60, 0.3)
    status, shown = raw(
        server,
        "GET",
        "/subscriptions/sub1/resourceGroups/rg-pages/providers/Microsoft.BatchAI/workspaces/pages"
        "/experiments/exp0/jobs/files?api-version=2018-05-01",
    )
    usage = shown["properties"]["usage"]  # ours, beside Batch AI's properties: the SDK parses the job and ignores it
    assert status == 200 and usage["nodeSeconds"] > 0 and usage["attempts"][0]["attempt"] == 0 and "estimatedCost" in usage
    status, cluster_shown = raw(
        server,
        "GET",
        "/subscriptions/sub1/resourceGroups/rg-pages/providers/Microsoft.BatchAI/workspaces/pages/clusters/c?api-version=2018-05-01",
    )
    assert status == 200 and cluster_shown["properties"]["usage"]["sinceCreation"]["nodeSeconds"] > 0
    assert client.clusters.get("rg-pages", "pages", "c").current_node_count == 1
    listing = models.JobsListOutputFilesOptions(outputdirectoryid="OUT", max_results=2)
    names = [f.name for f in client.jobs.list_output_files("rg-pages", "pages", "exp0", "files", listing)]
    assert names == [f"f{i}.txt" for i in range(1, 6)]
    [login] = list(client.clusters.list_remote_login_information("rg-pages", "pages", "c"))
    assert login.node_id and login.ip_address and login.port == 22
    [job_login] = list(client.jobs.list_remote_login_information("rg-pages", "pages", "exp0", "files"))
    assert job_login.node_id == login.node_id
    scaled = client.clusters.update(
        "rg-pages",
        "pages",
        "c",
        models.ClusterUpdateParameters(scale_settings=models.ScaleSettings(manual=models.ManualScaleSettings(target_node_count=0))),
    )
    assert scaled.scale_settings.manual.target_node_count == 0
    client.experiments.begin_delete("rg-pages", "pages", "exp0").result()  # with its job
    with pytest.raises(ResourceNotFoundError):
        client.jobs.get("rg-pages", "pages", "exp0", "files")
    assert [e.name for e in client.experiments.list_by_workspace("rg-pages", "pages")] == ["exp1", "exp2"]
    assert any(op.name == "Microsoft.BatchAI/workspaces/experiments/jobs/write" for op in client.operations.list())
    usages = {u.name.value: u for u in client.usages.list("eastus")}
    assert usages["nodes"].limit == 3


def test_a_server_without_a_token_refuses_every_request(tmp_path: Path) -> None:
    server = batchaiserve.start(tmp_path, token=None)
    try:
        for path in ("/providers/Microsoft.BatchAI/operations?api-version=2018-05-01", f"{GROUP}/workspaces?api-version=2018-05-01"):
            for token in (None, "anything-at-all-here"):
                status, body = raw(server, "GET", path, token=token)
                assert status == 401 and body["error"]["code"] == "AuthenticationFailed" and "BATCHAI_API_TOKEN" in body["error"]["message"]
    finally:
        batchaiserve.stop(server)


def test_the_real_server_refuses_hostile_requests_early_and_never_echoes_a_host(served: tuple[batchaiserve.Served, Any]) -> None:
    """Raw requests, as no SDK sends them, against ``batchai serve`` itself (uvicorn)."""
    import http.client
    from urllib.parse import urlsplit

    server, _ = served
    address = urlsplit(server.url)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    group = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/hostile/providers/Microsoft.BatchAI"

    def send(method: str, path: str, body: bytes | None = None, **headers: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=20)
        connection.putrequest(method, path + "?api-version=2018-05-01", skip_host="Host" in headers)
        sized = {"Content-Length": str(len(body))} if body is not None else {}
        for name, value in {**auth, **sized, **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse()

    started = time.monotonic()
    huge = send("PUT", group + "/workspaces/big", None, **{"Content-Length": str(200 * 1024 * 1024)})  # announces 200 MiB, sends none
    assert huge.status == 413 and time.monotonic() - started < 10
    for path in (group.replace("/hostile/", "/../") + "/workspaces/w", group + "/workspaces/..", group + "/workspaces/a%00b"):
        assert send("PUT", path, b'{"location": "eastus"}').status == 400, path
    assert send("PUT", group + "/workspaces/hosted", b'{"location": "eastus"}').status == 200
    deleted = send("DELETE", group + "/workspaces/hosted", Host="evil.example.com")
    assert deleted.status == 202
    assert "evil" not in (deleted.getheader("Location") or "") + (deleted.getheader("Azure-AsyncOperation") or "")
    assert "Traceback" not in server.output()
