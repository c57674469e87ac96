"""The Azure VMs a pool starts and deallocates, as ARM calls them: a scale set of Uniform orchestration
(its instances ``0``, ``1``... started and deallocated in one call on the scale set), of Flexible
orchestration (its instances are plain VMs, listed with a scale set filter and driven one by one), or a
list of VMs made by hand (driven by name; there is no capacity to raise).

The pool (``azurevms``) decides what to start and when; a fleet only says it in ARM's words, so the
three differ here and nowhere else. Every call counts against ARM's rationed reads and writes, so a
fleet lists its instances, instance views included, in as few requests as ARM allows: one for a scale
set, one per VM for named VMs (ARM lists instance views only under a scale set filter).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BatchAIError, ErrorCode
from ..transport.ssh import HostSpec
from .arm import ArmClient, AzureVMSettings, arm_error

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")  # a node id names folders: checked even when ARM gave it


@dataclass
class Instance:
    """One instance (or VM) as the last listing showed it."""

    instance_id: str  # a Uniform scale set's "0", "1"...; a VM's name otherwise
    vm_id: str  # Azure's id of the VM's disk-and-identity: kept across deallocation, new when re-created
    power: str  # running, starting, stopping, stopped, deallocating, deallocated
    provisioning: str  # succeeded, creating, updating, deleting, failed
    error: dict[str, str] | None = None  # why provisioning failed, as ARM said
    size: str | None = None  # its vmSize, when the listing says it per instance
    priority: str | None = None  # Regular or Spot, when the listing says it per instance
    nics: tuple[str, ...] = field(default=())  # its network interfaces' resource ids, primary first (VMs only)


@dataclass(frozen=True)
class Facts:
    """What a fleet is, read once: its VM size (None where each VM has its own), region and priority."""

    size: str | None
    location: str | None
    priority: str  # Regular or Spot (Azure's "Low" counts as Spot)
    mode: str  # Uniform, Flexible or VMs
    sizes: frozenset[str] = frozenset()  # every VM size there is (named VMs may differ)
    vms_of_size: tuple[tuple[str, int], ...] = ()  # named VMs: how many there are of each size (lower case)


class Fleet(Protocol):
    what: str  # names it in messages: "scale set x (resource group y)"
    grows: bool  # its capacity can be raised (a scale set): beyond its stopped instances, new ones

    def describe(self) -> Facts: ...

    def node_id(self, instance_id: str) -> str: ...

    def instance_of(self, node_id: str) -> str | None: ...

    def listing(self) -> list[Instance]: ...

    def start(self, ids: list[str]) -> None: ...

    def deallocate(self, ids: list[str]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def set_capacity(self, capacity: int) -> None: ...

    def address(self, instance: Instance) -> str:
        """The instance's private address, from its primary network interface."""

    def run_command(self, instance_id: str, script: list[str]) -> Any:
        """Run-command (RunShellScript) on the instance: a poller, whose result is ARM's output."""


def fleet_for(settings: AzureVMSettings, arm: ArmClient) -> Fleet:
    if settings.vms:
        return NamedVMs(settings, arm)
    return ScaleSet(settings, arm)


class VirtualMachines:
    """What Flexible scale sets and named VMs share: each VM driven by name through the VM API."""

    def __init__(self, settings: AzureVMSettings, arm: ArmClient) -> None:
        self.settings = settings
        self.arm = arm
        self.group = settings.resource_group

    def node_id(self, instance_id: str) -> str:
        return instance_id

    def instance_of(self, node_id: str) -> str | None:
        return node_id if NODE_ID.match(node_id) else None

    def start(self, ids: list[str]) -> None:
        for name in ids:
            self.arm.compute.virtual_machines.begin_start(self.group, name, polling=False)

    def deallocate(self, ids: list[str]) -> None:
        for name in ids:
            self.arm.compute.virtual_machines.begin_deallocate(self.group, name, polling=False)

    def delete(self, ids: list[str]) -> None:
        for name in ids:
            self.arm.compute.virtual_machines.begin_delete(self.group, name, polling=False)

    def run_command(self, instance_id: str, script: list[str]) -> Any:
        from azure.mgmt.compute.models import RunCommandInput

        command = RunCommandInput(command_id="RunShellScript", script=script)
        return self.arm.compute.virtual_machines.begin_run_command(self.group, instance_id, command)

    def address(self, instance: Instance) -> str:
        for nic in instance.nics:
            found = nic_address(self.arm.get(nic))
            if found:
                return found
        raise BatchAIError(ErrorCode.INVALID_POOL, f"VM {instance.instance_id} has no private IP address", instance.instance_id)


class ScaleSet(VirtualMachines):
    """A scale set, Uniform or Flexible: which one is read from ARM, not asked of the user."""

    grows = True

    def __init__(self, settings: AzureVMSettings, arm: ArmClient) -> None:
        super().__init__(settings, arm)
        assert settings.scale_set
        self.name = settings.scale_set
        self.what = f"scale set {self.name} (resource group {self.group})"
        self.mode = ""  # set by describe

    def describe(self) -> Facts:
        try:
            found = self.arm.compute.virtual_machine_scale_sets.get(self.group, self.name)
        except Exception as error:
            raise arm_error(error, self.what) from None
        properties = found.properties
        self.mode = _text(getattr(properties, "orchestration_mode", None)) or "Uniform"
        if self.mode.lower() not in ("uniform", "flexible"):
            raise BatchAIError(ErrorCode.INVALID_POOL, f"{self.what} has {self.mode} orchestration: not one we know", "azure_vms.scale_set")
        self.mode = self.mode.capitalize()
        profile = getattr(properties, "virtual_machine_profile", None) if properties else None
        priority = _text(getattr(profile, "priority", None)) or "Regular"
        size = found.sku.name if found.sku else None
        return Facts(size, found.location, priority, self.mode, frozenset({size} if size else ()))

    @property
    def uniform(self) -> bool:
        if not self.mode:
            self.describe()
        return self.mode == "Uniform"

    def node_id(self, instance_id: str) -> str:
        return f"{self.name}-{instance_id}" if self.uniform else instance_id

    def instance_of(self, node_id: str) -> str | None:
        if not self.uniform:
            return node_id if node_id.lower().startswith(self.name.lower() + "_") and NODE_ID.match(node_id) else None
        prefix = f"{self.name}-"
        rest = node_id[len(prefix) :] if node_id.startswith(prefix) else ""
        return rest if rest.isdigit() else None

    def listing(self) -> list[Instance]:
        if self.uniform:
            instances = self.arm.compute.virtual_machine_scale_set_vms.list(self.group, self.name, expand="instanceView")
            return [instance_of(vm, str(vm.instance_id)) for vm in instances]
        scale_set_id = f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.group}"
        scale_set_id += f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        wanted = f"'virtualMachineScaleSet/id' eq '{scale_set_id}'"
        listed = self.arm.compute.virtual_machines.list(self.group, filter=wanted, expand="instanceView")
        return [instance_of(vm, str(vm.name)) for vm in listed]

    def start(self, ids: list[str]) -> None:
        if not self.uniform:
            return super().start(ids)
        self.arm.compute.virtual_machine_scale_sets.begin_start(self.group, self.name, instance_ids(ids), polling=False)

    def deallocate(self, ids: list[str]) -> None:
        if not self.uniform:
            return super().deallocate(ids)
        self.arm.compute.virtual_machine_scale_sets.begin_deallocate(self.group, self.name, instance_ids(ids), polling=False)

    def delete(self, ids: list[str]) -> None:
        if not self.uniform:
            return super().delete(ids)
        operations = self.arm.compute.virtual_machine_scale_sets
        operations.begin_delete_instances(self.group, self.name, instance_ids(ids, required=True), polling=False)

    def set_capacity(self, capacity: int) -> None:
        from azure.mgmt.compute.models import Sku, VirtualMachineScaleSetUpdate

        update = VirtualMachineScaleSetUpdate(sku=Sku(capacity=capacity))
        self.arm.compute.virtual_machine_scale_sets.begin_update(self.group, self.name, update, polling=False)

    def run_command(self, instance_id: str, script: list[str]) -> Any:
        if not self.uniform:
            return super().run_command(instance_id, script)
        from azure.mgmt.compute.models import RunCommandInput

        command = RunCommandInput(command_id="RunShellScript", script=script)
        return self.arm.compute.virtual_machine_scale_set_vms.begin_run_command(self.group, self.name, instance_id, command)

    def address(self, instance: Instance) -> str:
        if not self.uniform:
            return super().address(instance)
        path = f"/subscriptions/{self.settings.subscription_id}/resourceGroups/{self.group}/providers/Microsoft.Compute"
        path += f"/virtualMachineScaleSets/{self.name}/virtualMachines/{instance.instance_id}/networkInterfaces"
        nics = self.arm.get(path).get("value") or []
        for nic in sorted(nics, key=lambda n: not (n.get("properties") or {}).get("primary")):
            found = nic_address(nic)
            if found:
                return found
        raise BatchAIError(
            ErrorCode.INVALID_POOL,
            f"{self.what}: instance {instance.instance_id} has no private IP address",
            self.node_id(instance.instance_id),
        )


class NamedVMs(VirtualMachines):
    """VMs made by hand, named in the connection: started and deallocated by name, never created or deleted."""

    grows = False

    def __init__(self, settings: AzureVMSettings, arm: ArmClient) -> None:
        super().__init__(settings, arm)
        self.names = list(settings.vms or [])
        self._location: str | None = None
        self.what = f"VMs {', '.join(self.names)} (resource group {self.group})"

    def describe(self) -> Facts:
        """One GET per VM: each must be there; sizes may differ (a cluster takes those of its vmSize)."""
        listed = self.listing()
        sizes = {i.size for i in listed}
        priorities = {i.priority or "Regular" for i in listed}
        if len(priorities) > 1:
            spot = [i.instance_id for i in listed if is_spot(i.priority)]
            raise BatchAIError(
                ErrorCode.INVALID_POOL,
                f"{self.what}: some are Spot ({', '.join(spot)}) and some are not: one pool is one priority",
                "azure_vms.vms",
            )
        known = frozenset(size for size in sizes if size)
        counts = Counter((i.size or "").lower() for i in listed)
        return Facts(next(iter(known)) if len(known) == 1 else None, self._location, priorities.pop(), "VMs", known, tuple(counts.items()))

    def instance_of(self, node_id: str) -> str | None:
        return next((name for name in self.names if name.lower() == node_id.lower()), None)

    def listing(self) -> list[Instance]:
        found = []
        for name in self.names:
            try:
                vm = self.arm.compute.virtual_machines.get(self.group, name, expand="instanceView")
            except Exception as error:
                raise arm_error(error, f"VM {name} (resource group {self.group})") from None
            self._location = vm.location
            found.append(instance_of(vm, name))
        return found

    def set_capacity(self, capacity: int) -> None:
        raise BatchAIError(ErrorCode.INVALID_POOL, f"{self.what}: named VMs have no capacity to raise", "azure_vms.vms")


def instance_of(vm: Any, instance_id: str) -> Instance:
    """ARM's VM (a scale set's, or a plain one; instance view expanded) as what the pool needs of it."""
    properties = vm.properties
    statuses = list(getattr(getattr(properties, "instance_view", None), "statuses", None) or [])
    power, provisioning, error = "unknown", str(getattr(properties, "provisioning_state", "") or "").lower(), None
    for status in statuses:
        code = str(status.code or "")
        if code.startswith("PowerState/"):
            power = code.split("/", 1)[1].lower()
        elif code.startswith("ProvisioningState/"):
            parts = code.split("/")
            provisioning = parts[1].lower()
            if provisioning == "failed":
                error = {
                    "code": parts[2] if len(parts) > 2 else "ProvisioningFailed",
                    "message": str(status.message or status.display_status or ""),
                }
    hardware = getattr(properties, "hardware_profile", None)
    network = getattr(properties, "network_profile", None)
    nics = sorted(
        getattr(network, "network_interfaces", None) or [], key=lambda n: not getattr(getattr(n, "properties", None), "primary", False)
    )
    return Instance(
        instance_id,
        str(getattr(properties, "vm_id", "") or instance_id),
        power,
        provisioning,
        error,
        size=_text(getattr(hardware, "vm_size", None)) or None,
        priority=_text(getattr(properties, "priority", None)) or None,
        nics=tuple(str(n.id) for n in nics if n.id),
    )


def nic_address(nic: dict[str, Any]) -> str | None:
    """A network interface's private address (ARM's JSON), checked as an address before anything dials it."""
    for config in (nic.get("properties") or {}).get("ipConfigurations") or []:
        address = (config.get("properties") or {}).get("privateIPAddress")
        if address:
            HostSpec.parse(str(address), "privateIPAddress")
            return str(address)
    return None


def instance_ids(ids: list[str], required: bool = False) -> Any:
    """The body of a scale set's start, deallocate and delete (which needs its ids: required)."""
    from azure.mgmt.compute.models import VirtualMachineScaleSetVMInstanceIDs, VirtualMachineScaleSetVMInstanceRequiredIDs

    return (
        VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=ids) if required else VirtualMachineScaleSetVMInstanceIDs(instance_ids=ids)
    )


def _text(value: Any) -> str:
    """An SDK enum or ARM's text, as text."""
    return str(getattr(value, "value", value) or "")


def is_spot(priority: str | None) -> bool:
    """Azure's Spot (its older name: Low), which Batch AI called lowpriority."""
    return (priority or "").lower() in ("spot", "low")
