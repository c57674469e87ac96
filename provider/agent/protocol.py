"""The contract between the control plane and the node agent: file names, states, secrets, expansion.

A run's folder on a node holds ``plan.json`` (what to do, written 0600 by the control plane),
``secrets.json`` (0600, deleted by the agent once read) and ``status.json`` (written whole by
the agent, read by the control plane). This module is the only one of ``node/`` the control
plane imports for meaning; the agent and the control plane read the same names from here.
Standard library only (python >= 3.8 on the node).
"""

import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, Dict, List, Optional

PLAN_FILE = "plan.json"
SECRETS_FILE = "secrets.json"
STATUS_FILE = "status.json"
AGENT_LOG_FILE = "agent.log"

HEARTBEAT_INTERVAL_S = 2.0  # status.json's heartbeat is refreshed this often while the agent lives
POLL_INTERVAL_S = 0.1
DEFAULT_GRACE_S = 10.0  # terminate: SIGTERM, then SIGKILL after this long
DEFAULT_UPLOAD_DEADLINE_S = 120.0
# Fencing. Every process of a run carries RUN_MARKER=<run id> in its environment, so the run's
# processes are found and stopped even when they left its process groups (setsid, daemons) or
# its agent died. An agent that cannot renew its heartbeat (status.json unwritable, storage
# unreachable) for AGENT_FENCE_S stops its job itself; the control plane starts a lost run's
# next attempt only once the lost run is seen stopped, or its node has been silent for longer
# than the control plane's fence (settings.fence_s, always above AGENT_FENCE_S).
RUN_MARKER = "BATCHAI_RUN_ID"
AGENT_FENCE_S = 60.0
# A controller renews CONTACT_FILE in the node's agent folder (<root>/batchai) every
# CONTACT_RENEW_S while the node runs jobs. An agent that saw renewals during its run and then
# none for AGENT_CONTACT_FENCE_S has lost its controller (a network partition, or a controller
# down that long) and stops its job: by then the control plane may have requeued it elsewhere.
# Without a controller nothing renews it, and agents never stop for this reason.
CONTACT_FILE = "contact"
CONTACT_RENEW_S = 10.0
AGENT_CONTACT_FENCE_S = 120.0


def resources_file(node_id):
    """The node's resource samples beside the job's logs (agent/resources.py writes it, the job page reads it)."""
    return "resources-%s.json" % re.sub(r"[^-\w.]", "_", node_id)


def run_marker(run_id, node_id):
    """RUN_MARKER's value: the run on one node (local nodes share one /proc: a job's other ranks are not ours)."""
    return "%s@%s" % (run_id, node_id)


# Names in secrets.json that are not job variables:
REGISTRY_PASSWORD_KEY = "BATCHAI_REGISTRY_PASSWORD"  # for docker login --password-stdin
SAS_KEY_PREFIX = "BATCHAI_SAS_"  # SAS tokens for the agent's own storage calls
ACCOUNT_KEY_SECRET = SAS_KEY_PREFIX + "ACCOUNT_KEY"  # only with SMB mounts (azure_files_mount "cifs"): the key mount.cifs needs


class RunState(str, Enum):
    """The ``state`` of a run's status.json."""

    STARTING = "starting"
    PREPARING = "preparing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def is_final(self):
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.TERMINATED)


FINAL_STATES = tuple(state.value for state in RunState if state.is_final)

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand(template, env):
    """$VAR / ${VAR} expansion against the job's environment (unknown variables stay as written)."""

    def replace(match):
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return _VARIABLE.sub(replace, template)


# -- what a job's processes inherit -----------------------------------------------------------
# A job starts from these variables of the agent's own environment and nothing else of it: the
# agent may have been started by a process holding the control plane's secrets (an Airflow
# worker, the api-server, ``batchai serve``), and a job must never see them. The job's own
# variables, secrets and Batch AI's AZ_BATCHAI_* come from its plan on top of these.
JOB_BASE_VARIABLES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",  # rootless Docker for container jobs
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
# locale, GPUs, the node's network tuning for NCCL/UCX/MPI, and what srun gives a step
JOB_BASE_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_", "UCX_", "OMPI_MCA_", "I_MPI_", "SLURM_", "PMI_", "PMIX_")


def allowed_name(name, allow):
    """Whether ``name`` passes ``allow``: exact names, or prefixes written with a trailing ``*``."""
    return any(name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])) for pattern in allow)


def job_base_environment(environ, allow=()):
    """The part of ``environ`` a job may inherit: the toolkit's basics and the admin's ``allow`` list."""
    return dict(
        (name, value)
        for name, value in environ.items()
        if name in JOB_BASE_VARIABLES or name.startswith(JOB_BASE_PREFIXES) or allowed_name(name, allow)
    )


# -- a job's files, read by others ----------------------------------------------------------------
def relative_parts(relative):
    """The names of a relative path ('.' and empty ones dropped), or None when one is '..'."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    return None if ".." in parts else parts


def open_inside(base, relative, flags=os.O_RDONLY):
    """A descriptor of ``base``/``relative`` when that is where the opened file really is, else None.

    A job may turn any file or folder of its own into a symlink, at any moment, to any place (the
    service's home, /etc, another job's files). The check is made on the opened descriptor, not on
    the path, so swapping a link in between the check and the read gains nothing: the file that
    was opened must be the one at ``base``/``relative`` with no link on the way. FIFOs and devices
    open without blocking; callers read only regular files. Linux (/proc/self/fd).
    """
    parts = relative_parts(relative)
    if parts is None:
        return None
    anchor = os.path.realpath(base)
    expected = os.path.join(anchor, *parts)
    try:
        fd = os.open(expected, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # missing, a link (ELOOP), not a folder, unreadable
        return None
    try:
        real = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        real = None
    if real != expected:
        os.close(fd)
        return None
    return fd


# -- the plan ------------------------------------------------------------------------------
# Built by the control plane (launch.py, and the data store for transfers), written to
# plan.json, read by the agent through the same classes. A document that does not match them
# exactly (a missing field, one no class knows) is refused: a ProtocolError, not a default.


class ProtocolError(ValueError):
    """A plan or status document that does not match the protocol's classes."""


def _load(cls, document, where):
    if not isinstance(document, dict):
        raise ProtocolError("%s: expected an object, got %s" % (where, type(document).__name__))
    known = dict((f.name, f) for f in fields(cls))
    unknown = sorted(set(document) - set(known))
    if unknown:
        raise ProtocolError("%s: unknown field(s) %s" % (where, ", ".join(unknown)))
    values = {}
    for name, spec in known.items():
        if name not in document:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ProtocolError("%s.%s: missing" % (where, name))
            continue
        value = document[name]
        nested = getattr(cls, "NESTED", {}).get(name)
        if nested is not None and value is not None:
            if getattr(spec.type, "__origin__", None) is not list:
                value = _load(nested, value, "%s.%s" % (where, name))
            elif not isinstance(value, list):
                raise ProtocolError("%s.%s: expected a list, got %s" % (where, name, type(value).__name__))
            else:
                value = [_load(nested, item, "%s.%s[%d]" % (where, name, index)) for index, item in enumerate(value)]
        values[name] = value
    return cls(**values)


class _Document:
    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, document, where=None):
        return _load(cls, document, where or cls.__name__)


@dataclass
class TaskPlan(_Document):
    """One process of a run (a rank, a shard, the setup task or the job's preparation)."""

    name: str
    command: str
    stdout: str  # file names in the run's stdouterr folder
    stderr: str
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class LinkPlan(_Document):
    """A volume at ``path``: a symlink to ``source``, a staged folder (``stage``), or a ``mount_command`` run there."""

    path: str
    source: str = ""
    stage: bool = False
    mount_command: Optional[str] = None
    unlink_at_end: bool = False


@dataclass
class Transfer(_Document):
    """A volume the agent reaches over its SAS (the token itself travels in secrets.json under ``sas``)."""

    url: str
    sas: str
    label: str
    local: str
    kind: str = "blob"  # or "file" (an Azure Files share)
    prefix: str = ""  # where in the volume
    skip: List[str] = field(default_factory=list)  # downloads: prefixes the job writes (never fetched)
    log: bool = False  # uploads: a stdouterr folder (appended as it grows)
    account: str = ""  # mounts: what the mounter needs
    container: str = ""
    endpoint: str = ""
    unc: str = ""
    key: str = ""  # name in secrets.json of the account key (SMB only)
    file_mode: str = "0777"
    dir_mode: str = "0777"


@dataclass
class HostFile(_Document):
    path: str
    lines: List[str]


@dataclass
class PrivateFile(_Document):
    """Written 0600 before the job starts (the nodes' ssh config and keys for mpirun)."""

    path: str
    text: str


@dataclass
class ContainerPlan(_Document):
    """Docker commands for one container per node; secrets reach it through ``env_file`` (0600) only."""

    name: str
    image: str
    start: List[str]
    exec: List[str]
    shell: List[str]
    remove: List[str]
    env_file: str
    login: Optional[List[str]] = None


@dataclass
class AgentPlan(_Document):
    """Everything one agent does for one run on one node."""

    NESTED: ClassVar[Dict[str, Any]] = {}  # filled below, once every class exists

    kind: str  # "job" or "setup"
    node_id: str
    env: Dict[str, str]
    log_dir_env: str  # the variable naming the folder of stdout/stderr files and the execution log
    execution_log: str
    cwd: str
    failure_code: str  # the error code of a non-zero exit
    max_wall_clock_s: float
    grace_s: float = DEFAULT_GRACE_S
    upload_deadline_s: float = DEFAULT_UPLOAD_DEADLINE_S  # how long the end may spend getting files into storage intact
    expand_env: List[List[str]] = field(default_factory=list)  # [name, template]: expanded on the node, in order
    make_dirs: List[str] = field(default_factory=list)  # variables naming folders to create
    clean_dirs: List[str] = field(default_factory=list)
    links: List[LinkPlan] = field(default_factory=list)
    hostfile: Optional[HostFile] = None
    files: List[PrivateFile] = field(default_factory=list)
    preparation: Optional[TaskPlan] = None
    tasks: List[TaskPlan] = field(default_factory=list)
    requires: List[str] = field(default_factory=list)  # programs the node (or image) must have
    wait_for_release: bool = False  # a node that only reserves capacity: runs nothing, waits to be stopped
    container: Optional[ContainerPlan] = None
    socket_address: Optional[str] = None  # the first node's address: its interface carries gloo/NCCL
    mounts: List[Transfer] = field(default_factory=list)
    downloads: List[Transfer] = field(default_factory=list)
    uploads: List[Transfer] = field(default_factory=list)
    inherit_env: List[str] = field(default_factory=list)  # names (or PREFIX*) of the node's variables a job may see besides the basics
    job_user: Optional[str] = None  # run the job's processes as this Unix user (the agent must be root), not as the agent's
    contact_fence_s: float = AGENT_CONTACT_FENCE_S  # see CONTACT_FILE
    gpu_watch: Optional[Dict[str, float]] = None  # {"min", "window_s", "sample_s"}: sample the node's GPUs (utilizationPolicy)
    resource_sample_s: float = 5.0  # a job's GPUs, CPU, memory and disk into resources-<node>.json this often (0: not)


AgentPlan.NESTED = {
    "links": LinkPlan,
    "hostfile": HostFile,
    "files": PrivateFile,
    "preparation": TaskPlan,
    "tasks": TaskPlan,
    "container": ContainerPlan,
    "mounts": Transfer,
    "downloads": Transfer,
    "uploads": Transfer,
}


# -- the status ----------------------------------------------------------------------------
@dataclass
class AgentStatus(_Document):
    """status.json: the truth about a run, kept by its agent, only read by the control plane."""

    state: str  # a RunState value
    pid: int
    heartbeat: float  # epoch seconds on the node
    start_time: float
    pgids: List[int] = field(default_factory=list)
    tasks: List[Dict[str, Any]] = field(default_factory=list)
    end_time: Optional[float] = None
    exit_code: Optional[int] = None
    error: Optional[Dict[str, str]] = None
    gpu: Optional[Dict[str, Any]] = None  # with gpu_watch: {"utilization": [%...], "low_since", "peak"} or {"error"}

    @property
    def final(self):
        return self.state in FINAL_STATES


# --- Slurm: what the control plane writes before sbatch and the agent reads in the allocation (slurmstep.py) ---

SLURM_PLANS_FILE = "slurm.json"  # {"plans": [...], "run_dirs": [...], "addresses": {host: address}}
SECRETS_FOLDER = "secrets"  # <rank>.json, 0600: each node's agent takes its own (and deletes it once read)
_PART = re.compile(r"[^,\[]+(?:\[[^\]]*\])?[^,]*")


def expand_hostlist(hostlist):
    """``gpu[01-03,07],cpu1`` -> gpu01 gpu02 gpu03 gpu07 cpu1, in Slurm's order (its first is the job's first node)."""
    hosts = []
    for part in _PART.findall(hostlist):
        found = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not found:
            hosts.append(part)
            continue
        prefix, ranges, suffix = found.groups()
        for piece in ranges.split(","):
            low, _, high = piece.partition("-")
            if not high:
                hosts.append(prefix + low + suffix)
                continue
            width = len(low)
            hosts += ["%s%0*d%s" % (prefix, width, n, suffix) for n in range(int(low), int(high) + 1)]
    return hosts
