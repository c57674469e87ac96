"""Shared pieces of the spec models: the base model, strict counts and flags, limits, small types."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..errors import shown

STORAGE_ACCOUNT_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_ACCOUNT>"
STORAGE_KEY_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_KEY>"
DEFAULT_MAX_WALL_CLOCK = timedelta(days=7)
MAX_WALL_CLOCK = timedelta(days=365)  # Batch AI capped jobs at 7 days; on your own machines a year is the bound
MAX_NODE_COUNT = 1000
MAX_PROCESS_COUNT = 64 * MAX_NODE_COUNT
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_COMMAND_BYTES = 128_000  # under MAX_ARG_STRLEN (131,072), the longest argument execve takes, with room for our wrapping
MPI_TOOLKIT_FIELDS = ("cntk_settings", "chainer_settings", "caffe_settings", "horovod_settings", "custom_mpi_settings")
MAX_ENVIRONMENT_BYTES = 1024 * 1024  # all variables and secrets together, well inside ARG_MAX
MAX_NESTING = 32  # real specs nest 6 deep
MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_TAGS = 50  # Azure's limits for tags
ENV_ID_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
SHM_SIZE_PATTERN = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s?[kmgtp]?i?b?$", re.IGNORECASE)  # docker's --shm-size (go-units)
PATH_KEYS = frozenset({"path", "relativeMountPath", "sourceDirectory", "azureFileUrl"})
NAME_PATTERN = re.compile(r"^[-\w]{1,64}$")
_PLACEHOLDER = re.compile(r"<[^<>]+>")
_URL_ACCOUNT_PLACEHOLDER = re.compile(r"^(\w+://)(<[^<>]+>)(\.file\.)")


STORED_SPEC: dict[str, bool] = {"stored": True}  # validation context of specs read back from records


def _stored(info: ValidationInfo) -> bool:
    """A spec read back from a record: what was accepted when it was stored stays readable, so the
    limits added since (names, sizes, durations) are not applied to it again."""
    return info.context is STORED_SPEC


def _count(value: Any) -> int:
    """An integer as JSON writes it, or as its digits: a templated ``"{{ params.nodes }}"`` renders to
    text. ``true`` is not 1, and neither 2.5 nor 2.0 is a node count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,12}\s*", value):
        return int(value)
    raise ValueError(f"must be an integer, got {shown(value)}")


StrictCount = Annotated[int, BeforeValidator(_count)]


def _flag(value: Any) -> bool:
    """A JSON boolean, or ``true``/``false`` as a template renders one; 0, 1 and "yes" are not flags."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, got {shown(value)}")


StrictFlag = Annotated[bool, BeforeValidator(_flag)]


class BatchAIModel(BaseModel):
    """camelCase aliases exactly as Batch AI spelled them; unknown fields are refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class BatchAIView(BaseModel):
    """What the service answers (a read model): camelCase as Batch AI spelled it, read-only.

    ``to_json`` is the JSON Batch AI returned, for the REST API, the CLI and XCom: the fields the
    service set, ``None`` included where Batch AI showed a null; a field it never set stays out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _check_relative_path(value: str | None, what: str) -> str | None:
    if value is None:
        return value
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value.startswith("/") or value.startswith("\\"):
        raise ValueError(f"{what} must be relative, got absolute path {shown(value)}")
    if ".." in re.split(r"[/\\]", value):
        raise ValueError(f"{what} must not contain '..', got {shown(value)}")
    return value


# --- shared small types ---------------------------------------------------------------


class ResourceId(BatchAIModel):
    id: str


class KeyVaultSecretReference(BatchAIModel):
    source_vault: ResourceId
    secret_url: str


def _check_env_name(value: str) -> str:
    if not ENV_NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a variable name: use letters, digits and '_', not starting with a digit")
    return value


class EnvironmentVariable(BatchAIModel):
    name: str
    value: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        return value if _stored(info) else _check_env_name(value)


class EnvironmentVariableWithSecretValue(BatchAIModel):
    name: str
    value: str | None = None
    value_secret_reference: KeyVaultSecretReference | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        return value if _stored(info) else _check_env_name(value)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> EnvironmentVariableWithSecretValue:
        if _stored(info):  # records keep specs with the secret values taken out (secretfields.py)
            return self
        if (self.value is None) == (self.value_secret_reference is None):
            raise ValueError(f"secret {shown(self.name)} needs exactly one of value and valueSecretReference")
        return self


class AzureStorageCredentialsInfo(BatchAIModel):
    account_key: str | None = None
    account_key_secret_reference: KeyVaultSecretReference | None = None
