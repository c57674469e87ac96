"""The cluster spec (ClusterCreateParameters): scale settings, VM configuration, node setup, user account."""

from __future__ import annotations

from enum import Enum

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import shown
from .common import (
    MAX_NODE_COUNT,
    MAX_WALL_CLOCK,
    BatchAIModel,
    EnvironmentVariable,
    EnvironmentVariableWithSecretValue,
    KeyVaultSecretReference,
    ResourceId,
    StrictCount,
    StrictFlag,
    _stored,
)
from .job import _check_tags
from .mounts import MountVolumes

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
