"""The DataStore contract: job volumes, what jobs wrote to them, and uploads.

A job's ``mountVolumes`` become links (``links``), the containers behind them exist before a
launch (``ensure``), the agent learns what to download and upload (``stage_plan``), and the
control plane lists and reads what a job wrote (``list_files``, ``read``) and uploads folders
(``upload_target``). The embedded default keeps volumes as local folders (local.py); with a
storage account they are blob containers and file shares (azure.py). Both pass
``tests/provider/data/contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ..agent.protocol import AgentPlan, Transfer
from ..spec import BatchAIView

if TYPE_CHECKING:
    from ..spec import MountVolumes
    from ..transport import FileInfo
    from .links import Link
    from .watch import StoredObject

DEFAULT_LINK_EXPIRY_MINUTES = 60


@dataclass(frozen=True)
class Staging:
    """What an agent fetches and sends for one run: mounts (read-only), downloads before, uploads during and after."""

    mounts: list[Transfer] = field(default_factory=list)
    downloads: list[Transfer] = field(default_factory=list)
    uploads: list[Transfer] = field(default_factory=list)

    def apply(self, plan: AgentPlan) -> AgentPlan:
        return replace(plan, mounts=self.mounts, downloads=self.downloads, uploads=self.uploads)


class UploadTarget(Protocol):
    def unchanged(self, relative: str, path: Path) -> bool:
        """Whether the file is there already with the same size and MD5 (upload-batch skips it)."""

    def put(self, relative: str, path: Path) -> None: ...


class DataStore(Protocol):
    default_account: str
    secret_sink: Callable[[str], None]  # told every secret the store mints for nodes (Airflow masks them)

    def links(self, volumes: MountVolumes | None, where: str) -> list[Link]:
        """The volumes as links under a mount root; errors name the field (``where`` is its JSON path)."""

    def ensure(self, links: list[Link]) -> None:
        """Create the containers or folders behind ``links`` that do not exist yet."""

    def stage_plan(
        self, reads: list[str], writes: list[tuple[str, bool]], mounts: dict[str, list[Link]], lifetime: timedelta
    ) -> tuple[Staging, dict[str, str]]:
        """What the agent fetches and sends (mounts, downloads, uploads), and the SAS those transfers name."""

    def list_files(self, link: Link, folder: str, expiry_minutes: int = DEFAULT_LINK_EXPIRY_MINUTES, urls: bool = True) -> list[OutputFile]:
        """Batch AI File objects one level below ``folder`` (relative to the volume), sorted by name."""

    def read(self, link: Link, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes of a file from ``offset``: b"" past its end, None when it does not exist."""

    def upload_target(self, account: str, container: str, destination_path: str, kind: str = "blob") -> UploadTarget: ...

    def objects(self, account: str, container: str, prefix: str = "", kind: str = "blob") -> list[StoredObject]:
        """Every object under ``prefix`` of a container (or share), with its version, all pages; what a
        storage event trigger compares between polls (watch.py). InvalidWatch past MAX_WATCHED_OBJECTS."""

    def lists_unfinished_writes(self, kind: str = "blob") -> bool:
        """Whether a listing may show an object still being written (folders, Files), not only whole ones (blobs)."""


class OutputFile(BatchAIView):
    """Batch AI's File as ``az batchai job file list`` showed it: a directory has a name only."""

    name: str
    file_type: Literal["file", "directory"]
    download_url: str | None = None
    content_length: int | None = None
    last_modified: datetime | None = None

    @classmethod
    def directory(cls, name: str) -> OutputFile:
        return cls(name=name, file_type="directory")

    @classmethod
    def file(cls, name: str, size: int, modified: datetime | None, url: str | None) -> OutputFile:
        return cls(name=name, file_type="file", download_url=url, content_length=size, last_modified=modified)

    @property
    def is_file(self) -> bool:
        return self.file_type == "file"


def file_object(info: FileInfo, url: str | None) -> OutputFile:
    if info.is_dir:
        return OutputFile.directory(info.name)
    return OutputFile.file(info.name, info.size, datetime.fromtimestamp(info.mtime, timezone.utc), url)
