"""``batchai serve`` for tests: the real command on a free loopback port, with its home in the
test's folder and the connection in its environment (never on its command line); stopped by PID.

``client()`` is the azure-mgmt-batchai SDK pointed at it, built as a user would change one line:
``base_url=`` and a bearer-token header policy (the SDK sends a bearer token only over https
unless a policy sets the header itself).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import stop_process_group

BATCHAI = str(Path(sys.executable).with_name("batchai"))


@dataclass
class Served:
    url: str
    token: str | None
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = None, subscription: str = "00000000-1111-2222-3333-444444444444") -> Any:
        return sdk_client(self.url, token if token is not None else self.token, subscription)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def sdk_client(base_url: str, token: str | None, subscription: str) -> Any:
    from azure.core.credentials import AccessToken
    from azure.core.pipeline.policies import HeadersPolicy
    from azure.mgmt.batchai import BatchAI

    class Unused:
        """The SDK wants a credential; the header policy below carries the token instead."""

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("unused", int(time.time()) + 3600)

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return BatchAI(Unused(), subscription, base_url=base_url, authentication_policy=HeadersPolicy(headers), polling_interval=0.2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(folder: Path, token: str | None, connection: dict[str, Any] | None = None, timeout_s: float = 60) -> Served:
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("BATCHAI_API_TOKEN", "BATCHAI_CONNECTION")}
    env.update({"BATCHAI_HOME": str(folder / "home"), "BATCHAI_LOCAL_NODES": "3"})
    if token:
        env["BATCHAI_API_TOKEN"] = token
    if connection:
        env["BATCHAI_CONNECTION"] = json.dumps(connection)
    log = folder / "serve.log"
    command = [BATCHAI, "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"batchai serve exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Served(f"http://127.0.0.1:{port}", token, process, log)
        except OSError:
            time.sleep(0.1)
    stop_process_group(process)
    raise RuntimeError("batchai serve did not listen in time:\n" + log.read_text()[-3000:])


def stop(served: Served) -> None:
    stop_process_group(served.process)
