"""docker-compose.yaml, checked by Debian's docker-compose, and the node image's scripts run without Docker.

There is no Docker engine here: the compose file is validated by ``docker-compose config`` and
read back; the scripts the images run (keygen.sh, node-entrypoint.sh) run for real on this
machine, with sshd on a loopback port, and so do airflow-init's command and the api-server's
login, with the services' environment and their volumes as folders of the test's own.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from airflow_batchai.config import ProviderConfig, storage_credential
from airflow_batchai.transport.ssh import HostSpec, SSHAuth, SSHTransport
from tests.conftest import REPO, stop_process_group

COMPOSE = shutil.which("docker-compose")
PASSWORDS_FILE = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
DOCUMENTED_LOGIN = ("admin", "admin")  # docker-compose.yaml's header (and the README) tell users to log in so
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


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


def _mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of a service's volumes: short syntax (docker-compose 1.x) or long (2.x)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts.append((source, target, "ro" in mode))
        else:
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
    return mounts


def _mount_holding(service: dict, path: str) -> tuple[str, str, bool] | None:
    """The volume a path in the service's container lies on (the deepest mount above it), if any."""
    holding = [mount for mount in _mounts(service) if path.startswith(mount[1].rstrip("/") + "/")]
    return max(holding, key=lambda mount: len(mount[1]), default=None)


def _as_run(command: list[str]) -> list[str]:
    """A command as the container gets it: compose turns ``$$`` into ``$`` (``config`` prints it escaped)."""
    return [part.replace("$$", "$") for part in command]


def test_the_api_server_reads_the_passwords_file_that_airflow_init_writes(compose: dict) -> None:
    """Each container has its own filesystem: the file is shared only through a volume both mount."""
    services = compose["services"]
    api, init = services["airflow-apiserver"], services["airflow-init"]
    path = api["environment"][PASSWORDS_FILE]
    assert init["environment"][PASSWORDS_FILE] == path
    api_mount, init_mount = _mount_holding(api, path), _mount_holding(init, path)
    assert api_mount is not None, f"{path} is inside the api-server's own container, which nobody else writes to"
    assert init_mount is not None and init_mount[:2] == api_mount[:2], f"airflow-init writes {path} elsewhere: {init_mount}"
    assert not init_mount[2] and not api_mount[2], "both write the file (the api-server adds passwords for new users)"
    assert api_mount[0] in compose["volumes"], "a named volume: it outlives the containers"
    assert f'"${PASSWORDS_FILE}"' in _as_run(init["command"])[-1], "airflow-init writes the very file the api-server reads"
    assert api["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    header = (REPO / "docker-compose.yaml").read_text().split("\nx-airflow:")[0]
    assert "open http://localhost:8080 ({} / {})".format(*DOCUMENTED_LOGIN) in header


def test_the_node_image_installs_the_examples_packages_and_pytorch_from_its_cpu_index() -> None:
    """PyPI's torch is the CUDA build (5 GB more); the DDP example needs torch, scikit-learn (and TensorBoard for curves)."""
    dockerfile = (REPO / "docker" / "node.Dockerfile").read_text()
    pip_commands = []
    for instruction in dockerfile.replace("\\\n", " ").splitlines():
        if instruction.startswith("RUN "):
            for command in instruction[4:].split("&&"):
                words = shlex.split(command)
                if words[:2] in (["pip3", "install"], ["pip", "install"]):
                    pip_commands.append(words)
    torch_installs = [words for words in pip_commands if any(word.startswith("torch") for word in words)]
    assert torch_installs, "the node image installs no PyTorch"
    for words in torch_installs:
        assert words[words.index("--index-url") + 1] == TORCH_CPU_INDEX and "--extra-index-url" not in words
    installed = {word.split("=")[0].split(">")[0] for words in pip_commands for word in words if not word.startswith("-")}
    assert {"scikit-learn", "tensorboard", "numpy", "pillow"} <= installed


def _container_environment(service: dict, volumes: Path, home: Path) -> dict[str, str]:
    """The service's environment on this machine: its volumes as folders under ``volumes`` (one per
    named volume, so two services share a folder exactly when they share the volume), SQLite for
    Postgres, an Airflow home, a HOME and a TMPDIR in the test's folder."""
    remap = {}
    for source, target, _ in _mounts(service):
        if source.startswith("/"):  # a bind mount: its source is this machine's path already
            remap[target] = source
        else:
            remap[target] = str(volumes / source)
            Path(remap[target]).mkdir(parents=True, exist_ok=True)

    def local(value: str) -> str:
        for target, folder in remap.items():
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return folder + value[len(target) :]
        return value

    environment = {key: local(str(value)) for key, value in service["environment"].items()}
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        **environment,
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__WORKERS": "1",
    }


def _post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_admin_admin_logs_in_to_the_api_server_after_airflow_init_as_compose_runs_them(compose: dict, tmp_path: Path) -> None:
    """airflow-init's command and the api-server, for real, each with its own environment and volumes:
    the api-server's SimpleAuthManager reads the file airflow-init wrote and takes admin / admin."""
    services = compose["services"]
    for name in ("airflow-init", "airflow-apiserver"):  # else running the command here would write outside tmp_path
        path = services[name]["environment"][PASSWORDS_FILE]
        assert _mount_holding(services[name], path), f"{name}: {path} is in the container's own filesystem"
    volumes = tmp_path / "volumes"
    init_env = _container_environment(services["airflow-init"], volumes, tmp_path / "airflow-init")
    init = subprocess.run(_as_run(services["airflow-init"]["command"]), env=init_env, capture_output=True, text=True, timeout=240)
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    passwords = Path(init_env[PASSWORDS_FILE])
    assert passwords.is_relative_to(volumes), "the file is on a volume, not in airflow-init's container"
    assert json.loads(passwords.read_text()) == dict([DOCUMENTED_LOGIN])

    api_env = _container_environment(services["airflow-apiserver"], volumes, tmp_path / "airflow-apiserver")
    api_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = init_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]  # one database, as Postgres is
    port = _free_port()
    command = [*_as_run(services["airflow-apiserver"]["command"]), "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "api-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, env=api_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the api-server exited ({server.returncode}):\n{log_path.read_text()[-3000:]}"
            try:
                status, answer = _post_json(f"{url}/auth/token", {"username": DOCUMENTED_LOGIN[0], "password": DOCUMENTED_LOGIN[1]})
                break
            except OSError:
                assert time.monotonic() < deadline, f"the api-server did not answer in 120 s:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.5)
        assert status == 201 and answer.get("access_token"), (status, answer)
        wrong, _ = _post_json(f"{url}/auth/token", {"username": DOCUMENTED_LOGIN[0], "password": "not-admin"})
        assert wrong == 401
        request = urllib.request.Request(f"{url}/api/v2/dags?limit=1", headers={"Authorization": f"Bearer {answer['access_token']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert json.loads(passwords.read_text()) == dict([DOCUMENTED_LOGIN]), "the api-server made up no password of its own"
        assert "Password for user" not in log_path.read_text()
    finally:
        stop_process_group(server, 20)
