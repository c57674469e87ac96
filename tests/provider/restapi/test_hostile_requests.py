"""The REST API against requests an attacker composes: names, bodies, Host headers, forged
operation ids. In process (FastAPI's TestClient) over a real embedded Service and real agents."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_batchai.restapi.app import create_app
from airflow_batchai.restapi.inputs import MAX_BODY_BYTES
from airflow_batchai.service import Service, Settings
from tests.conftest import wait_until

API = "?api-version=2018-05-01"
SUB, GROUP = "00000000-1111-2222-3333-444444444444", "team-rg"
WS = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.BatchAI/workspaces/ws"


@pytest.fixture
def api(home: Path) -> Iterator[tuple[TestClient, Service]]:
    service = Service.embedded(home, nodes=1, settings=Settings(local_jobs_from_shared_surfaces=True))
    with TestClient(create_app(lambda: service), raise_server_exceptions=False) as client:
        assert client.put(WS + API, json={"location": "westeurope"}).status_code == 200
        cluster = {"properties": {"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 1}}}}
        assert client.put(WS + "/clusters/c" + API, json=cluster).status_code == 200
        assert client.put(WS + "/experiments/exp" + API).status_code == 200
        yield client, service


def job_body(command: str = "echo hi") -> dict[str, Any]:
    return {
        "properties": {
            "cluster": {"id": WS + "/clusters/c"},
            "nodeCount": 1,
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "mountVolumes": {
                "azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]
            },
            "customToolkitSettings": {"commandLine": command},
        }
    }


BAD_SEGMENTS = ["%2e%2e", "%2E", "a%00b", "a%0d%0aSet-Cookie:x", "a%0ab", "a\\b", "a%5cb", "a b", "x" * 65, "%C3%A9t%C3%A9"]


@pytest.mark.parametrize("position", ["subscription", "resourceGroups", "workspaces", "experiments", "jobs"])
def test_every_bad_path_segment_is_an_arm_400_naming_it_and_creates_nothing(
    api: tuple[TestClient, Service], position: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, service = api
    before = sorted(service.store.list(""))
    for bad in BAD_SEGMENTS:
        parts = {"subscription": SUB, "resourceGroups": GROUP, "workspaces": "ws", "experiments": "exp", "jobs": "j"}
        parts[position] = bad
        url = (
            f"/subscriptions/{parts['subscription']}/resourceGroups/{parts['resourceGroups']}/providers/Microsoft.BatchAI"
            f"/workspaces/{parts['workspaces']}/experiments/{parts['experiments']}/jobs/{parts['jobs']}{API}"
        )
        answer = client.put(url, json=job_body())
        assert answer.status_code in (400, 404), (bad, answer.status_code, answer.text)
        if answer.status_code == 400:
            error = answer.json()["error"]
            assert error["code"] in ("InvalidResourceName", "InvalidResourceGroup") and error["target"], (bad, error)
            assert "\n" not in error["message"] and "\r" not in error["message"]
    assert sorted(service.store.list("")) == before, "nothing was created"
    assert not [r for r in caplog.records if r.exc_info], "bad input logs no traceback"


def raw_put(app: Any, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """A request exactly as a raw client may send it: HTTP clients resolve '.' and '..' before sending."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": API[1:].encode(),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]) or b"{}")


@pytest.mark.parametrize("bad", ["..", "."])
@pytest.mark.parametrize("position", range(5))
def test_dot_segments_sent_raw_are_refused_too(home: Path, bad: str, position: int) -> None:
    service = Service.embedded(home, nodes=1, settings=Settings(local_jobs_from_shared_surfaces=True))
    app = create_app(lambda: service)
    parts = [SUB, GROUP, "ws", "exp", "j"]
    parts[position] = bad
    path = (
        f"/subscriptions/{parts[0]}/resourceGroups/{parts[1]}/providers/Microsoft.BatchAI"
        f"/workspaces/{parts[2]}/experiments/{parts[3]}/jobs/{parts[4]}"
    )
    status, body = raw_put(app, path, json.dumps(job_body()).encode())
    assert status == 400 and body["error"]["code"] in ("InvalidResourceName", "InvalidResourceGroup"), (status, body)
    assert service.store.list("") == []


def test_an_oversized_body_is_refused_unread_and_a_deep_one_is_a_400(api: tuple[TestClient, Service]) -> None:
    client, _ = api
    url = WS + "/experiments/exp/jobs/big" + API
    big = b'{"properties": {"x": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}}'
    declared = client.put(url, content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "RequestEntityTooLarge"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read, stopped at the limit
        yield b'{"properties": {"x": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'"}}'

    streamed = client.put(url, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    for depth in (100_000, 40):
        deep = client.put(url, content=b"[" * depth + b"]" * depth, headers={"content-type": "application/json"})
        assert deep.status_code == 400, (depth, deep.text)
        nested = '{"properties": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
        assert client.put(url, content=nested.encode(), headers={"content-type": "application/json"}).status_code == 400


def test_operation_links_never_come_from_the_host_header(api: tuple[TestClient, Service]) -> None:
    client, _ = api
    assert client.put(WS + "/experiments/exp/jobs/short" + API, json=job_body()).status_code == 200
    answer = client.delete(WS + "/experiments/exp/jobs/short" + API, headers={"Host": "evil.example.com"})
    assert answer.status_code == 202
    for header in ("Location", "Azure-AsyncOperation"):
        assert "evil" not in answer.headers[header] and answer.headers[header].startswith(f"/subscriptions/{SUB}/providers/")
    listed = client.get(WS + "/experiments" + API + "&maxresults=1", headers={"Host": "evil.example.com"})
    assert "evil" not in json.dumps(listed.json())


def test_a_status_poll_only_reads_and_a_forged_operation_id_is_not_found(api: tuple[TestClient, Service], home: Path) -> None:
    client, service = api
    gate = home / "gate"
    created = client.put(WS + "/experiments/exp/jobs/long" + API, json=job_body(f"until test -e {gate}; do sleep 0.1; done"))
    assert created.status_code == 200
    wait_until(lambda: service.show_job("long", "exp", "ws").execution_state == "running", 30, 0.1, what="job running")
    location = f"/subscriptions/{SUB}/providers/Microsoft.BatchAI/locations/westeurope"
    for kind in ("deleteJob", "terminateJob", "deleteCluster", "deleteWorkspace"):
        forged = base64.urlsafe_b64encode(json.dumps([kind, GROUP, "ws", "exp", "long"]).encode()).decode().rstrip("=")
        for route in ("operationStatuses", "operationResults"):
            assert client.get(f"{location}/{route}/{forged}{API}").status_code in (400, 404)
    assert service.show_job("long", "exp", "ws").execution_state == "running", "a forged GET changed nothing"
    assert service.show_cluster("c", "ws").name == "c"

    answer = client.post(WS + "/experiments/exp/jobs/long/terminate" + API)
    assert answer.status_code == 202
    status_url = answer.headers["Azure-AsyncOperation"]
    assert len(status_url.rsplit("/", 1)[1].split("?")[0]) >= 32, "an opaque, random id"
    # Nobody polls: the server carries the operation to its end by itself.
    wait_until(lambda: service.show_job("long", "exp", "ws").execution_state == "failed", 60, 0.1, what="terminated without a poll")
    assert client.get(status_url).json()["status"] == "Succeeded"


def test_bad_input_never_reaches_a_500(api: tuple[TestClient, Service], caplog: pytest.LogCaptureFixture) -> None:
    client, _ = api
    caplog.set_level(logging.INFO)
    probes = [
        ("put", WS + "/experiments/exp/jobs/j" + API, b"not json"),
        ("put", WS + "/experiments/exp/jobs/j" + API, b"[1, 2]"),
        ("put", WS + "/experiments/exp/jobs/j" + API, b'{"properties": 5}'),
        ("put", WS + "/experiments/exp/jobs/j" + API, b'{"properties": {"nodeCount": "x"}}'),
        ("put", WS + "/clusters/c2" + API, b'{"properties": {"scaleSettings": {"manual": {"targetNodeCount": -1}}}}'),
        ("patch", WS + "/clusters/c" + API, b'{"properties": {"scaleSettings": []}}'),
        ("get", WS + "/experiments/exp/jobs/j/listOutputFiles" + API + "&outputdirectoryid=..%2f..", b""),
        ("get", WS + "/experiments/exp/jobs" + API + "&$skiptoken=../../etc", b""),
        ("get", f"/subscriptions/{SUB}/providers/Microsoft.BatchAI/locations/westeurope/operationStatuses/%00{API}", b""),
    ]
    for method, url, body in probes:
        answer = client.request(method.upper(), url, content=body, headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500, (method, url, answer.status_code, answer.text)
        assert "error" in answer.json()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_relative_links_resolve_as_the_sdk_joins_them_under_a_mounted_prefix(home: Path) -> None:
    """Without a public URL, links are relative to the API's root: azure-core joins them onto the
    client's base_url (``http://airflow/batchai/arm``), so the mount's prefix must not be in them."""
    from azure.core import PipelineClient
    from fastapi import FastAPI

    service = Service.embedded(home, nodes=1, settings=Settings(local_jobs_from_shared_surfaces=True))
    outer = FastAPI()
    outer.mount("/batchai/arm", create_app(lambda: service))
    sdk = PipelineClient(base_url="http://testserver/batchai/arm")
    with TestClient(outer) as client:
        prefix = "/batchai/arm"
        assert client.put(prefix + WS + API, json={"location": "westeurope"}).status_code == 200
        for name in ("e1", "e2"):
            assert client.put(prefix + WS + f"/experiments/{name}" + API).status_code == 200
        page = client.get(prefix + WS + "/experiments" + API + "&maxresults=1").json()
        following = client.get(sdk.format_url(page["nextLink"]))
        assert following.status_code == 200 and [e["name"] for e in following.json()["value"]] == ["e2"]
        deleted = client.delete(prefix + WS + "/experiments/e2" + API)
        assert deleted.status_code == 202
        for header in ("Azure-AsyncOperation", "Location"):
            assert client.get(sdk.format_url(deleted.headers[header])).status_code in (200, 204), header
