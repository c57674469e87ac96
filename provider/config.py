"""What a ``batchai`` connection (or the CLI's options) says, and the Service it describes.

The Airflow hook turns a Connection into this model; the core never sees Airflow. Fields for
SSH node pools and Azure Storage are accepted now so connections can be written once, and give
a clear error until their backends exist (issues 4 and 5), rather than being silently ignored.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from airflow_batchai.errors import BatchAIError
from airflow_batchai.layout import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from airflow_batchai.service import Service, Settings

SECRET_FIELDS = ("ssh_private_key", "ssh_key_passphrase", "storage_account_key", "storage_sas_token", "storage_connection_string")


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: str | None = Field(default=None, description="embedded default's folder; default $BATCHAI_HOME or ~/.batchai")
    local_nodes: int | None = Field(default=None, ge=1, le=64, description="size of the local node pool")
    hosts: list[str] = Field(default_factory=list, description="SSH node pool: host[:port] entries")
    ssh_user: str | None = None
    ssh_private_key: str | None = None
    ssh_key_passphrase: str | None = None
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


def service_from_config(config: ProviderConfig) -> Service:
    if config.hosts:
        raise BatchAIError(
            "NotSupported", "SSH node pools (hosts) are not available in this version; remove 'hosts' to use local nodes", "hosts"
        )
    if config.storage_account or config.storage_connection_string or config.control_container:
        raise BatchAIError(
            "NotSupported",
            "Azure Storage is not available in this version; remove the storage fields to use the local storage folders",
            "storage_account",
        )
    settings = Settings(subscription=config.subscription_id, resource_group=config.resource_group)
    return Service.embedded(config.home, config.local_nodes, settings)


def parse_hosts(value: Any) -> list[str]:
    """Hosts as a JSON list or a comma/newline-separated string (the UI's text field)."""
    if not value:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).replace("\n", ",").split(",") if part.strip()]
