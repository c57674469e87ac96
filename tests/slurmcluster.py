"""A real Slurm cluster for tests, from Debian's packages: munged, slurmctld and one slurmd per node,
as root without systemd (``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``), with a
config, a munge key, ports and folders of its own; stopped by PID.

Commands reach it through ``SLURM_CONF`` (see ``env``); no accounting database, so job states
come from ``scontrol`` (finished jobs stay listed for ``MinJobAge``).
"""

from __future__ import annotations

import os
import shutil
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


def _config(folder: Path, partition: str, nodes: list[str], cpus: int) -> str:
    ctld, first_slurmd = _free_port(), _free_port()
    lines = [
        "ClusterName=batchaitests",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld}",
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
    hostname = socket.gethostname()
    for index, node in enumerate(nodes):
        port = first_slurmd if index == 0 else _free_port()
        lines.append(
            f"NodeName={node} NodeHostname={hostname} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} Feature=STANDARD_NC6 State=UNKNOWN"
        )
    lines.append(f"PartitionName={partition} Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def start(folder: Path, partition: str = "gpu", nodes: tuple[str, ...] = ("node1",), cpus: int = 2, timeout_s: float = 30) -> SlurmCluster:
    for sub in ("state", "log", "munge", *(f"spool/{n}" for n in nodes)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    cluster = SlurmCluster(folder, partition, list(nodes))
    cluster.conf.write_text(_config(folder, partition, list(nodes), cpus))
    env = {**os.environ, **cluster.env}
    munge = folder / "munge"
    daemons = [
        [
            MUNGED,
            "--foreground",
            "--force",
            f"--socket={munge}/munge.socket",
            f"--key-file={key}",
            f"--log-file={folder}/log/munged.log",
            f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed",
        ],
        [SLURMCTLD, "-D", "-f", str(cluster.conf)],
        *([SLURMD, "-D", "-f", str(cluster.conf), "-N", node] for node in nodes),
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


def stop(cluster: SlurmCluster) -> None:
    """slurmds first (each kills what it still runs), then the controller, then munged."""
    for process in reversed(cluster.processes):
        stop_process_group(process)
