"""A VM scale set's instances as a node pool, against the ARM stand-in (tests/armcompute.py) through the real
azure-mgmt-compute SDK. Entra ID has no local stand-in: the SDK gets a static bearer token. Each instance is
a real sshd in a network namespace, so everything after "the VM is up" is the path a real node takes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from airflow_batchai.config import connection_config
from airflow_batchai.errors import BatchAIError
from airflow_batchai.pools import azurevms
from airflow_batchai.pools.arm import AzureVMSettings
from airflow_batchai.pools.azurevms import AzureVMPool
from airflow_batchai.service import Service, Settings
from airflow_batchai.spec import load_cluster_spec, load_job_spec
from airflow_batchai.transport.ssh import SSHAuth
from tests import armcompute
from tests.conftest import custom_job, kill_agents_under, wait_until

SIZE = "STANDARD_NC6S_V3"  # Batch AI's spelling of the stand-in's Standard_NC6s_v3


class StaticToken:
    """What Entra ID would hand out; the stand-in only checks that a bearer token is there."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("static-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("static-test-token", int(time.time()) + 3600)


@pytest.fixture
def arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[armcompute.StandIn]:
    monkeypatch.setattr(azurevms, "CHANGING_POLL_S", 1.0)  # Azure's VMs take minutes to boot; these take one second
    monkeypatch.setattr(azurevms, "BACKOFF_FIRST_S", 2.0)
    stand_in = armcompute.start(tmp_path / "arm", "--boot-s", "1", "--instances", "3")
    try:
        yield stand_in
    finally:
        stand_in.stop()


def pool_of(arm: armcompute.StandIn, tmp_path: Path, **changes: Any) -> AzureVMPool:
    fields = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "scale_set": "gpu-vmss", "max_nodes": 3}
    settings = AzureVMSettings(**{**fields, "arm_endpoint": arm.url, "arm_ca_bundle": arm.ca, "boot_timeout_s": 60, **changes})
    auth = SSHAuth(user="root", key_file=str(arm.folder / "hosts" / "client_key"), allow_agent=False)
    keys = str(tmp_path / "cluster_authorized_keys")  # the instances are this machine: never the real ~/.ssh/authorized_keys
    return AzureVMPool(settings, auth, root=str(tmp_path / "nodes"), python=sys.executable, credential=StaticToken(), authorized_keys=keys)


def elastic_service(arm: armcompute.StandIn, tmp_path: Path, **changes: Any) -> Service:
    pool = pool_of(arm, tmp_path, **changes)
    return Service.embedded(tmp_path / "home", pool=pool, settings=Settings(heartbeat_timeout_s=30, launch_timeout_s=30))


def autoscale(service: Service, maximum: int = 2) -> None:
    scale = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": maximum, "initialNodeCount": 0, "idleSecondsBeforeScaledown": 1}}
    service.create_cluster("gpu", load_cluster_spec({"vmSize": SIZE, "scaleSettings": scale}, environ={}))


def powers(arm: armcompute.StandIn) -> dict[str, str]:
    return {iid: instance["power"] for iid, instance in arm.state()["instances"].items()}


def test_a_gang_job_starts_instances_from_zero_and_the_idle_ones_are_deallocated_then_started_again(
    arm: armcompute.StandIn, tmp_path: Path
) -> None:
    service = elastic_service(arm, tmp_path)
    try:
        autoscale(service)
        assert service.show_cluster("gpu").current_node_count == 0 and powers(arm) == {}
        job = load_job_spec({"properties": custom_job("hostname -I; echo rank $AZ_BATCHAI_TASK_INDEX", nodes=2)}, environ={})
        service.create_job("gpu", "pair", job, "e")
        done = service.wait_job("pair", "e", timeout_s=90, poll_s=0.2)
        assert done.execution_state == "succeeded", (done.execution_info, service.read_output_file("pair", "stderr.txt", "e"))
        wait_until(lambda: service.show_cluster("gpu").current_node_count == 0, 60, 0.3, what="the idle nodes to leave")
        wait_until(lambda: set(powers(arm).values()) == {"deallocated"}, 30, 0.3, what="both instances deallocated")
        assert sorted(powers(arm)) == ["0", "1"], "deallocated, not deleted: their disks wait for the next job"
        usage = service.show_cluster("gpu").usage["sinceCreation"]  # type: ignore[index]
        billed = sum(i["billed_s"] for i in arm.state()["instances"].values())  # what Azure would bill: start to deallocated
        assert billed - 8 <= usage["nodeSeconds"] <= billed + 1, (usage, billed)  # not counted: a free VM's seconds before its claim
        assert usage["byState"]["starting"]["nodeSeconds"] >= 2 * 0.9, "each VM's boot is the cluster's"
        assert usage["estimatedCost"]["amount"] == pytest.approx(usage["nodeSeconds"] * 3.06 / 3600, abs=1e-3)  # Azure's list price
        counts = arm.state()["requests"]
        assert counts.get("POST Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/virtualMachines/{id}/runCommand") == 2  # a host key each

        service.create_job("gpu", "again", job, "e")
        again = service.wait_job("again", "e", timeout_s=90, poll_s=0.2)
        assert again.execution_state == "succeeded", again.execution_info
        counts = arm.state()["requests"]
        assert counts.get("POST Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/start", 0) >= 1, "the deallocated ones started again"
        assert counts.get("PATCH Microsoft.Compute/virtualMachineScaleSets/gpu-vmss") == 1, "no new instance for the second job"
        assert counts["POST Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/virtualMachines/{id}/runCommand"] == 2, (
            "a kept disk keeps its key"
        )

        at_zero = lambda: service.show_cluster("gpu").current_node_count == 0 and set(powers(arm).values()) == {"deallocated"}  # noqa: E731
        wait_until(at_zero, 60, 0.3, what="deallocated again")  # reading the cluster is what moves it here (no controller)
        before = service.pool.arm.total  # type: ignore[attr-defined]
        for _ in range(10):  # a steady cluster at zero: passes go on, ARM hears (next to) nothing
            service.reconcile_cluster("default", "gpu")
            time.sleep(0.2)
        assert service.pool.arm.total - before <= 1  # type: ignore[attr-defined]
    finally:
        kill_agents_under(tmp_path / "nodes")


def test_an_allocation_failure_is_the_clusters_error_until_capacity_comes(arm: armcompute.StandIn, tmp_path: Path) -> None:
    arm.control(
        "fail",
        {
            "op": "scale",
            "code": "AllocationFailed",
            "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
        },
    )
    service = elastic_service(arm, tmp_path)
    try:
        autoscale(service, maximum=1)
        service.create_job("gpu", "one", load_job_spec({"properties": custom_job("echo ok")}, environ={}), "e")
        failed = wait_until(lambda: (c := service.show_cluster("gpu")).errors and c, 30, 0.3, what="the allocation failure said")
        [error] = failed.errors or []
        assert error.code == "AllocationFailed" and "Standard_NC6s_v3 in eastus" in error.message and "sufficient capacity" in error.message
        done = service.wait_job("one", "e", timeout_s=90, poll_s=0.2)  # asked again after the backoff: this time it comes
        assert done.execution_state == "succeeded", done.execution_info
        assert service.show_cluster("gpu").errors is None, "capacity came: the error is over"
    finally:
        kill_agents_under(tmp_path / "nodes")


def test_a_quota_too_small_is_named_and_nothing_is_asked_during_the_backoff(arm: armcompute.StandIn, tmp_path: Path) -> None:
    pool = pool_of(arm, tmp_path, max_nodes=5)  # the subscription's quota holds 3
    assert pool.grow(5, SIZE) == []
    [problem] = pool.problems()
    assert (
        problem["code"] == "QuotaExceeded"
        and "Current Limit: 18" in problem["message"]
        and "Standard_NC6s_v3 in eastus" in problem["message"]
    )
    asked = pool.arm.total
    assert pool.grow(5, SIZE) == [] and pool.arm.total == asked, "no request while it backs off"
    assert pool.grow(1, "STANDARD_ND96ASR_V4") == [] and pool.capacity("STANDARD_ND96ASR_V4") == 0
    assert "runs Standard_NC6s_v3, not vmSize 'STANDARD_ND96ASR_V4'" in (pool.vm_size_problem("STANDARD_ND96ASR_V4") or "")


def test_a_429_storm_is_waited_out_after_its_retry_after(arm: armcompute.StandIn, tmp_path: Path) -> None:
    pool = pool_of(arm, tmp_path)
    pool.describe()
    arm.control("throttle", {"count": 2, "retry_after": 1})
    started = time.monotonic()
    assert pool.inventory() == []
    assert time.monotonic() - started >= 2.0, "each 429 waited its Retry-After"
    assert arm.state()["requests"]["GET Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/virtualMachines"] == 3
    arm.control("throttle", {"count": 50, "retry_after": 1})  # longer than the call's retries: the listing fails, said once
    assert pool.grow(1, SIZE) == [] and pool.problems()[0]["code"] == "ArmThrottled"


def test_the_host_key_comes_through_arm_and_another_key_is_refused(arm: armcompute.StandIn, tmp_path: Path) -> None:
    pool = pool_of(arm, tmp_path)
    assert pool.grow(1, SIZE) == ["gpu-vmss-new0"]
    [(node_id, address, _, _)] = wait_until(lambda: pool.inventory(), 30, 0.3, what="the instance ready")
    assert pool.transport(node_id).run(["hostname", "-I"]).stdout.split() == [address.encode()]
    assert pool.peer_ssh(node_id).host_key.split()[1] == arm.state()["host_keys"][address]
    arm.control("new_host_key", {"instance": "0"})  # the host now shows a key ARM never reported
    pool.transport(node_id).close()
    with pytest.raises(BatchAIError, match=r"HostKeyMismatch: host key of 10\.213\.\d+\.11:22 is SHA256:\S+, not the pinned"):
        pool.transport(node_id).run(["true"])


def test_a_connection_names_its_scale_set_and_keeps_its_secret_masked() -> None:
    extras = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "scale_set": "gpu-vmss", "max_nodes": 2}
    config = connection_config({"azure_vms": {**extras, "tenant_id": "t", "client_id": "c", "client_secret": "sp-secret"}}, "connection c")
    assert config.secrets() == ["sp-secret"] and "scale set gpu-vmss" in config.describe()
    with pytest.raises(BatchAIError, match=r"field azure_vms\.arm_endpoint: .*https://"):
        connection_config({"azure_vms": {**extras, "arm_endpoint": "http://10.0.0.1"}}, "connection c")
    with pytest.raises(BatchAIError, match=r"field azure_vms: .*max_nodes: a scale set needs the most instances it may grow to"):
        connection_config({"azure_vms": {**extras, "max_nodes": 0}}, "connection c")
    named = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "vms": ["nc-a", "nc-b"]}
    assert connection_config({"azure_vms": named}, "connection c").azure_vms.max_nodes == 2  # type: ignore[union-attr]
    assert "of VMs nc-a, nc-b" in connection_config({"azure_vms": named}, "connection c").describe()
    for wrong, said in [
        ({**named, "scale_set": "gpu-vmss"}, "name either scale_set .* or vms"),
        ({**named, "scale_in": "delete"}, "named VMs are deallocated, never deleted"),
        ({**named, "vms": ["nc-a", "NC-A"]}, "a VM is named twice"),
        ({**named, "vms": ["../etc"]}, r"azure_vms\.vms\.0: String should match pattern"),
        ({**named, "vms": []}, r"azure_vms\.vms: List should have at least 1 item"),
    ]:
        with pytest.raises(BatchAIError, match=said):
            connection_config({"azure_vms": wrong}, "connection c")
    with pytest.raises(BatchAIError, match=r"azure_vms: a service principal needs tenant_id, client_id too"):
        from airflow_batchai.pools.arm import credential_for

        credential_for(AzureVMSettings(**extras, client_secret="sp-secret"))


def test_one_cluster_per_scale_set(arm: armcompute.StandIn, tmp_path: Path) -> None:
    service = elastic_service(arm, tmp_path)
    autoscale(service)
    with pytest.raises(BatchAIError, match="InvalidPool: the connection's pool of VMs serves one cluster, and cluster default/gpu uses it"):
        service.create_cluster(
            "other", load_cluster_spec({"vmSize": SIZE, "scaleSettings": {"manual": {"targetNodeCount": 0}}}, environ={})
        )


def test_a_spot_eviction_requeues_the_job_keeps_its_attempt_and_the_cluster_asks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azurevms, "CHANGING_POLL_S", 1.0)
    monkeypatch.setattr(azurevms, "IN_USE_POLL_S", 1.0)  # Azure's notice comes within a minute; here within a second
    spot = armcompute.start(tmp_path / "arm", "--boot-s", "1", "--instances", "2", "--priority", "Spot")
    try:
        service = elastic_service(spot, tmp_path)
        dedicated = {"vmSize": SIZE, "scaleSettings": {"manual": {"targetNodeCount": 0}}}
        with pytest.raises(BatchAIError, match=r"InvalidSpec: .* runs Spot instances, not vmPriority 'dedicated' \(at vmPriority\)"):
            service.create_cluster("gpu", load_cluster_spec(dedicated, environ={}))
        scale = {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 1, "idleSecondsBeforeScaledown": 1}}
        service.create_cluster("gpu", load_cluster_spec({"vmSize": SIZE, "vmPriority": "lowpriority", "scaleSettings": scale}, environ={}))
        gate = tmp_path / "second-attempt"
        body = custom_job(f"echo attempt >> {tmp_path}/attempts; while ! test -e {gate}; do sleep 0.2; done")
        service.create_job("gpu", "spot", load_job_spec({"properties": body}, environ={}), "e")
        running = lambda: service.refresh_job("spot", "e") and (tmp_path / "attempts").exists()  # noqa: E731 - reading moves it along
        wait_until(running, 60, 0.3, what="the first attempt running")
        spot.control("evict", {"instance": "0"})
        requeued = wait_until(lambda: (j := service.show_job("spot", "e")).execution_info.attempts and j, 60, 0.3, what="the requeue")
        [lost] = requeued.execution_info.attempts or []
        assert lost.errors[0].code == "NodeEvicted" and "evicted (Spot)" in lost.errors[0].message
        gate.touch()
        done = service.wait_job("spot", "e", timeout_s=120, poll_s=0.3)  # the cluster asked for a node again, and got one
        assert done.execution_state == "succeeded", done.execution_info
        assert (tmp_path / "attempts").read_text() == "attempt\nattempt\n"
    finally:
        spot.stop()
        kill_agents_under(tmp_path / "nodes")


def test_a_flexible_scale_set_grows_and_deallocates_its_vms_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azurevms, "CHANGING_POLL_S", 1.0)
    flexible = armcompute.start(tmp_path / "arm", "--boot-s", "1", "--instances", "2", "--mode", "Flexible")
    try:
        service = elastic_service(flexible, tmp_path, max_nodes=2)
        autoscale(service)
        job = load_job_spec({"properties": custom_job("echo rank $AZ_BATCHAI_TASK_INDEX", nodes=2)}, environ={})
        service.create_job("gpu", "pair", job, "e")
        done = service.wait_job("pair", "e", timeout_s=90, poll_s=0.2)
        assert done.execution_state == "succeeded", done.execution_info
        names = sorted(powers(flexible))
        assert len(names) == 2 and all(name.startswith("gpu-vmss_") for name in names), "a Flexible scale set's VMs have names"
        idle = lambda: service.show_cluster("gpu").current_node_count == 0 and set(powers(flexible).values()) == {"deallocated"}  # noqa: E731
        wait_until(idle, 60, 0.3, what="both VMs deallocated")  # reading the cluster is what moves it here (no controller)
        counts = flexible.state()["requests"]
        assert counts["PATCH Microsoft.Compute/virtualMachineScaleSets/gpu-vmss"] == 1, "the capacity made the VMs"
        assert counts["POST Microsoft.Compute/virtualMachines/{id}/runCommand"] == 2, "a host key each, through the VM API"
        assert counts["POST Microsoft.Compute/virtualMachines/{id}/deallocate"] == 2
        assert counts["GET Microsoft.Network/networkInterfaces/{id}"] == 2, "an address each, from the VM's own interface"
        assert not any("virtualMachineScaleSets/gpu-vmss/virtualMachines" in kind for kind in counts), "no Uniform-only call"
    finally:
        flexible.stop()
        kill_agents_under(tmp_path / "nodes")


def test_named_vms_are_started_by_name_and_deallocated_never_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azurevms, "CHANGING_POLL_S", 1.0)
    named = armcompute.start(tmp_path / "arm", "--boot-s", "1", "--instances", "2", "--mode", "VMs", "--vms", "nc-box-a,nc-box-b")
    try:
        settings = {"scale_set": None, "vms": ["nc-box-a", "nc-box-b"], "max_nodes": 0}
        service = elastic_service(named, tmp_path, **settings)
        assert service.pool.capacity(SIZE) == 2 and service.pool.vm_size_problem("STANDARD_ND40RS_V2") is not None
        autoscale(service)
        service.create_job("gpu", "one", load_job_spec({"properties": custom_job("hostname -I")}, environ={}), "e")
        done = service.wait_job("one", "e", timeout_s=90, poll_s=0.2)
        assert done.execution_state == "succeeded", done.execution_info
        assert powers(named)["nc-box-b"] == "deallocated", "one node was asked for: one VM started"
        idle = lambda: service.show_cluster("gpu").current_node_count == 0 and set(powers(named).values()) == {"deallocated"}  # noqa: E731
        wait_until(idle, 60, 0.3, what="the VM deallocated again")
        counts = named.state()["requests"]
        assert counts["POST Microsoft.Compute/virtualMachines/{id}/start"] == 1
        assert not any(kind.startswith(("PATCH", "DELETE")) or "virtualMachineScaleSets" in kind for kind in counts), counts
        assert service.pool.grow(5, SIZE) == ["nc-box-a", "nc-box-b"], "no more than there are"

        missing = pool_of(named, tmp_path, **{**settings, "vms": ["nc-box-a", "nc-box-gone"]})
        with pytest.raises(BatchAIError, match=r"VM nc-box-gone \(resource group gpu-rg\): ResourceNotFound"):
            missing.describe()
    finally:
        named.stop()
        kill_agents_under(tmp_path / "nodes")


def test_a_managed_identity_signs_in_through_azure_identity(
    arm: armcompute.StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No static token here: azure-identity's ManagedIdentityCredential asks the stand-in's identity endpoint (App
    Service's protocol, as on an Azure host), and ARM sees the token it handed out."""
    for name, value in arm.identity_env().items():
        monkeypatch.setenv(name, value)
    fields = {"subscription_id": "sub-1", "resource_group": "gpu-rg", "scale_set": "gpu-vmss", "max_nodes": 1}
    settings = AzureVMSettings(**fields, managed_identity_client_id="0000-mi", arm_endpoint=arm.url, arm_ca_bundle=arm.ca)
    auth = SSHAuth(user="root", key_file=str(arm.folder / "hosts" / "client_key"), allow_agent=False)
    pool = AzureVMPool(settings, auth, root=str(tmp_path / "nodes"), python=sys.executable, authorized_keys=str(tmp_path / "keys"))
    assert pool.capacity(SIZE) == 1 and pool.inventory() == []
    assert arm.state()["authorised"] == {"identity": 2, "other": 0}
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    refused = AzureVMPool(settings, auth, root=str(tmp_path / "nodes"), python=sys.executable, authorized_keys=str(tmp_path / "keys"))
    with pytest.raises(BatchAIError, match=r"ArmAccessDenied: scale set gpu-vmss .*: no token for Azure Resource Manager"):
        refused.describe()


def test_a_host_key_learned_by_one_process_is_known_to_the_others(arm: armcompute.StandIn, tmp_path: Path) -> None:
    """Every Airflow task process has a pool of its own: the second one finds the key in the control store, and
    asks ARM for no run-command (on Azure: tens of seconds, one at a time per VM)."""
    from airflow_batchai.control.local import LocalControlStore

    store = LocalControlStore(tmp_path / "control")
    first = pool_of(arm, tmp_path)
    first.remember_in(store)
    assert first.grow(1, SIZE) == ["gpu-vmss-new0"]
    [(node_id, address, _, _)] = wait_until(lambda: first.inventory(), 30, 0.3, what="the instance ready")
    run_commands = "POST Microsoft.Compute/virtualMachineScaleSets/gpu-vmss/virtualMachines/{id}/runCommand"
    assert arm.state()["requests"][run_commands] == 1

    second = pool_of(arm, tmp_path)  # another process: nothing learned yet but what the store keeps
    second.remember_in(store)
    assert [machine[:2] for machine in second.inventory()] == [(node_id, address)], "a node at its first look"
    assert second.transport(node_id).run(["hostname", "-I"]).stdout.split() == [address.encode()]
    assert arm.state()["requests"][run_commands] == 1, "no second run-command"

    alone = pool_of(arm, tmp_path)  # no store to share: it must ask ARM itself, and the node waits for the answer
    assert alone.inventory() == []
    wait_until(lambda: alone.inventory(), 30, 0.3, what="the key read through ARM again")
    assert arm.state()["requests"][run_commands] == 2
