"""The job spec (2018-05-01 JobCreateParameters, with 2018-03-01's differences), its constraints and priority."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import Enum
from typing import Any

from pydantic import (
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..errors import shown
from .common import (
    DEFAULT_MAX_WALL_CLOCK,
    ENV_ID_PATTERN,
    MAX_COMMAND_BYTES,
    MAX_ENVIRONMENT_BYTES,
    MAX_NODE_COUNT,
    MAX_TAGS,
    MAX_WALL_CLOCK,
    MPI_TOOLKIT_FIELDS,
    SHM_SIZE_PATTERN,
    BatchAIModel,
    EnvironmentVariable,
    EnvironmentVariableWithSecretValue,
    KeyVaultSecretReference,
    ResourceId,
    StrictCount,
    StrictFlag,
    _check_relative_path,
    _stored,
)
from .mounts import MountVolumes
from .toolkits import (
    TOOLKIT_FIELDS,
    Caffe2Settings,
    CaffeSettings,
    ChainerSettings,
    CNTKsettings,
    CustomMpiSettings,
    CustomToolkitSettings,
    HorovodSettings,
    PyTorchSettings,
    TensorFlowSettings,
)

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


class UtilizationPolicy(BatchAIModel):
    """Ours (``properties.utilizationPolicy``): a job whose GPUs all stay below ``minGpuUtilization`` percent
    for the whole ``timeWindow`` is stopped and fails with GpuUnderutilized (idle GPUs cost as much as busy ones)."""

    min_gpu_utilization: float = Field(ge=0, le=100)
    time_window: timedelta

    @field_validator("min_gpu_utilization", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"minGpuUtilization must be a number of percent (0 to 100), got {shown(value)}")
        return value

    @field_validator("time_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta:
        window = parse_duration(value)
        if not timedelta(seconds=1) <= window <= MAX_WALL_CLOCK:
            raise ValueError(f"timeWindow must be from 1 second to {format_duration(MAX_WALL_CLOCK)}, got {shown(value)}")
        return window

    @field_serializer("time_window")
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
    utilization_policy: UtilizationPolicy | None = None  # ours: the idle-GPU watchdog

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
