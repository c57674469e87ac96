"""Pydantic models of Batch AI job and cluster specs, and loading them the way the az CLI did.

The models accept every field of the 2018-05-01 create parameters plus the 2018-03-01
differences, with the camelCase spelling of Batch AI. Validation refuses what could never run
(no toolkit, a mount path escaping its root, an output id that cannot be part of an env var
name, a command line no kernel would take) so that nothing is created from a bad file.

Every refusal is one ``InvalidSpec`` line: the JSON path of the field, what is wrong, and at
most 80 characters of the value, so a 5 MB value or a 10,000-deep nesting gives a short
message and not a traceback. The limits below are the documented input limits (README).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import InvalidSpec, shown

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


# --- mounts ---------------------------------------------------------------------------


class _Mount(BatchAIModel):
    relative_mount_path: str

    @field_validator("relative_mount_path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _check_relative_path(value, "relativeMountPath") or value


class AzureFileShareReference(_Mount):
    account_name: str
    azure_file_url: str
    credentials: AzureStorageCredentialsInfo | None = None
    file_mode: str | None = "0777"
    directory_mode: str | None = "0777"

    @field_validator("file_mode", "directory_mode")
    @classmethod
    def _octal(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"0?[0-7]{3}", value):  # these end up in mount options
            raise ValueError(f"{shown(value)} is not permission bits like '0777'")
        return value

    @property
    def share_name(self) -> str:
        return self.azure_file_url.rstrip("/").rsplit("/", 1)[-1]


class AzureBlobFileSystemReference(_Mount):
    account_name: str
    container_name: str
    credentials: AzureStorageCredentialsInfo | None = None
    mount_options: str | None = None


class FileServerReference(_Mount):
    file_server: ResourceId
    source_directory: str | None = None
    mount_options: str | None = None


class UnmanagedFileSystemReference(_Mount):
    """A file system the node mounts itself (NFS, GlusterFS, Lustre ...): the agent runs
    ``mountCommand <mount path>`` in a shell, as Batch AI appended the target."""

    mount_command: str

    @field_validator("mount_command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("mountCommand must not be empty")
        return value


class MountVolumes(BatchAIModel):
    azure_file_shares: list[AzureFileShareReference] | None = None
    azure_blob_file_systems: list[AzureBlobFileSystemReference] | None = None
    file_servers: list[FileServerReference] | None = None
    unmanaged_file_systems: list[UnmanagedFileSystemReference] | None = None

    @model_validator(mode="after")
    def _distinct_paths(self) -> MountVolumes:
        seen: set[str] = set()
        for mount in self.all_mounts():
            path = mount.relative_mount_path.strip("/")
            if path in seen:
                raise ValueError(f"two mounts use relativeMountPath {shown(path)}")
            seen.add(path)
        return self

    def all_mounts(self) -> list[_Mount]:
        groups = (self.azure_file_shares, self.azure_blob_file_systems, self.file_servers, self.unmanaged_file_systems)
        return [mount for group in groups for mount in (group or [])]


# --- toolkits -------------------------------------------------------------------------


class CommunicationBackend(str, Enum):
    TCP = "TCP"
    GLOO = "Gloo"
    MPI = "MPI"
    NCCL = "NCCL"


class CNTKsettings(BatchAIModel):
    language_type: str | None = None
    config_file_path: str | None = None
    python_script_file_path: str | None = None
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)

    @model_validator(mode="after")
    def _one_entry_point(self) -> CNTKsettings:
        if self.config_file_path and self.python_script_file_path:
            raise ValueError("set configFilePath (BrainScript) or pythonScriptFilePath (Python), not both")
        if not (self.config_file_path or self.python_script_file_path):
            raise ValueError("set configFilePath (BrainScript) or pythonScriptFilePath (Python)")
        if self.language_type is None:
            self.language_type = "BrainScript" if self.config_file_path else "Python"
        return self


class PyTorchSettings(BatchAIModel):
    python_script_file_path: str
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)
    communication_backend: str | None = None

    @field_validator("communication_backend")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for backend in CommunicationBackend:
            if backend.value.lower() == value.lower():
                return value
        raise ValueError(f"communicationBackend must be one of TCP, Gloo, MPI, NCCL, got {shown(value)}")


class TensorFlowSettings(BatchAIModel):
    python_script_file_path: str
    python_interpreter_path: str | None = None
    master_command_line_args: str | None = None
    worker_command_line_args: str | None = None
    parameter_server_command_line_args: str | None = None
    worker_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)
    parameter_server_count: StrictCount | None = Field(default=None, ge=0, le=MAX_NODE_COUNT)


class CaffeSettings(BatchAIModel):
    config_file_path: str | None = None
    python_script_file_path: str | None = None
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)

    @model_validator(mode="after")
    def _one_entry_point(self) -> CaffeSettings:
        if bool(self.config_file_path) == bool(self.python_script_file_path):
            raise ValueError("set exactly one of configFilePath and pythonScriptFilePath")
        return self


class Caffe2Settings(BatchAIModel):
    python_script_file_path: str
    python_interpreter_path: str | None = None
    command_line_args: str | None = None


class ChainerSettings(BatchAIModel):
    python_script_file_path: str
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)


class HorovodSettings(BatchAIModel):
    python_script_file_path: str
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)


class CustomMpiSettings(BatchAIModel):
    command_line: str
    process_count: StrictCount | None = Field(default=None, ge=1, le=MAX_PROCESS_COUNT)


class CustomToolkitSettings(BatchAIModel):
    command_line: str | None = None


TOOLKIT_FIELDS: dict[str, str] = {
    "cntk_settings": "cntk",
    "py_torch_settings": "pytorch",
    "tensor_flow_settings": "tensorflow",
    "caffe_settings": "caffe",
    "caffe2_settings": "caffe2",
    "chainer_settings": "chainer",
    "custom_toolkit_settings": "custom",
    "custom_mpi_settings": "custommpi",
    "horovod_settings": "horovod",
}


# --- job ------------------------------------------------------------------------------


class PrivateRegistryCredentials(BatchAIModel):
    username: str
    password: str | None = None
    password_secret_reference: KeyVaultSecretReference | None = None


class ImageSourceRegistry(BatchAIModel):
    image: str
    server_url: str | None = None
    credentials: PrivateRegistryCredentials | None = None


class ContainerSettings(BatchAIModel):
    image_source_registry: ImageSourceRegistry
    shm_size: str | None = None

    @field_validator("shm_size")
    @classmethod
    def _size(cls, value: str | None, info: ValidationInfo) -> str | None:
        size = SHM_SIZE_PATTERN.fullmatch(value.strip()) if value is not None else None
        if value is not None and not _stored(info) and not (size and float(size.group(1)) > 0):
            raise ValueError(f"shmSize {shown(value)} is not a size like '16gb' or '512m'")
        return value


class JobPreparation(BatchAIModel):
    command_line: str


class InputDirectory(BatchAIModel):
    id: str
    path: str

    @field_validator("id")
    @classmethod
    def _env_id(cls, value: str) -> str:
        return _check_env_id(value)


class OutputDirectory(BatchAIModel):
    id: str
    path_prefix: str
    path_suffix: str | None = None
    type: str | None = None  # 2018-03-01: model/logs/summary/custom, descriptive only
    create_new: StrictFlag | None = None  # 2018-03-01: false = use pathPrefix as given

    @field_validator("id")
    @classmethod
    def _env_id(cls, value: str) -> str:
        if value.lower() == "stdouterr":
            raise ValueError("output directory id 'stdouterr' is reserved for the job's standard output folder")
        return _check_env_id(value)

    @field_validator("path_suffix")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return _check_relative_path(value, "pathSuffix")


def _check_env_id(value: str) -> str:
    if not ENV_ID_PATTERN.fullmatch(value):
        raise ValueError(f"id {shown(value)} must be letters, digits and '_' only: it becomes part of an env var name")
    return value


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Accept ``7.00:00:00`` (.NET), ``P7DT1H`` (ISO 8601), ``7 days, 0:00:00`` (Python) or seconds.

    Raises ValueError, also for durations past what a timedelta holds.
    """
    try:
        return _parse_duration(value)
    except OverflowError:
        raise ValueError(f"duration {shown(value)} is too long") from None


def _parse_duration(value: str | int | float | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a duration: {shown(value)} (use 7.00:00:00, P7D or '7 days, 0:00:00')")
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    text = value.strip()
    iso = re.fullmatch(
        r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?", text
    )
    if iso and text not in ("P", "PT") and not text.endswith("T"):
        weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    clock = re.fullmatch(r"(?:(\d+)(?:\.|\s+days?,\s*))?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", text)
    if clock:
        day_text, hour_text, minute_text, second_text = clock.groups()
        return timedelta(days=int(day_text or 0), hours=int(hour_text), minutes=int(minute_text), seconds=float(second_text))
    raise ValueError(f"not a duration: {shown(text)} (use 7.00:00:00, P7D or '7 days, 0:00:00')")


def format_duration(value: timedelta) -> str:
    """ISO 8601, the form the service returned on the wire (``P7D``, ``PT1H30M``)."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "" if days else "T0S")


class JobConstraints(BatchAIModel):
    max_wall_clock_time: timedelta = DEFAULT_MAX_WALL_CLOCK

    @field_validator("max_wall_clock_time", mode="before")
    @classmethod
    def _parse(cls, value: Any, info: ValidationInfo) -> timedelta:
        duration = parse_duration(value)
        if duration.total_seconds() <= 0:
            raise ValueError("maxWallClockTime must be positive")
        if duration > MAX_WALL_CLOCK and not _stored(info):
            raise ValueError(f"maxWallClockTime {format_duration(duration)} is past the limit of {format_duration(MAX_WALL_CLOCK)}")
        return duration

    @field_serializer("max_wall_clock_time")
    def _format(self, value: timedelta) -> str:
        return format_duration(value)


class SchedulingPriority(str, Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


PRIORITY_VALUES = {SchedulingPriority.LOW: -500, SchedulingPriority.NORMAL: 0, SchedulingPriority.HIGH: 500}


def _check_tags(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None and len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags, got {len(value)}")
    for name, text in (value or {}).items():
        if not 0 < len(name) <= 512 or len(text) > 256:
            raise ValueError(f"tag {shown(name)}: names are 1-512 characters, values at most 256")
    return value


class JobSpec(BatchAIModel):
    """JobBaseProperties (2018-05-01) plus 2018-03-01's ``priority`` and ``experimentName``,
    and that version's top-level ``location`` and ``tags``, kept and echoed as the service did."""

    location: str | None = None
    tags: dict[str, str] | None = None

    scheduling_priority: SchedulingPriority | None = None
    priority: StrictCount | None = Field(default=None, ge=-1000, le=1000)
    experiment_name: str | None = None
    cluster: ResourceId | None = None
    mount_volumes: MountVolumes | None = None
    node_count: StrictCount = Field(ge=1, le=MAX_NODE_COUNT)
    container_settings: ContainerSettings | None = None
    cntk_settings: CNTKsettings | None = None
    py_torch_settings: PyTorchSettings | None = None
    tensor_flow_settings: TensorFlowSettings | None = None
    caffe_settings: CaffeSettings | None = None
    caffe2_settings: Caffe2Settings | None = None
    chainer_settings: ChainerSettings | None = None
    custom_toolkit_settings: CustomToolkitSettings | None = None
    custom_mpi_settings: CustomMpiSettings | None = None
    horovod_settings: HorovodSettings | None = None
    job_preparation: JobPreparation | None = None
    std_out_err_path_prefix: str
    input_directories: list[InputDirectory] | None = None
    output_directories: list[OutputDirectory] | None = None
    environment_variables: list[EnvironmentVariable] | None = None
    secrets: list[EnvironmentVariableWithSecretValue] | None = None
    constraints: JobConstraints | None = None

    @model_validator(mode="after")
    def _exactly_one_toolkit(self, info: ValidationInfo) -> JobSpec:
        chosen = [name for name in TOOLKIT_FIELDS if getattr(self, name) is not None]
        if len(chosen) != 1:
            names = ", ".join(to_camel(n).removesuffix("Settings") for n in TOOLKIT_FIELDS)
            found = ", ".join(to_camel(n) for n in chosen) or "none"
            raise ValueError(f"exactly one toolkit setting is required; found {found} (toolkits: {names})")
        for group, what in ((self.input_directories, "input"), (self.output_directories, "output")):
            ids = [d.id for d in group or []]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{what} directory ids must be unique, got {shown(ids)}")
        if _stored(info):
            return self
        variables: list[EnvironmentVariable | EnvironmentVariableWithSecretValue] = [
            *(self.environment_variables or []),
            *(self.secrets or []),
        ]
        size = sum(len(v.name) + len((v.value or "").encode()) + 2 for v in variables)
        if size > MAX_ENVIRONMENT_BYTES:
            raise ValueError(f"environmentVariables and secrets hold {size} bytes; together they may hold {MAX_ENVIRONMENT_BYTES}")
        self._check_command_size(variables)
        return self

    def _check_command_size(self, variables: list[EnvironmentVariable | EnvironmentVariableWithSecretValue]) -> None:
        """The command a task runs is the toolkit's texts put together (interpreter, script, arguments;
        for MPI also one ``-x NAME`` per variable): it must fit in one argument at run time too."""
        name = next(n for n in TOOLKIT_FIELDS if getattr(self, n) is not None)
        texts = getattr(self, name).model_dump(exclude_none=True)
        arguments = [len(v.encode()) for k, v in texts.items() if isinstance(v, str) and k.endswith("command_line_args")]
        parts = [len(v.encode()) for k, v in texts.items() if isinstance(v, str) and not k.endswith("command_line_args")]
        parts += [max(arguments)] if arguments else []  # TensorFlow's master/worker/ps arguments are alternatives
        size = sum(parts) + len(parts) - 1
        if name in MPI_TOOLKIT_FIELDS:
            size += sum(len(v.name) + 4 for v in variables)
        if size > MAX_COMMAND_BYTES:
            raise ValueError(f"{to_camel(name)}: the command it runs would be {size} bytes; at most {MAX_COMMAND_BYTES}")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        return value if _stored(info) else _check_tags(value)

    @property
    def tool_type(self) -> str:
        return next(TOOLKIT_FIELDS[name] for name in TOOLKIT_FIELDS if getattr(self, name) is not None)

    @property
    def toolkit(self) -> BatchAIModel:
        return next(getattr(self, name) for name in TOOLKIT_FIELDS if getattr(self, name) is not None)

    @property
    def effective_priority(self) -> int:
        """2018-03-01's integer wins when given; else low/normal/high on the same scale."""
        if self.priority is not None:
            return self.priority
        return PRIORITY_VALUES[self.scheduling_priority or SchedulingPriority.NORMAL]

    @property
    def max_wall_clock(self) -> timedelta:
        return self.constraints.max_wall_clock_time if self.constraints else DEFAULT_MAX_WALL_CLOCK


# --- cluster --------------------------------------------------------------------------


class DeallocationOption(str, Enum):
    REQUEUE = "requeue"
    TERMINATE = "terminate"
    WAIT_FOR_JOB_COMPLETION = "waitforjobcompletion"
    UNKNOWN = "unknown"  # 2018-03-01 only


class ManualScaleSettings(BatchAIModel):
    target_node_count: StrictCount = Field(default=0, ge=0, le=MAX_NODE_COUNT)
    node_deallocation_option: DeallocationOption = DeallocationOption.REQUEUE


class AutoScaleSettings(BatchAIModel):
    minimum_node_count: StrictCount = Field(ge=0, le=MAX_NODE_COUNT)
    maximum_node_count: StrictCount = Field(ge=0, le=MAX_NODE_COUNT)
    initial_node_count: StrictCount | None = Field(default=0, ge=0, le=MAX_NODE_COUNT)
    idle_seconds_before_scaledown: StrictCount = Field(
        default=300, ge=0, le=int(MAX_WALL_CLOCK.total_seconds())
    )  # our extension, see DESIGN.md

    @model_validator(mode="after")
    def _ordered(self) -> AutoScaleSettings:
        if self.minimum_node_count > self.maximum_node_count:
            raise ValueError("minimumNodeCount must not exceed maximumNodeCount")
        return self


class ScaleSettings(BatchAIModel):
    manual: ManualScaleSettings | None = None
    auto_scale: AutoScaleSettings | None = None

    @property
    def deallocation_option(self) -> DeallocationOption:
        """What a running job gets when a node leaves under it; autoScale has no such field: requeue."""
        return self.manual.node_deallocation_option if self.manual else DeallocationOption.REQUEUE

    @model_validator(mode="after")
    def _exactly_one(self) -> ScaleSettings:
        if (self.manual is None) == (self.auto_scale is None):
            raise ValueError("set exactly one of manual and autoScale")
        return self


class ImageReference(BatchAIModel):
    publisher: str
    offer: str
    sku: str
    version: str | None = None
    virtual_machine_image_id: str | None = None


class VirtualMachineConfiguration(BatchAIModel):
    image_reference: ImageReference | None = None


class SetupTask(BatchAIModel):
    command_line: str
    environment_variables: list[EnvironmentVariable] | None = None
    secrets: list[EnvironmentVariableWithSecretValue] | None = None
    std_out_err_path_prefix: str
    std_out_err_path_suffix: str | None = None  # read-only in Batch AI; accepted and ignored
    run_elevated: StrictFlag | None = None  # 2018-03-01


class AppInsightsReference(BatchAIModel):
    component: ResourceId
    instrumentation_key: str | None = None
    instrumentation_key_secret_reference: KeyVaultSecretReference | None = None


class PerformanceCountersSettings(BatchAIModel):
    app_insights_reference: AppInsightsReference


class NodeSetup(BatchAIModel):
    setup_task: SetupTask | None = None
    mount_volumes: MountVolumes | None = None
    performance_counters_settings: PerformanceCountersSettings | None = None


class UserAccountSettings(BatchAIModel):
    admin_user_name: str
    admin_user_ssh_public_key: str | None = None
    admin_user_password: str | None = None


class ClusterSpec(BatchAIModel):
    """ClusterBaseProperties. ``vmSize`` and ``userAccountSettings`` are optional here: our nodes
    are the user's own machines, so there is no size to pick and no account to create."""

    location: str | None = None  # 2018-03-01 (and ARM create bodies): kept and echoed
    tags: dict[str, str] | None = None
    vm_size: str | None = None
    vm_priority: str | None = None
    scale_settings: ScaleSettings = Field(default_factory=lambda: ScaleSettings(manual=ManualScaleSettings()))
    virtual_machine_configuration: VirtualMachineConfiguration | None = None
    node_setup: NodeSetup | None = None
    user_account_settings: UserAccountSettings | None = None
    subnet: ResourceId | None = None

    @field_validator("vm_priority")
    @classmethod
    def _priority(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ("dedicated", "lowpriority"):
            raise ValueError(f"vmPriority must be dedicated or lowpriority, got {shown(value)}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        return value if _stored(info) else _check_tags(value)

    @property
    def max_node_count(self) -> int | None:
        """The most nodes this cluster may ever hold under its settings; None = only the pool limits it."""
        return self.scale_settings.auto_scale.maximum_node_count if self.scale_settings.auto_scale else None


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
