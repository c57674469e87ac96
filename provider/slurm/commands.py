"""Slurm's commands (sbatch, scontrol, sinfo, scancel), run through a Transport: on this machine,
or on a login node over SSH with the connection's verified host keys.

Every answer is parsed into a model here, so the rest never reads Slurm's text. Job states
come from ``scontrol show job --oneliner``, which needs no accounting database (a finished
job stays listed for the cluster's ``MinJobAge``); node states from ``sinfo --Node``. A
command that fails says which one and Slurm's own message; one that hangs ends at its timeout.
Nothing secret is ever an argument: an sbatch script travels on stdin.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ..agent.protocol import expand_hostlist
from ..errors import BatchAIError, ErrorCode, shown
from ..transport import Transport

COMMAND_TIMEOUT_S = 30.0
JOB_ID = re.compile(r"^(\d+)(?:;\S+)?$")  # sbatch --parsable: "<id>" or "<id>;<cluster>"
_FIELD = re.compile(r"(\w+(?::\w+)?)=(.*?)(?= \w+(?::\w+)?=|$)")


class SlurmJob(BaseModel):
    """One line of ``scontrol show job --oneliner``, the fields we use."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    name: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, NODE_FAIL, PREEMPTED, ...
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: list[str] = Field(default_factory=list)
    node_list: str | None = None
    start_time: str | None = None
    end_time: str | None = None


class SlurmNode(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    state: str  # idle, alloc, mix, down, drain, ... with Slurm's flag suffixes (*, ~, #, ...) kept apart
    flags: str = ""
    features: list[str] = Field(default_factory=list)
    gpus: int = 0
    cpus: int = 0
    address: str = ""  # NodeAddr: how the other nodes reach it (the name when Slurm was told none)


@dataclass(frozen=True)
class SbatchOptions:
    partition: str
    job_name: str
    nodes: int
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    time_minutes: int | None = None
    constraint: str | None = None
    account: str | None = None
    qos: str | None = None
    nice: int | None = None
    output: str | None = None
    extra: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        args = [
            f"--partition={self.partition}",
            f"--job-name={self.job_name}",
            f"--nodes={self.nodes}",
            f"--ntasks-per-node={self.ntasks_per_node}",
            "--parsable",
            f"--output={self.output or '/dev/null'}",
        ]
        if self.gpus_per_node:
            args.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.time_minutes is not None:
            args.append(f"--time={max(1, self.time_minutes)}")
        for flag, value in (("constraint", self.constraint), ("account", self.account), ("qos", self.qos)):
            if value:
                args.append(f"--{flag}={value}")
        if self.nice is not None:
            args.append(f"--nice={self.nice}")
        return [*args, *self.extra]


class Slurm:
    """The commands of one Slurm cluster, through ``transport``; ``env`` (e.g. SLURM_CONF) goes first."""

    def __init__(
        self, transport: Transport, env: dict[str, str] | None = None, timeout_s: float = COMMAND_TIMEOUT_S, clean: bool = False
    ) -> None:
        """``clean``: run with ``env`` only (``env -i``), not this process's environment, which may hold
        the connection's secrets (an Airflow worker's AIRFLOW_CONN_…): sbatch exports what it is given."""
        self.transport = transport
        self.env = dict(env or {})
        self.timeout_s = timeout_s
        self.clean = clean

    def _run(self, argv: list[str], stdin: bytes | None = None) -> str:
        assignments = [f"{k}={v}" for k, v in sorted(self.env.items())]
        command = ["env", *(["-i"] if self.clean else []), *assignments, *argv] if (assignments or self.clean) else argv
        try:
            result = self.transport.run(command, timeout_s=self.timeout_s, stdin=stdin)
        except BatchAIError:
            raise
        except Exception as error:  # subprocess.TimeoutExpired, OSError: the command did not run or did not end
            raise BatchAIError(
                ErrorCode.SLURM_UNAVAILABLE, f"{argv[0]} did not answer: {type(error).__name__}: {shown(str(error), 200)}", argv[0]
            ) from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise BatchAIError(
                ErrorCode.SLURM_ERROR, f"{shlex.join(argv[:2])} failed (exit {result.returncode}): {shown(message, 300)}", argv[0]
            )
        return result.stdout.decode(errors="replace")

    def submit(self, script: str, options: SbatchOptions) -> str:
        """sbatch with the script on stdin (so no secret is ever on a command line); the job id."""
        out = self._run(["sbatch", *options.argv()], stdin=script.encode()).strip()
        found = JOB_ID.match(out.splitlines()[-1] if out else "")
        if not found:
            raise BatchAIError(ErrorCode.SLURM_ERROR, f"sbatch answered {shown(out)}, not a job id", "sbatch")
        return found.group(1)

    def jobs(self, job_ids: list[str]) -> dict[str, SlurmJob]:
        """The jobs Slurm still knows (missing ids have left its memory: MinJobAge has passed)."""
        if not job_ids:
            return {}
        try:
            out = self._run(["scontrol", "show", "job", "--oneliner", ",".join(job_ids)])
        except BatchAIError as error:
            if "Invalid job id" in error.message:
                out = "\n".join(self._one_by_one(job_ids))
            else:
                raise
        found = [parse_job(line) for line in out.splitlines() if line.strip().startswith("JobId=")]
        return {job.job_id: job for job in found}

    def _one_by_one(self, job_ids: list[str]) -> list[str]:
        lines = []
        for job_id in job_ids:
            try:
                lines += self._run(["scontrol", "show", "job", "--oneliner", job_id]).splitlines()
            except BatchAIError as error:
                if "Invalid job id" not in error.message:
                    raise
        return lines

    def cancel(self, job_id: str) -> None:
        self._run(["scancel", "--full", job_id])

    def partition_nodes(self, partition: str) -> list[SlurmNode]:
        out = self._run(["sinfo", "--Node", "--noheader", f"--partition={partition}", "--format=%N|%T|%f|%G|%c|%o"])
        nodes = {}
        for line in out.splitlines():
            if line.strip():
                node = parse_node(line)
                nodes[node.name] = node  # a node of several partitions is listed once per partition
        return list(nodes.values())


def parse_job(line: str) -> SlurmJob:
    fields = dict(_FIELD.findall(line.strip()))
    exit_code, signal = None, None
    if ":" in fields.get("ExitCode", ""):
        code, _, sig = fields["ExitCode"].partition(":")
        exit_code, signal = int(code), int(sig)
    node_list = fields.get("NodeList") if fields.get("NodeList") not in (None, "(null)") else None
    return SlurmJob(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=fields.get("JobState", "UNKNOWN"),
        reason=None if fields.get("Reason") in (None, "None") else fields["Reason"],
        exit_code=exit_code,
        signal=signal,
        node_list=node_list,
        nodes=expand_hostlist(node_list) if node_list else [],
        start_time=None if fields.get("StartTime") in (None, "Unknown", "None") else fields["StartTime"],
        end_time=None if fields.get("EndTime") in (None, "Unknown", "None") else fields["EndTime"],
    )


def parse_node(line: str) -> SlurmNode:
    name, state, features, gres, cpus, address = [*line.strip().split("|"), "", "", "", "", ""][:6]
    base = state.rstrip("*~#!%$@^-")
    gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", gres))
    return SlurmNode(
        name=name,
        state=base.lower(),
        flags=state[len(base) :],
        features=[] if features in ("", "(null)") else features.split(","),
        gpus=gpus,
        cpus=int(cpus) if cpus.isdigit() else 0,
        address=address if address not in ("", "(null)") else name,
    )
