"""A connection's Slurm partition, seen through the NodePool contract.

Slurm owns the partition's nodes: nothing here claims or sets them up, so the inventory of
pool nodes is empty and a cluster is a view of the partition (scheduler.py). What the pool
gives is where things live: ``node_root`` must be a folder that the machine running Slurm's
commands (this one, or ``login``) and every compute node see at the same path, as Slurm's
own working folders are (an NFS home). Under it:

    batchai/agent-<hash>/    the agent, deployed once per version
    slurm/<run>/             one job attempt: slurm.json (plans), secrets/<rank>.json (0600, gone when the job ends),
                             shared/ ($AZ_BATCHAI_SHARED_JOB_TEMP), slurm-<id>.out
    nodes/<host>/            each compute node's root (mounts, job temp, run folders)
"""

from __future__ import annotations

import os
import posixpath
import shlex
import threading
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..agent.protocol import SECRETS_FOLDER
from ..errors import BatchAIError, ErrorCode
from ..layout import NodeLayout
from ..slurm.commands import Slurm, SlurmNode
from ..transport import Transport
from ..transport.clusterkeys import PeerSSH
from ..transport.handle import AGENT_HASH
from ..transport.local import LocalTransport
from . import FixedPool

CLEAN_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "SLURM_CONF", "TZ")  # all that Slurm's commands get from us


class SlurmSettings(BaseModel):
    """The connection's ``slurm`` field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    partition: str = Field(min_length=1, pattern=r"^[\w.\-]+$", description="the partition whose nodes run the jobs")
    login: str | None = Field(default=None, description="[user@]host[:port] that runs Slurm's commands, over SSH; default this machine")
    account: str | None = Field(default=None, pattern=r"^[\w.\-]+$")
    qos: str | None = Field(default=None, pattern=r"^[\w.\-]+$")
    sbatch_args: list[str] = Field(default_factory=list, description="more sbatch options, e.g. --exclusive")

    @field_validator("sbatch_args")
    @classmethod
    def _options_only(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not arg.startswith("--") or "\n" in arg:
                raise ValueError(f"{arg!r} is not an sbatch long option (--name or --name=value)")
            if arg.split("=", 1)[0] in ("--export", "--wrap", "--output", "--error", "--parsable"):
                raise ValueError(f"{arg.split('=', 1)[0]} is ours to set")
        return value


SSH_PORT = 22


class SlurmPool(FixedPool):
    """No pool nodes of our own: roots, transport and shared folders for jobs that Slurm places."""

    beside_control_plane = False  # compute nodes, started by slurmd
    cluster_ssh = False  # inside an allocation mpirun starts its ranks through Slurm, not ssh

    def __init__(
        self, settings: SlurmSettings, transport: Transport | None = None, root: str = "/var/lib/batchai", python: str = "python3"
    ):
        self.settings = settings
        self.root = root
        self.python = python
        local = transport is None
        self._transport = transport or LocalTransport()
        env = {name: os.environ[name] for name in CLEAN_ENV if local and name in os.environ}
        self.slurm = Slurm(self._transport, env, clean=local)
        self._seen: tuple[float, list[SlurmNode]] | None = None
        self._seen_lock = threading.Lock()

    def inventory(self) -> list[tuple[str, str, str, int]]:
        return []

    def node_root(self, node_id: str) -> str | None:
        return posixpath.join(self.root, "nodes", node_id)

    def transport(self, node_id: str) -> Transport:
        return self._transport

    @property
    def login_transport(self) -> Transport:
        return self._transport

    def run_base(self, run_id: str) -> str:
        return posixpath.join(self.root, "slurm", run_id)

    def secrets_folder(self, run_id: str) -> str:
        return posixpath.join(self.run_base(run_id), SECRETS_FOLDER)

    def labels(self, node_id: str) -> tuple[str, ...]:
        return ()

    def login_port(self, node_id: str) -> int:
        return SSH_PORT

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        """The partition's nodes with ``vm_size`` as a feature (sinfo, or its answer up to ``max_age_s`` old)."""
        return len(self.nodes(vm_size, max_age_s=max_age_s))

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        if vm_size is None or self.nodes(vm_size):
            return None
        return f"no node of Slurm partition {self.settings.partition} has the feature {vm_size!r} (vmSize is --constraint)"

    def peer_ssh(self, node_id: str) -> PeerSSH:
        raise BatchAIError(ErrorCode.NOT_SUPPORTED, "Slurm nodes are reached through Slurm, not our ssh", node_id)

    def authorized_keys_file(self, node_id: str) -> str:
        raise BatchAIError(ErrorCode.NOT_SUPPORTED, "Slurm nodes are reached through Slurm, not our ssh", node_id)

    def shared_folder(self, run_id: str) -> str | None:
        return posixpath.join(self.run_base(run_id), "shared")

    def release_shared(self, run_id: str) -> None:
        pass  # kept with the attempt's folder until the job is deleted: its slurm-<id>.out explains failures

    def nodes(self, vm_size: str | None = None, max_age_s: float = 0.0) -> list[SlurmNode]:
        """The partition's nodes (``sinfo``); with ``vm_size``, those with it as a feature (``--constraint``).

        ``max_age_s``: an answer this old will do. Submit checks a job's size against the partition,
        which rarely changes, so a burst of hundreds of submits costs one ``sinfo``, not hundreds;
        a pass asks afresh, as it publishes the nodes' states.
        """
        with self._seen_lock:
            if self._seen is not None and time.monotonic() - self._seen[0] <= max_age_s:
                found = self._seen[1]
            else:
                found = self.slurm.partition_nodes(self.settings.partition)
                self._seen = (time.monotonic(), found)
        if vm_size is None:
            return found
        return [node for node in found if vm_size.lower() in {feature.lower() for feature in node.features}]

    def batch_script(self, run_id: str, nodes: int, gpus_per_node: int) -> str:
        """The whole sbatch script: our agent once per node. It holds paths only, never a secret."""
        agent = NodeLayout(self.root).agent_path(AGENT_HASH)
        step = [
            "srun",
            f"--nodes={nodes}",
            f"--ntasks={nodes}",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",
            *([f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []),
        ]
        command = " ".join(shlex.quote(part) for part in step)
        run = " ".join(shlex.quote(part) for part in [self.python, agent, "slurm-run", self.run_base(run_id)])
        return (
            "#!/bin/sh\n"
            "# a Batch AI job: airflow-provider-batchai's agent once per node of the allocation\n"
            f'exec {command} --cpus-per-task="${{SLURM_CPUS_ON_NODE:-1}}" {run}\n'
        )
