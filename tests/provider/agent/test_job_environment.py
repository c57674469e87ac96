"""A job sees its own environment, never that of the process that started its agent.

The control plane's processes hold secrets in their environment (Airflow's JWT secret and
connections, the REST API's token, Azure credentials); the tests put such variables into this
process, which starts the local agents, and look at what a real job on a local node sees.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_batchai.agent.protocol import job_base_environment
from airflow_batchai.reading.readmodels import JobView
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from tests.conftest import custom_job, kill_agents_under, wait_until

CONTROL_PLANE_SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-never-in-a-job",
    "AIRFLOW_CONN_BATCHAI_DEFAULT": '{"conn_type": "batchai", "extra": {"storage_account_key": "key-never-in-a-job"}}',
    "BATCHAI_API_TOKEN": "api-token-never-in-a-job",
    "AZURE_CLIENT_SECRET": "azure-secret-never-in-a-job",
    "SOME_TEAM_SETTING": "visible-only-when-allowed",
}


def test_a_job_inherits_the_basics_and_the_admins_allow_list_only() -> None:
    basics = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HTTPS_PROXY": "http://proxy:3128",
        "NCCL_SOCKET_IFNAME": "ib0",
    }
    environ = {**basics, "WANDB_DIR": "/scratch/wandb", **CONTROL_PLANE_SECRETS}
    assert job_base_environment(environ) == basics
    allowed = job_base_environment(environ, ["WANDB_DIR", "SOME_TEAM_*"])
    assert allowed["WANDB_DIR"] == "/scratch/wandb" and allowed["SOME_TEAM_SETTING"] == "visible-only-when-allowed"
    assert not set(allowed) & {"AIRFLOW__API_AUTH__JWT_SECRET", "BATCHAI_API_TOKEN", "AZURE_CLIENT_SECRET"}


def run_job(service: Service, command: str, name: str) -> tuple[JobView, str]:
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    body = custom_job(command, jobPreparation={"commandLine": "env > $AZ_BATCHAI_JOB_TEMP/../prep-env-" + name})
    service.create_job("c", name, load_job_spec({"properties": body}, environ={}), "exp")
    done = service.wait_job(name, "exp", timeout_s=60, poll_s=0.1)
    return done, (service.read_output_file(name, "stdout.txt", "exp") or b"").decode()


def test_a_local_job_and_its_preparation_see_no_variable_of_the_process_that_started_them(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CONTROL_PLANE_SECRETS.items():
        monkeypatch.setenv(name, value)
    service = Service.embedded(home, nodes=1, settings=Settings(job_env_allow=("SOME_TEAM_*",)))
    done, stdout = run_job(service, "env; cat /proc/self/environ | tr '\\0' '\\n' | sed 's/^/proc:/'", "env")
    assert done.execution_state == "succeeded", done
    assert "AZ_BATCHAI_JOB_TEMP=" in stdout and "SOME_TEAM_SETTING=visible-only-when-allowed" in stdout
    prepared = next((home / "nodes" / "local-0").rglob("prep-env-env")).read_text()
    assert "AZ_BATCHAI_JOB_TEMP=" in prepared
    for secret_name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_CONN_BATCHAI_DEFAULT", "BATCHAI_API_TOKEN", "AZURE_CLIENT_SECRET"):
        secret = CONTROL_PLANE_SECRETS[secret_name]
        assert secret_name not in stdout and secret not in stdout and secret not in prepared
    agent_logs = "".join(p.read_text(errors="replace") for p in home.rglob("agent*.log"))
    assert not any(value in agent_logs for value in CONTROL_PLANE_SECRETS.values())


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """A home another user can reach (tests' folders are 0700)."""
    session = Path(os.environ["TMPDIR"])
    for folder in {session, Path(os.environ.get("BATCHAI_TESTS_FOLDER", session))}:  # a pytest-xdist worker's, and the suite's
        os.chmod(folder, 0o711)
    home = Path(tempfile.mkdtemp(dir=session))
    os.chmod(home, 0o711)
    yield home
    kill_agents_under(home)


AS_ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="starting jobs as another user needs the agent to run as root")


@AS_ROOT_ONLY
def test_a_job_run_as_the_connections_job_user_cannot_read_the_control_planes_processes(
    monkeypatch: pytest.MonkeyPatch, shared_home: Path
) -> None:
    """Same user, a job could read /proc/<pid>/environ of the worker or api-server beside it; as ``job_user`` it cannot."""
    monkeypatch.setenv("BATCHAI_API_TOKEN", CONTROL_PLANE_SECRETS["BATCHAI_API_TOKEN"])
    home = shared_home
    service = Service.embedded(home, nodes=1, settings=Settings(job_user="nobody"))
    command = f"id -un; cat /proc/{os.getpid()}/environ || echo no-access; echo out > $AZ_BATCHAI_OUTPUT_MODEL/m.txt"
    body_extra = {"outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}]}
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    service.create_job("c", "as-nobody", load_job_spec({"properties": custom_job(command, **body_extra)}, environ={}), "exp")
    done = service.wait_job("as-nobody", "exp", timeout_s=60, poll_s=0.1)
    stdout = (service.read_output_file("as-nobody", "stdout.txt", "exp") or b"").decode()
    assert done.execution_state == "succeeded", (done, stdout)
    assert stdout.splitlines()[0] == "nobody" and "no-access" in stdout
    assert CONTROL_PLANE_SECRETS["BATCHAI_API_TOKEN"] not in stdout
    model = {f.name for f in service.list_output_files("as-nobody", "exp", output_directory_id="MODEL")}
    assert model == {"m.txt"}, "the job's own output folder is writable by its user"


@AS_ROOT_ONLY
def test_a_job_user_cannot_make_the_root_agent_write_or_create_outside_its_folders(shared_home: Path) -> None:
    service = Service.embedded(shared_home, nodes=1, settings=Settings(job_user="nobody"))
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={}))
    wait_until(lambda: service.show_cluster("c").allocation_state == "steady", 30, 0.1, what="cluster steady")
    escape = f"/etc/batchai-escape-{os.getpid()}"
    outside = {"outputDirectories": [{"id": "OUT", "pathPrefix": escape}]}
    service.create_job("c", "escape", load_job_spec({"properties": custom_job("echo hi", **outside)}, environ={}), "exp")
    failed = service.wait_job("escape", "exp", timeout_s=60, poll_s=0.1)
    assert failed.execution_state == "failed" and failed.execution_info.errors[0].code == "InvalidPath", failed
    assert not os.path.exists(escape)

    target = shared_home / "root-owned.txt"
    target.write_text("untouched\n")
    plant = {"jobPreparation": {"commandLine": f"ln -sf {target} $AZ_BATCHAI_STDOUTERR_DIR/stdout.txt"}}
    service.create_job("c", "plant", load_job_spec({"properties": custom_job("echo into the link", **plant)}, environ={}), "exp")
    planted = service.wait_job("plant", "exp", timeout_s=60, poll_s=0.1)
    assert planted.execution_state == "failed" and "symbolic link" in planted.execution_info.errors[0].message, planted
    assert target.read_text() == "untouched\n"


def test_a_rest_api_job_on_local_nodes_is_refused_unless_jobs_run_as_another_user(home: Path) -> None:
    service = Service.embedded(home, nodes=1)
    service.create_cluster("c", load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={}))
    spec = load_job_spec({"properties": custom_job("env")}, environ={})
    from airflow_batchai.errors import BatchAIError

    with pytest.raises(BatchAIError) as refused:
        service.create_job("c", "from-api", spec, "exp", shared_surface=True)
    assert refused.value.code == "LocalNodesRefused" and "job_user" in refused.value.message
    assert service.list_jobs("exp") == []
    service.create_job("c", "from-a-dag", spec, "exp")  # a DAG's author already runs code here: allowed
    opted_in = Service.embedded(home, nodes=1, settings=Settings(local_jobs_from_shared_surfaces=True))
    assert opted_in.create_job("c", "from-api", spec, "exp", shared_surface=True).name == "from-api"

    # A cluster's setup task runs as the agent's user whatever job_user says: refused from the API too.
    with_setup = load_cluster_spec(
        {
            "scaleSettings": {"manual": {"targetNodeCount": 0}},
            "nodeSetup": {"setupTask": {"commandLine": "env", "stdOutErrPathPrefix": "/x"}},
        },
        environ={},
    )
    confined = Service.embedded(home, nodes=1, settings=Settings(job_user="nobody"))
    with pytest.raises(BatchAIError) as setup_refused:
        confined.create_cluster("with-setup", with_setup, shared_surface=True)
    assert setup_refused.value.code == "LocalNodesRefused"
    assert [c.name for c in confined.list_clusters()] == ["c"]
    with pytest.raises(BatchAIError, match="containerSettings"):
        container = custom_job("env", containerSettings={"imageSourceRegistry": {"image": "ubuntu"}})
        confined.create_job("c", "in-docker", load_job_spec({"properties": container}, environ={}), "exp")
