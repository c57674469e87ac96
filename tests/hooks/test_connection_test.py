"""What the api-server does to a Test request of a ``batchai`` connection before Airflow's route reads it.

The whole path, clicked in Chromium against a real api-server, is in tests/ui/test_connection_form.py;
here the rewrite itself, and the middleware in front of a route shaped like Airflow's (a plain ``def``,
which FastAPI runs in a worker thread).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("airflow")

from fastapi import FastAPI, Request  # at module level: FastAPI reads a route's annotations here
from fastapi.testclient import TestClient

from airflow_batchai.hooks.connection_test import BatchAIConnectionTestRequests, batchai_test_request, tested_connection_id

# what Airflow 3.3.2's connection list sends for a connection stored without host and port
UI_TEST_BODY = {
    "conn_type": "batchai",
    "connection_id": "my_gpus",
    "description": "",
    "extra": json.dumps({"hosts": "gpu-1", "ssh_user": None}),
    "host": "",
    "login": "",
    "password": "",
    "port": 0,
    "schema": "",
}


def test_the_uis_port_0_is_dropped_from_a_batchai_test_and_the_tested_id_kept() -> None:
    body, connection_id = batchai_test_request(json.dumps(UI_TEST_BODY).encode())
    assert connection_id == "my_gpus"
    assert json.loads(body) == {key: value for key, value in UI_TEST_BODY.items() if key != "port"}


def test_other_requests_pass_unchanged() -> None:
    http = json.dumps({**UI_TEST_BODY, "conn_type": "http"}).encode()
    assert batchai_test_request(http) == (http, None), "another type's request is Airflow's business"
    with_port = json.dumps({**UI_TEST_BODY, "port": 2222}).encode()
    assert batchai_test_request(with_port) == (with_port, "my_gpus"), "a real port still counts as another destination"
    assert batchai_test_request(b"not json") == (b"not json", None)
    assert batchai_test_request(b"[0]") == (b"[0]", None)


def test_the_route_behind_the_middleware_reads_the_rewritten_body_and_the_tested_id() -> None:
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/api/v2/connections/test")
    def test_connection(body: dict[str, Any], request: Request) -> dict[str, Any]:  # a worker thread, as Airflow's route
        seen.append({"body": body, "tested": tested_connection_id.get(), "length": request.headers["content-length"]})
        return {"status": True}

    app.add_middleware(BatchAIConnectionTestRequests)
    with TestClient(app) as client:
        assert client.post("/api/v2/connections/test", json=UI_TEST_BODY).json() == {"status": True}
        assert client.post("/api/v2/connections/test", json={**UI_TEST_BODY, "conn_type": "http"}).status_code == 200
    rewritten, untouched = seen
    assert "port" not in rewritten["body"] and rewritten["tested"] == "my_gpus"
    assert int(rewritten["length"]) == len(json.dumps(rewritten["body"]).encode()), "the length matches the new body"
    assert untouched["body"]["port"] == 0 and untouched["tested"] is None
    assert tested_connection_id.get() is None, "the id lives only as long as its request"
