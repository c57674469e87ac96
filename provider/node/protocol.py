"""The contract between the control plane and the node agent: file names, states, secrets, expansion.

A run's folder on a node holds ``plan.json`` (what to do, written 0600 by the control plane),
``secrets.json`` (0600, deleted by the agent once read) and ``status.json`` (written whole by
the agent, read by the control plane). This module is the only one of ``node/`` the control
plane imports for meaning; the agent and the control plane read the same names from here.
Standard library only (python >= 3.8 on the node).
"""

from __future__ import print_function

import re
from enum import Enum

PLAN_FILE = "plan.json"
SECRETS_FILE = "secrets.json"
STATUS_FILE = "status.json"
AGENT_LOG_FILE = "agent.log"

HEARTBEAT_INTERVAL_S = 2.0  # status.json's heartbeat is refreshed this often while the agent lives
POLL_INTERVAL_S = 0.1
DEFAULT_GRACE_S = 10.0  # terminate: SIGTERM, then SIGKILL after this long

# Names in secrets.json that are not job variables:
REGISTRY_PASSWORD_KEY = "BATCHAI_REGISTRY_PASSWORD"  # for docker login --password-stdin
SAS_KEY_PREFIX = "BATCHAI_SAS_"  # SAS tokens for the agent's own storage calls
ACCOUNT_KEY_SECRET = SAS_KEY_PREFIX + "ACCOUNT_KEY"  # only with SMB mounts (azure_files_mount "cifs"): the key mount.cifs needs


class RunState(str, Enum):
    """The ``state`` of a run's status.json."""

    STARTING = "starting"
    PREPARING = "preparing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def is_final(self):
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.TERMINATED)


FINAL_STATES = tuple(state.value for state in RunState if state.is_final)

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand(template, env):
    """$VAR / ${VAR} expansion against the job's environment (unknown variables stay as written)."""

    def replace(match):
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return _VARIABLE.sub(replace, template)
