"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point (no Airflow import here)."""

from __future__ import annotations

from typing import Any

VERSION = "0.1.0"


def _field(label: str, description: str, kind: str = "string", **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": [kind, "null"], **schema}}


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
                    "hosts": _field("Node pool hosts", "host[:port] per line or comma-separated; empty = local nodes"),
                    "local_nodes": _field("Local nodes", "size of the embedded local node pool", "integer", default=2),
                    "home": _field("Home folder", "embedded default's folder (records, storage, nodes)"),
                    "ssh_user": _field("SSH user", "user on the nodes"),
                    "ssh_private_key": _field("SSH private key", "PEM text of the key", format="password"),
                    "ssh_key_passphrase": _field("SSH key passphrase", "passphrase of the key", format="password"),
                    "storage_account": _field("Storage account", "Azure Storage account name"),
                    "storage_account_key": _field("Storage account key", "account key (nodes get SAS, never this)", format="password"),
                    "storage_sas_token": _field("Storage SAS token", "account SAS", format="password"),
                    "storage_connection_string": _field("Storage connection string", "full connection string", format="password"),
                    "control_container": _field("Control container", "blob container holding cluster and job records"),
                    "subscription_id": _field("Subscription id", "label used in resource ids and output paths"),
                    "resource_group": _field("Resource group", "label used in resource ids and output paths"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "login", "password", "port", "extra"],
                    "relabeling": {},
                    "placeholders": {"hosts": "gpu-node-1:22, gpu-node-2:22", "home": "/var/lib/batchai"},
                },
            }
        ],
        "extra-links": ["airflow_batchai.operators.batchai.BatchAIJobOutputLink"],
    }
