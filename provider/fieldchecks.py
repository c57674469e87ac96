"""A connection's fields, checked one by one before anything is looked up, dialled or written.

The model (config.ProviderConfig) checks types; this checks meaning: paths that end up in
shell commands on nodes, names that end up in storage paths, endpoints that end up in URLs,
keys that would otherwise fail on the first node contacted, minutes later, as a traceback.
Each failure is one BatchAIError whose message starts with the field's name and whose
target is the field, so the CLI, the hook's ``test_connection`` and the form all say which.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import paramiko

from .errors import BatchAIError, ErrorCode, shown
from .names import check_segment
from .transport.ssh import HostSpec, SSHAuth, check_host_name

if TYPE_CHECKING:
    from .config import ProviderConfig

NODE_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")  # goes into commands on the nodes: no space, quote, $, ;, `, ~, glob
HOME_RELATIVE_PATH = re.compile(r"(?:~/)?[A-Za-z0-9._+/-]+")  # authorized_keys: may start at the user's home
COMMAND = re.compile(r"[A-Za-z0-9._+/-]+")
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")  # ssh-keygen -lf: 32 bytes of base64 without padding
UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
CONTROL_PLANE_VARIABLES = ("AIRFLOW", "BATCHAI_", "AZURE_", "AZ_BATCHAI_")  # never a job's to inherit


def _fail(field: str, why: str) -> BatchAIError:
    return BatchAIError(ErrorCode.INVALID_CONNECTION, f"{field}: {why}", field)


def check_node_path(value: str, field: str) -> str:
    if not NODE_PATH.fullmatch(value) or ".." in value.split("/"):
        raise _fail(field, f"{shown(value)} must be an absolute path of letters, digits and ._+-/ (it goes into commands on the nodes)")
    return value


def check_fields(config: ProviderConfig) -> None:
    """Every field whose meaning the model cannot check; the first bad one raises."""
    if config.home is not None and not Path(config.home).is_absolute():
        raise _fail("home", f"{shown(config.home)} must be an absolute path (a relative one means another folder in each process)")
    check_node_path(config.node_root, "node_root")
    if config.node_root == "/":
        raise _fail("node_root", "'/' would make every file of the node ours to remove")
    if not COMMAND.fullmatch(config.node_python) or config.node_python.startswith("-"):
        raise _fail("node_python", f"{shown(config.node_python)} must be a command name or path, without arguments or shell characters")
    if config.shared_folder_root is not None:
        check_node_path(config.shared_folder_root, "shared_folder_root")
    if not HOME_RELATIVE_PATH.fullmatch(config.authorized_keys_file) or ".." in config.authorized_keys_file.split("/"):
        raise _fail(
            "authorized_keys_file", f"{shown(config.authorized_keys_file)} must be a path (absolute or ~/...) without shell characters"
        )
    for name in ("subscription_id", "resource_group"):
        try:
            check_segment("subscription" if name == "subscription_id" else "resource_group", getattr(config, name))
        except BatchAIError as error:
            raise _fail(name, error.message) from None
    _check_hosts(config.hosts)
    _check_fingerprints(config.host_key_fingerprints)
    _check_keys(config)
    for name in ("storage_blob_endpoint", "storage_file_endpoint"):
        if getattr(config, name) is not None:
            check_endpoint(getattr(config, name), name)
    if config.storage_account is not None and not STORAGE_ACCOUNT.fullmatch(config.storage_account):
        raise _fail("storage_account", f"{shown(config.storage_account)} is not a storage account name (3-24 lowercase letters and digits)")
    if config.storage_connection_string:
        _check_connection_string(config.storage_connection_string)
    if config.job_user is not None and not UNIX_USER.fullmatch(config.job_user):
        raise _fail("job_user", f"{shown(config.job_user)} is not a Unix user name")
    for index, pattern in enumerate(config.job_env_allow):
        if not ENV_PATTERN.fullmatch(pattern):
            raise _fail(f"job_env_allow[{index}]", f"{shown(pattern)} must be a variable name or a PREFIX* (not '*' alone)")
        stem = pattern.rstrip("*").upper()
        covers = pattern.endswith("*") and any(prefix.startswith(stem) for prefix in CONTROL_PLANE_VARIABLES)
        if stem.startswith(CONTROL_PLANE_VARIABLES) or covers:
            raise _fail(f"job_env_allow[{index}]", f"{shown(pattern)} would hand jobs the control plane's variables")


def check_endpoint(value: str, field: str) -> str:
    """http(s)://host[:port][/path]: a host that is a name or an address, a port that exists.

    Messages quote the endpoint without its query or fragment: a SAS pasted into the URL must not
    reach a task log through the error that refuses it."""
    shown_value = shown(re.split(r"[?#]", value, maxsplit=1)[0])
    try:
        parsed = urlsplit(value)
        port = parsed.port
    except ValueError:
        raise _fail(field, f"{shown_value} is not a URL with a valid host and port") from None
    if parsed.query or parsed.fragment:
        raise _fail(field, f"{shown_value}: an endpoint takes no query (a SAS goes in storage_sas_token)")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or re.search(r"\s", value):
        raise _fail(field, f"{shown_value} must be http(s)://host[:port][/path]")
    try:
        check_host_name(parsed.hostname, field)
    except BatchAIError:
        raise _fail(field, f"{shown_value}: {shown(parsed.hostname)} is not a host name or IP address") from None
    if port is not None and not 1 <= port <= 65535:
        raise _fail(field, f"{shown_value}: port {port} is not 1-65535")
    return value


def _check_connection_string(text: str) -> None:
    """Its account and endpoints, said without quoting any of it (it holds the key or a SAS)."""
    field = "storage_connection_string"
    parts = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    name = parts.get("AccountName")
    if name is not None and not STORAGE_ACCOUNT.fullmatch(name):
        raise _fail(field, "its AccountName is not a storage account name (3-24 lowercase letters and digits)")
    if parts.get("DefaultEndpointsProtocol", "https") not in ("http", "https"):
        raise _fail(field, "its DefaultEndpointsProtocol must be http or https")
    for key in ("BlobEndpoint", "FileEndpoint", "QueueEndpoint", "TableEndpoint"):
        if key in parts:
            try:
                check_endpoint(parts[key], field)
            except BatchAIError:
                raise _fail(field, f"its {key} must be http(s)://host[:port][/path] with a valid host and port") from None
    suffix = parts.get("EndpointSuffix")
    if suffix is not None:
        try:
            check_host_name(suffix, field)
        except BatchAIError:
            raise _fail(field, "its EndpointSuffix is not a DNS suffix") from None


def _check_hosts(hosts: list[str | dict[str, Any]]) -> None:
    for index, host in enumerate(hosts):
        if not isinstance(host, dict):
            continue
        for key in ("root", "authorized_keys"):
            if host.get(key) is not None:
                checker = check_node_path if key == "root" else _check_home_path
                checker(host[key], f"hosts[{index}].{key}")
        if host.get("key_file") is not None:
            _load_key_file(host["key_file"], None, f"hosts[{index}].key_file")


def _check_home_path(value: str, field: str) -> str:
    if not HOME_RELATIVE_PATH.fullmatch(value) or ".." in value.split("/"):
        raise _fail(field, f"{shown(value)} must be a path (absolute or ~/...) without shell characters")
    return value


def _check_fingerprints(pinned: dict[str, str]) -> None:
    for host, value in pinned.items():
        field = f"host_key_fingerprints[{host[:60]!r}]"
        try:
            HostSpec.parse(host, field)
        except BatchAIError as error:
            raise _fail(field, error.message) from None
        if not isinstance(value, str) or not FINGERPRINT.fullmatch(value):
            raise _fail(field, f"{shown(value)} is not a SHA256:... fingerprint as `ssh-keygen -lf` prints it (MD5 ones are not accepted)")


def _check_keys(config: ProviderConfig) -> None:
    """Keys load now, so a public key, a missing file or a wrong passphrase is said before any node is tried."""
    if config.ssh_private_key:
        problem = _key_problem(config.ssh_private_key, config.ssh_key_passphrase)
        if problem:
            raise _fail(*problem)
    if config.ssh_key_file:
        _load_key_file(config.ssh_key_file, config.ssh_key_passphrase, "ssh_key_file")
    if config.known_hosts is not None:
        path = Path(config.known_hosts).expanduser()
        if not path.is_file():
            raise _fail("known_hosts", f"{shown(config.known_hosts)} is not a file this process can read")


def _load_key_file(path_text: str, passphrase: str | None, field: str) -> None:
    path = Path(path_text).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise _fail(field, f"cannot read {shown(path_text)}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise _fail(field, f"{shown(path_text)} is not a key file (not text)") from None
    problem = _key_problem(text, passphrase)
    if problem:
        raise _fail(field, f"{shown(path_text)}: {problem[1]}")


@functools.lru_cache(maxsize=64)
def _key_problem(text: str, passphrase: str | None) -> tuple[str, str] | None:
    """(field, why) when the key does not load; once per key and process (an encrypted key's KDF is slow)."""
    try:
        SSHAuth(user="-", private_key=text, passphrase=passphrase).pkey()
    except BatchAIError as error:
        return error.target or "ssh_private_key", error.message
    except (paramiko.SSHException, ValueError):
        return "ssh_private_key", "it cannot be read as a private key"
    return None
