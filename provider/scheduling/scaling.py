"""Scaling a cluster: the nodes it claims, sets up, probes, asks an elastic pool for, and lets go.

A part of one reconcile pass (reconcile.py): it acts through the pass's compare-and-swap writes
and node handles, and keeps only what it reads once per pass (the cluster's key, the clusters).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from ..errors import BatchAIError, StaleRecord
from ..launch import NodeSlot, setup_plan
from ..layout import cluster_setup_segment, stdouterr_template
from ..pools import eligible
from ..records import (
    ClusterRecord,
    NodeRecord,
    NodeState,
    move_node,
    record_new_node,
    utc_now,
)
from ..transport.clusterkeys import ClusterKey
from .decisions import (
    RequestNodes,
)

if TYPE_CHECKING:
    from .reconcile import Reconciler

log = logging.getLogger(__name__)


def setup_run_id(cluster: ClusterRecord) -> str:
    return f"setup-{cluster.uuid}"


class Scaling:
    def __init__(self, p: Reconciler) -> None:
        self.p = p
        self._cluster_key: ClusterKey | bool | None = False  # False: not read yet
        self._existing_clusters: list[str] | None = None

    def record_joined(self) -> None:
        """Machines an elastic pool started since the last pass get their free record, claimable in this pass."""
        vm_size = self.p.spec.vm_size
        for node_id, address, root, gpus in self.p.snapshot.joined:
            created = record_new_node(self.p.store, node_id, address, root, gpus)
            if created is None:
                continue  # another pass recorded it first: the next snapshot has it
            record, etag = created
            self.p.snapshot.etags[record.key] = etag
            self.p.snapshot.nodes[node_id] = record
            if eligible(self.p.pool.labels(node_id), vm_size):
                self.p.snapshot.eligible = self.p.snapshot.eligible | {node_id}

    def request_nodes(self, action: RequestNodes) -> None:
        starting = self.p.pool.grow(action.count, action.vm_size)
        if starting:
            log.info("cluster %s: %d node(s) starting for it: %s", self.p.member, len(starting), ", ".join(starting))

    def claim(self, node: NodeRecord) -> None:
        """free → preparing for this cluster, then find its GPUs, give it the cluster's key, start its setup."""
        if node.state != NodeState.FREE:
            return
        try:
            boot_s = self.p.pool.boot_seconds(node.node_id)  # a VM started for this cluster: its boot is the cluster's
            claimed = self.p.write_node(
                move_node(node, NodeState.PREPARING, boot_s=boot_s, cluster=self.p.member, cluster_uuid=self.p.cluster.uuid, errors=[])
            )
        except StaleRecord:  # another cluster's pass claimed it first; the next pass grows again
            return
        try:
            gpus = self.p.handle(claimed).discover_gpus() if claimed.gpus == 0 else claimed.gpus
            if gpus != claimed.gpus:
                claimed = self.p.write_node(claimed.model_copy(update={"gpus": gpus}))
            self.install_cluster_key(claimed)
        except (OSError, BatchAIError) as error:
            self.p.mark_lost(claimed, str(getattr(error, "message", error)))
            return
        self.start_setup(claimed)

    def probe(self, node: NodeRecord) -> None:
        """unusable → preparing when a lost node answers again: its agent deployed anew (if it was
        gone), whatever still ran there stopped, its setup run as for a new node."""
        if node.state != NodeState.UNUSABLE:
            return
        try:
            self.p.handle(node).stop_all_runs()  # deploys the agent first: the round trip that proves the node is back
        except (OSError, BatchAIError) as error:
            log.info("lost node %s (%s) still does not answer: %s", node.node_id, node.address, getattr(error, "message", error))
            self.p.write_node(node.model_copy(update={"probed_at": utc_now()}))
            return
        log.warning("lost node %s (%s) answers again: setting it up anew", node.node_id, node.address)
        healed = self.p.write_node(move_node(node, NodeState.PREPARING, errors=[], probed_at=None, unreachable_since=None))
        try:
            self.install_cluster_key(healed)
        except (OSError, BatchAIError) as error:
            self.p.mark_lost(healed, str(getattr(error, "message", error)))
            return
        self.start_setup(healed)

    def cluster_key(self) -> ClusterKey | None:
        """Read from the vault at most once per pass (a GET and a decrypt on blob), never without cluster SSH."""
        if not self.p.pool.cluster_ssh:
            return None
        if self._cluster_key is False:
            stored = self.p.vault.get(f"cluster-{self.p.cluster.uuid}").get("ssh_key")
            self._cluster_key = ClusterKey(stored["private"], stored["public"]) if stored else None
        return self._cluster_key  # type: ignore[return-value]

    def existing_clusters(self) -> list[str]:
        """The uuids of every cluster, read once per pass and only when a host's keys are edited (a pass that
        grows or shrinks by eight nodes reads the clusters once, not eight times)."""
        if self._existing_clusters is None:
            self._existing_clusters = [found.data["uuid"] for _, found in self.p.store.read_many("clusters/")]
        return self._existing_clusters

    def install_cluster_key(self, node: NodeRecord) -> None:
        key = self.cluster_key()
        if key is not None:
            where = self.p.pool.authorized_keys_file(node.node_id)
            self.p.handle(node).install_cluster_key(self.p.cluster.uuid, key, where, self.existing_clusters())

    def remove_cluster_key(self, node: NodeRecord) -> None:
        if self.cluster_key() is None:
            return
        try:
            where = self.p.pool.authorized_keys_file(node.node_id)
            self.p.handle(node).remove_cluster_key(self.p.cluster.uuid, where, self.existing_clusters())
        except (OSError, BatchAIError) as error:  # the host may be gone for good; it must still leave the cluster
            log.warning("could not remove cluster %s's key from node %s: %s", self.p.member, node.node_id, error)

    def start_setup(self, node: NodeRecord) -> None:
        setup = self.p.spec.node_setup
        task = setup.setup_task if setup else None
        links = self.p.cluster_links()
        segment = cluster_setup_segment(
            self.p.settings.subscription, self.p.settings.resource_group, self.p.cluster.workspace, self.p.cluster.name, self.p.cluster.uuid
        )
        env = {v.name: v.value for v in (task.environment_variables or [])} if task else {}
        try:
            self.p.data.ensure(links)
            plan = setup_plan(
                NodeSlot(node.node_id, node.address, node.root, node.gpus),
                setup_command=task.command_line if task else None,
                setup_env=env,
                stdouterr_template_path=stdouterr_template(task.std_out_err_path_prefix, segment).rsplit("/", 1)[0] if task else None,
                cluster_links=links,
            )
            plan = replace(plan, inherit_env=list(self.p.settings.job_env_allow))
            secrets = self.p.vault.get(f"cluster-{self.p.cluster.uuid}").get("env", {})
            if task:  # a setup task on staged volumes: fetch what its command names, upload its logs
                reads = [task.command_line, *env.values()]
                staging, sas = self.p.data.stage_plan(reads, [(plan.expand_env[0][1], True)], {"cluster": links}, timedelta(days=1))
                plan = staging.apply(plan)
                secrets = {**secrets, **sas}
            self.p.handle(node).start_run(setup_run_id(self.p.cluster), plan, secrets)
        except (OSError, BatchAIError) as error:
            self.p.mark_lost(node, f"cannot start node setup: {getattr(error, 'message', error)}")

    def remove_node(self, node: NodeRecord) -> None:
        """Leave the cluster: stop its setup, take back the cluster's key, clean the node, free it."""
        if node.state != NodeState.LEAVING:
            node = self.p.write_node(move_node(node, NodeState.LEAVING))
        handle = self.p.handle(node)
        try:
            status = handle.status(setup_run_id(self.p.cluster))
            if status and not status.final:
                handle.terminate(setup_run_id(self.p.cluster))
        except BatchAIError as error:
            log.warning("could not stop node setup on %s: %s", node.node_id, error.message)
        self.remove_cluster_key(node)
        try:
            handle.clean()
        except BatchAIError as error:  # something stayed mounted (or the node is gone): the record says why
            log.warning("node %s left cluster %s uncleaned: %s", node.node_id, self.p.member, error.message)
            self.p.write_node(move_node(node, NodeState.FREE, errors=[error.to_json()]))
        else:
            self.p.write_node(move_node(node, NodeState.FREE, errors=[]))
        self.p.pool.release(node.node_id)  # an elastic pool may stop the machine; a fixed one keeps it
