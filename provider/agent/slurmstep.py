"""What our agent does first inside a Slurm allocation: find its node, make that node's plan.

The control plane writes one plan per node rank before ``sbatch`` (it does not know which
hosts Slurm will pick), with ``@@HOST<i>@@`` and ``@@ADDR<i>@@`` where host names and
addresses go. ``srun --ntasks-per-node=1`` starts ``agent.py slurm-run BASE`` on every node;
each one reads ``SLURM_NODEID`` and ``SLURM_JOB_NODELIST``, fills the placeholders, moves its
0600 secrets file next to the plan and runs the plan like on an SSH node. Standard library
only: it runs on the cluster's nodes.
"""

import json
import os
import re

try:
    from .protocol import SECRETS_FOLDER, SLURM_PLANS_FILE, expand_hostlist
except ImportError:  # copied flat onto a node
    from protocol import SECRETS_FOLDER, SLURM_PLANS_FILE, expand_hostlist  # type: ignore[no-redef]

_PLACEHOLDER = re.compile(r"@@(HOST|ADDR)(\d+)@@")


def fill(text, hosts, addresses):
    """The placeholders of ``text`` for these hosts (rank order); addresses default to the host name."""

    def replace(match):
        index = int(match.group(2))
        if index >= len(hosts):
            raise ValueError("the plan names node %d, the allocation has %d" % (index, len(hosts)))
        host = hosts[index]
        return host if match.group(1) == "HOST" else addresses.get(host, host)

    return _PLACEHOLDER.sub(replace, text)


def materialize(base, environ):
    """(this node's run folder with plan.json and secrets.json in it, node 0's status file or None)."""
    with open(os.path.join(base, SLURM_PLANS_FILE)) as handle:
        document = json.load(handle)
    index = int(environ.get("SLURM_NODEID", "0"))
    hosts = expand_hostlist(environ.get("SLURM_JOB_NODELIST", ""))
    addresses = document.get("addresses") or {}
    plans, run_dirs = document["plans"], document["run_dirs"]
    if len(hosts) != len(plans) or not 0 <= index < len(plans):
        raise SystemExit("agent: the allocation has %d node(s) (%s), the job's plans %d" % (len(hosts), hosts, len(plans)))
    run_dir = fill(run_dirs[index], hosts, addresses)
    os.makedirs(run_dir, exist_ok=True)
    plan_path = os.path.join(run_dir, "plan.json")
    descriptor = os.open(plan_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(fill(json.dumps(plans[index]), hosts, addresses))
    os.replace(plan_path + ".tmp", plan_path)
    secrets = os.path.join(base, SECRETS_FOLDER, "%d.json" % index)
    if os.path.exists(secrets):
        os.replace(secrets, os.path.join(run_dir, "secrets.json"))
    first = None if index == 0 else os.path.join(fill(run_dirs[0], hosts, addresses), "status.json")
    return run_dir, first
