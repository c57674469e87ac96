"""BatchAIHook: an Airflow connection of type ``batchai`` → the provider's Service.

No connection named ``batchai_conn_id`` means the embedded default (local store, local
storage folders and local nodes under ``$BATCHAI_HOME``), so example DAGs run with no setup.
Secret fields are masked in task logs as soon as they are read.

One process keeps one Service per connection (as long as the connection stays the same): a
triggerer's 1,000 waits then share its store client, SSH connections, caches and job poller.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from airflow_batchai.config import ProviderConfig, connection_config, service_from_config
from airflow_batchai.errors import BatchAIError
from airflow_batchai.service import Service

_SHARED: dict[tuple[str, str], Service] = {}
_SHARED_LOCK = threading.Lock()


class BatchAIHook(BaseHook):
    conn_name_attr = "batchai_conn_id"
    default_conn_name = "batchai_default"
    conn_type = "batchai"
    hook_name = "Azure Batch AI (self-hosted)"

    def __init__(self, batchai_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batchai_conn_id = batchai_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["host", "schema", "login", "password", "port", "extra"], "relabeling": {}}

    @cached_property
    def config(self) -> ProviderConfig:
        try:
            connection = self.get_connection(self.batchai_conn_id)
        except AirflowNotFoundException:
            self.log.info("no connection %r: using the embedded default", self.batchai_conn_id)
            return ProviderConfig()
        config = connection_config(connection.extra_dejson, f"connection {self.batchai_conn_id}", from_airflow=True)
        for secret in config.secrets():
            mask_secret(secret)
        return config

    @cached_property
    def service(self) -> Service:
        """This process's Service for the connection, shared by every hook, operator and trigger of it."""
        config = self.config
        identity = (self.batchai_conn_id, config.model_dump_json() + "|" + os.environ.get("BATCHAI_HOME", ""))
        with _SHARED_LOCK:
            service = _SHARED.get(identity)
            if service is None:
                service = _SHARED[identity] = service_from_config(config)
                service.data.secret_sink = mask_secret  # SAS minted for nodes are masked too, should one ever be printed
        return service

    @classmethod
    def shared_service(cls, batchai_conn_id: str = default_conn_name) -> Service:
        return cls(batchai_conn_id).service

    def test_connection(self) -> tuple[bool, str]:
        """Check the store, then every node of the pool; the message names what failed."""
        try:
            service = self.service
            nodes = service.pool_nodes()
        except BatchAIError as error:
            return False, f"{error.code}: {error.message}"
        except Exception as error:
            return False, f"cannot open the Batch AI store: {error}"
        unreachable = []
        for node in nodes:
            try:
                result = service.pool.transport(node.node_id).run(["true"], timeout_s=10)
                if result.returncode != 0:
                    unreachable.append(f"{node.node_id} ({node.address}): exit {result.returncode}")
            except Exception as error:
                unreachable.append(f"{node.node_id} ({node.address}): {error}")
        if unreachable:
            return False, "unreachable nodes: " + "; ".join(unreachable)
        return True, f"Batch AI store reachable; {len(nodes)} node(s) answer ({self.config.describe()})"
