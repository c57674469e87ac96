"""SSH transport and SSH node pools against real sshd hosts in network namespaces."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_batchai.config import ProviderConfig, service_from_config
from airflow_batchai.data.upload import upload_batch
from airflow_batchai.errors import BatchAIError
from airflow_batchai.pools.ssh import SSHNodePool
from airflow_batchai.records import read_cluster
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.transport.ssh import HostSpec, SSHAuth, SSHTransport
from tests.conftest import REPO, custom_job, pid_alive, wait_until


def auth_for(ssh_hosts: Any, **changes: Any) -> SSHAuth:
    settings = {"user": "root", "key_file": str(ssh_hosts.client_key), "known_hosts": str(ssh_hosts.known_hosts), "allow_agent": False}
    return SSHAuth(**{**settings, **changes})


def transport(ssh_hosts: Any, index: int = 0, **changes: Any) -> SSHTransport:
    host = ssh_hosts.hosts[index]
    return SSHTransport(HostSpec.parse(host.spec), auth_for(ssh_hosts, **changes), python=sys.executable, connect_timeout_s=3)


def ssh_service(ssh_hosts: Any, home: Path, count: int = 2, heartbeat_timeout_s: float = 30) -> Service:
    pool = SSHNodePool(
        [HostSpec.parse(h.entry) for h in ssh_hosts.hosts[:count]],
        auth_for(ssh_hosts),
        root=str(home / "ssh-nodes"),
        python=sys.executable,  # the nodes share this machine's disk in the tests: use the venv with torch
        connect_timeout_s=2,
        io_timeout_s=3,
    )
    return Service.embedded(home, settings=Settings(heartbeat_timeout_s=heartbeat_timeout_s, launch_timeout_s=30), pool=pool)


def ready_cluster(service: Service, nodes: int, name: str = "c") -> None:
    service.create_cluster(name, load_cluster_spec({"scaleSettings": {"manual": {"targetNodeCount": nodes}}}, environ={}))
    wait_until(lambda: service.show_cluster(name).node_state_counts.idle_node_count == nodes, 60, 0.2, what=f"{nodes} idle SSH node(s)")


def test_unknown_host_key_is_refused_naming_the_host(ssh_hosts: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = ssh_hosts.hosts[0]
    with pytest.raises(BatchAIError, match=rf"UnknownHostKey: host key SHA256:\S+ of {host.address}:{host.port} is not in known_hosts"):
        transport(ssh_hosts, known_hosts=str(empty)).run(["true"])


def test_changed_host_key_is_refused(ssh_hosts: Any, tmp_path: Path) -> None:
    first, second = ssh_hosts.hosts[0], ssh_hosts.hosts[1]
    wrong = tmp_path / "known_hosts"
    name = first.address if first.port == 22 else f"[{first.address}]:{first.port}"
    wrong.write_text(f"{name} ssh-ed25519 {second.host_key_pub}\n")  # another host's key
    with pytest.raises(BatchAIError, match=f"HostKeyMismatch: host key of {first.address}:{first.port} changed"):
        transport(ssh_hosts, known_hosts=str(wrong)).run(["true"])


def test_pinned_fingerprints_are_checked(ssh_hosts: Any, tmp_path: Path) -> None:
    host = ssh_hosts.hosts[0]
    seen = subprocess.run(
        ["ssh-keygen", "-lf", str(ssh_hosts.folder / host.name / "host_key.pub")], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    (tmp_path / "empty").write_text("")
    pinned = transport(ssh_hosts, known_hosts=str(tmp_path / "empty"), pinned_fingerprints={host.address: seen})
    assert pinned.run(["echo", "pinned ok"]).stdout == b"pinned ok\n"
    bad = transport(ssh_hosts, known_hosts=str(tmp_path / "empty"), pinned_fingerprints={host.address: "SHA256:" + "A" * 43})
    with pytest.raises(BatchAIError, match="not the pinned"):
        bad.run(["true"])


def test_accepting_unknown_keys_needs_the_explicit_option_and_warns_each_time(
    ssh_hosts: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "empty").write_text("")
    caplog.set_level(logging.WARNING)
    insecure = transport(ssh_hosts, known_hosts=str(tmp_path / "empty"), insecure_accept_unknown_host_keys=True)
    assert insecure.run(["true"]).returncode == 0
    assert "accepting unverified host key" in caplog.text


def test_commands_share_one_connection_with_tcp_nodelay(ssh_hosts: Any) -> None:
    ssh = transport(ssh_hosts)
    results = [ssh.run(["sh", "-c", f"echo {i}; echo err{i} >&2; exit {i % 3}"]) for i in range(20)]
    assert [(r.returncode, r.stdout, r.stderr) for r in results[:3]] == [
        (0, b"0\n", b"err0\n"),
        (1, b"1\n", b"err1\n"),
        (2, b"2\n", b"err2\n"),
    ]
    assert ssh.connections_made == 1
    sock = ssh.client().get_transport().sock  # type: ignore[union-attr]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert ssh.run(["cat"], stdin=b"through stdin").stdout == b"through stdin"
    with pytest.raises(BatchAIError, match="did not finish in 1 s"):
        ssh.run(["sleep", "5"], timeout_s=1)
    ssh.close()
    assert ssh.run(["true"]).returncode == 0 and ssh.connections_made == 2


def test_output_written_after_the_exit_status_is_kept(ssh_hosts: Any) -> None:
    """sshd sends a command's exit status when it exits, and closes the channel once its output is
    drained: a reader that stops at the status loses what comes after (here, from a child that outlives
    the shell), as a busy host's scheduling can make it lose the shell's own last stderr line."""
    ssh = transport(ssh_hosts)
    result = ssh.run(["sh", "-c", "(sleep 0.3; echo late-out; echo late-err >&2) & echo early; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, b"early\nlate-out\n", b"late-err\n")
    ssh.close()


def test_files_round_trip_over_sftp(ssh_hosts: Any, tmp_path: Path) -> None:
    ssh = transport(ssh_hosts)
    target = str(tmp_path / "remote" / "deep" / "plan.json")
    ssh.write_file(target, b"0123456789", 0o600)
    assert oct(os.stat(target).st_mode & 0o777) == "0o600"
    assert ssh.read_file(target) == b"0123456789" and ssh.read_file(target, 4) == b"456789" and ssh.read_file(target, 2, 3) == b"234"
    assert ssh.read_file(str(tmp_path / "missing")) is None
    assert [(i.name, i.size) for i in ssh.list_dir(str(tmp_path / "remote" / "deep"))] == [("plan.json", 10)]
    ssh.remove_tree(str(tmp_path / "remote"))
    assert not (tmp_path / "remote").exists() and ssh.list_dir(str(tmp_path / "remote")) is None


def test_a_job_keeps_running_after_the_submitting_process_exits(ssh_hosts: Any, home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    submit = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.provider.transport.test_ssh import ssh_service
from tests.conftest import custom_job
from airflow_batchai.spec import load_cluster_spec, load_job_spec
import types, pathlib
hosts = types.SimpleNamespace(**{{"hosts": [types.SimpleNamespace(entry=e) for e in {[h.entry for h in ssh_hosts.hosts]!r}],
    "client_key": {str(ssh_hosts.client_key)!r}, "known_hosts": {str(ssh_hosts.known_hosts)!r}}})
service = ssh_service(hosts, pathlib.Path({str(home)!r}), count=1)
service.create_cluster("c", load_cluster_spec({{"scaleSettings": {{"manual": {{"targetNodeCount": 1}}}}}}, environ={{}}))
import time
while service.show_cluster("c").node_state_counts.idle_node_count < 1:
    time.sleep(0.1)
service.create_job("c", "outlives", load_job_spec({{"properties": custom_job("sleep 2; touch {marker}")}}, environ={{}}))
"""
    subprocess.run([sys.executable, "-c", submit], check=True, timeout=120)
    wait_until(marker.exists, 30, 0.2, what="the job to finish after its submitter exited")
    service = ssh_service(ssh_hosts, home, count=1)
    assert service.wait_job("outlives", timeout_s=60, poll_s=0.2).execution_state == "succeeded"


def test_terminate_over_ssh_kills_the_remote_process_group(ssh_hosts: Any, home: Path, tmp_path: Path) -> None:
    service = ssh_service(ssh_hosts, home, count=1)
    ready_cluster(service, 1)
    pid_file = tmp_path / "pid"
    service.create_job("c", "long", load_job_spec({"properties": custom_job(f"sleep 300 & echo $! > {pid_file}; wait")}, environ={}))
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, 0.2, what="job started"))
    view = service.terminate_job("long")
    assert view.execution_state == "failed" and view.execution_info.errors[0].code == "JobTerminated"
    wait_until(lambda: not pid_alive(pid), 15, what="remote process gone")


@pytest.mark.slow
def test_two_node_ddp_across_namespaces_with_gloo(ssh_hosts: Any, home: Path) -> None:
    pytest.importorskip("torch")
    service = ssh_service(ssh_hosts, home, count=2)
    scripts = home / "storage" / "local" / "scripts" / "pytorch"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "assets" / "pytorch" / "ddp_digits.py", scripts)
    ready_cluster(service, 2, "gpu")
    from tests.provider.test_distributed import DDP_JOB

    body = {
        **DDP_JOB,
        "pyTorchSettings": {**DDP_JOB["pyTorchSettings"], "commandLineArgs": "--epochs 1 --output-dir $AZ_BATCHAI_OUTPUT_MODEL"},
    }
    service.create_job("gpu", "ddp", load_job_spec({"properties": body}, storage_account_name="local", environ={}))
    done = service.wait_job("ddp", timeout_s=240, poll_s=0.5)
    logs = {
        n: (service.read_output_file("ddp", n) or b"").decode() for n in ("stdout-0.txt", "stdout-1.txt", "stderr-0.txt", "stderr-1.txt")
    }
    assert done.execution_state == "succeeded", (done.execution_info, logs)
    for rank in (0, 1):
        assert f"rank {rank}/2 joined via tcp:// with gloo" in logs[f"stdout-{rank}.txt"]
        assert f"rank {rank}: all_reduce sum = 3 (expected 3)" in logs[f"stdout-{rank}.txt"]
    names = sorted(f.name for f in service.list_output_files("ddp"))
    node_ids = sorted(HostSpec.parse(h.spec).node_id for h in ssh_hosts.hosts[:2])
    curves = [f"resources-{n}.json" for n in node_ids]  # each node's resource samples, beside its logs
    assert names == sorted(
        [*(f"execution-{n}.log" for n in node_ids), *curves, "stderr-0.txt", "stderr-1.txt", "stdout-0.txt", "stdout-1.txt"]
    )


def test_a_node_cut_off_mid_job_becomes_unusable_and_its_job_is_requeued(ssh_hosts: Any, home: Path, tmp_path: Path) -> None:
    if ssh_hosts.mode != "netns":
        pytest.skip(f"needs network namespaces ({ssh_hosts.mode})")
    victim = ssh_hosts.hosts[2]
    pool = SSHNodePool(
        [HostSpec.parse(victim.entry)],
        auth_for(ssh_hosts),
        root=str(home / "ssh-nodes"),
        python=sys.executable,
        connect_timeout_s=2,
        io_timeout_s=2,
    )
    service = Service.embedded(home, settings=Settings(heartbeat_timeout_s=4, launch_timeout_s=30), pool=pool)
    ready_cluster(service, 1)
    pid_file = tmp_path / "pid"
    service.create_job("c", "cut", load_job_spec({"properties": custom_job(f"sleep 300 & echo $! > {pid_file}; wait")}, environ={}))
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, 0.2, what="job started"))
    ssh_hosts.cut(victim)
    try:
        started = time.monotonic()
        view = wait_until(lambda: (v := service.show_job("cut")).execution_state == "queued" and v, 90, 0.5, what="requeue")
        error = view.execution_info.errors[0]
        assert error.code == "NodeLost" and HostSpec.parse(victim.spec).node_id in error.message
        # the pass writes the job's requeue before it publishes the cluster record: a reader may see it first
        cluster = wait_until(
            lambda: (c := service.show_cluster("c")).node_state_counts.unusable_node_count == 1 and c, 10, 0.1, what="published"
        )
        assert any(victim.address in e.message for e in cluster.errors or [])
        assert time.monotonic() - started < 60
    finally:
        ssh_hosts.reconnect(victim)
    service.resize_cluster("c", 0)  # removal stops what still ran on the host once it is back
    wait_until(lambda: not pid_alive(pid), 30, what="the cut-off job's process gone after removal")
    assert not (home / "ssh-nodes" / HostSpec.parse(victim.spec).node_id).exists()


def test_removing_nodes_leaves_no_process_or_folder_behind(ssh_hosts: Any, home: Path, tmp_path: Path) -> None:
    service = ssh_service(ssh_hosts, home, count=2)
    ready_cluster(service, 2)
    pid_file = tmp_path / "pid"
    service.create_job("c", "running", load_job_spec({"properties": custom_job(f"sleep 300 & echo $! > {pid_file}; wait")}, environ={}))
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, 0.2, what="job started"))
    view = service.resize_cluster("c", 0)
    assert view.current_node_count == 0
    assert service.show_job("running").execution_state == "queued"  # requeue is the default deallocation
    wait_until(lambda: not pid_alive(pid), 15, what="job process gone")
    assert not any((home / "ssh-nodes").iterdir())
    states = [n.state.value for n in service.pool_nodes()]
    assert "free" in states and "running" not in states


def test_pool_commands_go_through_the_kept_open_agent_channel(ssh_hosts: Any, home: Path) -> None:
    pool = SSHNodePool([HostSpec.parse(ssh_hosts.hosts[0].entry)], auth_for(ssh_hosts), root=str(home / "ssh-nodes"), python=sys.executable)
    ssh = pool.transport(HostSpec.parse(ssh_hosts.hosts[0].spec).node_id)
    assert ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert ssh._server is not None and not ssh._server.closed  # one channel serves every command
    assert ssh.run(["cat"], stdin=b"\x00binary\xff").stdout == b"\x00binary\xff"
    started = time.perf_counter()
    for _ in range(20):
        ssh.run(["true"])
    assert (time.perf_counter() - started) / 20 < 0.05, "a command on the kept-open channel takes milliseconds, not a login"
    with pytest.raises(BatchAIError, match="did not finish in 1 s"):
        ssh.run(["sleep", "3"], timeout_s=1)
    ssh._server.close()  # a dropped channel is replaced transparently
    assert ssh.run(["echo", "again"]).stdout == b"again\n"
    pool.close()


def test_job_commands_do_not_see_the_ssh_session(ssh_hosts: Any, home: Path) -> None:
    """bash would source ~/.bashrc for every task if it believed sshd started it."""
    service = ssh_service(ssh_hosts, home, count=1)
    ready_cluster(service, 1)
    service.create_job(
        "c",
        "env",
        load_job_spec({"properties": custom_job('echo "client=${SSH_CLIENT:-none} connection=${SSH_CONNECTION:-none}"')}, environ={}),
    )
    assert service.wait_job("env", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    assert service.read_output_file("env", "stdout.txt") == b"client=none connection=none\n"


def test_a_passphrase_protected_key_from_the_connection_logs_in(ssh_hosts: Any, tmp_path: Path) -> None:
    """The key text comes from the connection (not a file); its passphrase unlocks it; neither is echoed."""
    encrypted = tmp_path / "encrypted"
    shutil.copy(ssh_hosts.client_key, encrypted)
    os.chmod(encrypted, 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "open-sesame-42", "-f", str(encrypted)], check=True, capture_output=True)
    key_text = encrypted.read_text()
    ssh = transport(ssh_hosts, key_file=None, private_key=key_text, passphrase="open-sesame-42")
    assert ssh.run(["echo", "in"]).stdout == b"in\n"
    with pytest.raises(BatchAIError) as refused:
        transport(ssh_hosts, key_file=None, private_key=key_text, passphrase=None).run(["true"])
    assert refused.value.code == "InvalidSSHKey" and "open-sesame-42" not in str(refused.value) and "PRIVATE KEY" not in str(refused.value)


def test_a_key_pasted_into_a_single_line_field_still_logs_in(ssh_hosts: Any) -> None:
    """The connection form's one-line input turned the key's newlines into spaces."""
    flattened = ssh_hosts.client_key.read_text().replace("\n", " ")
    assert transport(ssh_hosts, key_file=None, private_key=flattened).run(["echo", "in"]).stdout == b"in\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB user@host", "this is a public key"),
        ("my-key", "it is not PEM text"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA", "'-----END ...-----' line is missing"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- AAAA -----END OPENSSH PRIVATE KEY-----", "damaged"),
    ],
)
def test_a_key_that_cannot_be_read_is_refused_saying_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BatchAIError) as refused:
        SSHAuth("root", private_key=text).pkey()
    assert refused.value.code == "InvalidSSHKey" and says in refused.value.message and "AAAA" not in refused.value.message


def test_a_legacy_encrypted_pem_keeps_its_headers_when_flattened(tmp_path: Path) -> None:
    key = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "pw-4821", "-f", str(key)], check=True)
    loaded = SSHAuth("root", private_key=key.read_text().replace("\n", " "), passphrase="pw-4821").pkey()
    assert loaded is not None and loaded.get_name() == "ssh-rsa"


def test_multi_node_jobs_bind_gloo_and_nccl_to_the_interface_of_the_first_node(ssh_hosts: Any, home: Path) -> None:
    """Without it torch resolves the hostname to 127.0.0.1 and ranks on other hosts never meet."""
    service = ssh_service(ssh_hosts, home, count=2)
    ready_cluster(service, 2)
    command = 'echo "gloo=$GLOO_SOCKET_IFNAME nccl=$NCCL_SOCKET_IFNAME master=$AZ_BATCHAI_JOB_MASTER_NODE_IP"'
    service.create_job("c", "ifname", load_job_spec({"properties": custom_job(command, nodes=2)}, environ={}))
    assert service.wait_job("ifname", timeout_s=60, poll_s=0.2).execution_state == "succeeded"
    interface = "eth0" if ssh_hosts.mode == "netns" else "lo"
    expected = f"gloo={interface} nccl={interface} master={ssh_hosts.hosts[0].address}\n"
    assert service.read_output_file("ifname", "stdout.txt") == expected.encode()


def keyed_service(ssh_hosts: Any, home: Path, count: int = 2) -> Service:
    """An SSH pool whose hosts keep authorized_keys where the test sshd reads it."""
    hosts = [HostSpec.parse(h.entry) for h in ssh_hosts.hosts]
    pool = SSHNodePool(hosts[:count], auth_for(ssh_hosts), root=str(home / "ssh-nodes"), python=sys.executable, connect_timeout_s=2)
    return Service.embedded(home, settings=Settings(launch_timeout_s=30), pool=pool)


def test_mpirun_reaches_the_other_node_with_the_clusters_key_and_removal_takes_it_back(ssh_hosts: Any, home: Path) -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("OpenMPI's mpirun is missing: scripts/test.sh installs openmpi-bin")
    if ssh_hosts.mode != "netns":
        pytest.skip(f"needs two hosts with their own addresses ({ssh_hosts.mode})")
    authorized = [Path(h.authorized_keys) for h in ssh_hosts.hosts[:2]]
    stale = "ssh-ed25519 AAAASTALE batchai-cluster-00000000-dead-dead-dead-000000000000-node-gone\n"  # a cluster deleted long ago
    for path in authorized:
        path.write_text(path.read_text() + stale)
    # the user's own lines stay; every cluster line this store does not know (ours, other tests') goes at setup
    own = ["".join(line for line in path.read_text().splitlines(True) if "batchai-cluster-" not in line) for path in authorized]
    service = keyed_service(ssh_hosts, home)
    ready_cluster(service, 2, "mpi")
    cluster_uuid = read_cluster(service.store, "default", "mpi")[0].uuid
    for path, original in zip(authorized, own, strict=True):
        text = path.read_text()
        assert text.startswith(original) and text.count(f"batchai-cluster-{cluster_uuid}-node-") == 1
        assert "AAAASTALE" not in text  # the setup took the dead cluster's login out
    body = {
        "nodeCount": 2,
        "customMpiSettings": {"commandLine": "sh -c 'echo rank=$OMPI_COMM_WORLD_RANK netns=$(ip netns identify $$)'", "processCount": 2},
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
        "mountVolumes": {"azureFileShares": [{"azureFileUrl": "https://local.file.core.windows.net/logs", "relativeMountPath": "logs"}]},
    }
    service.create_job("mpi", "hello", load_job_spec({"properties": body}, environ={}))
    done = service.wait_job("hello", timeout_s=90, poll_s=0.3)
    stdout = (service.read_output_file("hello", "stdout.txt") or b"").decode()
    assert done.execution_state == "succeeded", (done.execution_info, stdout, service.read_output_file("hello", "stderr.txt"))
    assert sorted(stdout.splitlines()) == sorted(f"rank={r} netns={h.namespace}" for r, h in enumerate(ssh_hosts.hosts[:2]))
    secrets_on_disk = "".join(p.read_text(errors="replace") for p in (home / "control").rglob("*") if p.is_file())
    assert "PRIVATE KEY" not in secrets_on_disk  # the private half lives in the vault and on the nodes only
    service.resize_cluster("mpi", 0)
    assert [path.read_text() for path in authorized] == own
    assert not any((home / "ssh-nodes").iterdir())


def test_a_labelled_host_serves_only_clusters_of_its_vm_size(ssh_hosts: Any, home: Path) -> None:
    labelled = HostSpec.parse({**ssh_hosts.hosts[0].entry, "labels": ["STANDARD_NC24"]})
    plain = HostSpec.parse(ssh_hosts.hosts[1].entry)
    pool = SSHNodePool([labelled, plain], auth_for(ssh_hosts), root=str(home / "ssh-nodes"), python=sys.executable, cluster_ssh=False)
    service = Service.embedded(home, settings=Settings(launch_timeout_s=30), pool=pool)
    big = {"vmSize": "standard_nc24", "scaleSettings": {"manual": {"targetNodeCount": 1}}}
    small = {"vmSize": "STANDARD_NC6", "scaleSettings": {"manual": {"targetNodeCount": 1}}}
    service.create_cluster("small", load_cluster_spec(small, environ={}))
    service.create_cluster("big", load_cluster_spec(big, environ={}))
    members = {n.node_id: n.cluster for n in service.pool_nodes()}
    assert members == {labelled.node_id: "default/big", plain.node_id: "default/small"}
    with pytest.raises(BatchAIError, match="vmSize 'STANDARD_ND40'") as raised:
        only_labelled = SSHNodePool([labelled], auth_for(ssh_hosts), root=str(home / "other"), python=sys.executable)
        Service.embedded(home / "other", pool=only_labelled).create_cluster(
            "nd", load_cluster_spec({"vmSize": "STANDARD_ND40", "scaleSettings": {"manual": {"targetNodeCount": 1}}}, environ={})
        )
    assert raised.value.target == "vmSize"
    for name in ("small", "big"):
        service.delete_cluster(name)


def test_ddp_across_namespaces_reads_its_script_from_blob_and_writes_logs_there(ssh_hosts: Any, home: Path) -> None:
    """The production shape: SSH nodes that share no disk, Azure Storage (Azurite on our bridge) in between."""
    pytest.importorskip("torch")
    if ssh_hosts.mode != "netns":
        pytest.skip(f"needs network namespaces ({ssh_hosts.mode})")
    from tests import azurite as emulator
    from tests import sshhosts
    from tests.provider.test_distributed import DDP_JOB

    server = emulator.start(host=f"{sshhosts.SUBNET}.1")  # the bridge: reachable from the namespaces, nowhere else
    try:
        config = ProviderConfig(
            hosts=[h.entry for h in ssh_hosts.hosts[:2]],
            ssh_key_file=str(ssh_hosts.client_key),
            known_hosts=str(ssh_hosts.known_hosts),
            node_root=str(home / "ssh-nodes"),
            node_python=sys.executable,  # the namespaces share this disk: the venv has torch
            storage_connection_string=server.connection_string,
            control_container="ssh-control",
            files_on_blob=True,
        )
        service = service_from_config(config)  # exactly what the Airflow connection builds
        upload_batch(
            service.data,
            source=str(REPO / "dags" / "assets" / "pytorch"),
            account="devstoreaccount1",
            container="scripts",
            destination_path="pytorch",
        )
        ready_cluster(service, 2, "gpu")
        body = {
            **DDP_JOB,
            "pyTorchSettings": {**DDP_JOB["pyTorchSettings"], "commandLineArgs": "--epochs 1 --output-dir $AZ_BATCHAI_OUTPUT_MODEL"},
        }
        service.create_job("gpu", "ddp", load_job_spec({"properties": body}, storage_account_name="devstoreaccount1", environ={}))
        done = service.wait_job("ddp", timeout_s=240, poll_s=0.5)
        logs = {
            n: (service.read_output_file("ddp", n) or b"").decode()
            for n in ("stdout-0.txt", "stdout-1.txt", "stderr-0.txt", "stderr-1.txt")
        }
        assert done.execution_state == "succeeded", (done.execution_info, logs)
        for rank in (0, 1):
            assert f"rank {rank}/2 joined via tcp:// with gloo" in logs[f"stdout-{rank}.txt"]
        models = service.list_output_files("ddp", output_directory_id="MODEL")
        assert models and all((m.download_url or "").startswith(server.endpoint) for m in models if m.is_file)
        assert not (home / "storage").exists()
    finally:
        emulator.stop(server)


def test_a_jobs_links_are_not_followed_over_sftp(ssh_hosts: Any, tmp_path: Path) -> None:
    """What a job made on an SSH node is read through the node's own realpath: no link is followed out."""
    ssh = transport(ssh_hosts)
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    (job / "out" / "model.txt").write_text("mine")
    (tmp_path / "secret.txt").write_text("not the job's")
    (job / "out" / "stolen.txt").symlink_to(tmp_path / "secret.txt")
    (job / "out" / "etc").symlink_to("/etc")
    (job / "out" / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(job / "out" / "pipe")
    assert [i.name for i in ssh.list_inside(str(job), "out") or []] == ["model.txt"]
    assert ssh.read_inside(str(job), "out/model.txt") == b"mine"
    for refused in ("out/stolen.txt", "out/etc/passwd", "out/dangling", "../secret.txt", "out/pipe"):
        assert ssh.read_inside(str(job), refused) is None, refused
    assert ssh.list_inside(str(job), "out/etc") is None
