"""Where secrets sit in Batch AI job and cluster specs: the one list every part uses.

Records, views and XCom get specs without them (``without_secrets``); task logs mask them as
soon as a spec is rendered, before it is even parsed (``secret_values``, on the raw JSON); the
vault keeps them, by what they are for, until a node needs them (``split_job_secrets``,
``split_cluster_secrets``). A new secret field is added here once and every part knows it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import InvalidSpec
from .spec import ClusterSpec, JobSpec

Path = tuple[str, ...]  # JSON keys from the spec's top; "*" stands for every item of a list

JOB_SECRET_FIELDS: tuple[Path, ...] = (
    ("secrets", "*", "value"),
    ("mountVolumes", "azureFileShares", "*", "credentials", "accountKey"),
    ("mountVolumes", "azureBlobFileSystems", "*", "credentials", "accountKey"),
    ("containerSettings", "imageSourceRegistry", "credentials", "password"),
)
CLUSTER_SECRET_FIELDS: tuple[Path, ...] = (
    ("nodeSetup", "setupTask", "secrets", "*", "value"),
    ("nodeSetup", "mountVolumes", "azureFileShares", "*", "credentials", "accountKey"),
    ("nodeSetup", "mountVolumes", "azureBlobFileSystems", "*", "credentials", "accountKey"),
    ("userAccountSettings", "adminUserPassword"),
    ("nodeSetup", "performanceCountersSettings", "appInsightsReference", "instrumentationKey"),
)


def _walk(node: Any, path: Path) -> list[tuple[dict[str, Any], str]]:
    """(parent, key) of every leaf the path reaches in ``node``."""
    if not path:
        return []
    head, rest = path[0], path[1:]
    if head == "*":
        return [found for item in node for found in _walk(item, rest)] if isinstance(node, list) else []
    if not isinstance(node, dict) or head not in node:
        return []
    return [(node, head)] if not rest else _walk(node[head], rest)


def _document(spec: Any) -> Any:
    """A spec as JSON: a model, a dict (with or without the job.json ``properties`` wrapper), or JSON text."""
    if isinstance(spec, (JobSpec, ClusterSpec)):
        return spec.to_json()
    if isinstance(spec, RenderedSpec):
        spec = spec.document
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return {}
    return spec.get("properties", spec) if isinstance(spec, dict) else {}


def _is_secret(value: Any) -> bool:
    return bool(value) and isinstance(value, (str, int, float)) and not (isinstance(value, str) and value.startswith("<"))


def masked(document: dict[str, Any], fields: tuple[Path, ...], replacement: str = "***") -> dict[str, Any]:
    """A copy with every secret value replaced (placeholders such as ``<AZURE_BATCHAI_STORAGE_KEY>`` kept)."""
    shown = copy.deepcopy(document)
    inner = shown.get("properties", shown) if isinstance(shown.get("properties"), dict) else shown
    for path in fields:
        for parent, key in _walk(inner, path):
            if _is_secret(parent[key]):
                parent[key] = replacement
    return shown


class RenderedSpec(Mapping[str, Any]):
    """A rendered spec (dict) that serializes without its secrets, however deep they sit.

    Airflow stores a task's rendered fields through each value's ``serialize()`` and then
    redacts known secrets, but its redaction stops 5 levels down, and a cluster's mount keys
    sit 6 deep (``nodeSetup.mountVolumes.azureBlobFileSystems[0].credentials.accountKey``).
    Reading it as a mapping gives the real spec, for the operator to submit.
    """

    def __init__(self, document: dict[str, Any], fields: tuple[Path, ...]) -> None:
        self.document = document
        self.fields = fields

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.document)

    def __len__(self) -> int:
        return len(self.document)

    def serialize(self) -> dict[str, Any]:
        return masked(self.document, self.fields)

    def __repr__(self) -> str:
        return f"RenderedSpec({json.dumps(self.serialize(), sort_keys=True)})"


def secret_values(spec: Any, fields: tuple[Path, ...]) -> list[str]:
    """Every secret value the spec holds (placeholders such as ``<AZURE_BATCHAI_STORAGE_KEY>`` are not secrets yet)."""
    found = []
    for path in fields:
        for parent, key in _walk(_document(spec), path):
            if _is_secret(parent[key]):
                found.append(str(parent[key]))
    return found


def without_secrets(document: dict[str, Any], fields: tuple[Path, ...]) -> dict[str, Any]:
    """A copy to store and show: secret entries keep their names, credentials are left empty."""
    stored = copy.deepcopy(document)
    for path in fields:
        for parent, key in _walk(stored, path):
            del parent[key]
    return stored


def _values(entries: list[Any] | None, where: str) -> dict[str, str]:
    values = {}
    for index, entry in enumerate(entries or []):
        if entry.value_secret_reference is not None:
            raise InvalidSpec(
                f"{where}[{index}].valueSecretReference: Key Vault references are not supported; give the value", f"{where}[{index}]"
            )
        if entry.value is None:
            raise InvalidSpec(f"{where}[{index}]: a secret needs a value", f"{where}[{index}]")
        values[entry.name] = entry.value
    return values


def storage_keys(volumes: Any) -> dict[str, str]:
    """Account keys given in a spec's mounts, by account."""
    keys = {}
    for mount in [*(getattr(volumes, "azure_file_shares", None) or []), *(getattr(volumes, "azure_blob_file_systems", None) or [])]:
        if mount.credentials and mount.credentials.account_key:
            keys[mount.account_name] = mount.credentials.account_key
    return keys


def split_job_secrets(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(storable spec JSON without secrets, the secrets for the vault) for a job."""
    secrets: dict[str, Any] = {"env": _values(spec.secrets, "secrets"), "storage_keys": storage_keys(spec.mount_volumes)}
    registry = spec.container_settings.image_source_registry.credentials if spec.container_settings else None
    if registry and registry.password:
        secrets["registry_password"] = registry.password
    return without_secrets(spec.to_json(), JOB_SECRET_FIELDS), secrets


def split_cluster_secrets(spec: ClusterSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(storable spec JSON without secrets, the secrets for the vault) for a cluster."""
    setup = spec.node_setup.setup_task if spec.node_setup else None
    secrets: dict[str, Any] = {
        "env": _values(setup.secrets if setup else None, "nodeSetup.setupTask.secrets"),
        "storage_keys": storage_keys(spec.node_setup.mount_volumes if spec.node_setup else None),
    }
    if spec.user_account_settings and spec.user_account_settings.admin_user_password:
        secrets["admin_password"] = spec.user_account_settings.admin_user_password
    return without_secrets(spec.to_json(), CLUSTER_SECRET_FIELDS), secrets
