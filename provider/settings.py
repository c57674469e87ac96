"""The control plane's tunables: labels for resource ids, and how fast it looks and gives up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .layout import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from .prices import PriceSettings

PASS_INTERVAL_S = 5.0  # a full pass per cluster at least this often while anyone looks (or the controller runs)
WATCH_INTERVAL_S = 0.25  # running jobs' agents are looked at this often, so a job's end reaches its record fast
WAIT_POLL_S = 0.25  # waiters read the cluster's published digest this often


@dataclass
class Settings:
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    heartbeat_timeout_s: float = 30.0  # agents beat every 2 s; silence this long means the node is lost
    launch_timeout_s: float = 60.0  # a started agent must have written its status by then
    heal_probe_interval_s: float = 15.0  # how often a lost node is tried again; when it answers it is set up anew
    fence_s: float = 180.0  # a lost attempt not seen stopped holds its next one this long (above the agents' own fences)
    contact_fence_s: float = 120.0  # an agent whose controller stopped renewing its contact this long stops its job
    resource_sample_s: float = 5.0  # how often agents sample a job's GPUs, CPU, memory and disk for its curves (0: never)
    default_storage_account: str = "local"
    pass_interval_s: float = PASS_INTERVAL_S
    watch_interval_s: float = WATCH_INTERVAL_S
    job_env_allow: tuple[str, ...] = ()  # variables of a node's environment a job may inherit besides the basics (protocol.py)
    job_user: str | None = None  # the Unix user jobs run as on their nodes; None: the agent's own user
    local_jobs_from_shared_surfaces: bool = False  # jobs from the REST API may run as the control plane's user on local nodes
    prices: PriceSettings | None = None  # the connection's prices and daily budgets (prices.py)
    utilization_policy: dict[str, Any] | None = None  # the connection's idle-GPU policy for jobs that name none (spec's UtilizationPolicy)
