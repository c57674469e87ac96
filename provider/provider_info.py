"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point (no Airflow import here)."""

from __future__ import annotations

from typing import Any

VERSION = "0.1.0"


SECTIONS = ("Nodes", "SSH", "Storage", "Advanced")
HOST_OBJECT_EXAMPLE = '{"host": "gpu-3", "port": 2222, "user": "batchai", "gpus": 4, "labels": ["a100"]}'
HOSTS_HINT = (
    f"one host per line: gpu-1, user@gpu-2:2222, or a JSON object {HOST_OBJECT_EXAMPLE} "
    "(keys: host, port, user, key_file, gpus, labels, root, authorized_keys); several per line comma-separated, or a JSON list. "
    "Empty: local nodes"
)
SLURM_EXAMPLE = '{"partition": "gpu"}'


def _field(label: str, description: str, kind: str = "string", section: str = "Advanced", **schema: Any) -> dict[str, Any]:
    """A form field. No ``default`` in its schema: the form would save every default into the
    connection's extras; the default is said in the description (and the placeholder) instead,
    and applies whenever the field is left empty."""
    default = schema.pop("default", None)
    if default is not None:
        description = f"{description} (default {str(default).lower() if isinstance(default, bool) else default})"
    return {"label": label, "description": description, "schema": {"type": [kind, "null"], "section": section, **schema}}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-batchai",
        "name": "Azure Batch AI (self-hosted)",
        "description": "Run Azure Batch AI job and cluster specs on your own GPU nodes.",
        "versions": [VERSION],
        "integrations": [{"integration-name": "Azure Batch AI (self-hosted)", "tags": ["software"]}],
        "hooks": [{"integration-name": "Azure Batch AI (self-hosted)", "python-modules": ["airflow_batchai.hooks.batchai"]}],
        "operators": [{"integration-name": "Azure Batch AI (self-hosted)", "python-modules": ["airflow_batchai.operators.batchai"]}],
        "sensors": [{"integration-name": "Azure Batch AI (self-hosted)", "python-modules": ["airflow_batchai.sensors.batchai"]}],
        "triggers": [{"integration-name": "Azure Batch AI (self-hosted)", "python-modules": ["airflow_batchai.triggers.batchai"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_batchai.hooks.batchai.BatchAIHook",
                "hook-name": "Azure Batch AI (self-hosted)",
                "connection-type": "batchai",
                "conn-fields": {
                    "hosts": _field(
                        "Node pool hosts",
                        HOSTS_HINT,
                        format="multiline",
                        section="Nodes",
                    ),
                    "local_nodes": _field("Local nodes", "size of the embedded local node pool", "integer", default=2, section="Nodes"),
                    "home": _field("Home folder", "embedded default's folder (records, storage, nodes)", section="Nodes"),
                    "slurm": _field(
                        "Slurm partition",
                        'the partition\'s name (gpu), or JSON {"partition": "gpu", "login": "user@login-node", "account", "qos", '
                        '"sbatch_args": [...]}: jobs run as Slurm jobs there (node root must be a folder every node shares)',
                        section="Nodes",
                        examples=[SLURM_EXAMPLE, '{"partition": "gpu", "login": "user@login-node", "account": "ml"}'],
                    ),
                    "azure_vms": _field(
                        "Azure VMs",
                        '{"subscription_id", "resource_group", "scale_set" (or "vms": [names]), "max_nodes", "tenant_id", "client_id", '
                        '"client_secret"}: nodes are the scale set\'s instances or the named VMs, started when jobs queue and deallocated when idle',
                        "object",
                        section="Nodes",
                    ),
                    "prices": _field(
                        "Prices and budgets",
                        '{"node_hour": 1.5, "vm_sizes": {"Standard_NC6s_v3": 2.1}, "currency": "USD", "spot_factor": 0.3, '
                        '"daily_budgets": {"*": 200}}: what a node-hour costs (Azure list prices are shipped), and what a day may',
                        "object",
                        section="Nodes",
                    ),
                    "utilization_policy": _field(
                        "Idle-GPU watchdog",
                        '{"min_gpu_utilization": 5, "time_window": "PT30M"}: a job (that sets no utilizationPolicy) whose GPUs all '
                        "stay below this for the window fails GpuUnderutilized",
                        "object",
                        section="Nodes",
                    ),
                    "ssh_user": _field("SSH user", "user on the nodes", section="SSH"),
                    "ssh_private_key": _field("SSH private key", "PEM text of the key", format="password", section="SSH"),
                    "ssh_key_file": _field("SSH key file", "path of the key on the Airflow workers, instead of its text", section="SSH"),
                    "ssh_key_passphrase": _field("SSH key passphrase", "passphrase of the key", format="password", section="SSH"),
                    "known_hosts": _field(
                        "known_hosts file", "host keys to verify nodes against (default ~/.ssh/known_hosts)", section="SSH"
                    ),
                    "host_key_fingerprints": _field(
                        "Host key fingerprints", '{"host": "SHA256:..."} instead of known_hosts', "object", section="SSH"
                    ),
                    "insecure_accept_unknown_host_keys": _field(
                        "Accept unknown host keys",
                        "insecure: trust any node's key (warns on every connection)",
                        "boolean",
                        default=False,
                        section="SSH",
                    ),
                    "node_root": _field("Node root", "where our files live on the nodes", default="/var/lib/batchai", section="Nodes"),
                    "node_python": _field("Node Python", "python3 (>= 3.8) on the nodes", default="python3", section="Nodes"),
                    "cluster_ssh_keys": _field(
                        "Cluster SSH keys", "a key pair per cluster so mpirun reaches every node", "boolean", default=True, section="SSH"
                    ),
                    "authorized_keys_file": _field(
                        "authorized_keys file", "where nodes get the cluster's public key", default="~/.ssh/authorized_keys", section="SSH"
                    ),
                    "shared_folder_root": _field("Shared folder root", "a folder every node sees at the same path (NFS)", section="Nodes"),
                    "storage_account": _field("Storage account", "Azure Storage account name", section="Storage"),
                    "storage_account_key": _field(
                        "Storage account key",
                        "account key (nodes get SAS, never this, unless SMB mounts)",
                        format="password",
                        section="Storage",
                    ),
                    "storage_sas_token": _field("Storage SAS token", "account SAS", format="password", section="Storage"),
                    "storage_connection_string": _field(
                        "Storage connection string", "full connection string", format="password", section="Storage"
                    ),
                    "storage_blob_endpoint": _field("Blob endpoint", "when not https://<account>.blob.core.windows.net", section="Storage"),
                    "storage_file_endpoint": _field("File endpoint", "when not https://<account>.file.core.windows.net", section="Storage"),
                    "control_container": _field(
                        "Control container", "blob container holding cluster and job records", default="batchai-control", section="Storage"
                    ),
                    "vault_key": _field("Vault key", "seals queued jobs' secrets; required with Entra ID", format="password"),
                    "volume_mode": _field(
                        "Blob volumes",
                        "auto: mount what a job only reads where nodes can; stage: download",
                        enum=["auto", "stage"],
                        default="auto",
                        section="Storage",
                    ),
                    "azure_files_mount": _field(
                        "Azure Files",
                        "stage: over SAS; cifs: SMB mounts where nodes can (puts the account key on them)",
                        enum=["stage", "cifs"],
                        default="stage",
                        section="Storage",
                    ),
                    "files_on_blob": _field(
                        "Shares on blob",
                        "serve azureFileShares from blob containers (Azurite)",
                        "boolean",
                        default=False,
                        section="Storage",
                    ),
                    "job_user": _field(
                        "Job user", "Unix user jobs run as on the nodes (the agent must be root there); empty: the agent's", section="Nodes"
                    ),
                    "job_env_allow": _field(
                        "Job environment allow-list",
                        "node variables jobs may see besides PATH, HOME, locale, CUDA, proxies: NAME or PREFIX*, one per line",
                        format="multiline",
                        section="Advanced",
                    ),
                    "local_jobs_from_shared_surfaces": _field(
                        "REST API jobs on local nodes",
                        "let REST API jobs and setup tasks run on local nodes as this service's own user (one trusted team only)",
                        "boolean",
                        default=False,
                    ),
                    "subscription_id": _field("Subscription id", "label used in resource ids and output paths"),
                    "resource_group": _field("Resource group", "label used in resource ids and output paths"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port", "extra"],
                    "relabeling": {},
                    "placeholders": {
                        "hosts": "gpu-1\nuser@gpu-2:2222\n" + HOST_OBJECT_EXAMPLE,
                        "slurm": SLURM_EXAMPLE,
                        "home": "~/.batchai",
                        "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY----- ... (newlines may become spaces)",
                        "node_root": "/var/lib/batchai",
                        "node_python": "python3",
                        "control_container": "batchai-control",
                        "authorized_keys_file": "~/.ssh/authorized_keys",
                    },
                },
            }
        ],
        "extra-links": ["airflow_batchai.operators.batchai.BatchAIJobOutputLink"],
        "plugins": [
            {"name": "batchai", "plugin-class": "airflow_batchai.ui.plugin.BatchAIPlugin"},
            # the connection list's Test button for batchai connections (hooks/connection_test.py)
            {"name": "batchai_connection_test", "plugin-class": "airflow_batchai.hooks.connection_test.BatchAIConnectionTestPlugin"},
        ],
    }
