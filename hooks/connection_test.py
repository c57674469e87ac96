"""The **Test** button of Airflow's connection list, made to work for ``batchai`` connections.

Two things stand between that button and ``BatchAIHook.test_connection`` on Airflow 3.3.2, and
both are fixed here, for ``batchai`` requests only, before Airflow's route reads the request:

- The UI sends ``port: Number(connection.port)``, so ``0`` for a connection stored without a
  port (every ``batchai`` one: the form hides the field). The route then sees "a different
  destination than the stored one" and answers 400 Bad Request unless the caller supplies the
  password, which the UI never does. A ``batchai`` connection addresses no port, so a ``0`` is
  dropped from the request: what Airflow's own later fix does for every type (apache/airflow#73298).
- The route tests a copy of the connection under a random id, which is all the hook would see.
  The id the user clicked is kept in ``tested_connection_id`` while the request runs, so the
  hook's messages name it.

This module is a plugin, so every Airflow process imports it: it imports nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from airflow.plugins_manager import AirflowPlugin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEST_ROUTE = "/api/v2/connections/test"
MAX_BODY_BYTES = 1 << 20  # a larger test request is passed on untouched (Airflow answers it as before)

tested_connection_id: ContextVar[str | None] = ContextVar("batchai_tested_connection_id", default=None)


def batchai_test_request(body: bytes) -> tuple[bytes, str | None]:
    """A Test request's body as Airflow should read it, and the id of the ``batchai`` connection it tests.

    Another type's request, or a body that is not a JSON object, comes back unchanged with no id.
    """
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return body, None
    if not isinstance(request, dict) or request.get("conn_type") != "batchai":
        return body, None
    connection_id = request.get("connection_id")
    if request.get("port") == 0 and not isinstance(request.get("port"), bool):
        del request["port"]
        body = json.dumps(request).encode()
    return body, connection_id if isinstance(connection_id, str) else None


class BatchAIConnectionTestRequests:
    """ASGI middleware: rewrites ``POST …/api/v2/connections/test`` for ``batchai`` (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_test_request(scope):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see that
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        body, connection_id = batchai_test_request(body)
        scope = dict(scope, headers=_with_content_length(scope.get("headers", []), len(body)))
        token = tested_connection_id.set(connection_id)
        try:
            await self.app(scope, _replay({"type": "http.request", "body": body, "more_body": False}, receive), send)
        finally:
            tested_connection_id.reset(token)


def _is_test_request(scope: Scope) -> bool:
    if scope["type"] != "http" or scope.get("method") != "POST" or not str(scope.get("path", "")).endswith(TEST_ROUTE):
        return False
    length = dict(scope.get("headers", [])).get(b"content-length")
    return length is not None and length.isdigit() and int(length) <= MAX_BODY_BYTES


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` that gives ``first`` once, then whatever the client sends next (a disconnect)."""
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _with_content_length(headers: Any, length: int) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() != b"content-length"] + [(b"content-length", str(length).encode())]


class BatchAIConnectionTestPlugin(AirflowPlugin):
    name = "batchai_connection_test"
    fastapi_root_middlewares = [{"middleware": BatchAIConnectionTestRequests, "name": "Batch AI connection test"}]
