"""The toolkit settings of a job: CNTK, PyTorch, TensorFlow, Caffe, Caffe2, Chainer, Horovod, custom MPI and custom."""

from __future__ import annotations

from enum import Enum

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ..errors import shown
from .common import MAX_NODE_COUNT, MAX_PROCESS_COUNT, BatchAIModel, StrictCount

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
