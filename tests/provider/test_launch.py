"""What each node runs, and with which environment, per toolkit (pure functions: no processes here)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from airflow_batchai.agent.protocol import AgentPlan
from airflow_batchai.data.links import Link
from airflow_batchai.errors import InvalidSpec
from airflow_batchai.launch import JobContext, NodeSlot, hostfile_lines, job_plans, ranks_per_node
from airflow_batchai.spec import load_job_spec
from airflow_batchai.transport.clusterkeys import PeerSSH
from tests.conftest import DATA

TWO_NODES = [NodeSlot("n0", "10.0.0.4", "/r0", gpus=4), NodeSlot("n1", "10.0.0.5", "/r1", gpus=4)]
SEGMENT = "sub/rg/workspaces/ws/experiments/exp/jobs/job/uuid"
UUID = "0f0f0f0f-0000-0000-0000-000000000000"


def context(shared: str | None = None, links: list[Link] | None = None) -> JobContext:
    return JobContext("ws", "exp", "job", UUID, SEGMENT, "run-0", links or [], shared)


def documents(plans: list[AgentPlan]) -> list[dict[str, Any]]:
    """The plans as the agent reads them (plan.json)."""
    return [plan.to_json() for plan in plans]


def plans_for(body: dict[str, Any], nodes: list[NodeSlot] = TWO_NODES, shared: str | None = None) -> list[dict[str, Any]]:
    spec = load_job_spec({"properties": {"stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", **body}}, environ={})
    return documents(job_plans(spec, nodes, context(shared), ["MY_SECRET"]))


def tasks(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return plan["tasks"]


def test_every_batch_ai_variable_of_the_reference_is_set() -> None:
    [plan] = plans_for(
        {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "run"},
            "inputDirectories": [{"id": "DATASET", "path": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data"}],
            "outputDirectories": [{"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "pathSuffix": "Models"}],
            "environmentVariables": [{"name": "EPOCHS", "value": "3"}],
        },
        nodes=TWO_NODES[:1],
    )
    env, expanded = plan["env"], dict(plan["expand_env"])
    assert env["AZ_BATCHAI_MOUNT_ROOT"] == "/r0/mounts"
    assert env["AZ_BATCHAI_JOB_MOUNT_ROOT"] == "/r0/jobs/ws/exp/job/mounts"
    assert env["AZ_BATCHAI_JOB_TEMP"] == "/r0/jobs/ws/exp/job"
    assert env["AZ_BATCHAI_JOB_TEMP_DIR"] == "/r0/jobs"
    assert env["AZ_BATCHAI_SHARED_JOB_TEMP"] == "/r0/jobs/ws/exp/job/shared"
    assert env["AZ_BATCHAI_MPI_HOST_FILE"] == "/r0/jobs/ws/exp/job/hostfile"
    assert env["AZ_BATCHAI_NUM_GPUS"] == "4"
    assert env["EPOCHS"] == "3"
    assert expanded == {
        "AZ_BATCHAI_STDOUTERR_DIR": f"$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/{SEGMENT}/stdouterr",
        "AZ_BATCHAI_INPUT_DATASET": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data",
        "AZ_BATCHAI_OUTPUT_MODEL": f"$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/{SEGMENT}/outputs/Models",
    }
    assert "AZ_BATCHAI_OUTPUT_MODEL" in plan["make_dirs"] and "AZ_BATCHAI_STDOUTERR_DIR" in plan["make_dirs"]
    assert plan["execution_log"] == "execution.log"


def test_custom_toolkit_runs_on_the_first_node_and_reserves_the_others() -> None:
    first, second = plans_for({"nodeCount": 2, "customToolkitSettings": {"commandLine": "python train.py"}})
    assert [(t["command"], t["stdout"]) for t in tasks(first)] == [("python train.py", "stdout.txt")]
    assert tasks(second) == [] and second["wait_for_release"] is True
    assert first["hostfile"]["lines"] == ["10.0.0.4 slots=4", "10.0.0.5 slots=4"]


def test_pytorch_distributed_sets_torch_and_batch_ai_variables_per_rank() -> None:
    first, second = plans_for(
        {
            "nodeCount": 2,
            "pyTorchSettings": {
                "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/ddp.py",
                "commandLineArgs": "--epochs 2",
                "communicationBackend": "Gloo",
            },
        }
    )
    rank0, rank1 = tasks(first)[0], tasks(second)[0]
    assert rank0["command"] == '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/ddp.py --epochs 2'
    for rank, task, node_rank in ((0, rank0, 0), (1, rank1, 1)):
        env = task["env"]
        assert (env["RANK"], env["AZ_BATCHAI_TASK_INDEX"], env["NODE_RANK"], env["LOCAL_RANK"]) == (
            str(rank),
            str(rank),
            str(node_rank),
            "0",
        )
        assert (env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("2", "10.0.0.4")
        assert env["AZ_BATCHAI_PYTORCH_BACKEND"] == "gloo"
        assert env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == f"tcp://10.0.0.4:{env['MASTER_PORT']}"
        assert (task["stdout"], task["stderr"]) == (f"stdout-{rank}.txt", f"stderr-{rank}.txt")
    assert 20000 <= int(rank0["env"]["MASTER_PORT"]) < 30000


def test_pytorch_uses_batch_ai_file_rendezvous_when_nodes_share_a_folder() -> None:
    first, second = plans_for({"nodeCount": 2, "pyTorchSettings": {"pythonScriptFilePath": "t.py"}}, shared="/home/shared/run-0")
    assert tasks(first)[0]["env"]["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "file:///r0/jobs/ws/exp/job/shared/pytorch_rendezvous"
    shared = {
        "path": "/r1/jobs/ws/exp/job/shared",
        "source": "/home/shared/run-0",
        "stage": False,
        "mount_command": None,
        "unlink_at_end": True,
    }
    assert shared in second["links"]


def test_pytorch_process_count_spreads_ranks_in_blocks() -> None:
    first, second = plans_for({"nodeCount": 2, "pyTorchSettings": {"pythonScriptFilePath": "t.py", "processCount": 4}})
    assert [t["env"]["RANK"] for t in tasks(first)] == ["0", "1"] and [t["env"]["LOCAL_RANK"] for t in tasks(second)] == ["0", "1"]
    assert [t["env"]["RANK"] for t in tasks(second)] == ["2", "3"]
    assert ranks_per_node(3, 2) == [[0, 1], [2]]


def test_single_process_pytorch_writes_plain_stdout() -> None:
    [plan] = plans_for(
        {"nodeCount": 1, "pyTorchSettings": {"pythonScriptFilePath": "t.py", "pythonInterpreterPath": "/opt/py/bin/python"}}, TWO_NODES[:1]
    )
    [task] = tasks(plan)
    assert task["stdout"] == "stdout.txt" and task["command"] == "/opt/py/bin/python t.py"
    assert "AZ_BATCHAI_PYTORCH_INIT_METHOD" not in task["env"]


def test_tensorflow_recipe_places_ps_and_workers_like_batch_ai() -> None:
    spec = load_job_spec(DATA / "recipes" / "TensorFlow__TensorFlow-GPU-Distributed__job.json", storage_account_name="a", environ={})
    first, second = documents(job_plans(spec, TWO_NODES, context()))
    ps, worker0 = tasks(first)
    [worker1] = tasks(second)
    assert ps["env"]["AZ_BATCHAI_PS_HOSTS"] == "10.0.0.4:2222"
    assert ps["env"]["AZ_BATCHAI_WORKER_HOSTS"] == "10.0.0.4:2223,10.0.0.5:2222"
    assert json.loads(worker1["env"]["TF_CONFIG"]) == {
        "cluster": {"ps": ["10.0.0.4:2222"], "worker": ["10.0.0.4:2223", "10.0.0.5:2222"]},
        "task": {"type": "worker", "index": 1},
        "environment": "cloud",
    }
    assert "--job_name=ps" in ps["command"] and ps["stdout"] == "stdout-ps-0.txt"
    assert worker0["command"].endswith(spec.tensor_flow_settings.master_command_line_args)
    assert (worker0["stdout"], worker1["stdout"]) == ("stdout-wk-0.txt", "stdout-wk-1.txt")
    assert worker1["env"]["AZ_BATCHAI_TASK_INDEX"] == "1"


def test_single_node_tensorflow_writes_worker_zero_logs() -> None:
    [plan] = plans_for({"nodeCount": 1, "tensorFlowSettings": {"pythonScriptFilePath": "c.py"}}, TWO_NODES[:1])
    assert [(t["stdout"], t["env"]["AZ_BATCHAI_TASK_INDEX"]) for t in tasks(plan)] == [("stdout-wk-0.txt", "0")]


@pytest.mark.parametrize(
    ("settings", "program"),
    [
        ({"horovodSettings": {"pythonScriptFilePath": "h.py"}}, '"$BATCHAI_PYTHON" h.py'),
        ({"customMpiSettings": {"commandLine": "python s.py"}}, "python s.py"),
        ({"chainerSettings": {"pythonScriptFilePath": "c.py", "processCount": 8}}, '"$BATCHAI_PYTHON" c.py'),
        ({"cntkSettings": {"configFilePath": "x.cntk", "commandLineArgs": "a=1"}}, "cntk configFile=x.cntk a=1"),
        ({"caffeSettings": {"configFilePath": "solver.prototxt"}}, "caffe train --solver=solver.prototxt"),
    ],
)
def test_mpi_toolkits_launch_mpirun_over_the_hostfile_from_the_first_node(settings: dict[str, Any], program: str) -> None:
    first, second = plans_for({"nodeCount": 2, **settings})
    [task] = tasks(first)
    count = settings.get("chainerSettings", {}).get("processCount", 2)
    assert task["command"].startswith(f"mpirun --allow-run-as-root -np {count} --hostfile $AZ_BATCHAI_MPI_HOST_FILE")
    assert task["command"].endswith(program)
    assert "-x MY_SECRET" in task["command"] and "-x AZ_BATCHAI_OUTPUT_" not in task["command"]
    assert first["requires"] == ["mpirun"] and second["wait_for_release"]


def test_single_process_mpi_toolkit_runs_directly_without_mpi() -> None:
    spec = load_job_spec(DATA / "seed_002_quickstart_job.json", storage_account_name="a", environ={})
    [plan] = documents(job_plans(spec, TWO_NODES[:1], context()))
    [task] = tasks(plan)
    assert (
        task["command"]
        == '"$BATCHAI_PYTHON" $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/ConvNet_MNIST.py $AZ_BATCHAI_JOB_MOUNT_ROOT/data/mnist_cntk $AZ_BATCHAI_OUTPUT_MODEL'
    )
    assert plan["requires"] == [] and task["stdout"] == "stdout.txt"


def test_caffe2_runs_one_shard_per_node() -> None:
    first, second = plans_for({"nodeCount": 2, "caffe2Settings": {"pythonScriptFilePath": "r.py"}})
    assert [(t["env"]["AZ_BATCHAI_TASK_INDEX"], t["stdout"]) for t in tasks(first) + tasks(second)] == [
        ("0", "stdout-0.txt"),
        ("1", "stdout-1.txt"),
    ]


def test_job_preparation_and_execution_logs_carry_the_node_id_on_several_nodes() -> None:
    first, second = plans_for(
        {"nodeCount": 2, "customToolkitSettings": {"commandLine": "x"}, "jobPreparation": {"commandLine": "pip install x"}}
    )
    assert (first["preparation"]["stdout"], second["preparation"]["stderr"]) == ("stdout-job_prep-n0.txt", "stderr-job_prep-n1.txt")
    assert (first["execution_log"], second["execution_log"]) == ("execution-n0.log", "execution-n1.log")
    [single] = plans_for(
        {"nodeCount": 1, "customToolkitSettings": {"commandLine": "x"}, "jobPreparation": {"commandLine": "y"}}, TWO_NODES[:1]
    )
    assert single["preparation"]["stdout"] == "stdout-job_prep.txt"


def test_2018_03_01_output_directory_without_create_new_uses_the_prefix_as_given() -> None:
    [plan] = plans_for(
        {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "x"},
            "outputDirectories": [{"id": "OUT", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/out", "createNew": False}],
        },
        TWO_NODES[:1],
    )
    assert dict(plan["expand_env"])["AZ_BATCHAI_OUTPUT_OUT"] == "$AZ_BATCHAI_JOB_MOUNT_ROOT/out"


def test_custom_toolkit_without_a_command_is_refused() -> None:
    with pytest.raises(InvalidSpec, match=r"customToolkitSettings.commandLine is required"):
        plans_for({"nodeCount": 1, "customToolkitSettings": {}}, TWO_NODES[:1])


def test_hostfile_slots_are_gpus_and_at_least_one_per_address() -> None:
    nodes = [NodeSlot("a", "127.0.0.1", "/a"), NodeSlot("b", "127.0.0.1", "/b"), NodeSlot("c", "10.0.0.9", "/c", gpus=2)]
    assert hostfile_lines(nodes) == ["127.0.0.1 slots=2", "10.0.0.9 slots=2"]


def test_plans_hold_no_secret_values() -> None:
    plans = plans_for(
        {"nodeCount": 2, "horovodSettings": {"pythonScriptFilePath": "h.py"}, "secrets": [{"name": "MY_SECRET", "value": "hunter2-xyz"}]}
    )
    assert "hunter2-xyz" not in json.dumps(plans)


CONTAINER = {
    "imageSourceRegistry": {"image": "demo.azurecr.io/train:1", "credentials": {"username": "robot", "password": "registry-pass-77"}},
    "shmSize": "16gb",
}


def test_container_plan_runs_prep_and_ranks_in_one_container_per_node() -> None:
    gpu_node = NodeSlot("n0", "10.0.0.4", "/r0", gpus=4)
    cpu_node = NodeSlot("n1", "10.0.0.5", "/r1", gpus=0)
    first, second = plans_for(
        {
            "nodeCount": 2,
            "pyTorchSettings": {"pythonScriptFilePath": "t.py"},
            "containerSettings": CONTAINER,
            "jobPreparation": {"commandLine": "pip install x"},
        },
        nodes=[gpu_node, cpu_node],
        shared="/home/shared/run-0",
    )
    container = first["container"]
    start = container["start"]
    assert start[:4] == ["docker", "run", "--detach", "--init"] and start[-4:] == [
        "--entrypoint",
        "sleep",
        "demo.azurecr.io/train:1",
        "infinity",
    ]
    assert start[start.index("--network") + 1] == "host" and start[start.index("--shm-size") + 1] == "16gb"
    assert "--gpus" in start and "--gpus" not in second["container"]["start"]
    assert start[start.index("--env-file") + 1] == "/r0/batchai/runs/run-0/container.env"
    volumes = [start[i + 1] for i, flag in enumerate(start) if flag == "--volume"]
    assert volumes == ["/home/shared/run-0:/home/shared/run-0", "/r0:/r0"]
    assert container["login"] == ["docker", "login", "demo.azurecr.io", "--username", "robot", "--password-stdin"]
    assert container["remove"] == ["docker", "rm", "--force", container["name"]] and container["name"] == "batchai-run-0-0"
    assert "registry-pass-77" not in json.dumps([first, second])


def test_container_login_uses_the_server_url_when_given() -> None:
    settings = {
        "imageSourceRegistry": {"image": "team/img", "serverUrl": "registry.example.org", "credentials": {"username": "u", "password": "p"}}
    }
    [plan] = plans_for({"nodeCount": 1, "customToolkitSettings": {"commandLine": "x"}, "containerSettings": settings}, TWO_NODES[:1])
    assert plan["container"]["login"][:3] == ["docker", "login", "registry.example.org"]
    public = {"imageSourceRegistry": {"image": "tensorflow/tensorflow:1.8.0-gpu"}}
    [plan] = plans_for({"nodeCount": 1, "customToolkitSettings": {"commandLine": "x"}, "containerSettings": public}, TWO_NODES[:1])
    assert plan["container"]["login"] is None


def test_mpi_across_hosts_gets_an_ssh_config_pinning_each_peers_host_key() -> None:
    body = {"nodeCount": 2, "customMpiSettings": {"commandLine": "hello", "processCount": 2}, "stdOutErrPathPrefix": "/logs"}
    peer = PeerSSH(TWO_NODES[1].node_id, TWO_NODES[1].address, 2222, "ml", "ssh-ed25519 AAAAPEER")
    ctx = replace(context(), ssh_peers=[peer], cluster_key="/n0/batchai/cluster-keys/c/id_ed25519")
    first, second = documents(job_plans(load_job_spec({"properties": body}, environ={}), TWO_NODES, ctx))
    config, known_hosts = first["files"]
    assert f"Host {peer.address}\n" in config["text"] and "  Port 2222\n  User ml\n" in config["text"]
    assert "IdentityFile /n0/batchai/cluster-keys/c/id_ed25519" in config["text"] and "StrictHostKeyChecking yes" in config["text"]
    assert known_hosts["text"] == f"batchai-{peer.node_id} ssh-ed25519 AAAAPEER\n"
    assert first["env"]["OMPI_MCA_plm_rsh_args"] == f"-F {config['path']}"
    assert second["files"] == [] and "OMPI_MCA_plm_rsh_args" not in second["env"]


def test_nodes_without_a_cluster_key_get_no_ssh_files() -> None:
    body = {"nodeCount": 2, "customMpiSettings": {"commandLine": "hello", "processCount": 2}, "stdOutErrPathPrefix": "/logs"}
    assert all(plan.files == [] for plan in job_plans(load_job_spec({"properties": body}, environ={}), TWO_NODES, context()))
