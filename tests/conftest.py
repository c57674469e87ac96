"""Shared fixtures: an embedded-default Service in a temporary home, and waiting helpers.

Every node is a real local process tree; nothing of our own code is mocked. Fixtures stop
what they started: after each test, any agent still running under the test's home is
terminated by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.service import Service, Settings

REAL_AUTHORIZED_KEYS = Path.home() / ".ssh" / "authorized_keys"
_SESSION_FOLDERS: list[str] = []
# The suite's own temporary folder, for its pytest-xdist workers to make theirs in (they inherit it).
_SUITE_FOLDER = "BATCHAI_TESTS_FOLDER"
_OWN_AIRFLOW_HOME = "BATCHAI_TESTS_OWN_AIRFLOW_HOME"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory reads basetemp
def pytest_configure(config: pytest.Config) -> None:
    """Everything the suite starts writes its temporary files into one folder of its own, removed at the end.

    TMPDIR is set before any test runs, so agents, jobs (torch keeps a compile cache in the
    temporary folder), Airflow and its subprocesses inherit it. In-process imports of airflow
    must never create or read ~/airflow, so AIRFLOW_HOME is set here too, before any test module
    imports airflow. Set here, not at import of this file: scripts that import helpers from it
    in a subprocess must not make folders of their own. A pytest-xdist worker makes its folder
    (and its own AIRFLOW_HOME: workers must not share an in-process Airflow's files) inside the
    suite's, so the suite's check of the machine and its cleanup cover every worker.
    """
    worker = _is_worker(config) and os.environ.get(_SUITE_FOLDER)
    parent = os.environ[_SUITE_FOLDER] if worker else tempfile.gettempdir()
    session = tempfile.mkdtemp(prefix="batchai-tests-", dir=parent)
    _SESSION_FOLDERS.append(session)
    if not worker:
        os.environ[_SUITE_FOLDER] = session
        config.stash[_MACHINE] = _machine_now(Path(parent))
        if config.option.basetemp is None:
            # Short: Slurm's step sockets and the agents' live under tests' folders, and a Unix socket's
            # path has 108 bytes (pytest's own basetemp, with xdist's popen-gwN, left too few).
            config.option.basetemp = os.path.join(session, "t")
    os.environ["TMPDIR"] = session
    tempfile.tempdir = session
    if "AIRFLOW_HOME" not in os.environ or os.environ.get(_OWN_AIRFLOW_HOME):
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-", dir=session)
        os.environ[_OWN_AIRFLOW_HOME] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _SESSION_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


# Files that share a costly session fixture run on one pytest-xdist worker, which starts it once
# (xdist's own xdist_group marker is lost on pytest 9.2, whose items keep their id elsewhere).
SHARED_FIXTURE_GROUPS = {
    "tests/ui/test_batchai_view.py": "airflow_stack",
    "tests/ui/test_rest_api_in_airflow.py": "airflow_stack",
    "tests/ui/test_connection_form.py": "airflow_stack",
    "tests/ui/test_job_pages.py": "job_pages",  # its own api-servers, started once for the file
    "tests/operators/test_on_a_running_airflow.py": "airflow_stack",
    "tests/provider/slurm/test_commands.py": "slurm",
    "tests/provider/slurm/test_slurm_clusters.py": "slurm",
    "tests/provider/slurm/test_slurm_dags.py": "slurm",
}


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Tests go to workers one by one, as in xdist's ``load``, except SHARED_FIXTURE_GROUPS, each to one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureGroups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_FIXTURE_GROUPS.get(nodeid.split("::", 1)[0], nodeid)

    return SharedFixtureGroups(config, log)


@dataclass(frozen=True)
class _Machine:
    system_temp: Path
    temp_names: frozenset[str]
    authorized_keys: bytes | None


_MACHINE = pytest.StashKey[_Machine]()


def _contents(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _machine_now(system_temp: Path) -> _Machine:
    return _Machine(system_temp, frozenset(os.listdir(system_temp)), _contents(REAL_AUTHORIZED_KEYS))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite fails if it changed the real ~/.ssh/authorized_keys or left anything in the system temporary folder.

    Checked once, by the process that ran the whole suite (the pytest-xdist controller, or the
    only process): a worker cannot tell another worker's folder from a leftover.
    """
    before = session.config.stash.get(_MACHINE, None)
    if before is None:
        return
    after = _machine_now(before.system_temp)
    problems = []
    if after.authorized_keys != before.authorized_keys:
        problems.append(f"{REAL_AUTHORIZED_KEYS} was changed")
    ours = {Path(folder).name for folder in _SESSION_FOLDERS}
    left = sorted(name for name in after.temp_names - before.temp_names - ours if not name.startswith("pytest-of-"))
    if left:
        problems.append(f"left in {before.system_temp}: {', '.join(left[:20])}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests changed this machine: " + "; ".join(problems)
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def command_lines_with(*secrets: bytes) -> list[str]:
    """Processes of this machine whose command line holds one of ``secrets``: "pid (parent): command",
    each secret shown as <secret>, so a failing assertion says which program it was without leaking it."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes()
            parent = (entry / "stat").read_text().split(") ", 1)[1].split()[1]
        except (OSError, IndexError):
            continue  # it ended meanwhile
        if any(secret in line for secret in secrets):
            for secret in secrets:
                line = line.replace(secret, b"<secret>")
            found.append(f"{entry.name} ({parent}): {line.replace(bytes(1), b' ').decode(errors='replace')[:300]}")
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM to a server's process group (started with start_new_session), SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def kill_agents_under(home: Path) -> None:
    """Stop every agent (and its process groups) whose run folder lies under ``home``."""
    for status_path in home.glob("nodes/*/batchai/runs/*/status.json"):
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            continue
        for pgid in status.get("pgids") or []:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        pid = status.get("pid")
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def put_stand_in_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, script: str) -> Path:
    """An executable ``name`` first on PATH, for a program that cannot run here (the test says why).
    Local agents inherit PATH from the test process, so they find it before the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(script)
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return program


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "batchai-home"
    yield root
    kill_agents_under(root)


@pytest.fixture
def service(home: Path) -> Service:
    """Two local nodes; short timeouts so lost-node tests finish quickly."""
    return Service.embedded(home, nodes=2, settings=Settings(heartbeat_timeout_s=10, launch_timeout_s=20))


def custom_job(command: str, *, nodes: int = 1, **extra: Any) -> dict[str, Any]:
    """A minimal job.json body around ``command``, with logs on a local 'logs' share."""
    return {
        "nodeCount": nodes,
        "customToolkitSettings": {"commandLine": command},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {"azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]},
        **extra,
    }


# --- Airflow: a real metadata DB on SQLite, DAG runs through `airflow dags test` -------------------------

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_RUN_FINISHED = re.compile(r"DagRun Finished: dag_id=(\S+?), .*? state=(\w+)")


@dataclass
class DagResult:
    returncode: int
    output: str

    @property
    def state(self) -> str | None:
        found = DAG_RUN_FINISHED.findall(self.output)
        return found[-1][1] if found else None


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """AIRFLOW_HOME with a migrated SQLite DB, shared by the session's DAG runs."""
    pytest.importorskip("airflow")
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def run_dag(
    airflow_env: dict[str, str],
    dags_folder: Path,
    dag_id: str,
    batchai_home: Path,
    conf: dict[str, Any] | None = None,
    timeout_s: float = 300,
) -> DagResult:
    env = {**airflow_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder), "BATCHAI_HOME": str(batchai_home)}
    command = [AIRFLOW, "dags", "test", dag_id, *(["-c", json.dumps(conf)] if conf else [])]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    return DagResult(result.returncode, result.stdout + result.stderr)


def write_dag(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return folder


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three sshd hosts in network namespaces (or on 127.0.0.1 ports where namespaces are unavailable)."""
    from tests import sshhosts

    if not Path(sshhosts.SSHD).exists():
        pytest.skip("OpenSSH sshd is not installed (.ci/run installs openssh-server)")
    setup = sshhosts.start(tmp_path_factory.mktemp("sshd"), 3, str(os.getpid() % 100000))
    print(f"\nSSH test hosts: {setup.mode}: " + ", ".join(h.spec for h in setup.hosts))
    try:
        yield setup
    finally:
        sshhosts.teardown(setup)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Azurite's Blob service on a free loopback port for the whole session."""
    from tests import azurite as emulator

    server = emulator.start()
    try:
        yield server
    finally:
        emulator.stop(server)


@pytest.fixture
def fake_files() -> Iterator[Any]:
    """A fake Azure Files service (no emulator exists for Files; see tests/fakefiles.py)."""
    from tests import fakefiles

    server = fakefiles.start()
    try:
        yield server
    finally:
        fakefiles.stop(server)


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A whole Airflow deployment (tests/airflowstack.py) on the embedded default, for the session.

    Its DAGs folder holds the quickstart example; tests add DAGs of their own with ``stack_dag``.
    """
    from tests import airflowstack
    from tests.azurite import _free_port

    folder = tmp_path_factory.mktemp("airflow-stack")
    dags = folder / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "batchai_quickstart.py", dags)
    shutil.copytree(REPO / "dags" / "assets" / "quickstart", dags / "assets" / "quickstart")
    stack = airflowstack.start(folder, _free_port("127.0.0.1"), dags, folder / "batchai-home")
    try:
        yield stack
    finally:
        airflowstack.teardown(stack)
        kill_agents_under(folder / "batchai-home")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real two-node Slurm cluster (tests/slurmcluster.py) for the session."""
    from tests import slurmcluster

    if not slurmcluster.available():
        pytest.skip("Slurm is not installed (.ci/run installs slurmctld slurmd slurm-client munge)")
    cluster = slurmcluster.start(tmp_path_factory.mktemp("slurm"), nodes=("node1", "node2"))
    try:
        yield cluster
    finally:
        slurmcluster.stop(cluster)


@pytest.fixture(scope="session")
def slurm_on_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Slurm spread over network namespaces, as on a real cluster: slurmctld on a login host that we
    reach over SSH (its sessions get SLURM_CONF, as from a login node's /etc/slurm), one slurmd on each of
    two compute hosts. Falls back to 127.0.0.1 ports where namespaces are unavailable, like ``ssh_hosts``."""
    from tests import slurmcluster, sshhosts

    if not slurmcluster.available() or not Path(sshhosts.SSHD).exists():
        pytest.skip("Slurm or sshd is not installed (.ci/run installs them)")
    folder = tmp_path_factory.mktemp("slurm-hosts")
    conf = folder / "slurm" / "slurm.conf"
    hosts = sshhosts.start(folder / "ssh", 3, f"s{os.getpid() % 100000}", subnet=sshhosts.SLURM_SUBNET, env={"SLURM_CONF": str(conf)})
    login, *compute = hosts.hosts
    print(f"\nSlurm test hosts: {hosts.mode}: login {login.spec}, nodes " + ", ".join(h.address for h in compute))
    cluster = None
    try:
        placements = {host.name: slurmcluster.Placement(host.address, host.namespace) for host in compute}
        cluster = slurmcluster.start(folder / "slurm", nodes=placements, controller=slurmcluster.Placement(login.address, login.namespace))
        assert cluster.conf == conf
        yield slurmcluster.SlurmOnHosts(cluster, hosts, login)
    finally:
        if cluster is not None:
            slurmcluster.stop(cluster)
        sshhosts.teardown(hosts)
