"""Loading specs the way the az CLI did: JSON checks, error paths, storage placeholders, names."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)
from pydantic.alias_generators import to_camel

from ..errors import InvalidSpec, shown
from .cluster import ClusterSpec
from .common import (
    _PLACEHOLDER,
    _URL_ACCOUNT_PLACEHOLDER,
    MAX_COMMAND_BYTES,
    MAX_NESTING,
    MAX_PATH_BYTES,
    MAX_SPEC_BYTES,
    NAME_PATTERN,
    PATH_KEYS,
    STORAGE_KEY_PLACEHOLDER,
)
from .job import JobSpec

# --- loading ---------------------------------------------------------------------------


def _parse_json(source: str | bytes | Path | Mapping[str, Any], what: str) -> tuple[dict[str, Any], str]:
    """Return the document and the name to show in errors; refuse what is not UTF-8 JSON of sane size and depth."""
    if isinstance(source, Mapping):
        try:
            return json.loads(json.dumps(dict(source))), what  # a Mapping such as secretfields.RenderedSpec too
        except RecursionError:
            raise InvalidSpec(f"{what} is nested more than {MAX_NESTING} levels deep", what) from None
        except (TypeError, ValueError) as error:
            raise InvalidSpec(f"{what} is not JSON data: {shown(str(error))}", what) from None
    origin = what
    looks_like_text = isinstance(source, str) and (source.lstrip()[:1] in ("{", "[") or "\n" in source)
    if isinstance(source, Path) or (isinstance(source, str) and not looks_like_text):
        path = Path(source)
        origin = str(path) if len(str(path)) <= 64 else "…" + str(path)[-63:]  # the file name is the part that tells
        try:
            if path.stat().st_size > MAX_SPEC_BYTES:
                raise InvalidSpec(f"{origin} is larger than {MAX_SPEC_BYTES // 2**20} MiB", origin)
            data = path.read_bytes()
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidSpec(f"cannot read {origin}: {reason}", origin) from None
        text = _decode(data, origin)
    elif isinstance(source, bytes):
        text = _decode(source, origin)
    else:
        text = source
    if len(text) > MAX_SPEC_BYTES:
        raise InvalidSpec(f"{origin} is larger than {MAX_SPEC_BYTES // 2**20} MiB", origin)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", origin) from None
    except RecursionError:
        raise InvalidSpec(f"{origin} is nested more than {MAX_NESTING} levels deep", origin) from None
    except ValueError:  # the one left: an integer of more than 4,300 digits
        raise InvalidSpec(f"{origin} is not valid JSON: it holds a number of more than 4300 digits", origin) from None
    if not isinstance(document, dict):
        raise InvalidSpec(f"{origin} must hold a JSON object, not {type(document).__name__}", origin)
    return document, origin


def _decode(data: bytes, origin: str) -> str:
    """UTF-8, with or without a BOM, as az read job files; anything else is named, not guessed."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InvalidSpec(f"{origin} is UTF-16 text; save it as UTF-8", origin)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidSpec(f"{origin} is not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}", origin) from None


def _path_text(path: str) -> str:
    """A JSON path as messages show it: at most 120 characters, keeping the end (the field)."""
    path = path.rstrip(".") or "(root)"
    return path if len(path) <= 120 else "…" + path[-119:]


def _key_label(name: Any) -> str:
    """A key as a path part: as it is when it looks like a field name, else quoted and cut."""
    text = str(name)
    return text if re.fullmatch(r"[\w$@-]{1,40}", text) else shown(text, 40)


def _check_document(document: dict[str, Any], prefix: str, origin: str) -> None:
    """One pass over the raw document before the models see it: depth, text sizes, text the kernel cannot take.

    Doing this up front keeps the models' recursion bounded and lets every message name the
    JSON path, whatever field the oversized value sits in.
    """
    stack: list[tuple[Any, str, str, int]] = [(document, prefix, "", 1)]
    while stack:
        value, path, key, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_NESTING:
            raise InvalidSpec(f"{origin}: {_path_text(path)}: nested more than {MAX_NESTING} levels deep", _path_text(path))
        if isinstance(value, dict):
            for name, item in value.items():
                label = _key_label(name)
                stack.append((item, f"{path}.{label}" if path and not path.endswith(".") else f"{path}{label}", name, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", key, depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, path, key, origin)


def _check_text(value: str, path: str, key: str, origin: str) -> None:
    path = _path_text(path)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidSpec(f"{origin}: {path}: not valid Unicode text (a lone surrogate)", path) from None
    is_path = key in PATH_KEYS or key.endswith(("Path", "PathPrefix", "PathSuffix"))
    limit = MAX_PATH_BYTES if is_path else MAX_COMMAND_BYTES
    if size > limit:
        kind = "a path" if is_path else "a value"
        raise InvalidSpec(f"{origin}: {path}: {size} bytes is too long for {kind} (at most {limit}): {shown(value, 40)}", path)
    if "\x00" in value:
        raise InvalidSpec(f"{origin}: {path}: contains a NUL character, which no path, command or variable can hold", path)


def _unwrap(document: dict[str, Any], origin: str) -> tuple[dict[str, Any], str]:
    """Drop ``$schema`` and the ``properties`` wrapper; 2018-03-01's top-level ``location``/``tags`` move inside."""
    document = {k: v for k, v in document.items() if k != "$schema"}
    if "properties" in document:
        extra = set(document) - {"properties", "location", "tags", "name", "type", "id"}
        if extra:
            shown_extra = ", ".join(shown(name) for name in sorted(extra)[:3])
            raise InvalidSpec(f"{origin}: unknown top-level field(s) {shown_extra} next to 'properties'", sorted(extra)[0][:80])
        if not isinstance(document["properties"], dict):
            raise InvalidSpec(f"{origin}: properties: must be a JSON object", "properties")
        properties = dict(document["properties"])
        for name in ("location", "tags"):
            if name in document:
                properties.setdefault(name, document[name])
        return properties, "properties."
    return document, ""


def _validation_error(exc: ValidationError, prefix: str, origin: str) -> InvalidSpec:
    first = exc.errors()[0]
    parts = [f"[{part}]" if isinstance(part, int) else f".{_key_label(part)}" for part in first["loc"]]
    path = prefix + "".join(parts).lstrip(".")
    path = _path_text(path.rstrip(".") or prefix.rstrip("."))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    if len(message) > 200:
        message = message[:195] + "…"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return InvalidSpec(f"{origin}: {path}: {message}{more}", path)


def _fill_storage_placeholders(mounts: Any, account: str | None, key: str | None, path: str) -> None:
    """What the az CLI's ``_patch_mount_volumes`` did: fill account/key placeholders, derive accountName."""
    if not isinstance(mounts, dict):
        return
    for kind in ("azureFileShares", "azureBlobFileSystems"):
        group = mounts.get(kind)
        for index, mount in enumerate(group if isinstance(group, list) else []):  # a wrong type is the model's to name
            if not isinstance(mount, dict):
                continue
            where = f"{path}.{kind}[{index}]"
            url = mount.get("azureFileUrl")
            if isinstance(url, str) and account:
                mount["azureFileUrl"] = _URL_ACCOUNT_PLACEHOLDER.sub(lambda m: m.group(1) + account + m.group(3), url)
            if kind == "azureFileShares" and not mount.get("accountName") and isinstance(mount.get("azureFileUrl"), str):
                host = re.match(r"^\w+://([^./]+|<[^<>]+>)\.file\.", mount["azureFileUrl"])
                if not host:
                    raise InvalidSpec(
                        f"{where}.azureFileUrl: cannot derive accountName from {shown(mount['azureFileUrl'])}", f"{where}.azureFileUrl"
                    )
                mount["accountName"] = host.group(1)
            name = mount.get("accountName")
            if isinstance(name, str) and account and _PLACEHOLDER.fullmatch(name):
                mount["accountName"] = account
            credentials = mount.get("credentials")
            if isinstance(credentials, dict) and credentials.get("accountKey") == STORAGE_KEY_PLACEHOLDER:
                if key:
                    credentials["accountKey"] = key
                else:
                    credentials.pop("accountKey")


def unfilled_placeholders(spec: JobSpec | ClusterSpec) -> list[str]:
    """JSON paths of storage account names still holding a ``<...>`` placeholder."""
    volumes = spec.mount_volumes if isinstance(spec, JobSpec) else (spec.node_setup.mount_volumes if spec.node_setup else None)
    found = []
    for kind in ("azure_file_shares", "azure_blob_file_systems"):
        for index, mount in enumerate(getattr(volumes, kind, None) or []):
            if _PLACEHOLDER.search(mount.account_name):
                found.append(f"mountVolumes.{to_camel(kind)}[{index}].accountName")
    return found


def load_job_spec(
    source: str | bytes | Path | Mapping[str, Any],
    *,
    cluster: str | None = None,
    storage_account_name: str | None = None,
    storage_account_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> JobSpec:
    """Load a job.json (path, JSON text or dict) as ``az batchai job create -f`` did.

    Raises InvalidSpec naming the JSON path of the first problem.
    """
    environ = os.environ if environ is None else environ
    document, origin = _parse_json(source, "job spec")
    _check_document(document, "", origin)
    properties, prefix = _unwrap(document, origin)
    account = storage_account_name or environ.get("AZURE_BATCHAI_STORAGE_ACCOUNT")
    key = storage_account_key or environ.get("AZURE_BATCHAI_STORAGE_KEY")
    _fill_storage_placeholders(properties.get("mountVolumes"), account, key, prefix + "mountVolumes")
    if cluster and not properties.get("cluster"):
        properties["cluster"] = {"id": cluster}
    try:
        return JobSpec.model_validate(properties)
    except ValidationError as exc:
        raise _validation_error(exc, prefix, origin) from None


def load_cluster_spec(
    source: str | bytes | Path | Mapping[str, Any],
    *,
    storage_account_name: str | None = None,
    storage_account_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterSpec:
    """Load a cluster.json the same way (``$schema`` and ``properties`` wrapper accepted)."""
    environ = os.environ if environ is None else environ
    document, origin = _parse_json(source, "cluster spec")
    _check_document(document, "", origin)
    properties, prefix = _unwrap(document, origin)
    node_setup = properties.get("nodeSetup")
    if isinstance(node_setup, dict):
        account = storage_account_name or environ.get("AZURE_BATCHAI_STORAGE_ACCOUNT")
        key = storage_account_key or environ.get("AZURE_BATCHAI_STORAGE_KEY")
        _fill_storage_placeholders(node_setup.get("mountVolumes"), account, key, prefix + "nodeSetup.mountVolumes")
    try:
        return ClusterSpec.model_validate(properties)
    except ValidationError as exc:
        raise _validation_error(exc, prefix, origin) from None


def check_name(name: str, what: str) -> str:
    """Batch AI names: 1-64 of letters, digits, '-' and '_'."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidSpec(f"{what} name {shown(name)} must be 1-64 characters of letters, digits, '-' and '_'", what)
    return name
