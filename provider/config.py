"""What a ``batchai`` connection (or the CLI's options) says, and the Service it describes.

The Airflow hook turns a Connection into this model; the core never sees Airflow. Fields for
Azure Storage are accepted now so connections can be written once, and give a clear error
until that backend exists (issue 5), rather than being silently ignored. With ``hosts``, the
nodes are SSH machines; the local storage folders must then be visible on every node at the
same path (an NFS mount, or the network-namespace hosts of the tests).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_batchai.clusterkeys import DEFAULT_AUTHORIZED_KEYS
from airflow_batchai.errors import BatchAIError
from airflow_batchai.layout import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from airflow_batchai.nodes.ssh import DEFAULT_ROOT, HostSpec, SSHAuth, SSHNodePool
from airflow_batchai.service import Service, Settings

SECRET_FIELDS = ("ssh_private_key", "ssh_key_passphrase", "storage_account_key", "storage_sas_token", "storage_connection_string")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: str | None = Field(default=None, description="embedded default's folder; default $BATCHAI_HOME or ~/.batchai")
    local_nodes: int | None = Field(default=None, ge=1, le=64, description="size of the local node pool")
    hosts: list[str | dict[str, Any]] = Field(
        default_factory=list, description="SSH node pool: [user@]host[:port] or {host, port, user, key_file, gpus, labels, root}"
    )
    ssh_user: str | None = None
    ssh_private_key: str | None = None
    ssh_key_file: str | None = None
    ssh_key_passphrase: str | None = None
    known_hosts: str | None = Field(default=None, description="known_hosts file used to verify host keys (default ~/.ssh/known_hosts)")
    host_key_fingerprints: dict[str, str] = Field(default_factory=dict, description='pinned keys: {"host[:port]": "SHA256:..."}')
    insecure_accept_unknown_host_keys: bool = False
    node_root: str = Field(default=DEFAULT_ROOT, description="folder on each SSH node under which everything of ours lives")
    node_python: str = Field(default="python3", description="python (>= 3.8) on the SSH nodes")
    cluster_ssh_keys: bool = Field(
        default=True, description="give each cluster a key pair so its SSH nodes log in to each other, as mpirun needs"
    )
    authorized_keys_file: str = Field(
        default=DEFAULT_AUTHORIZED_KEYS, description="where on the nodes the cluster's public key is added (and removed again)"
    )
    shared_folder_root: str | None = Field(
        default=None, description="a folder every SSH node sees at the same path (NFS), for file rendezvous"
    )
    storage_account: str | None = None
    storage_account_key: str | None = None
    storage_sas_token: str | None = None
    storage_connection_string: str | None = None
    control_container: str | None = None
    subscription_id: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP

    def secrets(self) -> list[str]:
        return [value for name in SECRET_FIELDS if (value := getattr(self, name))]

    def describe(self) -> str:
        nodes = f"{len(self.hosts)} SSH host(s)" if self.hosts else f"{self.local_nodes or 'default number of'} local node(s)"
        return f"{nodes}, home {self.home or os.environ.get('BATCHAI_HOME') or '~/.batchai'}"


def ssh_pool(config: ProviderConfig) -> SSHNodePool:
    """The connection's hosts as an SSH pool; host keys verified unless explicitly told otherwise."""
    known_hosts = config.known_hosts or str(Path.home() / ".ssh" / "known_hosts")
    auth = SSHAuth(
        user=config.ssh_user or getpass.getuser(),
        private_key=config.ssh_private_key,
        key_file=config.ssh_key_file,
        passphrase=config.ssh_key_passphrase,
        known_hosts=known_hosts if Path(known_hosts).exists() else None,
        pinned_fingerprints=config.host_key_fingerprints,
        insecure_accept_unknown_host_keys=config.insecure_accept_unknown_host_keys,
    )
    hosts = [HostSpec.parse(h) for h in config.hosts]
    return SSHNodePool(
        hosts,
        auth,
        root=config.node_root,
        python=config.node_python,
        shared_folder_root=config.shared_folder_root,
        cluster_ssh=config.cluster_ssh_keys,
        authorized_keys=config.authorized_keys_file,
    )


def service_from_config(config: ProviderConfig) -> Service:
    if config.storage_account or config.storage_connection_string or config.control_container:
        raise BatchAIError(
            "NotSupported",
            "Azure Storage is not available in this version; remove the storage fields to use the local storage folders",
            "storage_account",
        )
    settings = Settings(subscription=config.subscription_id, resource_group=config.resource_group)
    return Service.embedded(config.home, config.local_nodes, settings, pool=ssh_pool(config) if config.hosts else None)


def parse_hosts(value: Any) -> list[str | dict[str, Any]]:
    """Hosts as a JSON list (strings or objects) or a comma/newline-separated string (the UI's text field)."""
    if not value:
        return []
    if isinstance(value, list):
        return [v if isinstance(v, dict) else str(v).strip() for v in value if isinstance(v, dict) or str(v).strip()]
    return [part.strip() for part in str(value).replace("\n", ",").split(",") if part.strip()]
