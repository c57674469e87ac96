"""What the control plane does on a node: deploy the agent, start a run, read its status, stop it, clean up.

Every call goes through the node's Transport, so this works the same for local nodes and SSH hosts. A plan file is written 0600 and secrets travel in a separate
0600 file that the agent deletes as soon as it has read it; neither appears on a command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agent import protocol
from ..errors import BatchAIError, ErrorCode
from ..layout import NodeLayout
from . import Transport
from .clusterkeys import ClusterKey, authorization_tag

log = logging.getLogger(__name__)

NODE_FOLDER = Path(protocol.__file__).parent
AGENT_FILES = {  # node/ copied flat, side by side; agent.py last, so its presence means the set is complete
    **{path.name: path.read_bytes() for path in sorted(NODE_FOLDER.glob("*.py")) if path.name not in ("__init__.py", "agent.py")},
    "agent.py": (NODE_FOLDER / "agent.py").read_bytes(),
}
AGENT_HASH = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in AGENT_FILES.items())).hexdigest()
TERMINATE_TIMEOUT_S = 60.0


def deploy_files(transport: Transport, agent_path: str) -> None:
    folder = posixpath.dirname(agent_path)
    for name, data in AGENT_FILES.items():
        transport.write_file(posixpath.join(folder, name), data, 0o755)


class DeferredTransport:
    """A Transport got from ``get`` when first used (a failure to get it is raised there, and asked again next use)."""

    def __init__(self, get: Callable[[], Transport]) -> None:
        self._get = get
        self._got: Transport | None = None

    def __getattr__(self, name: str) -> Any:
        if self._got is None:
            self._got = self._get()
        return getattr(self._got, name)


@dataclass
class NodeHandle:
    node_id: str
    transport: Transport
    layout: NodeLayout

    @property
    def agent_path(self) -> str:
        return self.layout.agent_path(AGENT_HASH)

    def deploy_agent(self) -> str:
        """Copy the agent once per content hash; later calls find it there."""
        if self.transport.read_file(self.agent_path, 0, 0) is None:
            deploy_files(self.transport, self.agent_path)
        return self.agent_path

    def start_run(self, run_id: str, plan: protocol.AgentPlan, secrets: dict[str, str]) -> None:
        run_dir = self.layout.run_dir(run_id)
        agent = self.deploy_agent()
        self.transport.remove_tree(run_dir)
        self.transport.write_file(posixpath.join(run_dir, protocol.PLAN_FILE), json.dumps(plan.to_json()).encode(), 0o600)
        if secrets:
            self.transport.write_file(posixpath.join(run_dir, protocol.SECRETS_FILE), json.dumps(secrets).encode(), 0o600)
        self.transport.start_detached(
            [self.transport.python, agent, "run", run_dir], log_path=posixpath.join(run_dir, protocol.AGENT_LOG_FILE)
        )
        log.info("started run %s on node %s", run_id, self.node_id)

    def status(self, run_id: str) -> protocol.AgentStatus | None:
        """The run's status.json as its agent last wrote it; None while there is none (or it is not one)."""
        raw = self.transport.read_file(posixpath.join(self.layout.run_dir(run_id), protocol.STATUS_FILE))
        if raw is None:
            return None
        try:
            return protocol.AgentStatus.from_json(json.loads(raw), f"{protocol.STATUS_FILE} of run {run_id} on {self.node_id}")
        except (ValueError, protocol.ProtocolError) as error:  # written whole, so never torn: an agent of another version
            log.warning("unreadable status: %s", error)
            return None

    def planned(self, run_id: str) -> bool:
        """Whether a run's plan reached the node (it is written just before its agent starts)."""
        return self.transport.read_file(posixpath.join(self.layout.run_dir(run_id), protocol.PLAN_FILE), 0, 0) is not None

    def terminate(self, run_id: str, grace_s: float = protocol.DEFAULT_GRACE_S) -> None:
        """Stop the run's processes (the agent's SIGTERM → SIGKILL escalation); returns once it is final."""
        agent = self.deploy_agent()
        result = self.transport.run(
            [self.transport.python, agent, "terminate", self.layout.run_dir(run_id), str(grace_s)], timeout_s=TERMINATE_TIMEOUT_S
        )
        if result.returncode != 0:
            log.warning("terminate of run %s on node %s exited %d: %s", run_id, self.node_id, result.returncode, result.stderr[-500:])

    def install_cluster_key(self, cluster_uuid: str, key: ClusterKey, authorized_keys: str, existing: list[str] | None = None) -> None:
        """The cluster's private key 0600 under the node root, its public key in the user's authorized_keys.

        ``existing``: the uuids of every cluster there is; lines of any other cluster are removed.
        """
        self.transport.write_file(self.layout.cluster_key_path(cluster_uuid), key.private.encode(), 0o600)
        tag = authorization_tag(cluster_uuid, self.node_id)
        keep = ["--keep", ",".join(sorted({cluster_uuid, *existing}))] if existing is not None else []
        self._agent_command(["authorize", authorized_keys, tag, key.public, *keep], f"adding the cluster's key to {authorized_keys}")

    def remove_cluster_key(self, cluster_uuid: str, authorized_keys: str, existing: list[str] | None = None) -> None:
        """Take our line out of authorized_keys again (the key file goes with the node root), and stale ones with it."""
        tag = authorization_tag(cluster_uuid, self.node_id)
        keep = ["--keep", ",".join(sorted(set(existing) - {cluster_uuid}))] if existing is not None else []
        self._agent_command(["deauthorize", authorized_keys, tag, *keep], f"removing the cluster's key from {authorized_keys}")

    def _agent_command(self, args: list[str], what: str) -> None:
        result = self.transport.run([self.transport.python, self.deploy_agent(), *args], timeout_s=30)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
            raise BatchAIError(ErrorCode.NODE_SETUP_FAILED, f"{what} on node {self.node_id} failed: {detail[0]}", self.node_id)

    def discover_gpus(self) -> int:
        """GPUs on the node by nvidia-smi; 0 where there is none (or it fails)."""
        query = "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>/dev/null || true"
        try:
            result = self.transport.run(["sh", "-c", query], timeout_s=30)
        except Exception as error:  # discovery must never make a node unusable by itself
            log.warning("GPU discovery on %s failed: %s", self.node_id, error)
            return 0
        return sum(1 for line in result.stdout.decode(errors="replace").splitlines() if line.strip())

    def stop_all_runs(self) -> None:
        """Every run still on the node ends (a node lost and back may still run what it ran before)."""
        agent = self.deploy_agent()
        runs = posixpath.dirname(self.layout.run_dir("x"))
        if self.transport.list_dir(runs):
            self.transport.run([self.transport.python, agent, "terminate-all", runs, "2"], timeout_s=TERMINATE_TIMEOUT_S)

    def clean(self) -> None:
        """Leave the host as we found it: stop every run still there, undo our mounts, then remove the
        node root. Where something stays mounted the root is kept: under it may be the user's NFS."""
        if self.transport.list_dir(self.layout.root) is None:
            return
        self.stop_all_runs()
        self._agent_command(["unmount-under", self.layout.root], f"unmounting what is mounted under {self.layout.root}")
        self.transport.remove_tree(self.layout.root)
