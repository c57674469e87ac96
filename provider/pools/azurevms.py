"""Azure VMs as a node pool (a scale set's instances, or VMs named in the connection): started when jobs
queue, deallocated once idle, as Batch AI's clusters of Azure VMs were.

The scheduler asks (``grow``, ``release``); this pool turns the asks into ARM calls and reports what
ARM says back: instances on their way in or out (``changing``), those ready to be nodes
(``inventory``), and why capacity could not be had (``problems``: AllocationFailed, quota...), asked
again only after a backoff. Growing starts deallocated instances first (their disks keep what node
setup installed), then raises the scale set's capacity, up to ``max_nodes``. How each of those is said
to ARM (Uniform or Flexible scale set, named VMs) is the fleet's (``fleets``).

A started instance becomes an SSH node like any other: its address is its network interface's, and
its host key is read through ARM (run-command on the instance), never trusted on first contact.

ARM is read, not polled hard: one listing of the instances (instance views included) at most every
``CHANGING_POLL_S`` while something starts or leaves, else every ``STEADY_POLL_S`` (to notice
evictions and changes made by hand); an address and a host key are read once per start.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import BatchAIError, ErrorCode, RecordExists, StaleRecord
from ..layout import NodeLayout
from ..transport.clusterkeys import DEFAULT_AUTHORIZED_KEYS, PeerSSH
from ..transport.ssh import CONNECT_TIMEOUT_S, DEFAULT_ROOT, SFTP_TIMEOUT_S, HostSpec, SSHAuth, SSHTransport, fingerprint
from . import NodeChange
from .arm import ArmClient, AzureVMSettings, arm_error, our_code
from .fleets import Instance, fleet_for, is_spot

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from ..control import ControlStore

log = logging.getLogger(__name__)

CHANGING_POLL_S = 2.0
IN_USE_POLL_S = 60.0  # while instances are nodes: an eviction is seen within a minute (60 reads an hour)
STEADY_POLL_S = 300.0
BACKOFF_FIRST_S = 30.0
BACKOFF_MAX_S = 600.0
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")  # paramiko's preference: the key it will be shown
HOST_KEYS_KEPT = 2000  # a book's entries (one per VM disk ever seen), the oldest dropped beyond
HOST_KEY_SCRIPT = ["cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub 2>/dev/null"]


class HostKeyBook:
    """Host keys learned through ARM, shared by every process of the provider through the control store.

    Run-command takes tens of seconds on Azure and runs one at a time per VM, and every Airflow task
    process has a pool of its own: without the book each would ask again, and a node would not be a
    node in that process until it had. The store is the control plane's own (records, sealed secrets),
    as trusted as ARM's answer; a key is kept per VM id, which a re-created disk changes.
    """

    def __init__(self, store: ControlStore, fleet: str) -> None:
        self.store = store
        self.key = f"hostkeys/{hashlib.sha256(fleet.encode()).hexdigest()[:24]}"

    def read(self) -> dict[str, str]:
        found = self.store.read(self.key)
        keys = found.data.get("keys") if found else None
        return {str(vm): str(key) for vm, key in keys.items()} if isinstance(keys, dict) else {}

    def add(self, vm_id: str, host_key: str) -> None:
        for _ in range(5):  # other processes add theirs: compare and swap
            found = self.store.read(self.key)
            keys = dict(found.data.get("keys") or {}) if found else {}
            if keys.get(vm_id) == host_key:
                return
            keys[vm_id] = host_key
            data = {"keys": dict(list(keys.items())[-HOST_KEYS_KEPT:])}
            try:
                if found is None:
                    self.store.create(self.key, data)
                else:
                    self.store.replace(self.key, data, found.etag)
                return
            except (StaleRecord, RecordExists):
                continue


def order(instance_id: str) -> tuple[int, int, str]:
    """Instances in a stable order: a Uniform scale set's by number, VMs by name."""
    return (0, int(instance_id), "") if instance_id.isdigit() else (1, 0, instance_id)


class AzureVMPool:
    """The connection's Azure VMs (``azure_vms``: a scale set, or named VMs), each an SSH node once ready."""

    elastic = True
    cluster_ssh = True
    beside_control_plane = False

    def __init__(
        self,
        settings: AzureVMSettings,
        auth: SSHAuth,
        root: str = DEFAULT_ROOT,
        python: str = "python3",
        credential: TokenCredential | None = None,
        authorized_keys: str = DEFAULT_AUTHORIZED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.root = root
        self.python = python
        self.authorized_keys = authorized_keys
        self.arm = ArmClient(settings, credential)
        self.fleet = fleet_for(settings, self.arm)
        self.clock = clock
        self._lock = threading.RLock()
        self._what = self.fleet.what
        self._described = False
        self._sku: str | None = None
        self._all_sizes: set[str] = set()
        self._vms_of_size: dict[str, int] = {}
        self._location: str | None = None
        self._instances: dict[str, Instance] = {}
        self._listed_at = float("-inf")
        self._addresses: dict[str, str] = {}  # instance id -> private address, for this start of it
        self._host_keys: dict[str, str] = {}  # vm id -> "<type> <base64>": an OS disk keeps its key while deallocated
        self._key_reads: dict[str, tuple[str, Any]] = {}  # instance id -> (vm id, run-command poller)
        self._starting: dict[str, float] = {}  # instance id -> when it was asked to start
        self._leaving: set[str] = set()
        self._to_release: set[str] = set()  # asked to leave, ARM not told yet (it did not answer)
        self._expected: int | None = None  # the capacity asked for, until the listing shows it
        self._asked_at = float("-inf")
        self._problem: dict[str, str] | None = None
        self._retry_at = float("-inf")
        self._backoff = BACKOFF_FIRST_S
        self._transports: dict[str, tuple[tuple[str, str], SSHTransport]] = {}
        self._priority = "Regular"
        self._book: HostKeyBook | None = None
        self._boot_s: dict[str, float] = {}  # instance id -> how long its last start took (billed as the cluster's)
        self._book_read_at = float("-inf")
        self._shown: dict[str, str] = {}  # instance id -> address, of those the last inventory gave as nodes
        self._gone: dict[str, dict[str, str]] = {}  # instance id -> why: nodes whose VM stopped without being asked

    def remember_in(self, store: ControlStore) -> None:
        s = self.settings
        self._book = HostKeyBook(store, f"{s.subscription_id}/{s.resource_group}/{s.scale_set or ','.join(s.vms or [])}")

    # -- what the fleet is ------------------------------------------------------------------------
    def describe(self) -> None:
        """Its size, region and priority, read once (one GET; one per VM for named VMs)."""
        with self._lock:
            if self._described:
                return
            facts = self.fleet.describe()
            self._sku, self._location, self._priority = facts.size, facts.location, facts.priority
            self._all_sizes = set(facts.sizes)
            self._vms_of_size = dict(facts.vms_of_size)
            self._described = True

    def node_id(self, instance_id: str) -> str:
        return self.fleet.node_id(instance_id)

    def _instance_of(self, node_id: str) -> str | None:
        return self.fleet.instance_of(node_id)

    def _sizes(self) -> set[str]:
        """The VM sizes there are: the scale set's, or each named VM's."""
        self.describe()
        return self._all_sizes

    def _fits(self, instance: Instance, vm_size: str | None) -> bool:
        size = instance.size or self._sku
        return vm_size is None or size is None or size.lower() == vm_size.lower()

    def _where(self, vm_size: str | None) -> str:
        """The fleet, the size and the region, as an allocation failure must name them."""
        size = self._sku or vm_size or "/".join(sorted(self._all_sizes))
        return f"{self._what}, {size} in {self._location}"

    def serves(self, vm_size: str | None) -> bool:
        sizes = {size.lower() for size in self._sizes()}
        return vm_size is None or not sizes or vm_size.lower() in sizes

    # -- NodePool: the machines ------------------------------------------------------------------
    def labels(self, node_id: str) -> tuple[str, ...]:
        instance = self._instances.get(self._instance_of(node_id) or "")
        size = (instance.size if instance else None) or self._sku
        return (size,) if size else ()

    def inventory(self) -> list[tuple[str, str, str, int]]:
        """Ready instances, and those lost since (``lost``): they stay nodes until the scheduler releases them."""
        with self._lock:
            self._refresh_quietly()
            self._collect_host_keys()
            self._shown = {iid: self._addresses[iid] for iid in self._ready()} | {
                iid: self._shown[iid] for iid in self._gone if iid in self._shown
            }
            return [
                (self.node_id(iid), address, self.node_root_of(iid), 0)
                for iid, address in sorted(self._shown.items(), key=lambda i: order(i[0]))
            ]

    def _ready(self) -> list[str]:
        return sorted(
            (
                iid
                for iid, instance in self._instances.items()
                if instance.power == "running"
                and instance.provisioning == "succeeded"
                and iid in self._addresses
                and instance.vm_id in self._host_keys
                and iid not in self._leaving
            ),
            key=order,
        )

    def node_root_of(self, instance_id: str) -> str:
        return posixpath.join(self.root, self.node_id(instance_id))

    def node_root(self, node_id: str) -> str | None:
        instance_id = self._instance_of(node_id)
        return self.node_root_of(instance_id) if instance_id is not None else None

    def transport(self, node_id: str) -> SSHTransport:
        with self._lock:
            instance_id = self._instance_of(node_id)
            instance = self._instances.get(instance_id or "")
            address = self._addresses.get(instance_id or "")
            key = self._host_keys.get(instance.vm_id) if instance else None
            if instance_id is not None and instance_id in self._gone:
                raise BatchAIError(ErrorCode.NODE_UNREACHABLE, f"cannot reach {node_id}: {self._gone[instance_id]['message']}", node_id)
            if instance_id is None or address is None or key is None:
                raise BatchAIError(ErrorCode.NODE_NOT_FOUND, f"node {node_id} is not a running instance of {self._what}", node_id)
            cached = self._transports.get(node_id)
            if cached is not None and cached[0] == (address, key):
                return cached[1]
            if cached is not None:
                cached[1].close()
            from ..transport.handle import AGENT_FILES, AGENT_HASH  # handle.py imports the transport package

            spec = HostSpec(host=address, port=self.settings.ssh_port, user=self.auth.user)
            pinned = fingerprint(key)
            auth = replace(
                self.auth,
                known_hosts=None,
                insecure_accept_unknown_host_keys=False,
                pinned_fingerprints={spec.display: pinned, address: pinned},
            )
            server = (AGENT_FILES, NodeLayout(self.node_root_of(instance_id)).agent_path(AGENT_HASH))
            transport = SSHTransport(spec, auth, self.python, CONNECT_TIMEOUT_S, SFTP_TIMEOUT_S, command_server=server)
            self._transports[node_id] = ((address, key), transport)
            return transport

    def peer_ssh(self, node_id: str) -> PeerSSH:
        transport = self.transport(node_id)
        return PeerSSH(node_id, transport.spec.host, transport.spec.port, self.auth.user, self._key_of(node_id))

    def _key_of(self, node_id: str) -> str:
        instance = self._instances[self._instance_of(node_id) or ""]
        return self._host_keys[instance.vm_id]

    def authorized_keys_file(self, node_id: str) -> str:
        return self.authorized_keys

    def shared_folder(self, run_id: str) -> str | None:
        return None

    def release_shared(self, run_id: str) -> None:
        return None

    def login_port(self, node_id: str) -> int:
        return self.settings.ssh_port

    def capacity(self, vm_size: str | None = None, max_age_s: float = 0.0) -> int:
        if not self.serves(vm_size):
            return 0
        if self.fleet.grows:
            return self.settings.max_nodes
        there = sum(n for size, n in self._vms_of_size.items() if vm_size is None or not size or size == vm_size.lower())
        return min(self.settings.max_nodes, there)

    def priority_problem(self, vm_priority: str | None) -> str | None:
        """Batch AI's lowpriority is Azure's Spot: a cluster's priority must be the VMs'."""
        self.describe()
        spot = is_spot(self._priority)
        wanted = (vm_priority or "dedicated").lower() == "lowpriority"
        if spot == wanted:
            return None
        return f"{self._what} runs {'Spot' if spot else 'regular (dedicated)'} instances, not vmPriority {vm_priority or 'dedicated'!r}"

    def vm_size_problem(self, vm_size: str | None) -> str | None:
        if self.serves(vm_size):
            return None
        sizes = ", ".join(sorted(self._sizes()))
        return f"{self._what} runs {sizes}, not vmSize {vm_size!r}: name a size it runs, or point the connection at other VMs"

    # -- NodePool: elastic capacity --------------------------------------------------------------
    def grow(self, count: int, vm_size: str | None) -> list[str]:
        """Start deallocated instances first, then raise the capacity (up to max_nodes); nothing during a backoff."""
        with self._lock:
            if count <= 0 or self.clock() < self._retry_at or not self.serves(vm_size):
                return []
            try:
                self._refresh(force=True)  # act on what ARM says now, not on a listing minutes old
                busy = set(self._starting) | self._leaving | set(self._gone)  # a lost node's VM is its own until released
                stopped = [
                    i
                    for i in self._instances.values()
                    if i.power in ("deallocated", "stopped") and i.instance_id not in busy and self._fits(i, vm_size)
                ]
                running = sum(
                    1 for i in self._instances.values() if i.power not in ("deallocated", "stopped") and i.provisioning != "deleting"
                )
                room = max(0, self.settings.max_nodes - running)  # max_nodes bounds what runs, whatever the fleet holds
                chosen = [i.instance_id for i in sorted(stopped, key=lambda i: order(i.instance_id))][: min(count, room)]
                if chosen:
                    self.fleet.start(chosen)
                    now = self.clock()
                    self._starting.update({iid: now for iid in chosen})
                current = self._capacity()
                more = min(count - len(chosen), self.settings.max_nodes - current) if self.fleet.grows else 0
                if more > 0:
                    self.fleet.set_capacity(current + more)
                    self._expected, self._asked_at = current + more, self.clock()
            except Exception as error:
                self._fail(arm_error(error, self._where(vm_size)))
                return []
            self._backoff = BACKOFF_FIRST_S
            log.info("%s: starting %d instance(s) %s and adding %d", self._what, len(chosen), chosen, max(0, more))
            return [self.node_id(iid) for iid in chosen] + self._placeholders(more)

    def release(self, node_id: str) -> None:
        """Deallocate (or delete) the instance: a node that left its cluster stops costing money."""
        instance_id = self._instance_of(node_id)
        if instance_id is None:
            return
        with self._lock:
            self._to_release.add(instance_id)
            self._leaving.add(instance_id)
            self._starting.pop(instance_id, None)
            self._boot_s.pop(instance_id, None)
            self._gone.pop(instance_id, None)
            self._shown.pop(instance_id, None)
            self._send_releases()

    def _send_releases(self) -> None:
        if not self._to_release:
            return
        ids = sorted(self._to_release, key=order)
        try:
            if self.settings.scale_in == "delete":
                self.fleet.delete(ids)
            else:
                self.fleet.deallocate(ids)
        except Exception as error:  # the instances still cost money: told again at the next refresh
            log.warning("%s: could not release instance(s) %s: %s", self._what, ids, arm_error(error, self._what).message)
            return
        log.info("%s: %s instance(s) %s", self._what, "deleting" if self.settings.scale_in == "delete" else "deallocating", ids)
        self._to_release.clear()
        for instance_id in ids:
            self._addresses.pop(instance_id, None)  # a started instance may come back with another address
            self._drop_transport(instance_id)
        self._listed_at = min(self._listed_at, self.clock() - STEADY_POLL_S + CHANGING_POLL_S)

    def changing(self) -> dict[str, NodeChange]:
        with self._lock:
            ready = set(self._ready())
            changes = {self.node_id(iid): NodeChange.STARTING for iid in self._starting if iid not in ready}
            pending = self._pending_new()
            changes.update(dict.fromkeys(self._placeholders(pending), NodeChange.STARTING))
            changes.update({self.node_id(iid): NodeChange.LEAVING for iid in self._leaving})
            return changes

    def _placeholders(self, count: int) -> list[str]:
        """Ids for instances a raised capacity will add, until the listing names them."""
        return [f"{self.settings.scale_set}-new{k}" for k in range(max(0, count))]

    def boot_seconds(self, node_id: str) -> float:
        return self._boot_s.get(self._instance_of(node_id) or "", 0.0)

    def price_label(self, node_id: str) -> str | None:
        size = self.labels(node_id)
        return f"{size[0]} {self._location}" if size else None

    def problems(self) -> list[dict[str, str]]:
        with self._lock:
            return [dict(self._problem)] if self._problem else []

    def lost(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {self.node_id(iid): dict(error) for iid, error in self._gone.items()}

    # -- reading ARM -----------------------------------------------------------------------------
    def _capacity(self) -> int:
        listed = sum(1 for i in self._instances.values() if i.provisioning != "deleting")
        return max(listed, self._expected or 0)

    def _pending_new(self) -> int:
        listed = sum(1 for i in self._instances.values() if i.provisioning != "deleting")
        return max(0, (self._expected or 0) - listed)

    def _changing(self) -> bool:
        return bool(self._starting or self._leaving or self._to_release or self._key_reads or self._pending_new())

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except BatchAIError as error:
            self._fail(error)  # the last listing stands meanwhile

    def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        interval = CHANGING_POLL_S if self._changing() else IN_USE_POLL_S if self._shown else STEADY_POLL_S
        if not force and now - self._listed_at < interval:
            return
        self.describe()
        self._send_releases()
        try:
            listed = self.fleet.listing()
        except Exception as error:
            raise arm_error(error, self._what) from None
        self._listed_at = now
        self._instances = {i.instance_id: i for i in listed}
        if self._expected is not None and self._pending_new() == 0:
            self._expected = None
        for iid, instance in self._instances.items():
            self._follow(iid, instance, now)
        for iid in [iid for iid in self._shown if iid not in self._instances and iid not in self._leaving and iid not in self._gone]:
            self._gone[iid] = {"code": str(ErrorCode.NODE_LOST), "message": f"instance {iid} of {self._what} was deleted"}
        for iid in [iid for iid in self._leaving if iid not in self._instances or self._instances[iid].power == "deallocated"]:
            self._leaving.discard(iid)
        for iid in [iid for iid in self._starting if iid not in self._instances]:
            self._starting.pop(iid)
        if self._expected is not None and now - self._asked_at > self.settings.boot_timeout_s:
            self._expected = None  # asked long ago and never listed: asked again when still wanted

    def _follow(self, iid: str, instance: Instance, now: float) -> None:
        """One listed instance: failures reported, a new running one's address and host key read."""
        if instance.provisioning == "failed" and instance.error and iid not in self._leaving:
            self._starting.pop(iid, None)
            self._fail(
                BatchAIError(
                    our_code(0, instance.error["code"], instance.error["message"]),
                    f"{self._where(instance.size)}: {instance.error['code']}: {instance.error['message']}",
                    "azure_vms",
                )
            )
            return
        if iid in self._leaving:
            self._addresses.pop(iid, None)
            return
        if iid in self._shown and iid not in self._gone and instance.power != "running":
            self._gone[iid] = self._loss(iid, instance)  # a node's VM stopped without being asked
            self._addresses.pop(iid, None)
            self._drop_transport(iid)
            return
        if iid in self._gone:
            return  # lost: it comes back only through release and a new start
        booting = instance.power == "starting" or instance.provisioning in ("creating", "updating")
        if iid not in self._starting and (booting or (instance.power == "running" and iid not in self._addresses)):
            self._starting[iid] = now  # one we did not start ourselves: a capacity we raised, or one started by hand
        if instance.power != "running":
            self._addresses.pop(iid, None)
            return
        if instance.provisioning != "succeeded":
            return
        if iid not in self._addresses:
            self._addresses[iid] = self.fleet.address(instance)
        if instance.vm_id not in self._host_keys and not self._known_to_book(instance.vm_id, now):
            self._read_host_key(iid, instance.vm_id)
        if not self._joined(iid) and iid in self._starting and now - self._starting[iid] > self.settings.boot_timeout_s:
            self._fail(
                BatchAIError(
                    ErrorCode.NODE_BOOT_TIMEOUT,
                    f"{self._what}: instance {iid} was not ready {self.settings.boot_timeout_s:.0f} s after it started "
                    "(no address or host key through ARM): released",
                    self.node_id(iid),
                )
            )
            self._to_release.add(iid)
            self._leaving.add(iid)
            self._starting.pop(iid, None)

    def _loss(self, iid: str, instance: Instance) -> dict[str, str]:
        if is_spot(instance.priority or self._priority):
            code, how = ErrorCode.NODE_EVICTED, "was evicted (Spot): Azure took the capacity back"
        else:
            code, how = ErrorCode.NODE_LOST, f"stopped without the provider asking (it is {instance.power})"
        return {"code": str(code), "message": f"instance {iid} of {self._what} {how}"}

    def _collect_host_keys(self) -> None:
        """Run-commands that have ended since the last look (their pollers ask ARM; this asks nothing)."""
        for iid, (vm_id, poller) in list(self._key_reads.items()):
            if poller.done() and iid in self._instances:
                self._read_host_key(iid, vm_id)
                self._joined(iid)

    def _joined(self, iid: str) -> bool:
        """An instance we started is ready (address and host key known): it is no longer starting, and
        capacity came, so what failed before is over. True when that happened now."""
        if iid not in self._starting or iid not in self._ready():
            return False
        self._boot_s[iid] = self.clock() - self._starting.pop(iid)
        self._problem = None
        return True

    def _read_host_key(self, iid: str, vm_id: str) -> None:
        """Run-command reads the host's public keys: started once, its result taken at a later refresh."""
        reading = self._key_reads.get(iid)
        if reading is None or reading[0] != vm_id:
            try:
                poller = self.fleet.run_command(iid, HOST_KEY_SCRIPT)
            except Exception as error:
                log.warning("%s: cannot read the host key of instance %s: %s", self._what, iid, arm_error(error, self._what).message)
                return
            self._key_reads[iid] = (vm_id, poller)
            return
        poller = reading[1]
        if not poller.done():
            return
        del self._key_reads[iid]
        try:
            output = poller.result()
        except Exception as error:
            log.warning("%s: reading the host key of instance %s failed: %s", self._what, iid, arm_error(error, self._what).message)
            return
        key = host_key_from(output)
        if key is None:
            log.warning("%s: instance %s showed no SSH host key through run-command", self._what, iid)
            return
        self._host_keys[vm_id] = key
        if self._book is not None:
            try:
                self._book.add(vm_id, key)
            except BatchAIError as error:  # this process knows it; others will ask ARM again
                log.warning("%s: could not keep the host key of instance %s: %s", self._what, iid, error.message)

    def _known_to_book(self, vm_id: str, now: float) -> bool:
        """A key another process learned (the book read at most once per listing)."""
        if self._book is None:
            return False
        if self._book_read_at < self._listed_at:
            try:
                self._host_keys.update(self._book.read())
            except BatchAIError as error:
                log.warning("%s: could not read the host keys kept: %s", self._what, error.message)
            self._book_read_at = now
        return vm_id in self._host_keys

    def _fail(self, error: BatchAIError) -> None:
        """What ARM refused, said in the cluster's errors, and asked again only after a backoff."""
        if error.code == ErrorCode.ARM_THROTTLED:
            self._retry_at = self.clock() + max(self._backoff, BACKOFF_FIRST_S)
        else:
            self._retry_at = self.clock() + self._backoff
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        self._problem = {"code": str(error.code), "message": error.message}
        log.warning("%s (asking again in %.0f s)", error.message, self._retry_at - self.clock())

    def _drop_transport(self, instance_id: str) -> None:
        cached = self._transports.pop(self.node_id(instance_id), None)
        if cached is not None:
            cached[1].close()

    def close(self) -> None:
        for _, transport in self._transports.values():
            transport.close()
        self.arm.compute.close()


def host_key_from(output: Any) -> str | None:
    """The preferred host key in run-command's output (``[stdout]`` of its first status), as "<type> <base64>"."""
    statuses = getattr(output, "value", None) or []
    text = str(getattr(statuses[0], "message", "") or "") if statuses else ""
    stdout = text.split("[stdout]", 1)[-1].split("[stderr]", 1)[0]
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in HOST_KEY_TYPES:
            try:
                base64.b64decode(parts[1], validate=True)
            except ValueError:
                continue
            found.setdefault(parts[0], parts[1])
    for kind in HOST_KEY_TYPES:
        if kind in found:
            return f"{kind} {found[kind]}"
    return None
