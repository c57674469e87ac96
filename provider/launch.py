"""Toolkit settings → what each node of a job runs, with which environment. Pure: no I/O.

The output is one agent plan per node (a ``node.protocol.AgentPlan``, read by the agent through the same class). Paths and
arguments keep their ``$VARS``: the agent expands them on the node, as Batch AI did, because
only the node knows its own roots. Secrets are not part of a plan; they travel separately.

Per Batch AI (reference §1.4, §4, §5.4):
  customToolkit   command on the first node; other nodes reserved; stdout.txt
  pyTorch         processCount ranks (default nodeCount) spread over the nodes; stdout-<rank>.txt when > 1
  tensorFlow      parameter servers and workers with TF_CONFIG; stdout-wk-<i>.txt, stdout-ps-<i>.txt
  caffe2          one task per node, AZ_BATCHAI_TASK_INDEX = shard; stdout-<i>.txt when > 1
  cntk, chainer, caffe, horovod, customMpi
                  one process: run directly; more: mpirun over the hostfile from the first node
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field

from .agent.protocol import AgentPlan, ContainerPlan, HostFile, LinkPlan, PrivateFile, TaskPlan
from .data.links import Link
from .errors import ErrorCode, InvalidSpec
from .layout import NodeLayout, output_template, stdouterr_template
from .spec import CaffeSettings, CNTKsettings, ContainerSettings, CustomMpiSettings, JobSpec, TensorFlowSettings
from .transport.clusterkeys import PeerSSH, mpi_launcher_env, ssh_client_files

DEFAULT_INTERPRETER = '"$BATCHAI_PYTHON"'  # the node's python that runs the agent (see agent.py)
TF_BASE_PORT = 2222
MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 10000
GRACE_S = 10.0
MPI_TOOLKITS = ("cntk", "chainer", "caffe", "horovod", "custommpi")


@dataclass(frozen=True)
class NodeSlot:
    """One node given to a job, in node-rank order."""

    node_id: str
    address: str
    root: str
    gpus: int = 0

    @property
    def layout(self) -> NodeLayout:
        return NodeLayout(self.root)


@dataclass(frozen=True)
class JobContext:
    workspace: str
    experiment: str
    job: str
    job_uuid: str
    segment: str
    run_id: str
    job_links: list[Link] = field(default_factory=list)
    shared_job_temp_source: str | None = None  # folder all nodes of the job see; None = no shared file system
    ssh_peers: list[PeerSSH] = field(default_factory=list)  # the job's nodes, when they reach each other over ssh
    cluster_key: str | None = None  # the cluster's private key on the first node


@dataclass
class NodeWork:
    tasks: list[TaskPlan] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    wait_for_release: bool = False


def master_port(job_uuid: str) -> str:
    """A port per job, stable across the job's nodes, spread to keep concurrent local jobs apart."""
    return str(MASTER_PORT_BASE + int(job_uuid.replace("-", "")[:8], 16) % MASTER_PORT_SPAN)


def python_command(script: str, interpreter: str | None, args: str | None) -> str:
    return " ".join(part for part in (interpreter or DEFAULT_INTERPRETER, script, args) if part)


def process_count(spec: JobSpec) -> int:
    """``processCount`` as echoed by Batch AI: the given value, or nodeCount."""
    return getattr(spec.toolkit, "process_count", None) or spec.node_count


def ranks_per_node(world_size: int, node_count: int) -> list[list[int]]:
    """Spread ranks in blocks: rank r runs on node r // ceil(world/nodes)."""
    per_node = math.ceil(world_size / node_count)
    return [list(range(i * per_node, min((i + 1) * per_node, world_size))) for i in range(node_count)]


def hostfile_lines(nodes: list[NodeSlot]) -> list[str]:
    """OpenMPI hostfile: one line per address, slots = GPUs (at least 1); nodes sharing an address add up."""
    slots: dict[str, int] = {}
    for node in nodes:
        slots[node.address] = slots.get(node.address, 0) + max(node.gpus, 1)
    return [f"{address} slots={count}" for address, count in slots.items()]


def _single_or_ranked(name: str, index: int, ranked: bool) -> tuple[str, str]:
    return (f"stdout-{name}{index}.txt", f"stderr-{name}{index}.txt") if ranked else ("stdout.txt", "stderr.txt")


def _pytorch_work(spec: JobSpec, nodes: list[NodeSlot], ctx: JobContext) -> list[NodeWork]:
    settings = spec.py_torch_settings
    assert settings is not None
    world = process_count(spec)
    command = python_command(settings.python_script_file_path, settings.python_interpreter_path, settings.command_line_args)
    work = [NodeWork() for _ in nodes]
    for node_rank, ranks in enumerate(ranks_per_node(world, len(nodes))):
        for local_rank, rank in enumerate(ranks):
            env = {
                "RANK": str(rank),
                "LOCAL_RANK": str(local_rank),
                "NODE_RANK": str(node_rank),
                "WORLD_SIZE": str(world),
                "LOCAL_WORLD_SIZE": str(len(ranks)),
                "MASTER_ADDR": nodes[0].address,
                "MASTER_PORT": master_port(ctx.job_uuid),
                "AZ_BATCHAI_TASK_INDEX": str(rank),
            }
            if world > 1:
                env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] = init_method(nodes, ctx, nodes[node_rank])
                env["AZ_BATCHAI_PYTORCH_BACKEND"] = (settings.communication_backend or "gloo").lower()
            stdout, stderr = _single_or_ranked("", rank, world > 1)
            work[node_rank].tasks.append(TaskPlan(f"rank {rank}", command, stdout, stderr, env))
    return work


def _tensorflow_work(spec: JobSpec, nodes: list[NodeSlot]) -> list[NodeWork]:
    settings: TensorFlowSettings = spec.tensor_flow_settings  # type: ignore[assignment]
    distributed = spec.node_count > 1 or bool(settings.worker_count and settings.worker_count > 1)
    work = [NodeWork() for _ in nodes]
    script = settings.python_script_file_path
    if not distributed:
        env = {"AZ_BATCHAI_TASK_INDEX": "0", "AZ_BATCHAI_PS_HOSTS": "", "AZ_BATCHAI_WORKER_HOSTS": ""}
        command = python_command(script, settings.python_interpreter_path, settings.master_command_line_args)
        work[0].tasks.append(TaskPlan("worker 0", command, "stdout-wk-0.txt", "stderr-wk-0.txt", env))
        return work
    workers = settings.worker_count or spec.node_count
    servers = 1 if settings.parameter_server_count is None else settings.parameter_server_count
    next_port: dict[str, int] = {}

    def place(index: int) -> tuple[int, str]:
        node = index % len(nodes)
        address = nodes[node].address
        port = next_port.get(address, TF_BASE_PORT)
        next_port[address] = port + 1
        return node, f"{address}:{port}"

    ps_places = [place(i) for i in range(servers)]
    worker_places = [place(i) for i in range(workers)]
    cluster = {"ps": [host for _, host in ps_places], "worker": [host for _, host in worker_places]}
    common = {"AZ_BATCHAI_PS_HOSTS": ",".join(cluster["ps"]), "AZ_BATCHAI_WORKER_HOSTS": ",".join(cluster["worker"])}
    for role, places in (("ps", ps_places), ("worker", worker_places)):
        for index, (node, _) in enumerate(places):
            tf_config = {"cluster": cluster, "task": {"type": role, "index": index}, "environment": "cloud"}
            env = {**common, "AZ_BATCHAI_TASK_INDEX": str(index), "TF_CONFIG": json.dumps(tf_config, separators=(",", ":"))}
            if role == "ps":
                args, short = settings.parameter_server_command_line_args, "ps"
            else:
                args, short = (settings.master_command_line_args if index == 0 else settings.worker_command_line_args), "wk"
            command = python_command(script, settings.python_interpreter_path, args)
            work[node].tasks.append(TaskPlan(f"{role} {index}", command, f"stdout-{short}-{index}.txt", f"stderr-{short}-{index}.txt", env))
    return work


def _mpi_program(spec: JobSpec) -> str:
    toolkit = spec.toolkit
    if isinstance(toolkit, CustomMpiSettings):
        return toolkit.command_line
    if isinstance(toolkit, CNTKsettings) and toolkit.config_file_path:
        return " ".join(p for p in ("cntk", f"configFile={toolkit.config_file_path}", toolkit.command_line_args) if p)
    if isinstance(toolkit, CaffeSettings) and toolkit.config_file_path:
        return " ".join(p for p in ("caffe", "train", f"--solver={toolkit.config_file_path}", toolkit.command_line_args) if p)
    return python_command(toolkit.python_script_file_path, toolkit.python_interpreter_path, toolkit.command_line_args)  # type: ignore[attr-defined]


def mpirun_command(program: str, processes: int, env_names: list[str]) -> str:
    """OpenMPI launch over the job's hostfile, exporting the job's variables to every rank."""
    exports = " ".join(f"-x {name}" for name in sorted(env_names))
    return f"mpirun --allow-run-as-root -np {processes} --hostfile $AZ_BATCHAI_MPI_HOST_FILE {exports} {program}".replace("  ", " ")


def _mpi_work(spec: JobSpec, nodes: list[NodeSlot], env_names: list[str]) -> list[NodeWork]:
    processes = process_count(spec)
    program = _mpi_program(spec)
    work = [NodeWork(wait_for_release=i > 0) for i in range(len(nodes))]
    if processes == 1 and len(nodes) == 1:
        work[0].tasks.append(TaskPlan("main", program, "stdout.txt", "stderr.txt"))
    else:
        work[0].tasks.append(TaskPlan("mpirun", mpirun_command(program, processes, env_names), "stdout.txt", "stderr.txt"))
        work[0].requires.append("mpirun")
    return work


def _custom_work(spec: JobSpec, nodes: list[NodeSlot]) -> list[NodeWork]:
    settings = spec.custom_toolkit_settings
    if settings is None or not settings.command_line:
        raise InvalidSpec("customToolkitSettings.commandLine is required to run a job", "customToolkitSettings.commandLine")
    work = [NodeWork(wait_for_release=i > 0) for i in range(len(nodes))]
    work[0].tasks.append(TaskPlan("main", settings.command_line, "stdout.txt", "stderr.txt"))
    return work


def _caffe2_work(spec: JobSpec, nodes: list[NodeSlot]) -> list[NodeWork]:
    settings = spec.caffe2_settings
    assert settings is not None
    command = python_command(settings.python_script_file_path, settings.python_interpreter_path, settings.command_line_args)
    work = [NodeWork() for _ in nodes]
    for index in range(len(nodes)):
        stdout, stderr = _single_or_ranked("", index, len(nodes) > 1)
        work[index].tasks.append(TaskPlan(f"shard {index}", command, stdout, stderr, {"AZ_BATCHAI_TASK_INDEX": str(index)}))
    return work


def job_environment(spec: JobSpec, node: NodeSlot, nodes: list[NodeSlot], ctx: JobContext) -> tuple[dict[str, str], list[list[str]]]:
    """The node's concrete variables, and the ones the agent must expand there, in order."""
    layout = node.layout
    job_temp = layout.job_temp(ctx.workspace, ctx.experiment, ctx.job)
    env = {
        "AZ_BATCHAI_MOUNT_ROOT": layout.mount_root,
        "AZ_BATCHAI_JOB_MOUNT_ROOT": layout.job_mount_root(ctx.workspace, ctx.experiment, ctx.job),
        "AZ_BATCHAI_JOB_TEMP": job_temp,
        "AZ_BATCHAI_JOB_TEMP_DIR": layout.job_temp_dir,
        "AZ_BATCHAI_SHARED_JOB_TEMP": posixpath.join(job_temp, "shared"),
        "AZ_BATCHAI_MPI_HOST_FILE": posixpath.join(job_temp, "hostfile"),
        "AZ_BATCHAI_NUM_GPUS": str(node.gpus),
        "AZ_BATCHAI_NODE_IP": node.address,
        "AZ_BATCHAI_JOB_MASTER_NODE_IP": nodes[0].address,
        "AZ_BATCHAI_IS_CURRENT_NODE_MASTER": "true" if node.node_id == nodes[0].node_id else "false",
        "AZ_BATCHAI_JOB_NAME": ctx.job,
    }
    for variable in spec.environment_variables or []:
        env[variable.name] = variable.value
    expand_env = [["AZ_BATCHAI_STDOUTERR_DIR", stdouterr_template(spec.std_out_err_path_prefix, ctx.segment)]]
    expand_env += [[f"AZ_BATCHAI_INPUT_{d.id}", d.path] for d in spec.input_directories or []]
    expand_env += [
        [f"AZ_BATCHAI_OUTPUT_{d.id}", output_template(d.path_prefix, ctx.segment, d.path_suffix, d.create_new)]
        for d in spec.output_directories or []
    ]
    return env, expand_env


def init_method(nodes: list[NodeSlot], ctx: JobContext, node: NodeSlot) -> str:
    """Batch AI's file rendezvous when the job's nodes share a folder, else TCP on the first node."""
    if ctx.shared_job_temp_source is not None:
        shared = posixpath.join(node.layout.job_temp(ctx.workspace, ctx.experiment, ctx.job), "shared")
        return f"file://{shared}/pytorch_rendezvous"
    return f"tcp://{nodes[0].address}:{master_port(ctx.job_uuid)}"


def peer_ssh(nodes: list[NodeSlot], ctx: JobContext, first_job_temp: str) -> tuple[list[PrivateFile], dict[str, str]]:
    """Files and variables that let mpirun on the first node reach the others (only when they are other hosts)."""
    if ctx.cluster_key is None or len({node.address for node in nodes}) < 2:
        return [], {}
    by_id = {peer.node_id: peer for peer in ctx.ssh_peers}
    missing = [node.node_id for node in nodes[1:] if node.node_id not in by_id]
    if missing:
        raise InvalidSpec(f"no SSH details for node(s) {', '.join(missing)}", "nodeCount")
    config, files = ssh_client_files([by_id[node.node_id] for node in nodes[1:]], ctx.cluster_key, first_job_temp)
    return files, mpi_launcher_env(config)


GPU_SAMPLE_S = 5.0  # how often an agent asks nvidia-smi, at most (a short window samples more often)


def gpu_watch_of(spec: JobSpec) -> dict[str, float] | None:
    """What the agents sample for the idle-GPU watchdog (utilizationPolicy); the control plane decides."""
    policy = spec.utilization_policy
    if policy is None:
        return None
    window = policy.time_window.total_seconds()
    return {"min": policy.min_gpu_utilization, "window_s": window, "sample_s": max(0.5, min(GPU_SAMPLE_S, window / 4))}


def job_plans(spec: JobSpec, nodes: list[NodeSlot], ctx: JobContext, secret_names: list[str] | None = None) -> list[AgentPlan]:
    """One agent plan per node (node-rank order). Raises InvalidSpec when the job cannot run as given."""
    if len(nodes) != spec.node_count:
        raise InvalidSpec(f"job needs {spec.node_count} nodes, {len(nodes)} given", "nodeCount")
    tool = spec.tool_type
    per_node_env = [job_environment(spec, node, nodes, ctx) for node in nodes]
    if tool == "pytorch":
        work = _pytorch_work(spec, nodes, ctx)
    elif tool == "tensorflow":
        work = _tensorflow_work(spec, nodes)
    elif tool == "caffe2":
        work = _caffe2_work(spec, nodes)
    elif tool == "custom":
        work = _custom_work(spec, nodes)
    else:
        exported = [*per_node_env[0][0], *(name for name, _ in per_node_env[0][1]), *(secret_names or [])]
        work = _mpi_work(spec, nodes, exported)
    several = len(nodes) > 1
    ssh_files, ssh_env = peer_ssh(nodes, ctx, per_node_env[0][0]["AZ_BATCHAI_JOB_TEMP"])
    plans = []
    for index, node in enumerate(nodes):
        env, expand_env = per_node_env[index]
        if index == 0:
            env = {**ssh_env, **env}  # the user's own settings win
        job_temp = env["AZ_BATCHAI_JOB_TEMP"]
        links = [
            link.plan_entry(posixpath.join(env["AZ_BATCHAI_JOB_MOUNT_ROOT"], link.relative_mount_path), True) for link in ctx.job_links
        ]
        if ctx.shared_job_temp_source is not None:
            links.append(LinkPlan(env["AZ_BATCHAI_SHARED_JOB_TEMP"], source=ctx.shared_job_temp_source, unlink_at_end=True))
        suffix = f"-{node.node_id}" if several else ""
        preparation = None
        if spec.job_preparation:
            preparation = TaskPlan(
                "preparation", spec.job_preparation.command_line, f"stdout-job_prep{suffix}.txt", f"stderr-job_prep{suffix}.txt"
            )
        make_dirs = ["AZ_BATCHAI_STDOUTERR_DIR"] + [f"AZ_BATCHAI_OUTPUT_{d.id}" for d in spec.output_directories or []]
        if ctx.shared_job_temp_source is None:
            make_dirs.append("AZ_BATCHAI_SHARED_JOB_TEMP")
        plans.append(
            AgentPlan(
                kind="job",
                node_id=node.node_id,
                env=env,
                expand_env=[list(pair) for pair in expand_env],
                make_dirs=make_dirs,
                clean_dirs=[job_temp],
                links=links,
                hostfile=HostFile(env["AZ_BATCHAI_MPI_HOST_FILE"], hostfile_lines(nodes)),
                files=ssh_files if index == 0 else [],
                log_dir_env="AZ_BATCHAI_STDOUTERR_DIR",
                execution_log=f"execution{suffix}.log",
                cwd=job_temp,
                preparation=preparation,
                tasks=work[index].tasks,
                requires=work[index].requires,
                wait_for_release=work[index].wait_for_release,
                max_wall_clock_s=spec.max_wall_clock.total_seconds(),
                grace_s=GRACE_S,
                failure_code=ErrorCode.JOB_FAILED,
                gpu_watch=gpu_watch_of(spec),
                container=(
                    container_plan(
                        spec.container_settings,
                        node,
                        f"batchai-{ctx.run_id}-{index}",
                        [
                            node.root,
                            *(link.source for link in ctx.job_links if link.local_folder),
                            *([ctx.shared_job_temp_source] if ctx.shared_job_temp_source else []),
                        ],
                        posixpath.join(node.layout.run_dir(ctx.run_id), "container.env"),
                        job_temp,
                    )
                    if spec.container_settings
                    else None
                ),
                socket_address=nodes[0].address if several else None,
            )
        )
    return plans


def setup_plan(
    node: NodeSlot,
    *,
    setup_command: str | None,
    setup_env: dict[str, str],
    stdouterr_template_path: str | None,
    cluster_links: list[Link],
) -> AgentPlan:
    """Node setup: make the cluster's mounts visible, then run ``nodeSetup.setupTask`` once."""
    layout = node.layout
    env = {"AZ_BATCHAI_MOUNT_ROOT": layout.mount_root, "AZ_BATCHAI_NUM_GPUS": str(node.gpus), **setup_env}
    setup_dir = stdouterr_template_path or posixpath.join(layout.agent_dir, "setup")
    tasks = [TaskPlan("setup task", setup_command, f"stdout-{node.node_id}.txt", f"stderr-{node.node_id}.txt")] if setup_command else []
    return AgentPlan(
        kind="setup",
        node_id=node.node_id,
        env=env,
        expand_env=[["AZ_BATCHAI_SETUP_STDOUTERR_DIR", setup_dir]],
        make_dirs=["AZ_BATCHAI_SETUP_STDOUTERR_DIR"],
        links=[link.plan_entry(posixpath.join(layout.mount_root, link.relative_mount_path), False) for link in cluster_links],
        log_dir_env="AZ_BATCHAI_SETUP_STDOUTERR_DIR",
        execution_log=f"execution-{node.node_id}.log",
        cwd=layout.root,
        tasks=tasks,
        max_wall_clock_s=86400,
        grace_s=GRACE_S,
        failure_code=ErrorCode.NODE_SETUP_FAILED,
    )


CONTAINER_SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -c "$0"; else exec sh -c "$0"; fi'


def container_plan(settings: ContainerSettings, node: NodeSlot, name: str, binds: list[str], env_file: str, workdir: str) -> ContainerPlan:
    """Docker commands for running a job in one container per node (Batch AI ran prep and job in the same one).

    The container sleeps; preparation and every rank are ``docker exec``-ed into it, so what
    preparation changes (e.g. ~/.bashrc) the job sees. Host network (ranks reach each other
    as on the host), the node's folders bind-mounted at the same paths, variables from a 0600
    env file (secrets never on a command line), all GPUs when the node has any.
    """
    registry = settings.image_source_registry
    start = ["docker", "run", "--detach", "--init", "--name", name, "--network", "host", "--env-file", env_file, "--workdir", workdir]
    if settings.shm_size:
        start += ["--shm-size", settings.shm_size]
    if node.gpus > 0:
        start += ["--gpus", "all"]
    for folder in sorted(set(binds)):
        start += ["--volume", f"{folder}:{folder}"]
    start += ["--entrypoint", "sleep", registry.image, "infinity"]
    login = None
    if registry.credentials is not None:
        server = registry.server_url or registry.image.split("/", 1)[0]
        login = ["docker", "login", server, "--username", registry.credentials.username, "--password-stdin"]
    return ContainerPlan(
        name=name,
        image=registry.image,
        login=login,
        start=start,
        exec=["docker", "exec", "--workdir", workdir],
        shell=["sh", "-c", CONTAINER_SHELL],
        remove=["docker", "rm", "--force", name],
        env_file=env_file,
    )
