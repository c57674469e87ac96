"""Mount volumes of jobs and clusters: Azure Files shares, blob containers, file servers, unmanaged file systems."""

from __future__ import annotations

import re

from pydantic import (
    field_validator,
    model_validator,
)

from ..errors import shown
from .common import AzureStorageCredentialsInfo, BatchAIModel, ResourceId, _check_relative_path

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
