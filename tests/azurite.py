"""Azurite's Blob service for tests: started on a free loopback port, stopped by PID.

Always with ``--disableTelemetry`` (without it Azurite tries to reach the internet); in-memory
persistence, so nothing is left on disk, unless a test gives it a folder of its own (to kill
it and start it again on the same data, as a storage failover). The account is Azurite's well-known
development account; its key is public, and tests still treat it as a secret.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from airflow_batchai.data.credentials import StorageCredential

REPO = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={self.endpoint};"

    def credential(self) -> StorageCredential:
        return StorageCredential.parse(connection_string=self.connection_string)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start(host: str = "127.0.0.1", location: Path | None = None, port: int | None = None) -> Azurite:
    """On loopback; or on the test bridge's address, where the SSH test hosts reach it too.

    With ``location`` the data lives in that folder (Azurite saves its metadata every 5 s, so a
    SIGKILL loses the writes of the last seconds, acknowledged or not).
    """
    if not AZURITE_BLOB.exists():
        raise RuntimeError(f"{AZURITE_BLOB} is missing: scripts/test.sh runs `npm install` for it")
    port = port or _free_port(host)
    argv = [str(AZURITE_BLOB), "--blobHost", host, "--blobPort", str(port)]
    argv += ["--disableTelemetry", "--skipApiVersionCheck", "--silent", "--loose"]
    argv += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"azurite-blob exited with {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return Azurite(port, process, host)
        except OSError:
            time.sleep(0.1)
    stop(Azurite(port, process, host))
    raise RuntimeError("azurite-blob did not open its port within 30 s")


def stop(azurite: Azurite) -> None:
    try:
        os.killpg(azurite.process.pid, signal.SIGTERM)
        azurite.process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(azurite.process.pid, signal.SIGKILL)
        azurite.process.wait(timeout=10)
