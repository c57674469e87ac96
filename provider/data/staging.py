"""Which parts of a job's remote volumes the node must download first, and which it uploads. Pure.

Where a node can mount a container (blobfuse2, rclone), the job sees storage directly. Where it
cannot, the agent stages: it downloads what the job reads before it starts and uploads what it
writes. What a job reads is what its spec points at on a volume: every
``$AZ_BATCHAI_JOB_MOUNT_ROOT/<mount>/<path>`` (or ``$AZ_BATCHAI_MOUNT_ROOT/...``) in its
settings, input directories and command lines. A path whose last part has a dot is taken as a
file, and its whole folder comes along (scripts import their neighbours); other paths are
folders or files fetched as they are. What it writes are its stdouterr folder (uploaded as
append blobs while it runs) and its output directories.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from ..layout import output_template, stdouterr_template
from ..spec import JobSpec
from .links import Link

ROOT_VARIABLES = {"job": "AZ_BATCHAI_JOB_MOUNT_ROOT", "cluster": "AZ_BATCHAI_MOUNT_ROOT"}
_REFERENCE = re.compile(r"\$\{?(AZ_BATCHAI_JOB_MOUNT_ROOT|AZ_BATCHAI_MOUNT_ROOT)\}?((?:/[^\s'\"$;|&<>,()]*)?)")
_WRITTEN_FIELDS = ("stdOutErrPathPrefix", "outputDirectories")  # written by the job, not read


@dataclass(frozen=True)
class Located:
    """A path template that lies on a volume: the volume, its mount-path template, the path inside."""

    link: Link
    mount: str  # "$AZ_BATCHAI_JOB_MOUNT_ROOT/<relativeMountPath>"
    inside: str  # relative to the volume's root ("" = the root)


@dataclass(frozen=True)
class Transfer:
    located: Located
    log: bool = False


def strip_root(template: str, variable: str) -> str | None:
    """``template`` below ``$variable`` ("" for the variable itself), or None when it is elsewhere."""
    for spelled in (f"${variable}", f"${{{variable}}}"):
        if template == spelled:
            return ""
        if template.startswith(spelled + "/"):
            return template[len(spelled) + 1 :]
    return None


def locate(template: str, mounts: dict[str, list[Link]]) -> Located | None:
    """The volume a path template lies on; ``mounts`` maps "job"/"cluster" to that scope's links."""
    for scope, links in mounts.items():
        rest = strip_root(posixpath.normpath(template), ROOT_VARIABLES[scope])
        if rest is None:
            continue
        for link in links:
            if rest == link.relative_mount_path or rest.startswith(link.relative_mount_path + "/"):
                inside = rest[len(link.relative_mount_path) :].strip("/")
                return Located(link, f"${ROOT_VARIABLES[scope]}/{link.relative_mount_path}", inside)
    return None


def _strings(value: Any, skip: tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() if key not in skip for s in _strings(item, skip)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item, skip)]
    return []


def references(texts: list[str]) -> list[str]:
    """Mount-root path templates mentioned in ``texts``, in order of first mention."""
    found: list[str] = []
    for text in texts:
        for match in _REFERENCE.finditer(text):
            reference = f"${match.group(1)}{match.group(2)}".rstrip("/")
            if reference not in found:
                found.append(reference)
    return found


def read_texts(spec: JobSpec) -> list[str]:
    """Every string of the spec that may name something the job reads."""
    return _strings(spec.to_json(), _WRITTEN_FIELDS)


def written(spec: JobSpec, segment: str) -> list[tuple[str, bool]]:
    """(path template, is the log folder) of everything the job writes for others to read."""
    templates = [(stdouterr_template(spec.std_out_err_path_prefix, segment), True)]
    templates += [(output_template(d.path_prefix, segment, d.path_suffix, d.create_new), False) for d in spec.output_directories or []]
    return templates


def transfers(reads: list[str], writes: list[tuple[str, bool]], mounts: dict[str, list[Link]]) -> tuple[list[Transfer], list[Transfer]]:
    """(downloads, uploads) on remote volumes for what ``reads`` mention and ``writes`` lists; local folders need neither."""
    uploads = []
    for template, is_log in writes:
        located = locate(template, mounts)
        if located is not None and located.link.remote is not None:
            uploads.append(Transfer(located, is_log))
    downloads: list[Transfer] = []
    for reference in references(reads):
        located = locate(reference, mounts)
        if located is None or located.link.remote is None:
            continue
        inside = located.inside
        if "." in posixpath.basename(inside):
            inside = posixpath.dirname(inside)
        located = Located(located.link, located.mount, inside)
        covered = any(d.located.link == located.link and _within(inside, d.located.inside) for d in downloads)
        if not covered:
            downloads = [d for d in downloads if not (d.located.link == located.link and _within(d.located.inside, inside))]
            downloads.append(Transfer(located))
    return downloads, uploads


def _within(path: str, folder: str) -> bool:
    return folder == "" or path == folder or path.startswith(folder + "/")
