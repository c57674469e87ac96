"""Azure's naming rules for what reaches a path: subscriptions, resource groups, Batch AI resources.

Every name from outside (an ARM path segment, a connection's labels) becomes part of a
storage path (``jobOutputDirectoryPathSegment``), a record key or a URL, so it is checked
here before anything is read or written: ``.``, ``..``, ``/``, ``\\``, NUL, CR/LF and
over-long values never pass. The messages quote the value with ``shown`` (control
characters escaped), so a hostile name cannot forge log lines.
"""

from __future__ import annotations

import re

from .errors import BatchAIError, ErrorCode, shown

RESOURCE_NAME = re.compile(r"[-\w]{1,64}", re.ASCII)  # Batch AI's workspaces, clusters, experiments, jobs
# Subscription ids are GUIDs on Azure; tests and the CLI also use plain labels, so letters, digits and '-'.
SUBSCRIPTION = re.compile(r"[A-Za-z0-9][-A-Za-z0-9]{0,63}")
# Resource groups: letters, digits, '_', '-', '.', '(' and ')', at most 90, not ending in '.'.
RESOURCE_GROUP = re.compile(r"[-\w.()]{0,89}[-\w()]", re.ASCII)
LOCATION = re.compile(r"[A-Za-z0-9]{1,64}")
OPERATION_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")

RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "subscription": (SUBSCRIPTION, "1-64 letters, digits and '-', starting with a letter or digit"),
    "resource_group": (RESOURCE_GROUP, "1-90 letters, digits, '_', '-', '.', '(' and ')', not ending in '.'"),
    "workspace": (RESOURCE_NAME, "1-64 letters, digits, '-' and '_'"),
    "cluster": (RESOURCE_NAME, "1-64 letters, digits, '-' and '_'"),
    "experiment": (RESOURCE_NAME, "1-64 letters, digits, '-' and '_'"),
    "job": (RESOURCE_NAME, "1-64 letters, digits, '-' and '_'"),
    "file_server": (RESOURCE_NAME, "1-64 letters, digits, '-' and '_'"),
    "location": (LOCATION, "1-64 letters and digits"),
    "token": (OPERATION_ID, "an operation id this service issued"),
}


def check_segment(kind: str, value: object) -> str:
    """``value`` if it is a valid ``kind`` (a key of RULES), else InvalidName naming the segment."""
    pattern, rule = RULES[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BatchAIError(ErrorCode.INVALID_NAME, f"{kind} {shown(value)} is not a valid name: {rule}", kind)
    return value


def check_scope(subscription: str, resource_group: str) -> None:
    """The two labels that open every job's output path segment."""
    check_segment("subscription", subscription)
    check_segment("resource_group", resource_group)
