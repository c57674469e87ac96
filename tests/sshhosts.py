"""Real SSH hosts for tests: one sshd per network namespace, joined by a bridge.

Addresses are in 10.213.7.0/24 (10.213.8.0/24 for the Slurm hosts), which exist only on our
bridges and in our namespaces; each pytest-xdist worker takes the next pair of subnets, so
workers' hosts never share an address. The root namespace gets an ``unreachable`` route for
10.213.0.0/16 so nothing in the range can leak past them. Where namespaces cannot be created, several sshd listen on 127.0.0.1 ports
instead (said in the test output). Everything is stopped by PID and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # set by pytest-xdist before this is imported
_PAIR = 7 + 2 * int(_WORKER[2:]) if _WORKER[2:].isdigit() else 7
SUBNET, SLURM_SUBNET = f"10.213.{_PAIR}", f"10.213.{_PAIR + 1}"
GUARD_ROUTE = "10.213.0.0/16"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Host:
    name: str
    address: str
    port: int
    namespace: str | None
    host_key_pub: str
    veth: str | None = None
    process: subprocess.Popen[bytes] | None = None
    authorized_keys: str = ""  # the file this host's sshd reads, in the test's folder

    @property
    def spec(self) -> str:
        return f"root@{self.address}:{self.port}"

    @property
    def entry(self) -> dict[str, str]:
        """The host as a pool entry: cluster keys go where its sshd reads them, never into the real ~/.ssh."""
        return {"host": self.spec, "authorized_keys": self.authorized_keys}


@dataclass
class SSHHosts:
    folder: Path
    client_key: Path
    known_hosts: Path
    hosts: list[Host] = field(default_factory=list)
    bridge: str | None = None
    mode: str = "netns"

    def cut(self, host: Host) -> None:
        """Take the host off the network, as a pulled cable would (namespace hosts only: never touch lo)."""
        if host.veth is None:
            raise RuntimeError(f"{host.name} is not in a network namespace: cannot cut it off")
        run(["ip", "link", "set", host.veth, "down"])

    def reconnect(self, host: Host) -> None:
        if host.veth is not None:
            run(["ip", "link", "set", host.veth, "up"])


def run(argv: list[str], namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run(prefix + argv, capture_output=True, text=True, check=check, timeout=30)


def _sshd_config(folder: Path, address: str, port: int, env: dict[str, str]) -> Path:
    config = folder / "sshd_config"
    sessions = {"TMPDIR": os.environ.get("TMPDIR") or tempfile.gettempdir(), **env}  # one SetEnv line: sshd keeps only the first
    config.write_text(
        f"""Port {port}
ListenAddress {address}
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
SetEnv {" ".join(f"{k}={v}" for k, v in sessions.items())}
"""
    )
    return config


def _wait_for_port(address: str, port: int, deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if _reachable(address, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd on {address}:{port} did not start")


def _reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(
    folder: Path, count: int, tag: str, use_namespaces: bool = True, subnet: str = SUBNET, env: dict[str, str] | None = None
) -> SSHHosts:
    """``count`` hosts on ``subnet`` (one per test fixture: two fixtures cannot share one); ``env`` is set in their sessions."""
    folder.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    client_key = folder / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
    setup = SSHHosts(folder, client_key, folder / "known_hosts")
    try:
        if not use_namespaces:
            raise OSError("not asked for")
        _make_network(setup, count, tag, subnet)
    except (subprocess.CalledProcessError, OSError) as error:
        teardown(setup)
        setup = SSHHosts(folder, client_key, folder / "known_hosts", mode=f"loopback (network namespaces unavailable: {error})")
        for index in range(count):
            setup.hosts.append(Host(f"node{index}", "127.0.0.1", _free_port(), None, ""))
    try:
        _start_sshd(setup, folder, client_key, env or {})
    except BaseException:
        teardown(setup)  # a host that did not start leaves no namespace, bridge or sshd behind
        raise
    return setup


def _start_sshd(setup: SSHHosts, folder: Path, client_key: Path, env: dict[str, str]) -> None:
    for host in setup.hosts:
        host_folder = folder / host.name
        host_folder.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_folder / "host_key")], check=True)
        shutil.copy(f"{client_key}.pub", host_folder / "authorized_keys")
        host.authorized_keys = str(host_folder / "authorized_keys")
        host.host_key_pub = (host_folder / "host_key.pub").read_text().split()[1]
        config = _sshd_config(host_folder, host.address, host.port, env)
        prefix = ["ip", "netns", "exec", host.namespace] if host.namespace else []
        log = open(host_folder / "sshd.log", "wb")  # noqa: SIM115 - sshd writes there until teardown
        host.process = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, start_new_session=True)
    for host in setup.hosts:
        _wait_for_port(host.address, host.port)
    lines = []
    for host in setup.hosts:
        name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        lines.append(f"{name} ssh-ed25519 {host.host_key_pub}\n")
    setup.known_hosts.write_text("".join(lines))


def _make_network(setup: SSHHosts, count: int, tag: str, subnet: str) -> None:
    bridge = f"bbr{tag}"
    run(["ip", "link", "add", bridge, "type", "bridge"])
    setup.bridge = bridge
    run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    run(["ip", "route", "replace", "unreachable", GUARD_ROUTE])
    for index in range(count):
        namespace, veth = f"bai{tag}n{index}", f"bv{tag}n{index}"
        run(["ip", "netns", "add", namespace])
        host = Host(f"node{index}", f"{subnet}.{11 + index}", 22, namespace, "", veth)
        setup.hosts.append(host)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        run(["ip", "link", "set", veth, "master", bridge, "up"])
        run(["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"], namespace)
        run(["ip", "link", "set", "eth0", "up"], namespace)
        run(["ip", "link", "set", "lo", "up"], namespace)
    # Names resolve inside the namespaces from files only (ip netns exec bind-mounts
    # /etc/netns/<ns>/* over /etc): torch's c10d looks up its peers' names, and a DNS query
    # would leave the machine (and fail with EAI_AGAIN without network).
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in setup.hosts)
    for host in setup.hosts:
        folder = Path("/etc/netns") / str(host.namespace)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(hosts_file)
        (folder / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def teardown(setup: SSHHosts) -> None:
    for host in setup.hosts:
        if host.process is not None and host.process.poll() is None:
            os.killpg(host.process.pid, signal.SIGTERM)
            try:
                host.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(host.process.pid, signal.SIGKILL)
        if host.namespace:
            for pid in run(["ip", "netns", "pids", host.namespace], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            run(["ip", "netns", "del", host.namespace], check=False)
            shutil.rmtree(Path("/etc/netns") / host.namespace, ignore_errors=True)
        if host.veth:
            run(["ip", "link", "del", host.veth], check=False)
    if setup.bridge:
        run(["ip", "link", "del", setup.bridge], check=False)
        if "bbr" not in run(["ip", "link", "show", "type", "bridge"], check=False).stdout:  # no other run still uses it
            run(["ip", "route", "del", "unreachable", GUARD_ROUTE], check=False)
