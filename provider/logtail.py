"""Following a job's stdout/stderr files as they grow, for task logs and error messages.

Reads only the bytes not seen yet (by offset), and hands out complete lines only, so a line
being written is never split across two log records.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import BatchAIError

if TYPE_CHECKING:
    from .reading.outputs import OutputFiles
    from .service import Service

STDERR_TAIL_BYTES = 64 * 1024
JOB_OUTPUT_LOGGER = "airflow_batchai.job_output"  # its own source: log filters can show the job's output alone, or hide it
job_output = logging.getLogger(JOB_OUTPUT_LOGGER)


def log_job_lines(lines: list[tuple[str, str]], logger: logging.Logger = job_output) -> None:
    """The job's lines as their own log records, at INFO: each names its file (``[stderr.txt] ...``), so the
    two streams stay apart, and a progress bar on stderr is not a warning (a failure says so itself)."""
    for file_name, line in lines:
        logger.info("[%s] %s", file_name, line)


def _is_stream(name: str) -> bool:
    return name.endswith(".txt") and name.startswith(("stdout", "stderr"))


class JobLogFollower:
    """Locates the job's stdouterr folder once; each poll is then one listing plus one range read
    per file that grew (on Azure Storage: no record reads, no URL signing)."""

    def __init__(self, service: Service, job: str, experiment: str, workspace: str, offsets: dict[str, int] | None = None) -> None:
        self.service, self.job, self.experiment, self.workspace = service, job, experiment, workspace
        self.offsets: dict[str, int] = {name: int(offset) for name, offset in (offsets or {}).items()}
        self.partial: dict[str, bytes] = {}
        self.files: OutputFiles | None = None

    def position(self) -> dict[str, int]:
        """Where each file's handed-out lines end: a follower started from here repeats nothing and
        misses nothing (an unterminated line is read again, whole)."""
        return {name: offset - len(self.partial.get(name, b"")) for name, offset in self.offsets.items()}

    def poll(self, final: bool = False) -> list[tuple[str, str]]:
        """New complete lines as (file name, line); with ``final``, the unterminated rest too."""
        try:
            if self.files is None:
                self.files = self.service.output_files(self.job, self.experiment, self.workspace)
            files = self.files.list("stdouterr", urls=False)
        except BatchAIError:
            return []  # the folder does not exist yet
        lines: list[tuple[str, str]] = []
        for info in files:
            name = info.name
            if not info.is_file or not _is_stream(name) or (info.content_length or 0) <= self.offsets.get(name, 0):
                continue
            chunk = self.files.read("stdouterr", name, offset=self.offsets.get(name, 0))
            if not chunk:
                continue
            self.offsets[name] = self.offsets.get(name, 0) + len(chunk)
            *complete, rest = (self.partial.pop(name, b"") + chunk).split(b"\n")
            lines += [(name, line.decode(errors="replace")) for line in complete]
            if rest:
                self.partial[name] = rest
        if final:
            lines += [(name, rest.decode(errors="replace")) for name, rest in sorted(self.partial.items())]
            self.partial.clear()
        return lines


def stderr_tail(service: Service, job: str, experiment: str, workspace: str, max_lines: int = 20) -> list[str]:
    """The last lines of the job's stderr file(s), newest file content last; empty when none."""
    try:
        files = service.list_output_files(job, experiment, workspace)
    except BatchAIError:
        return []
    tail: list[str] = []
    for info in sorted(files, key=lambda f: f.name):
        if info.is_file and info.name.startswith("stderr") and info.content_length:
            offset = max(0, info.content_length - STDERR_TAIL_BYTES)
            data = service.read_output_file(job, info.name, experiment, workspace, offset=offset) or b""
            tail += [f"[{info.name}] {line}" for line in data.decode(errors="replace").splitlines()[-max_lines:]]
    return tail[-max_lines:]
