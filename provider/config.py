"""What a ``batchai`` connection (or the CLI's options) says, and the Service it describes.

The Airflow hook turns a Connection into this model; the core never sees Airflow. Without
storage fields everything lives under ``home`` (the embedded default). With them, records,
leases and sealed secrets live in a control container of that account, and job volumes are
its containers, staged on the nodes through per-job SAS (data/azure.py). With ``hosts``,
the nodes are SSH machines; with local storage folders, those must then be visible on every
node at the same path (an NFS mount, or the network-namespace hosts of the tests).
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .control.blob import BlobControlStore, BlobSecretVault
from .data.azure import AzureDataStore
from .data.credentials import StorageCredential
from .errors import BatchAIError, ErrorCode, shown
from .fieldchecks import check_fields
from .layout import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from .pools import NodePool
from .pools.arm import AzureVMSettings
from .pools.azurevms import AzureVMPool
from .pools.local import LocalNodePool
from .pools.slurm import SlurmPool, SlurmSettings
from .pools.ssh import SSHNodePool
from .prices import PriceSettings
from .scheduling.reconcile import Reconciler
from .scheduling.slurm import SlurmReconciler
from .service import DEFAULT_LOCAL_NODES, Service, Settings, default_home
from .spec.job import UtilizationPolicy
from .transport.clusterkeys import DEFAULT_AUTHORIZED_KEYS
from .transport.ssh import DEFAULT_ROOT, HostSpec, SSHAuth, SSHTransport

SECRET_FIELDS = (
    "ssh_private_key",
    "ssh_key_passphrase",
    "storage_account_key",
    "storage_sas_token",
    "storage_connection_string",
    "vault_key",
)


class ProviderConfig(BaseModel):
    """strict: ``"false"`` is not False and ``"2"`` is not 2; a connection says what it means."""

    model_config = ConfigDict(extra="forbid", strict=True)

    home: str | None = Field(default=None, description="embedded default's folder; default $BATCHAI_HOME or ~/.batchai")
    local_nodes: int | None = Field(default=None, ge=1, le=64, description="size of the local node pool")
    hosts: list[str | dict[str, Any]] = Field(
        default_factory=list, description="SSH node pool: [user@]host[:port] or {host, port, user, key_file, gpus, labels, root}"
    )
    slurm: SlurmSettings | None = Field(
        default=None, description='run jobs on a Slurm partition: {"partition", "login", "account", "qos", "sbatch_args"}'
    )
    azure_vms: AzureVMSettings | None = Field(
        default=None,
        description='nodes are Azure VMs started on demand, a scale set\'s or named: {"subscription_id", "resource_group", "scale_set" or "vms", "max_nodes", ...}',
    )
    prices: PriceSettings | None = Field(
        default=None,
        description='what a node-hour costs and daily budgets: {"node_hour", "vm_sizes", "currency", "spot_factor", "daily_budgets"}',
    )
    utilization_policy: UtilizationPolicy | None = Field(
        default=None,
        description='the idle-GPU watchdog for jobs that set no utilizationPolicy: {"min_gpu_utilization": 5, "time_window": "PT30M"}',
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
    storage_blob_endpoint: str | None = Field(default=None, description="blob endpoint when not <account>.blob.core.windows.net")
    storage_file_endpoint: str | None = Field(default=None, description="Files endpoint when not <account>.file.core.windows.net")
    control_container: str = Field(default="batchai-control", description="container holding records, leases and sealed secrets")
    vault_key: str | None = Field(default=None, description="seals queued jobs' secrets; default derived from the storage credential")
    volume_mode: Literal["auto", "stage"] = Field(
        default="auto", description="auto: mount read-only blob volumes with blobfuse2/rclone where nodes have them; stage: always download"
    )
    files_on_blob: bool = Field(default=False, description="serve azureFileShares from blob containers of the same name (Azurite)")
    azure_files_mount: Literal["stage", "cifs"] = Field(
        default="stage",
        description="cifs: mount shares a job only reads over SMB where nodes can (puts the account key on them); stage: SAS only",
    )
    subscription_id: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    job_user: str | None = Field(
        default=None, description="Unix user the jobs run as on the nodes (the agent must run as root there); default the agent's"
    )
    job_env_allow: list[str] = Field(
        default_factory=list,
        description="variables of a node's environment jobs may see besides PATH, HOME, locale, CUDA ('NAME' or 'PREFIX*')",
    )
    local_jobs_from_shared_surfaces: bool = Field(
        default=False, description="let REST API jobs run on local nodes as this service's own user (one trusted team only)"
    )

    def secrets(self) -> list[str]:
        found = [value for name in SECRET_FIELDS if (value := getattr(self, name))]
        return found + (self.azure_vms.secrets() if self.azure_vms else [])

    def describe(self) -> str:
        nodes = f"{len(self.hosts)} SSH host(s)" if self.hosts else f"{self.local_nodes or 'default number of'} local node(s)"
        if self.slurm is not None:
            nodes = f"Slurm partition {self.slurm.partition}" + (f" via {self.slurm.login}" if self.slurm.login else "")
        if self.azure_vms is not None:
            vms = self.azure_vms
            where = f"scale set {vms.scale_set}" if vms.scale_set else f"VMs {', '.join(vms.vms or [])}"
            nodes = f"up to {vms.max_nodes} of {where}"
        credential = storage_credential(self)
        if credential is not None:
            return f"{nodes}, Azure Storage account {credential.account}, control container {self.control_container}"
        return f"{nodes}, home {self.home or os.environ.get('BATCHAI_HOME') or '~/.batchai'}"


def ssh_auth(config: ProviderConfig) -> SSHAuth:
    """How we log in to hosts: the connection's user and key; host keys verified unless explicitly told otherwise."""
    known_hosts = config.known_hosts or str(Path.home() / ".ssh" / "known_hosts")
    return SSHAuth(
        user=config.ssh_user or getpass.getuser(),
        private_key=config.ssh_private_key,
        key_file=config.ssh_key_file,
        passphrase=config.ssh_key_passphrase,
        known_hosts=known_hosts if Path(known_hosts).exists() else None,
        pinned_fingerprints=config.host_key_fingerprints,
        insecure_accept_unknown_host_keys=config.insecure_accept_unknown_host_keys,
    )


def ssh_pool(config: ProviderConfig) -> SSHNodePool:
    """The connection's hosts as an SSH pool."""
    hosts = [HostSpec.parse(h) for h in config.hosts]
    return SSHNodePool(
        hosts,
        ssh_auth(config),
        root=config.node_root,
        python=config.node_python,
        shared_folder_root=config.shared_folder_root,
        cluster_ssh=config.cluster_ssh_keys,
        authorized_keys=config.authorized_keys_file,
    )


STORAGE_DETAIL_FIELDS = ("storage_account_key", "storage_sas_token", "storage_blob_endpoint", "storage_file_endpoint")


def storage_credential(config: ProviderConfig) -> StorageCredential | None:
    if not (config.storage_account or config.storage_connection_string):
        orphans = [name for name in STORAGE_DETAIL_FIELDS if getattr(config, name)]
        if orphans or config.azure_files_mount != "stage":
            raise BatchAIError(
                ErrorCode.INVALID_STORAGE_CREDENTIAL,
                f"{', '.join(orphans) or 'azure_files_mount'} need storage_account or storage_connection_string",
                "storage_account",
            )
        return None
    return StorageCredential.parse(
        account=config.storage_account,
        account_key=config.storage_account_key,
        sas_token=config.storage_sas_token,
        connection_string=config.storage_connection_string,
        blob_endpoint=config.storage_blob_endpoint,
        file_endpoint=config.storage_file_endpoint,
    )


def slurm_pool(config: ProviderConfig) -> SlurmPool:
    """The connection's partition; its commands over SSH to ``login`` (host keys verified as for nodes), else run here."""
    assert config.slurm is not None
    if config.hosts:
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, "a connection names hosts or a Slurm partition, not both", "slurm")
    transport = None
    if config.slurm.login:
        spec = HostSpec.parse(config.slurm.login, "slurm.login")
        transport = SSHTransport(spec, ssh_auth(config), config.node_python)
    return SlurmPool(config.slurm, transport, root=config.node_root, python=config.node_python)


@dataclass(frozen=True)
class Backends:
    """The two roles a connection chooses: where a pool's nodes come from, and who places jobs on them."""

    pool: NodePool | None  # None: the local nodes under the service's home
    scheduler: type[Reconciler]


def azure_vm_pool(config: ProviderConfig) -> AzureVMPool:
    """The connection's VM scale set or named VMs, logged in to with the connection's SSH user and key."""
    assert config.azure_vms is not None
    if config.hosts or config.slurm is not None:
        raise BatchAIError(
            ErrorCode.INVALID_CONNECTION, "a connection names hosts, a Slurm partition or azure_vms: one of them", "azure_vms"
        )
    return AzureVMPool(
        config.azure_vms, ssh_auth(config), root=config.node_root, python=config.node_python, authorized_keys=config.authorized_keys_file
    )


def backends(config: ProviderConfig) -> Backends:
    """The composition root: the one place that asks which kind of pool and scheduler a connection
    describes. Everything else talks to the NodePool protocol and the Reconciler it is given."""
    if config.azure_vms is not None:
        return Backends(azure_vm_pool(config), Reconciler)
    if config.slurm is not None:
        return Backends(slurm_pool(config), SlurmReconciler)
    return Backends(ssh_pool(config) if config.hosts else None, Reconciler)


def node_pool(config: ProviderConfig) -> NodePool | None:
    """Slurm's partition, the SSH hosts, or None for the local nodes."""
    return backends(config).pool


def service_from_config(config: ProviderConfig, kind: str = "reader") -> Service:
    """Embedded default without storage fields; with them, records, secrets and volumes live in Azure Storage."""
    settings = Settings(
        subscription=config.subscription_id,
        resource_group=config.resource_group,
        job_env_allow=tuple(config.job_env_allow),
        job_user=config.job_user,
        local_jobs_from_shared_surfaces=config.local_jobs_from_shared_surfaces,
        prices=config.prices,
        utilization_policy=config.utilization_policy.to_json() if config.utilization_policy else None,
    )
    credential = storage_credential(config)
    chosen = backends(config)
    if credential is None:
        return Service.embedded(config.home, config.local_nodes, settings, pool=chosen.pool, kind=kind, scheduler=chosen.scheduler)
    settings.default_storage_account = credential.account
    if not (config.vault_key or credential.secrets):
        raise BatchAIError(
            ErrorCode.INVALID_STORAGE_CREDENTIAL, "with Entra ID sign-in, set vault_key: it seals the secrets of queued jobs", "vault_key"
        )
    data = AzureDataStore(credential, config.files_on_blob, config.volume_mode, config.azure_files_mount)  # checks before any request
    store = BlobControlStore(credential, config.control_container)
    vault = BlobSecretVault(store, config.vault_key or "|".join([credential.account, *credential.secrets]))
    home = Path(config.home) if config.home else default_home()
    pool = chosen.pool or LocalNodePool(home, config.local_nodes or DEFAULT_LOCAL_NODES, env_allow=settings.job_env_allow)
    return Service(store, vault, pool, data, settings, kind, chosen.scheduler)


def connection_config(extras: Any, source: str, from_airflow: bool = False) -> ProviderConfig:
    """A connection's extras (or Airflow's whole connection JSON) as the model; errors name ``source`` and the field.

    The one parser of connections: the Airflow hook, the CLI's ``--connection`` and the
    controller all come through here. ``null`` means "not set". In extras written by hand an
    empty text is refused, as an empty ``home`` or ``storage_connection_string`` would
    otherwise silently mean the embedded default; in a connection Airflow made
    (``from_airflow``, or JSON with a ``conn_type``) it is a form field left empty, so unset.
    """
    if isinstance(extras, dict) and "conn_type" in extras:  # an Airflow connection as JSON (AIRFLOW_CONN_…): its extras
        from_airflow = True
        extras = extras.get("extra") or {}
        if isinstance(extras, str):
            try:
                extras = json.loads(extras)
            except (ValueError, RecursionError):
                raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: its extra is not JSON", source) from None
    if not isinstance(extras, dict):
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source} must be a JSON object of the connection's extras", source)
    fields = {key: value for key, value in extras.items() if value is not None and not (from_airflow and value == "")}
    for key, value in fields.items():
        if isinstance(value, str) and not value.strip():
            raise BatchAIError(
                ErrorCode.INVALID_CONNECTION, f"{source}: field {shown(key)} is empty; leave it out for the default", str(key)
            )
    if "hosts" in fields:
        fields["hosts"] = parse_hosts(fields["hosts"], source)
    if isinstance(fields.get("job_env_allow"), str):  # the form's multi-line text
        fields["job_env_allow"] = [part.strip() for part in fields["job_env_allow"].replace(",", "\n").splitlines() if part.strip()]
    if isinstance(fields.get("slurm"), str):  # the UI's text field, or Airflow's URI form
        fields["slurm"] = parse_slurm(fields["slurm"], source)
    try:  # Airflow's URI form carries every extra as text ("4", "true"): read those as Airflow would
        config = ProviderConfig.model_validate(fields, strict=False if from_airflow else None)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])[:80]
        message = first["msg"] if first["type"] != "extra_forbidden" else "unknown field"
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: field {field}: {message[:160]}", field) from None
    try:
        check_fields(config)
    except BatchAIError as error:
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: field {error.message}", error.target) from None
    return config


def parse_connection_text(raw: str, source: str) -> ProviderConfig:
    """``--connection`` / ``$BATCHAI_CONNECTION``: JSON text, or the path of a file holding it."""
    text = raw
    if not raw.lstrip().startswith(("{", "[")):
        try:
            text = Path(raw).read_bytes().decode("utf-8-sig")
        except OSError as error:  # the text is not shown: it may be a connection string with its key
            raise BatchAIError(
                ErrorCode.INVALID_CONNECTION, f"{source} is neither JSON text nor the name of a file it can read ({error.strerror})", source
            ) from None
        except UnicodeDecodeError:
            raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: the file it names is not UTF-8 text", source) from None
    try:
        extras = json.loads(text)
    except json.JSONDecodeError as error:
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source} is not JSON: {error.msg} at line {error.lineno}", source) from None
    except (ValueError, RecursionError):
        raise BatchAIError(
            ErrorCode.INVALID_CONNECTION, f"{source} is not JSON this parser can read (too deep or too large)", source
        ) from None
    return connection_config(extras, source)


def parse_slurm(text: str, source: str = "connection") -> Any:
    """The form's Slurm text: a JSON object (``{"partition": "gpu", "login": …}``), or just the partition's name."""
    if not text.lstrip().startswith("{"):
        return {"partition": text.strip()}
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BatchAIError(
            ErrorCode.INVALID_CONNECTION, f"{source}: field slurm: text starting with '{{' must be a JSON object", "slurm"
        ) from None


def parse_hosts(value: Any, source: str = "connection") -> list[str | dict[str, Any]]:
    """Hosts as a JSON list (texts or objects) or the UI's text: one host per line (or several, comma-separated),
    where a line starting with ``{`` is one host as a JSON object.

    Each host is checked now, so a malformed one is refused before any name is looked up.
    """
    if isinstance(value, str) and value.lstrip().startswith("["):  # a JSON list pasted into the text field
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BatchAIError(
                ErrorCode.INVALID_CONNECTION, f"{source}: field hosts: text starting with '[' must be a JSON list", "hosts"
            ) from None
    if isinstance(value, str):
        hosts: list[Any] = []
        for line in value.splitlines():
            if line.strip().startswith("{"):
                hosts.append(_host_object(line, len(hosts), source))
            else:
                hosts += [part.strip() for part in line.split(",") if part.strip()]
    elif isinstance(value, list):
        hosts = value
    else:
        raise BatchAIError(
            ErrorCode.INVALID_CONNECTION, f"{source}: field hosts: a list of hosts or a comma-separated text, not {shown(value)}", "hosts"
        )
    if not hosts:
        raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: field hosts is empty; leave it out for local nodes", "hosts")
    for index, host in enumerate(hosts):
        try:
            HostSpec.parse(host.strip() if isinstance(host, str) else host, f"hosts[{index}]")
        except BatchAIError as error:
            raise BatchAIError(ErrorCode.INVALID_CONNECTION, f"{source}: field {error.message}", error.target) from None
    return [host.strip() if isinstance(host, str) else host for host in hosts]


def _host_object(line: str, index: int, source: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise BatchAIError(
            ErrorCode.INVALID_CONNECTION,
            f"{source}: field hosts[{index}]: a line starting with '{{' must be one JSON object",
            f"hosts[{index}]",
        ) from None
