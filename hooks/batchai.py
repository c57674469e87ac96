"""BatchAIHook: an Airflow connection of type ``batchai`` → the provider's Service.

No connection named ``batchai_conn_id`` means the embedded default (local store, local
storage folders and local nodes under ``$BATCHAI_HOME``), so example DAGs run with no setup.
Secret fields are masked in task logs as soon as they are read.

One process keeps one Service per connection (as long as the connection stays the same): a
triggerer's 1,000 waits then share its store client, SSH connections, caches and job poller.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from airflow_batchai.config import ProviderConfig, connection_config, service_from_config
from airflow_batchai.control.local import LocalControlStore
from airflow_batchai.errors import BatchAIError
from airflow_batchai.hooks.connection_test import tested_connection_id
from airflow_batchai.service import Service

_SHARED: dict[tuple[str, str], Service] = {}
SETTLE_S = 60.0  # at most this long for a task's background passes (an urgent one waits 2 s for the lease)
F = TypeVar("F", bound=Callable[..., Any])


def settles(method: F) -> F:
    """For an operator's or sensor's ``execute``: whatever it returns or raises (a deferral, a reschedule
    included), the passes its reads and submits started in the background finish first (``settle``)."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self.hook.settle()

    return cast(F, run)


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
        return self._read_config(f"connection {self.batchai_conn_id}")

    def _read_config(self, source: str) -> ProviderConfig:
        """The connection's extras as the model (errors name ``source``), its secrets masked at once."""
        try:
            connection = self.get_connection(self.batchai_conn_id)
        except AirflowNotFoundException:
            self.log.info("no connection %r: using the embedded default", self.batchai_conn_id)
            return ProviderConfig()
        config = connection_config(connection.extra_dejson, source, from_airflow=True)
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

    def settle(self, timeout_s: float = SETTLE_S) -> None:
        """Let the passes this process started in the background finish before its task ends: Airflow
        ends a task's process with os._exit, which would cut a pass short mid-way (a job it was launching
        then waits out ``launch_timeout_s`` before it is started again)."""
        if "service" in self.__dict__:  # no Service made, no pass started
            self.service.passes.drain(timeout_s)

    @classmethod
    def shared_service(cls, batchai_conn_id: str = default_conn_name) -> Service:
        return cls(batchai_conn_id).service

    def test_connection(self) -> tuple[bool, str]:
        """Check the fields, the store and its folder, then every machine of the pool; the message names what failed.

        Writes nothing: it reads the store (a listing) and runs ``true`` on each host, so testing
        a connection whose hosts are unreachable leaves no record behind. It builds a Service of its
        own and closes it: the api-server tests each click under a new random id, and a shared
        Service kept per id would outlive the test.
        """
        name = tested_connection_id.get() or self.batchai_conn_id
        try:
            config = self._read_config(f"connection {name}")
            service = service_from_config(config)
        except BatchAIError as error:
            return False, f"{error.code}: {error.message}"
        try:
            return _check_service(service, config, name)
        finally:
            close = getattr(service.pool, "close", None)
            if close is not None:
                close()


def _check_service(service: Service, config: ProviderConfig, name: str) -> tuple[bool, str]:
    if isinstance(service.store, LocalControlStore) and (problem := _unwritable(service.store.root)):
        return False, f"InvalidConnection: connection {name}: field home (or $BATCHAI_HOME): {problem}"
    try:
        service.store.list("clusters/")
        machines = service.pool.inventory()
    except BatchAIError as error:
        return False, f"{error.code}: {error.message}"
    except Exception as error:
        return False, f"cannot open the Batch AI store of connection {name}: {type(error).__name__}: {error}"
    unreachable = []
    for node_id, address, *_ in machines:
        try:
            result = service.pool.transport(node_id).run(["true"], timeout_s=10)
            if result.returncode != 0:
                unreachable.append(f"{node_id} ({address}): exit {result.returncode}")
        except Exception as error:
            unreachable.append(f"{node_id} ({address}): {error}")
    if unreachable:
        return False, "unreachable nodes: " + "; ".join(unreachable)
    return True, f"Batch AI store reachable; {len(machines)} node(s) answer ({config.describe()})"


def _unwritable(folder: Path) -> str | None:
    """Why the embedded store could not write under ``folder`` (made with the first write), or None."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable" + ("" if existing == folder else f", so {folder} cannot be made")
    return None
