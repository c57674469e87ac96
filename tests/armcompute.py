"""A stand-in for Azure Resource Manager's compute API: one virtual machine scale set (Uniform or Flexible
orchestration) or a few named VMs, for tests and benchmarks.

ARM cannot run here, so this HTTPS server answers the requests ``azure-mgmt-compute`` makes, with the
status codes, headers and error bodies ARM sends: the scale set (GET, PATCH of its capacity), its
instances (list with instance views, start, deallocate, delete, run-command), their network interfaces,
and long-running operations (``Azure-AsyncOperation`` and ``Location`` headers, ``Retry-After``, an
operation status that goes InProgress → Succeeded or Failed with ARM's error). Entra ID has no local
stand-in either: clients send a static bearer token, which is checked only for being there, or one from
the stand-in's managed identity endpoint (App Service's protocol: ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER``, which azure-identity's ManagedIdentityCredential and DefaultAzureCredential read),
so a process of Airflow's reaches ARM through the credential chain it would use on an Azure VM; the
requests each kind of token authorised are counted.

Modes (``--mode``), as Azure has them: ``Uniform`` (instances ``0``, ``1``... under the scale set, batch
start/deallocate/delete on it), ``Flexible`` (instances are plain VMs named ``<scale set>_<hex>``, listed
with a ``virtualMachineScaleSet/id`` filter and started one by one; the capacity still grows them) and
``VMs`` (no scale set: the VMs named by ``--vms``, made by hand, deallocated at the start).

Every instance is a real host: a network namespace with its own sshd (tests/sshhosts.py). Booting
(``--boot-s``) ends with its sshd started and its link up; deallocating takes it off the network and
stops sshd, as a deallocated VM answers nothing; its disk (the sshd host key) is kept, and made anew
when the instance is deleted and another created in its place. Run-command runs its script in the
instance's namespace, where /etc/ssh holds the host's public key, as on an Azure Linux VM.

What a test asks for, on demand (``/_standin/...``): allocation and quota failures, 429 storms with
Retry-After, and counts of the requests ARM got. Run on its own (benchmarks, external checks):

    python -m tests.armcompute --port PORT --state DIR [--boot-s B] [--instances N] [--mode Flexible|VMs --vms a,b]

prints ``ready <url> <ca file> <identity endpoint> <identity header file>`` once it listens, and removes its
hosts on SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests import sshhosts

TOKEN_HEADER = "authorization"
LOCATION = "eastus"
CORES_PER_VM = 6  # NC6s_v3
DEFAULT_SUBNET = f"10.213.{40 + (int(sshhosts._WORKER[2:]) if sshhosts._WORKER[2:].isdigit() else 0)}"  # apart from sshhosts' 7-12
PROVIDER = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute"
SCALE_SET = PROVIDER + r"/virtualMachineScaleSets/(?P<vmss>[^/]+)"
VM = PROVIDER + r"/virtualMachines(?:/(?P<name>[^/]+)(?P<tail>/.*)?)?"
NIC = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Network/networkInterfaces/(?P<nic>[^/]+)"
MODES = ("Uniform", "Flexible", "VMs")
OPERATION = r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)"


@dataclass
class Instance:
    instance_id: str  # Uniform: "0", "1"...; Flexible and VMs: the VM's name
    slot: int  # which prepared host plays it
    order: int = 0  # when it was made: a scale set removes its newest first
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    provisioning: str = "Creating"  # Creating, Updating, Succeeded, Failed, Deleting
    power: str = "starting"  # starting, running, stopping, stopped, deallocating, deallocated
    error: dict[str, str] | None = None  # why provisioning failed (ARM's code and message)
    changed: float = field(default_factory=time.time)
    allocated_at: float | None = None  # Azure bills a VM from its start until it is deallocated
    billed_s: float = 0.0  # allocated time before allocated_at

    def allocate(self) -> None:
        if self.allocated_at is None:
            self.allocated_at = time.time()

    def free(self) -> None:
        if self.allocated_at is not None:
            self.billed_s += time.time() - self.allocated_at
            self.allocated_at = None

    def billed(self) -> float:
        return self.billed_s + (time.time() - self.allocated_at if self.allocated_at is not None else 0.0)


@dataclass
class Operation:
    op_id: str
    status: str = "InProgress"
    error: dict[str, str] | None = None
    result: Any = None  # the final body (run-command's output)
    started: str = field(default_factory=lambda: _now())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _kind_of(path: str) -> str:
    """A request's path with its ids taken out, for counting requests by kind."""
    path = path.split("/providers/")[-1]
    path = re.sub(r"/(virtualMachines|networkInterfaces)/[^/]+", r"/\1/{id}", path)
    return re.sub(r"/operations/[0-9a-f-]+", "/operations/{id}", path)


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ScaleSetWorld:
    """The scale set, its instances and the hosts that play them; every change under one lock."""

    def __init__(
        self,
        folder: Path,
        name: str,
        vm_size: str,
        slots: int,
        boot_s: float,
        priority: str,
        retry_after_s: int,
        tag: str,
        subnet: str,
        mode: str = "Uniform",
        vm_names: tuple[str, ...] = (),
    ) -> None:
        self.folder, self.name, self.vm_size, self.boot_s = folder, name, vm_size, boot_s
        self.mode = mode
        self.priority, self.retry_after_s = priority, retry_after_s
        self.lock = threading.RLock()
        self.instances: dict[str, Instance] = {}
        self.operations: dict[str, Operation] = {}
        self.next_id = 0
        self.failures: list[dict[str, Any]] = []  # armed by tests: the next start or scale-out fails so
        self.throttled = 0  # the next requests answered 429
        self.throttle_retry_after = 1
        self.requests: dict[str, int] = {}
        self.deleted_billed_s = 0.0  # what deleted instances were billed
        self.issued: set[str] = set()  # tokens the identity endpoint handed out
        self.authorised = {"identity": 0, "other": 0}  # ARM requests, by where their token came from
        shutil.rmtree(folder / "hosts", ignore_errors=True)  # an earlier run's hosts: every start is a new world
        self.hosts = sshhosts.start(folder / "hosts", slots, tag, subnet=subnet)
        try:
            for index in range(len(self.hosts.hosts)):
                self._power_off(index)
                self._publish_host_key(index)
            for index, vm_name in enumerate(vm_names[: len(self.hosts.hosts)] if mode == "VMs" else ()):
                made = Instance(vm_name, index, order=index, provisioning="Succeeded", power="deallocated")
                self.instances[vm_name] = made  # made by hand, deallocated, before the provider came
        except BaseException:
            sshhosts.teardown(self.hosts)
            raise

    # -- the hosts behind the instances ------------------------------------------------------
    def host(self, slot: int) -> sshhosts.Host:
        return self.hosts.hosts[slot]

    def _power_on(self, slot: int) -> None:
        host = self.host(slot)
        if host.veth:
            sshhosts.run(["ip", "link", "set", host.veth, "up"])
        config = self.folder / "hosts" / host.name / "sshd_config"
        prefix = ["ip", "netns", "exec", host.namespace] if host.namespace else []
        log = open(self.folder / "hosts" / host.name / "sshd.log", "ab")  # noqa: SIM115 - sshd writes there until stopped
        host.process = subprocess.Popen(
            [*prefix, sshhosts.SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True
        )
        sshhosts._wait_for_port(host.address, host.port)

    def _power_off(self, slot: int) -> None:
        """A stopped VM runs nothing: sshd and every process started in the instance (its jobs) end."""
        host = self.host(slot)
        if host.process is not None and host.process.poll() is None:
            os.killpg(host.process.pid, signal.SIGTERM)
            host.process.wait(timeout=10)
        host.process = None
        if host.namespace:
            for pid in sshhosts.run(["ip", "netns", "pids", host.namespace], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        if host.veth:
            sshhosts.run(["ip", "link", "set", host.veth, "down"])

    def _publish_host_key(self, slot: int) -> None:
        """What run-command's script finds in /etc/ssh (ip netns exec mounts /etc/netns/<ns>/ssh there)."""
        host = self.host(slot)
        if host.namespace:
            etc = Path("/etc/netns") / host.namespace / "ssh"
            etc.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.folder / "hosts" / host.name / "host_key.pub", etc / "ssh_host_ed25519_key.pub")

    def _new_host_key(self, slot: int) -> None:
        """The key the host's sshd shows from its next start (not yet what run-command reads)."""
        host_folder = self.folder / "hosts" / self.host(slot).name
        for name in ("host_key", "host_key.pub"):
            (host_folder / name).unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_folder / "host_key")], check=True)
        self.host(slot).host_key_pub = (host_folder / "host_key.pub").read_text().split()[1]

    def _new_disk(self, slot: int) -> None:
        """A new instance in a deleted one's place: a fresh OS disk, so a new host key."""
        self._new_host_key(slot)
        self._publish_host_key(slot)

    # -- what ARM does -------------------------------------------------------------------------
    def capacity(self) -> int:
        return sum(1 for i in self.instances.values() if i.provisioning != "Deleting")

    def scale_to(self, capacity: int) -> Operation:
        with self.lock:
            current = self.capacity()
            if capacity > len(self.hosts.hosts):
                limit = len(self.hosts.hosts) * CORES_PER_VM
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    "Operation could not be completed as it results in exceeding approved standardNCSv3Family Cores quota. "
                    f"Additional details - Deployment Model: Resource Manager, Location: {LOCATION}, Current Limit: {limit}, "
                    f"Current Usage: {current * CORES_PER_VM}, Additional Required: {(capacity - current) * CORES_PER_VM}, "
                    f"(Minimum) New Limit Required: {capacity * CORES_PER_VM}.",
                )
            operation = self._operation()
            failure = self._armed("scale")
            if capacity <= current:
                victims = sorted(self.instances.values(), key=lambda i: i.order, reverse=True)[: current - capacity]
                for instance in victims:
                    self._delete(instance, operation)
                if not victims:
                    operation.status = "Succeeded"
                return operation
            used = {i.slot for i in self.instances.values()}
            created = []
            for slot in [s for s in range(len(self.hosts.hosts)) if s not in used][: capacity - current]:
                name = str(self.next_id) if self.mode == "Uniform" else f"{self.name}_{uuid.uuid4().hex[:8]}"
                instance = Instance(name, slot, order=self.next_id)
                self.next_id += 1
                self.instances[instance.instance_id] = instance
                self._new_disk(slot)
                created.append(instance)
            self._boot(created, operation, failure)
            return operation

    def start(self, ids: list[str] | None) -> Operation:
        with self.lock:
            chosen = [self._instance(i) for i in ids] if ids else list(self.instances.values())
            operation = self._operation()
            failure = self._armed("start")
            self._boot([i for i in chosen if i.power in ("deallocated", "stopped")], operation, failure)
            return operation

    def deallocate(self, ids: list[str] | None) -> Operation:
        with self.lock:
            chosen = [self._instance(i) for i in ids] if ids else list(self.instances.values())
            operation = self._operation()
            for instance in chosen:
                instance.power, instance.changed = "deallocating", time.time()
            self._later(0.3, self._deallocated, chosen, operation)
            return operation

    def delete(self, ids: list[str]) -> Operation:
        with self.lock:
            operation = self._operation()
            for instance_id in ids:
                self._delete(self._instance(instance_id), operation)
            return operation

    def evict(self, instance_id: str) -> None:
        """A Spot eviction (policy Deallocate): the VM stops without warning and is deallocated."""
        with self.lock:
            instance = self._instance(instance_id)
            self._power_off(instance.slot)
            instance.power, instance.changed = "deallocated", time.time()
            instance.free()

    def run_command(self, instance_id: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            instance = self._instance(instance_id)
            if instance.power != "running":
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation 'RunCommand' is not allowed on VM '{self.vm_name(instance)}' since the VM is not running.",
                )
            if body.get("commandId") != "RunShellScript":
                raise ArmError(400, "InvalidParameter", f"The value of parameter commandId is invalid: {body.get('commandId')!r}.")
            script = "\n".join(body.get("script") or [])
            host = self.host(instance.slot)
            operation = self._operation()

        def run() -> None:
            done = subprocess.run(
                ["ip", "netns", "exec", str(host.namespace), "sh", "-c", script], capture_output=True, text=True, timeout=60
            )
            message = f"Enable succeeded: \n[stdout]\n{done.stdout}\n[stderr]\n{done.stderr}"
            status = {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "message": message}
            with self.lock:
                operation.result, operation.status = {"value": [status]}, "Succeeded"

        self._later(0.5, run)  # Azure's take tens of seconds; what matters here is that it is not at once
        return operation

    # -- helpers ---------------------------------------------------------------------------------
    def _instance(self, instance_id: str) -> Instance:
        instance = self.instances.get(str(instance_id)) or next(
            (i for i in self.instances.values() if i.instance_id.lower() == str(instance_id).lower()), None
        )  # ARM's names are case-insensitive
        if instance is None and self.mode == "Uniform":
            raise ArmError(404, "NotFound", f"The entity was not found in this Azure location: instance {instance_id} of {self.name}.")
        if instance is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource 'Microsoft.Compute/virtualMachines/{instance_id}' was not found.")
        return instance

    def vm_name(self, instance: Instance) -> str:
        return f"{self.name}_{instance.instance_id}" if self.mode == "Uniform" else instance.instance_id

    def _operation(self) -> Operation:
        operation = Operation(str(uuid.uuid4()))
        self.operations[operation.op_id] = operation
        return operation

    def _armed(self, op: str) -> dict[str, Any] | None:
        for failure in self.failures:
            if failure["op"] == op and failure["times"] > 0:
                failure["times"] -= 1
                return failure
        return None

    def _later(self, delay_s: float, function: Any, *args: Any) -> None:
        timer = threading.Timer(delay_s, function, args)
        timer.daemon = True
        timer.start()

    def _boot(self, instances: list[Instance], operation: Operation, failure: dict[str, Any] | None) -> None:
        for instance in instances:
            instance.power, instance.provisioning, instance.error, instance.changed = "starting", "Updating", None, time.time()
            instance.allocate()
        if not instances:
            operation.status = "Succeeded"
            return
        if failure is not None:
            self._later(0.3, self._failed, instances, operation, failure)
        else:
            self._later(self.boot_s, self._booted, instances, operation)

    def _booted(self, instances: list[Instance], operation: Operation) -> None:
        for instance in instances:
            self._power_on(instance.slot)
        self._settle(instances, operation, "running")

    def _failed(self, instances: list[Instance], operation: Operation, failure: dict[str, Any]) -> None:
        self._settle(instances, operation, "deallocated", {"code": failure["code"], "message": failure["message"]})

    def _deallocated(self, instances: list[Instance], operation: Operation) -> None:
        for instance in instances:
            self._power_off(instance.slot)
        self._settle(instances, operation, "deallocated")

    def _settle(self, instances: list[Instance], operation: Operation, power: str, error: dict[str, str] | None = None) -> None:
        """The operation's end: its instances in their new power state, provisioning succeeded (or failed with ``error``)."""
        with self.lock:
            for instance in instances:
                instance.power, instance.error, instance.changed = power, error, time.time()
                if power == "deallocated":
                    instance.free()
                instance.provisioning = "Failed" if error else "Succeeded"
            operation.status, operation.error = ("Failed" if error else "Succeeded"), error

    def _delete(self, instance: Instance, operation: Operation) -> None:
        instance.provisioning, instance.changed = "Deleting", time.time()

        def gone() -> None:
            self._power_off(instance.slot)
            with self.lock:
                instance.free()
                self.deleted_billed_s += instance.billed_s
                self.instances.pop(instance.instance_id, None)
                if not any(i.provisioning == "Deleting" for i in self.instances.values()):
                    operation.status = "Succeeded"

        self._later(0.3, gone)

    # -- ARM's JSON ----------------------------------------------------------------------------
    def scale_set_json(self, base: str) -> dict[str, Any]:
        busy = any(i.provisioning in ("Creating", "Updating", "Deleting") for i in self.instances.values())
        profile: dict[str, Any] = {"priority": self.priority, "osProfile": {"computerNamePrefix": self.name, "adminUsername": "root"}}
        if self.priority == "Spot":
            profile["evictionPolicy"] = "Deallocate"
        return {
            "name": self.name,
            "id": base,
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "location": LOCATION,
            "sku": {"name": self.vm_size, "tier": "Standard", "capacity": self.capacity()},
            "properties": {
                "orchestrationMode": self.mode,
                "provisioningState": "Updating" if busy else "Succeeded",
                "upgradePolicy": {"mode": "Manual"},
                "virtualMachineProfile": profile,
                "uniqueId": "5c4d0f0e-0000-4000-8000-000000000001",
            },
        }

    def instance_view(self, instance: Instance) -> dict[str, Any]:
        provisioning = {"code": f"ProvisioningState/{instance.provisioning.lower()}", "level": "Info"}
        if instance.error:
            provisioning = {
                "code": f"ProvisioningState/failed/{instance.error['code']}",
                "level": "Error",
                "displayStatus": "Provisioning failed",
                "message": instance.error["message"],
            }
        displays = {"running": "VM running", "deallocated": "VM deallocated", "starting": "VM starting", "deallocating": "VM deallocating"}
        power = {"code": f"PowerState/{instance.power}", "level": "Info", "displayStatus": displays.get(instance.power, instance.power)}
        return {"platformUpdateDomain": 0, "statuses": [provisioning, power]}

    def instance_json(self, base: str, instance: Instance, expand: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "latestModelApplied": True,
            "vmId": instance.vm_id,
            "provisioningState": instance.provisioning,
            "osProfile": {"computerName": f"{self.name}{int(instance.instance_id):06x}", "adminUsername": "root"},
            "hardwareProfile": {"vmSize": self.vm_size},
        }
        if expand:
            properties["instanceView"] = self.instance_view(instance)
        return {
            "name": f"{self.name}_{instance.instance_id}",
            "id": f"{base}/virtualMachines/{instance.instance_id}",
            "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            "location": LOCATION,
            "instanceId": instance.instance_id,
            "sku": {"name": self.vm_size, "tier": "Standard"},
            "properties": properties,
        }

    def vm_json(self, provider: str, instance: Instance, expand: bool) -> dict[str, Any]:
        """A VM of a Flexible scale set, or a named one (Microsoft.Compute/virtualMachines)."""
        subscription_group = provider.split("/providers/")[0]
        nic = f"{subscription_group}/providers/Microsoft.Network/networkInterfaces/{instance.instance_id}-nic"
        properties: dict[str, Any] = {
            "vmId": instance.vm_id,
            "provisioningState": instance.provisioning,
            "hardwareProfile": {"vmSize": self.vm_size},
            "osProfile": {"computerName": instance.instance_id[:15], "adminUsername": "root"},
            "networkProfile": {"networkInterfaces": [{"id": nic, "properties": {"primary": True}}]},
            "priority": self.priority,
        }
        if self.priority == "Spot":
            properties["evictionPolicy"] = "Deallocate"
        if self.mode == "Flexible":
            properties["virtualMachineScaleSet"] = {"id": f"{provider}/virtualMachineScaleSets/{self.name}"}
        if expand:
            properties["instanceView"] = self.instance_view(instance)
        return {
            "name": instance.instance_id,
            "id": f"{provider}/virtualMachines/{instance.instance_id}",
            "type": "Microsoft.Compute/virtualMachines",
            "location": LOCATION,
            "properties": properties,
        }

    def nic_json(self, base: str, instance: Instance) -> dict[str, Any]:
        address = self.host(instance.slot).address
        nic = (
            f"{base}/virtualMachines/{instance.instance_id}/networkInterfaces/{self.name}-nic"
            if self.mode == "Uniform"
            else f"{base}/providers/Microsoft.Network/networkInterfaces/{instance.instance_id}-nic"
        )
        ipconfig = {"name": "ipconfig1", "id": f"{nic}/ipConfigurations/ipconfig1"}
        ipconfig["properties"] = {"privateIPAddress": address, "privateIPAllocationMethod": "Dynamic", "primary": True}  # type: ignore[assignment]
        return {"name": f"{self.name}-nic", "id": nic, "properties": {"primary": True, "ipConfigurations": [ipconfig]}}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "instances": {
                    i.instance_id: {"power": i.power, "provisioning": i.provisioning, "slot": i.slot, "billed_s": round(i.billed(), 3)}
                    for i in self.instances.values()
                },
                "requests": dict(self.requests),
                "authorised": dict(self.authorised),
                "addresses": [h.address for h in self.hosts.hosts],
                "host_keys": {h.address: h.host_key_pub for h in self.hosts.hosts},
            }

    def close(self) -> None:
        for slot in range(len(self.hosts.hosts)):
            self._power_off(slot)
        sshhosts.teardown(self.hosts)


class Handler(BaseHTTPRequestHandler):
    world: ScaleSetWorld
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(
                400,
                {"error": {"code": "InvalidRequestContent", "message": "The request content was invalid and could not be deserialized."}},
            )
            return
        if url.path.startswith("/_standin/"):
            self._send(200, self._control(url.path, body))
            return
        world = self.world
        try:
            with world.lock:
                if world.throttled > 0:
                    world.throttled -= 1
                    raise ArmError(
                        429,
                        "TooManyRequests",
                        "The request is being throttled as the limit has been reached for operation group 'Get30Min'.",
                        {
                            "Retry-After": str(world.throttle_retry_after),
                            "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/Get30Min;0",
                        },
                    )
            token = self.headers.get(TOKEN_HEADER) or ""
            if not token.startswith("Bearer "):
                raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
            with world.lock:
                world.authorised["identity" if token[7:] in world.issued else "other"] += 1
            query = parse_qs(url.query)
            if "api-version" not in query:
                raise ArmError(
                    400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."
                )
            status, payload, headers = self._route(method, url.path, query, body)
        except ArmError as error:
            status, payload, headers = error.status, {"error": {"code": error.code, "message": error.message}}, error.headers
        with world.lock:
            label = f"{method} {_kind_of(url.path)}"
            world.requests[label] = world.requests.get(label, 0) + 1
        self._send(status, payload, headers)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        world = self.world
        host = f"https://{self.headers.get('Host')}"
        if match := re.fullmatch(OPERATION, path, re.IGNORECASE):
            operation = world.operations.get(match["op"])
            if operation is None:
                raise ArmError(404, "NotFound", "The operation was not found.")
            if "monitor" in query:  # the Location header: 202 until done, then the operation's result
                if operation.status == "InProgress":
                    return 202, None, {"Retry-After": str(world.retry_after_s), "Location": host + path + "?" + self._query()}
                return (200, operation.result, {}) if operation.result is not None else (200, None, {})
            status: dict[str, Any] = {"name": operation.op_id, "status": operation.status, "startTime": operation.started}
            if operation.error:
                status["error"] = operation.error
            if operation.result is not None:
                status["properties"] = {"output": operation.result}
            return 200, status, {}
        if match := re.fullmatch(NIC, path, re.IGNORECASE):
            with world.lock:
                instance = next((i for i in world.instances.values() if f"{i.instance_id}-nic".lower() == match["nic"].lower()), None)
                if instance is None or world.mode == "Uniform":
                    raise ArmError(
                        404, "ResourceNotFound", f"The Resource 'Microsoft.Network/networkInterfaces/{match['nic']}' was not found."
                    )
                return 200, world.nic_json(path.split("/providers/")[0], instance), {}
        if match := re.fullmatch(VM, path, re.IGNORECASE):
            with world.lock:
                return self._vm_route(method, path[: path.lower().index("/virtualmachines")], match, query, body)
        match = re.fullmatch(SCALE_SET + r"(?P<rest>/.*)?", path, re.IGNORECASE)
        if match is None or match["vmss"].lower() != world.name.lower() or world.mode == "VMs":
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{match['vmss'] if match else '?'}' was not found.",
            )
        base = path[: match.end("vmss")]
        rest = match["rest"] or ""
        with world.lock:
            if rest == "" and method == "GET":
                return 200, world.scale_set_json(base), {}
            if rest == "" and method in ("PATCH", "PUT"):
                capacity = (body.get("sku") or {}).get("capacity")
                if not isinstance(capacity, int) or capacity < 0:
                    raise ArmError(400, "InvalidParameter", "The value of parameter sku.capacity is invalid.")
                operation = world.scale_to(capacity)
                return 200, world.scale_set_json(base), self._async(operation, match["sub"])
            if method == "POST" and rest.lower() in ("/start", "/deallocate", "/delete"):
                ids = [str(i) for i in (body.get("instanceIds") or [])]
                if rest.lower() == "/delete" and not ids:
                    raise ArmError(400, "InvalidParameter", "The value of parameter instanceIds is invalid.")
                action = {"/start": world.start, "/deallocate": world.deallocate, "/delete": world.delete}[rest.lower()]
                operation = action(ids or None)
                return 202, None, self._async(operation, match["sub"])
            if rest.lower().startswith("/virtualmachines") and world.mode == "Flexible":
                raise ArmError(
                    400,
                    "OperationNotAllowed",
                    "This operation is not supported for a Virtual Machine Scale Set with orchestration mode 'Flexible': "
                    "use the virtual machine APIs on its VMs.",
                )
            if rest == "/virtualMachines" and method == "GET":
                expand = "instanceView" in (query.get("$expand") or [""])[0]
                ordered = sorted(world.instances.values(), key=lambda i: int(i.instance_id))
                return 200, {"value": [world.instance_json(base, i, expand) for i in ordered]}, {}
            vm = re.fullmatch(r"/virtualMachines/(?P<id>\d+)(?P<tail>/.*)?", rest, re.IGNORECASE)
            if vm is not None:
                instance = world._instance(vm["id"])
                tail = (vm["tail"] or "").lower()
                if tail == "" and method == "GET":
                    return 200, world.instance_json(base, instance, "instanceView" in str(query.get("$expand"))), {}
                if tail == "/instanceview" and method == "GET":
                    return 200, world.instance_view(instance), {}
                if tail == "/networkinterfaces" and method == "GET":
                    return 200, {"value": [world.nic_json(base, instance)]}, {}
                if tail == "/runcommand" and method == "POST":
                    return 202, None, self._async(world.run_command(vm["id"], body), match["sub"])
        raise ArmError(404, "NotFound", f"No route for {method} {path} in the stand-in.")

    def _vm_route(
        self, method: str, provider: str, match: re.Match[str], query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """Microsoft.Compute/virtualMachines: a Flexible scale set's VMs, or the named ones."""
        world = self.world
        expand = "instanceView" in (query.get("$expand") or [""])[0]
        if match["name"] is None and method == "GET":
            wanted = (query.get("$filter") or [""])[0]
            if expand and not wanted:
                raise ArmError(400, "InvalidParameter", "The value 'instanceView' of parameter '$expand' is allowed only with a '$filter'.")
            scale_set = re.fullmatch(r"'virtualMachineScaleSet/id' eq '(?P<id>[^']+)'", wanted.strip()) if wanted else None
            if wanted and scale_set is None:
                raise ArmError(400, "InvalidParameter", f"The value of parameter '$filter' is invalid: {wanted!r}.")
            chosen = sorted(world.instances.values(), key=lambda i: i.order) if world.mode != "Uniform" else []
            if scale_set is not None:
                own = f"{provider}/virtualMachineScaleSets/{world.name}".lower()
                chosen = [i for i in chosen if world.mode == "Flexible" and scale_set["id"].lower() == own]
            return 200, {"value": [world.vm_json(provider, i, expand) for i in chosen]}, {}
        if world.mode == "Uniform" or match["name"] is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource 'Microsoft.Compute/virtualMachines/{match['name']}' was not found.")
        instance = world._instance(match["name"])
        tail = (match["tail"] or "").lower()
        subscription = match["sub"]
        if tail == "" and method == "GET":
            return 200, world.vm_json(provider, instance, expand), {}
        if tail == "/instanceview" and method == "GET":
            return 200, world.instance_view(instance), {}
        if tail in ("/start", "/deallocate") and method == "POST":
            action = world.start if tail == "/start" else world.deallocate
            return 202, None, self._async(action([instance.instance_id]), subscription)
        if tail == "" and method == "DELETE":
            return 202, None, self._async(world.delete([instance.instance_id]), subscription)
        if tail == "/runcommand" and method == "POST":
            return 202, None, self._async(world.run_command(instance.instance_id, body), subscription)
        raise ArmError(404, "NotFound", f"No route for {method} {match.group(0)} in the stand-in.")

    def _async(self, operation: Operation, subscription: str) -> dict[str, str]:
        host = f"https://{self.headers.get('Host')}"
        status = f"{host}/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{LOCATION}/operations/{operation.op_id}"
        version = self._query()
        return {
            "Azure-AsyncOperation": f"{status}?{version}",
            "Location": f"{status}?monitor=true&{version}",
            "Retry-After": str(self.world.retry_after_s),
        }

    def _query(self) -> str:
        versions = parse_qs(urlsplit(self.path).query).get("api-version") or ["2024-07-01"]
        return f"api-version={versions[0]}"

    def _control(self, path: str, body: dict[str, Any]) -> Any:
        world = self.world
        with world.lock:
            if path == "/_standin/state":
                return world.snapshot()
            if path == "/_standin/fail":  # {"op": "start"|"scale", "code", "message", "times"}
                world.failures.append({"times": 1, **body})
                return {"armed": len(world.failures)}
            if path == "/_standin/throttle":  # {"count", "retry_after"}
                world.throttled, world.throttle_retry_after = int(body.get("count", 1)), int(body.get("retry_after", 1))
                return {"throttled": world.throttled}
        if path == "/_standin/new_host_key":  # what a man in the middle would show: a key ARM never saw
            slot = world._instance(str(body["instance"])).slot
            world._power_off(slot)
            world._new_host_key(slot)
            world._power_on(slot)
            return {"swapped": body["instance"]}
        if path == "/_standin/evict":
            world.evict(str(body["instance"]))
            return {"evicted": body["instance"]}
        return {"error": f"unknown control {path}"}

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-ratelimit-remaining-subscription-reads", "11999")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class IdentityEndpoint(BaseHTTPRequestHandler):
    """A managed identity's token endpoint as App Service serves it (plain HTTP on loopback, a secret header)."""

    world: ScaleSetWorld
    secret: str

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if self.headers.get("X-IDENTITY-HEADER") != self.secret:
            self._send(401, {"error": {"code": "Unauthorized", "message": "X-IDENTITY-HEADER is missing or wrong"}})
            return
        resource = (query.get("resource") or [""])[0]
        if not resource or query.get("api-version") != ["2019-08-01"]:
            self._send(400, {"statusCode": 400, "message": "resource and api-version=2019-08-01 are required"})
            return
        token = f"mi-{uuid.uuid4().hex}"
        with self.world.lock:
            self.world.issued.add(token)
        expires = int(time.time()) + 3600
        self._send(200, {"access_token": token, "expires_on": str(expires), "resource": resource, "token_type": "Bearer"})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: ARM is HTTPS only, and Azure's SDK sends a bearer token over nothing else."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arm stand-in")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "ca.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.armcompute", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True, help="folder for the hosts, the certificate and the logs")
    parser.add_argument("--boot-s", type=float, default=1.0, help="how long an instance takes to start")
    parser.add_argument("--instances", type=int, default=3, help="hosts that can play instances (the quota beyond is refused)")
    parser.add_argument("--scale-set", default="gpu-vmss")
    parser.add_argument("--vm-size", default="Standard_NC6s_v3")
    parser.add_argument("--priority", choices=["Regular", "Spot"], default="Regular")
    parser.add_argument("--mode", choices=MODES, default="Uniform", help="the scale set's orchestration, or VMs: named VMs only")
    parser.add_argument("--vms", default="gpu-vm-a,gpu-vm-b,gpu-vm-c", help="with --mode VMs: the VMs' names, comma-separated")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of long-running operations, seconds")
    parser.add_argument("--tag", default=f"arm{os.getpid() % 1000}", help="names the network namespaces and bridge (a few characters)")
    parser.add_argument("--subnet", default=DEFAULT_SUBNET, help="the instances' /24, apart from every other test host's")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    world = ScaleSetWorld(
        args.state,
        args.scale_set,
        args.vm_size,
        args.instances,
        args.boot_s,
        args.priority,
        args.retry_after,
        args.tag,
        args.subnet,
        args.mode,
        tuple(args.vms.split(",")),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cert, key = make_certificate(args.state)
        server = ThreadingHTTPServer(("127.0.0.1", args.port), type("StandIn", (Handler,), {"world": world}))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        secret = uuid.uuid4().hex
        header_file = args.state / "identity_header"
        header_file.write_text(secret)
        header_file.chmod(0o600)
        identity = ThreadingHTTPServer(("127.0.0.1", 0), type("Identity", (IdentityEndpoint,), {"world": world, "secret": secret}))
        identity.daemon_threads = True
        threading.Thread(target=identity.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{identity.server_address[1]}/msi/token"
        print(f"ready https://127.0.0.1:{args.port} {cert} {endpoint} {header_file}", flush=True)
        stop.wait()
        server.shutdown()
        identity.shutdown()
    finally:
        world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


@dataclass
class StandIn:
    """A running stand-in (``start``): its URL and CA file, what tests ask of it, and its stop by PID."""

    process: subprocess.Popen[str]
    url: str
    ca: str
    folder: Path
    identity_endpoint: str = ""
    identity_header_file: str = ""

    def identity_env(self) -> dict[str, str]:
        """What makes azure-identity's managed identity credential ask this stand-in (as on App Service)."""
        return {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": Path(self.identity_header_file).read_text()}

    def control(self, name: str, body: dict[str, Any] | None = None) -> Any:
        import urllib.request

        request = urllib.request.Request(f"{self.url}/_standin/{name}", json.dumps(body or {}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=self.ca)) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        return self.control("state")  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


_STARTED = iter(range(1_000_000))


def start(folder: Path, *options: str, timeout_s: float = 60.0) -> StandIn:
    """The stand-in in a process of its own, on a free loopback port; returns once it said ``ready``."""
    import select

    folder.mkdir(parents=True, exist_ok=True)
    port = sshhosts._free_port()
    tag = f"az{sshhosts._WORKER[2:] or '0'}{next(_STARTED) % 100}"
    command = [sys.executable, "-m", "tests.armcompute", "--port", str(port), "--state", str(folder), "--tag", tag, *options]
    log = open(folder / "standin.log", "w")  # noqa: SIM115 - its stderr, until it stops
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline() if process.stdout else ""
            if line.startswith("ready "):
                _, url, ca, identity, header = line.split()
                return StandIn(process, url, ca, folder, identity, header)
        if process.poll() is not None:
            break
    process.kill()
    process.wait(timeout=10)
    raise RuntimeError(f"the ARM stand-in did not start:\n{(folder / 'standin.log').read_text()[-3000:]}")
