"""docker-compose.yaml, checked by Debian's docker-compose, and the node image's scripts run without Docker.

There is no Docker engine here: the compose file is validated by ``docker-compose config`` and
read back; the scripts the images run (keygen.sh, node-entrypoint.sh) run for real on this
machine, with sshd on a loopback port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from airflow_batchai.config import ProviderConfig, storage_credential
from airflow_batchai.transport.ssh import HostSpec, SSHAuth, SSHTransport
from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module")
def compose() -> dict:
    if COMPOSE is None:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(
        [COMPOSE, "-f", str(REPO / "docker-compose.yaml"), "config"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_has_airflow_postgres_azurite_and_two_nodes(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "azurite", "keygen", "node1", "node2", "airflow-init"} <= set(services)
    commands = {
        name: services[name]["command"] for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
    }
    assert commands == {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
    }
    assert "--disableTelemetry" in services["azurite"]["command"]
    for name in ("node1", "node2"):
        assert services[name]["build"]["dockerfile"] == "docker/node.Dockerfile"
    assert "pip install --no-cache-dir -e /opt/airflow-provider-batchai" in (REPO / "docker" / "airflow.Dockerfile").read_text()


def test_the_batchai_connection_points_at_both_nodes_with_verified_host_keys(compose: dict) -> None:
    environment = compose["services"]["airflow-scheduler"]["environment"]
    connection = json.loads(environment["AIRFLOW_CONN_BATCHAI_DEFAULT"])
    assert connection["conn_type"] == "batchai"
    config = ProviderConfig.model_validate(connection["extra"])
    assert [HostSpec.parse(h).host for h in config.hosts] == ["node1", "node2"]
    assert config.known_hosts == "/ssh-keys/known_hosts" and not config.insecure_accept_unknown_host_keys
    credential = storage_credential(config)
    assert credential is not None and credential.blob_endpoint == "http://azurite:10000/devstoreaccount1" and config.files_on_blob
    assert "azurite" in compose["services"]["airflow-scheduler"]["depends_on"]


def test_the_controller_runs_as_its_own_service_on_the_same_connection(compose: dict) -> None:
    controller = compose["services"]["batchai-controller"]
    assert controller["command"][:2] == ["batchai", "controller"]
    assert controller["image"] == compose["services"]["airflow-scheduler"]["image"]
    connection = json.loads(controller["environment"]["BATCHAI_CONNECTION"])
    assert connection == json.loads(compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_BATCHAI_DEFAULT"])
    assert {"azurite", "node1", "node2"} <= set(controller["depends_on"]) and controller["restart"] == "unless-stopped"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_node_image_scripts_give_a_node_airflow_can_log_in_to(tmp_path: Path) -> None:
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("OpenSSH sshd is not installed")
    keys, port = tmp_path / "ssh-keys", _free_port()
    env = {"SSH_KEYS_DIR": str(keys), "NODES": "127.0.0.1", "SSHD_PORT": str(port), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    subprocess.run(["sh", str(REPO / "docker" / "keygen.sh")], env=env, check=True, capture_output=True, timeout=60)
    first_key = (keys / "client_key").read_bytes()
    subprocess.run(["sh", str(REPO / "docker" / "keygen.sh")], env=env, check=True, capture_output=True, timeout=60)
    assert (keys / "client_key").read_bytes() == first_key, "keygen keeps existing keys"
    assert (keys / "known_hosts").read_text().startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    node_env = {**env, "NODE_NAME": "127.0.0.1", "LISTEN_ADDRESS": "127.0.0.1", "SSHD_DIR": str(tmp_path / "sshd")}
    sshd = subprocess.Popen(
        ["sh", str(REPO / "docker" / "node-entrypoint.sh")], env=node_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        auth = SSHAuth(user="root", key_file=str(keys / "client_key"), known_hosts=str(keys / "known_hosts"), allow_agent=False)
        node = SSHTransport(HostSpec("127.0.0.1", port), auth, python=sys.executable)
        assert node.run(["python3", "-c", "import sys; print(sys.version_info >= (3, 8))"]).stdout == b"True\n"
        node.close()
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
