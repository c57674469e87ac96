"""A real Slurm cluster for tests, from Debian's packages: munged, slurmctld and one slurmd per node,
as root without systemd (``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``), with a
config, a munge key, ports and folders of its own; stopped by PID.

Commands reach it through ``SLURM_CONF`` (see ``env``); no accounting database, so job states
come from ``scontrol`` (finished jobs stay listed for ``MinJobAge``).

With ``suspend_s``, the partition saves power as cloud Slurm clusters do: a node idle that long is
suspended (Slurm runs our SuspendProgram, which stops its slurmd: the machine is off), and a job that
needs it makes Slurm run the ResumeProgram, which starts its slurmd again (the machine boots and
registers; in a time namespace of its own, since Slurm checks that a resumed node did boot). Those
slurmds are stopped through their PID files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import stop_process_group

MUNGED, SLURMCTLD, SLURMD = "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"


def available() -> bool:
    return all(Path(p).exists() for p in (MUNGED, SLURMCTLD, SLURMD)) and shutil.which("sbatch") is not None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SlurmCluster:
    folder: Path
    partition: str
    nodes: list[str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def connection(self, folder: Path) -> dict[str, Any]:
        """A ``batchai`` connection's extras for this cluster's partition, its records and node roots under ``folder``."""
        return {
            "slurm": {"partition": self.partition},
            "home": str(folder / "home"),
            "node_root": str(folder / "nodes"),
            "node_python": sys.executable,
        }


@dataclass
class SlurmOnHosts:
    """A cluster whose controller runs on ``login``, an SSH host of ``hosts`` (tests/sshhosts.py)."""

    cluster: SlurmCluster
    hosts: Any  # tests.sshhosts.SSHHosts
    login: Any  # tests.sshhosts.Host

    def connection(self, folder: Path) -> dict[str, Any]:
        """The extras of a connection that runs Slurm's commands over SSH on the login host, keys verified."""
        extras = self.cluster.connection(folder)
        extras["slurm"] = {**extras["slurm"], "login": self.login.spec}
        return {**extras, "ssh_key_file": str(self.hosts.client_key), "known_hosts": str(self.hosts.known_hosts)}


@dataclass(frozen=True)
class Placement:
    """Where a daemon runs: its address and, for one in a network namespace, the namespace."""

    address: str = "127.0.0.1"
    namespace: str | None = None

    def prefix(self) -> list[str]:
        # the network namespace only: ``ip netns exec`` would also mount a fresh /sys without
        # /sys/fs/cgroup, where slurmd's cgroup plugin insists on looking even with proctrack/linuxproc
        return ["nsenter", f"--net=/run/netns/{self.namespace}"] if self.namespace else []


def _config(folder: Path, partition: str, nodes: dict[str, Placement], controller: Placement, cpus: int, suspend_s: int | None) -> str:
    lines = [
        "ClusterName=batchaitests",
        f"SlurmctldHost=localhost({controller.address})",
        f"SlurmctldPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={folder}/munge/munge.socket",
        "CredType=cred/munge",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool/%n",
        f"SlurmctldPidFile={folder}/slurmctld.pid",
        f"SlurmdPidFile={folder}/slurmd-%n.pid",
        f"SlurmctldLogFile={folder}/log/slurmctld.log",
        f"SlurmdLogFile={folder}/log/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MinJobAge=600",
        "KillWait=2",
        "InactiveLimit=0",
    ]
    if suspend_s is not None:
        lines += [
            f"SuspendTime={suspend_s}",
            "SuspendTimeout=2",  # how long a node takes to power down
            "ResumeTimeout=30",  # how long it may take to boot and register
            f"SuspendProgram={folder}/power/suspend",
            f"ResumeProgram={folder}/power/resume",
            "SuspendRate=0",
            "ResumeRate=0",
            "SlurmctldParameters=power_save_interval=1,power_save_min_interval=0",
        ]
    hostname = socket.gethostname()
    for node, placement in nodes.items():
        lines.append(
            f"NodeName={node} NodeHostname={hostname} NodeAddr={placement.address} Port={_free_port()} CPUs={cpus} "
            "Feature=STANDARD_NC6 State=UNKNOWN"
        )
    lines.append(f"PartitionName={partition} Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def start(
    folder: Path,
    partition: str = "gpu",
    nodes: tuple[str, ...] | dict[str, Placement] = ("node1",),
    cpus: int = 2,
    timeout_s: float = 30,
    controller: Placement = Placement(),
    suspend_s: int | None = None,
) -> SlurmCluster:
    """munged here; slurmctld and each slurmd where ``controller`` and ``nodes`` place them (default: all on 127.0.0.1)."""
    placements = nodes if isinstance(nodes, dict) else {node: Placement() for node in nodes}
    longest = max(len(f"{folder}/spool/{node}/{node}_4294967294.4294967291") for node in placements)
    if longest > 107:  # slurmstepd's Unix socket lives there: longer than sun_path allows, and every job fails to launch
        raise ValueError(f"Slurm test cluster: {folder} is too long a path for slurmstepd's sockets ({longest} > 107)")
    for sub in ("state", "log", "munge", *(f"spool/{n}" for n in placements)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cluster = SlurmCluster(folder, partition, list(placements))
    cluster.conf.write_text(_config(folder, partition, placements, controller, cpus, suspend_s))
    if suspend_s is not None:
        _power_programs(cluster, placements)
    env = {**os.environ, **cluster.env}
    munge = folder / "munge"
    daemons = [
        [
            MUNGED,
            "--foreground",
            "--force",
            f"--socket={munge}/munge.socket",  # a path, not an abstract socket: daemons in other namespaces reach it
            f"--key-file={key}",
            f"--log-file={folder}/log/munged.log",
            f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed",
        ],
        [*controller.prefix(), SLURMCTLD, "-D", "-f", str(cluster.conf)],
        *([*placement.prefix(), SLURMD, "-D", "-f", str(cluster.conf), "-N", node] for node, placement in placements.items()),
    ]
    try:
        for index, argv in enumerate(daemons):
            log = open(folder / "log" / f"daemon-{index}.out", "ab")  # noqa: SIM115 - kept open for the daemon's life
            cluster.processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True))
            if index == 0:
                _wait(lambda: (munge / "munge.socket").exists(), timeout_s, "munged's socket")
        _wait(lambda: _all_idle(cluster, env), timeout_s, "every slurmd to register idle")
        return cluster
    except BaseException:
        stop(cluster)
        raise


def _power_programs(cluster: SlurmCluster, placements: dict[str, Placement]) -> None:
    """Slurm's SuspendProgram and ResumeProgram: stop a node's slurmd, and start it again (daemonised, its PID file kept)."""
    folder = cluster.folder
    (folder / "power").mkdir(exist_ok=True)
    # a machine that was off has just booted: Slurm takes a registration only from a node whose boot time is
    # after it asked for the power-up, so slurmd runs in a time namespace whose uptime starts now
    booted = ["unshare", "--time", '--boottime "-$(cut -d. -f1 /proc/uptime)"']
    starts = "\n".join(
        f"    {node}) setsid {' '.join([*placement.prefix(), *booted, SLURMD, '-D', '-f', str(cluster.conf), '-N', node])}"
        f" </dev/null >>{folder}/log/resumed-{node}.out 2>&1 & ;;"
        for node, placement in placements.items()
    )
    programs = {
        "resume": f"""#!/bin/sh
export SLURM_CONF={cluster.conf}
echo "$(date +%s.%N) resume $1" >> {folder}/log/power.log
sleep 1  # the machines boot (and their boot time is then after Slurm's request, to the second)
for node in $(scontrol show hostnames "$1"); do
  case "$node" in
{starts}
  esac
done
""",
        "suspend": f"""#!/bin/sh
export SLURM_CONF={cluster.conf}
echo "$(date +%s.%N) suspend $1" >> {folder}/log/power.log
for node in $(scontrol show hostnames "$1"); do
  pid=$(cat {folder}/slurmd-$node.pid 2>/dev/null) && kill "$pid"
done
""",
    }
    for name, text in programs.items():
        (folder / "power" / name).write_text(text)
        (folder / "power" / name).chmod(0o755)


def _all_idle(cluster: SlurmCluster, env: dict[str, str]) -> bool:
    for process in cluster.processes:
        if process.poll() is not None:
            raise RuntimeError(f"a Slurm daemon exited ({process.args[0]}): see {cluster.folder}/log")
    result = subprocess.run(["sinfo", "--Node", "--noheader", "--format=%N %T"], env=env, capture_output=True, text=True, timeout=10)
    states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    return result.returncode == 0 and all(states.get(node) == "idle" for node in cluster.nodes)


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"Slurm test cluster: timed out waiting for {what}")


def _is_slurmd(pid: int) -> bool:
    """A live slurmd (a zombie's command line is empty)."""
    try:
        return SLURMD.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(cluster: SlurmCluster) -> None:
    """slurmds first (each kills what it still runs: those a ResumeProgram started too), then the controller, then munged."""
    for pid_file in cluster.folder.glob("slurmd-*.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            if _is_slurmd(pid):  # that PID is still a slurmd (not one reused since)
                os.kill(pid, signal.SIGTERM)
                _wait(lambda pid=pid: not _is_slurmd(pid), 15, f"slurmd {pid} to stop")  # type: ignore[misc]
        except (OSError, ValueError, IndexError, RuntimeError):
            continue
    for process in reversed(cluster.processes):
        stop_process_group(process)
