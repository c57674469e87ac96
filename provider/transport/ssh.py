"""SSH nodes: the user's own machines, reached with paramiko.

One kept-open connection per host per process, reused for every command (a fresh connection
costs ~64-108 ms, a command on an open one ~2 ms with TCP_NODELAY and ~44 ms without it).
Host keys are verified by default against a known_hosts file or fingerprints pinned in the
connection; an unknown or changed key is refused with an error naming the host. Accepting
unknown keys is possible only by asking for it explicitly, and it warns every time.

Jobs are started with ``setsid -f`` and every standard stream redirected, so the SSH channel
closes at once and the job outlives the session (``setsid nohup … &`` would keep the channel
open until the job ends).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import posixpath
import re
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import paramiko

from ..agent.protocol import relative_parts
from ..errors import BatchAIError, ErrorCode, shown
from . import CommandResult, FileInfo

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 15
RECONNECT_ATTEMPTS = 3
SFTP_TIMEOUT_S = 20.0
RECONNECT_BASE_DELAY_S = 0.25
DEFAULT_ROOT = "/var/lib/batchai"
_HOST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d+))?$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
HOST_FIELDS = {"host": str, "port": int, "user": str, "key_file": str, "gpus": int, "labels": list, "root": str, "authorized_keys": str}


def check_host_name(host: str, where: str = "hosts") -> str:
    """A DNS name or an IP address, refused before any lookup or connection when it is neither."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}: {shown(host)} is not a host name or IP address", where)
    return host


@dataclass(frozen=True)
class HostSpec:
    """One machine of the pool: ``[user@]host[:port]`` plus optional per-host settings."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    gpus: int | None = None  # None = discover with nvidia-smi
    labels: tuple[str, ...] = ()
    root: str | None = None
    authorized_keys: str | None = None  # where the cluster's key goes for MPI; default the pool's

    @classmethod
    def parse(cls, value: str | dict[str, Any], where: str = "hosts") -> HostSpec:
        """``[user@]host[:port]`` or ``{host, port, user, key_file, gpus, labels, root, authorized_keys}``.

        Every part is checked here, before anything resolves or dials the name; errors name ``where``.
        """
        if isinstance(value, dict):
            return cls._parse_entry(value, where)
        if not isinstance(value, str):
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}: a host is text or an object, not {type(value).__name__}", where)
        match = _HOST.fullmatch(value.strip())
        if not match:
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}: {shown(value)} is not [user@]host[:port]", where)
        port = int(match["port"] or 22) if len(match["port"] or "") < 6 else 0
        if not 1 <= port <= 65535:
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}: port {shown(match['port'])} is not 1-65535", where)
        user = match["user"]
        if user is not None and not _USER_NAME.fullmatch(user):
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}: {shown(user)} is not a user name", where)
        host = match["host"]
        return cls(check_host_name(host[1:-1] if host.startswith("[") else host, where), port, user)

    @classmethod
    def _parse_entry(cls, value: dict[str, Any], where: str) -> HostSpec:
        for key, item in value.items():
            if key not in HOST_FIELDS:
                raise BatchAIError(
                    ErrorCode.INVALID_HOST, f"{where}: unknown key {shown(key)}; a host takes {', '.join(HOST_FIELDS)}", where
                )
            expected = HOST_FIELDS[key]
            if item is not None and (not isinstance(item, expected) or isinstance(item, bool)):
                raise BatchAIError(
                    ErrorCode.INVALID_HOST, f"{where}.{key}: expected {expected.__name__}, got {shown(item)}", f"{where}.{key}"
                )
        if not value.get("host"):
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}.host: required", f"{where}.host")
        base = cls.parse(value["host"], f"{where}.host")
        port: int = value["port"] if value.get("port") is not None else base.port
        if not 1 <= port <= 65535:
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}.port: {port} is not 1-65535", f"{where}.port")
        if value.get("gpus") is not None and not 0 <= value["gpus"] <= 64:
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}.gpus: {value['gpus']} is not 0-64", f"{where}.gpus")
        user = value.get("user")
        if user is not None and not _USER_NAME.fullmatch(user):
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}.user: {shown(user)} is not a user name", f"{where}.user")
        labels = value.get("labels") or []
        if not all(isinstance(label, str) and label for label in labels):
            raise BatchAIError(ErrorCode.INVALID_HOST, f"{where}.labels: expected a list of non-empty texts", f"{where}.labels")
        extra = {k: v for k, v in value.items() if k in ("user", "key_file", "gpus", "root", "authorized_keys") and v is not None}
        return HostSpec(base.host, port, **{"user": base.user, **extra}, labels=tuple(labels))

    @property
    def node_id(self) -> str:
        name = self.host if self.port == 22 else f"{self.host}-{self.port}"
        return re.sub(r"[^\w.-]", "-", name)

    @property
    def display(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class SSHAuth:
    """How to log in and how to trust hosts. The private key text is never logged."""

    user: str
    private_key: str | None = None
    key_file: str | None = None
    passphrase: str | None = None
    known_hosts: str | None = None
    pinned_fingerprints: dict[str, str] = field(default_factory=dict)  # "host:port" or "host" -> "SHA256:..."
    insecure_accept_unknown_host_keys: bool = False
    allow_agent: bool = True

    def pkey(self) -> paramiko.PKey | None:
        if not self.private_key:
            return None
        text = pem_text(self.private_key)
        for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return key_class.from_private_key(StringIO(text), password=self.passphrase)
            except paramiko.PasswordRequiredException:
                raise BatchAIError(
                    ErrorCode.INVALID_SSH_KEY, "the SSH private key is encrypted and no passphrase was given", "ssh_key_passphrase"
                ) from None
            except (paramiko.SSHException, ValueError):
                continue
        raise BatchAIError(
            ErrorCode.INVALID_SSH_KEY, f"the SSH private key cannot be read: {_key_problem(text, self.passphrase)}", "ssh_private_key"
        )


_PEM = re.compile(r"^\s*(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)\s*$", re.DOTALL)


def pem_text(key: str) -> str:
    """A PEM key as its lines, also when a single-line form field turned its newlines into spaces
    (or ``\\n``): the body is base64, which has no spaces of its own."""
    key = key.replace("\\n", "\n").replace("\r\n", "\n")
    found = _PEM.match(key)
    if not found:
        return key
    head, body, tail = found.groups()
    tokens, headers = body.split(), []
    while len(tokens) >= 2 and tokens[0].endswith(":"):  # legacy encrypted PEM: "Proc-Type: 4,ENCRYPTED", "DEK-Info: ..."
        headers.append(f"{tokens[0]} {tokens[1]}")
        tokens = tokens[2:]
    return "\n".join([head, *headers, *([""] if headers else []), *tokens, tail, ""])


def _key_problem(text: str, passphrase: str | None) -> str:
    """Why the key text did not load, in words a user can act on (never any of the key itself)."""
    if text.lstrip().startswith(("ssh-", "ecdsa-", "sk-")) or "PUBLIC KEY-----" in text:
        return "this is a public key (a .pub file's line); give the private key"
    if "-----BEGIN" not in text:
        return "it is not PEM text (it should start with '-----BEGIN OPENSSH PRIVATE KEY-----'); give the key file's whole content"
    if "-----END" not in text:
        return "its '-----END ...-----' line is missing (was it cut short?)"
    if passphrase:
        return "the passphrase is wrong, or the key is damaged"
    return "not an ed25519, ECDSA or RSA key, or damaged (are lines missing?)"


def fingerprint(key: paramiko.PKey | str) -> str:
    """OpenSSH's ``SHA256:…`` form (as ``ssh-keygen -lf`` prints it) of a key, or of its "<type> <base64>" text."""
    blob = base64.b64decode(key.split()[1]) if isinstance(key, str) else key.asbytes()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class _VerifyHostKey(paramiko.MissingHostKeyPolicy):
    """Keys not in known_hosts: accept only a pinned fingerprint, or everything when explicitly insecure."""

    def __init__(self, spec: HostSpec, auth: SSHAuth) -> None:
        self.spec = spec
        self.auth = auth

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        pinned = self.auth.pinned_fingerprints.get(self.spec.display) or self.auth.pinned_fingerprints.get(self.spec.host)
        seen = fingerprint(key)
        if pinned is not None:
            if pinned == seen:
                return
            raise BatchAIError(
                ErrorCode.HOST_KEY_MISMATCH,
                f"host key of {self.spec.display} is {seen}, not the pinned {pinned}: refused",
                self.spec.display,
            )
        if self.auth.insecure_accept_unknown_host_keys:
            log.warning("accepting unverified host key %s of %s (insecure_accept_unknown_host_keys is set)", seen, self.spec.display)
            return
        raise BatchAIError(
            ErrorCode.UNKNOWN_HOST_KEY,
            f"host key {seen} of {self.spec.display} is not in known_hosts nor pinned: refused (add it to known_hosts or pin it)",
            self.spec.display,
        )


class SSHTransport:
    """Transport over one kept-open SSH connection; safe to share between threads."""

    def __init__(
        self,
        spec: HostSpec,
        auth: SSHAuth,
        python: str = "python3",
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        io_timeout_s: float = SFTP_TIMEOUT_S,
        command_server: tuple[dict[str, bytes], str] | None = None,
    ) -> None:
        """``command_server``: (agent files by name, agent.py's path on the node) to run commands through ``agent.py serve``."""
        self.spec = spec
        self.auth = auth
        self.address = spec.host
        self.python = python
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self.connections_made = 0
        self.command_server = command_server
        self._server: paramiko.Channel | None = None
        self._server_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------
    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.auth.known_hosts:
            client.load_host_keys(self.auth.known_hosts)
        client.set_missing_host_key_policy(_VerifyHostKey(self.spec, self.auth))
        sock = socket.create_connection((self.spec.host, self.spec.port), timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                self.spec.host,
                port=self.spec.port,
                username=self.spec.user or self.auth.user,
                pkey=self.auth.pkey(),
                key_filename=self.spec.key_file or self.auth.key_file,
                passphrase=self.auth.passphrase,
                sock=sock,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                allow_agent=self.auth.allow_agent,
                look_for_keys=False,
            )
        except BaseException:
            sock.close()
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_S)
        self.connections_made += 1
        return client

    def client(self) -> paramiko.SSHClient:
        """The open connection, reconnecting with bounded exponential backoff when it dropped."""
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is not None and transport.is_active():
                return self._client
            self.close()
            delay = RECONNECT_BASE_DELAY_S
            for attempt in range(1, RECONNECT_ATTEMPTS + 1):
                try:
                    self._client = self._connect_once()
                    return self._client
                except BatchAIError:
                    raise  # a host key problem does not heal by retrying
                except paramiko.BadHostKeyException as error:
                    raise BatchAIError(
                        ErrorCode.HOST_KEY_MISMATCH,
                        f"host key of {self.spec.display} changed ({fingerprint(error.key)} is not the known key): refused",
                        self.spec.display,
                    ) from None
                except paramiko.AuthenticationException:
                    raise BatchAIError(
                        ErrorCode.SSH_AUTHENTICATION_FAILED,
                        f"SSH login to {self.spec.display} as {self.spec.user or self.auth.user} failed",
                        self.spec.display,
                    ) from None
                except (OSError, paramiko.SSHException, EOFError) as error:
                    if attempt == RECONNECT_ATTEMPTS:
                        raise BatchAIError(
                            ErrorCode.NODE_UNREACHABLE, f"cannot reach {self.spec.display}: {error}", self.spec.display
                        ) from None
                    time.sleep(delay)
                    delay *= 2
            raise AssertionError("unreachable")

    def host_key(self) -> str:
        """The host key this connection verified, as "<type> <base64>" (pinned for the nodes' own ssh)."""
        key = self.client().get_transport().get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            client = self.client()
            if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
                self._sftp = client.open_sftp()
                self._sftp.get_channel().settimeout(self.io_timeout_s)
            return self._sftp

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.close()
                self._server = None
            if self._sftp is not None:
                self._sftp.close()
            if self._client is not None:
                self._client.close()
            self._sftp = None
            self._client = None

    # -- Transport ----------------------------------------------------------------------
    def run(self, argv: list[str], *, timeout_s: float = 60.0, stdin: bytes | None = None) -> CommandResult:
        """Through the kept-open command server when there is one (and it is free), else a fresh exec channel."""
        if self.command_server is not None and self._server_lock.acquire(blocking=False):
            try:
                return self._serve(argv, timeout_s, stdin)
            except BatchAIError:
                raise
            except (OSError, EOFError, ValueError, paramiko.SSHException) as error:
                log.info("command server on %s unavailable (%s): using exec", self.spec.display, error)
                self._drop_server()
            finally:
                self._server_lock.release()
        return self._exec(argv, timeout_s, stdin)

    def _drop_server(self) -> None:
        if self._server is not None:
            self._server.close()
        self._server = None

    def _serve(self, argv: list[str], timeout_s: float, stdin: bytes | None) -> CommandResult:
        if self._server is None or self._server.closed or self._server.exit_status_ready():
            files, path = self.command_server  # type: ignore[misc]
            if self.read_file(path, 0, 0) is None:
                for name, data in files.items():
                    self.write_file(posixpath.join(posixpath.dirname(path), name), data, 0o755)
            channel = self.client().get_transport().open_session(timeout=self.connect_timeout_s)
            channel.exec_command(f"exec {shlex.quote(self.python)} {shlex.quote(path)} serve")
            self._server = channel
        channel = self._server
        request = json.dumps({"argv": argv, "stdin": base64.b64encode(stdin or b"").decode(), "timeout": timeout_s}).encode()
        channel.settimeout(timeout_s + self.io_timeout_s)
        channel.sendall(b"%d\n" % len(request) + request)
        reader = channel.makefile("rb")
        header = reader.readline()
        if not header:
            raise EOFError("command server closed")
        response = json.loads(reader.read(int(header)))
        if response.get("timeout"):
            raise BatchAIError(
                ErrorCode.COMMAND_TIMEOUT, f"{argv[0]} on {self.spec.display} did not finish in {timeout_s:.0f} s", self.spec.display
            )
        return CommandResult(response["rc"], base64.b64decode(response["out"]), base64.b64decode(response["err"]))

    def _exec(self, argv: list[str], timeout_s: float, stdin: bytes | None) -> CommandResult:
        command = shlex.join(argv)
        try:
            channel = self.client().get_transport().open_session(timeout=self.connect_timeout_s)
        except (paramiko.SSHException, OSError, EOFError):
            self.close()  # a dead connection: one fresh try
            channel = self.client().get_transport().open_session(timeout=self.connect_timeout_s)
        with channel:
            channel.settimeout(timeout_s)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            deadline = time.monotonic() + timeout_s
            out, err = bytearray(), bytearray()
            # Until the server closes the channel, not until the exit status: sshd sends the status when the
            # command exits, and may still be draining its stderr then (it closes only once both are drained).
            while not channel.closed or channel.recv_ready() or channel.recv_stderr_ready():
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif time.monotonic() > deadline:
                    raise BatchAIError(
                        ErrorCode.COMMAND_TIMEOUT,
                        f"{argv[0]} on {self.spec.display} did not finish in {timeout_s:.0f} s",
                        self.spec.display,
                    )
                elif not channel.exit_status_ready():
                    channel.status_event.wait(0.001)  # wakes at once when the command exits (or the channel closes)
                else:
                    time.sleep(0.0002)  # exited: its last output and the close are a moment away
            return CommandResult(channel.recv_exit_status(), bytes(out), bytes(err))

    def start_detached(self, argv: list[str], *, log_path: str) -> None:
        folder = posixpath.dirname(log_path)
        command = f"mkdir -p {shlex.quote(folder)} && setsid -f {shlex.join(argv)} >>{shlex.quote(log_path)} 2>&1 </dev/null"
        result = self.run(["sh", "-c", command], timeout_s=30)
        if result.returncode != 0:
            raise BatchAIError(
                ErrorCode.START_FAILED,
                f"cannot start {argv[0]} on {self.spec.display}: {result.stderr.decode(errors='replace')[-300:]}",
                self.spec.display,
            )

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        try:
            return self._read_file(path, offset, length)
        except (TimeoutError, EOFError, paramiko.SSHException) as error:
            self.close()
            raise BatchAIError(
                ErrorCode.NODE_UNREACHABLE, f"cannot read {path} on {self.spec.display}: {type(error).__name__} {error}", self.spec.display
            ) from None

    def _read_file(self, path: str, offset: int, length: int | None) -> bytes | None:
        try:
            with self.sftp().open(path, "rb") as handle:
                handle.seek(offset)
                if length is None:
                    handle.prefetch()
                    return handle.read()
                return handle.read(length)
        except FileNotFoundError:
            return None
        except OSError as error:
            if getattr(error, "errno", None) in (2, 20):
                return None
            raise

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        sftp = self.sftp()
        self._make_dirs(posixpath.dirname(path))
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with sftp.open(temporary, "wb") as handle:
            handle.chmod(mode)
            handle.write(data)
        sftp.posix_rename(temporary, path)

    def _make_dirs(self, folder: str) -> None:
        sftp = self.sftp()
        missing = []
        while folder not in ("", "/"):
            try:
                sftp.stat(folder)
                break
            except FileNotFoundError:
                missing.append(folder)
                folder = posixpath.dirname(folder)
        for path in reversed(missing):
            try:
                sftp.mkdir(path)
            except OSError:
                sftp.stat(path)  # created by someone else meanwhile; anything else raises

    def read_inside(self, base: str, relative: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Like read_file, for a file a job wrote: None unless it really lies at ``base``/``relative``."""
        path = self._inside(base, relative, stat.S_ISREG)  # a FIFO would hold the SFTP server until its timeout
        return None if path is None else self.read_file(path, offset, length)

    def list_inside(self, base: str, relative: str) -> list[FileInfo] | None:
        """Like list_dir, for a job's folder: its links are left out, never followed."""
        path = self._inside(base, relative, stat.S_ISDIR)
        if path is None:
            return None
        try:
            entries = self.sftp().listdir_attr(path)  # attributes as lstat gives them: a link is a link
        except OSError:
            return None
        except (TimeoutError, EOFError, paramiko.SSHException) as error:
            self.close()
            raise BatchAIError(
                ErrorCode.NODE_UNREACHABLE, f"cannot list {path} on {self.spec.display}: {error}", self.spec.display
            ) from None
        kept = [e for e in entries if stat.S_ISDIR(e.st_mode or 0) or stat.S_ISREG(e.st_mode or 0)]
        return sorted(
            (
                FileInfo(
                    e.filename, stat.S_ISDIR(e.st_mode or 0), 0 if stat.S_ISDIR(e.st_mode or 0) else e.st_size or 0, float(e.st_mtime or 0)
                )
                for e in kept
            ),
            key=lambda info: info.name,
        )

    def _inside(self, base: str, relative: str, kind: Callable[[int], bool]) -> str | None:
        """``base``/``relative`` when the node resolves it to itself (no link on the way), else None.

        The node's own realpath (SFTP's) decides. A job that swaps a link in between this check and
        the read could still win that race on an SSH node; the node is the job's own machine.
        """
        parts = relative_parts(relative)
        if parts is None:
            return None
        try:
            sftp = self.sftp()
            expected = posixpath.join(sftp.normalize(base), *parts)
            if sftp.normalize(expected) != expected:
                return None
            return expected if kind(sftp.lstat(expected).st_mode or 0) else None
        except OSError:
            return None
        except (TimeoutError, EOFError, paramiko.SSHException) as error:
            self.close()
            raise BatchAIError(
                ErrorCode.NODE_UNREACHABLE, f"cannot read {base} on {self.spec.display}: {error}", self.spec.display
            ) from None

    def list_dir(self, path: str) -> list[FileInfo] | None:
        try:
            entries = self.sftp().listdir_attr(path)
        except FileNotFoundError:
            return None
        infos = [
            FileInfo(
                e.filename, stat.S_ISDIR(e.st_mode or 0), 0 if stat.S_ISDIR(e.st_mode or 0) else e.st_size or 0, float(e.st_mtime or 0)
            )
            for e in entries
        ]
        return sorted(infos, key=lambda info: info.name)

    def remove_tree(self, path: str) -> None:
        if path in ("", "/") or not path.startswith("/"):
            raise BatchAIError(ErrorCode.INVALID_PATH, f"refusing to remove {path!r} on {self.spec.display}", self.spec.display)
        self.run(["rm", "-rf", "--", path], timeout_s=120)
