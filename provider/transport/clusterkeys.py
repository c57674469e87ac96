"""Password-less SSH between a cluster's nodes, as Batch AI set it up for MPI.

mpirun on a job's first node starts the ranks of the other nodes over ssh, so those nodes must
let it in without a password. Each cluster gets its own key pair when it is created: the
private half waits in the secret vault (never in a record) and is copied 0600 under the
node's root when a node joins; the public half goes into the node user's authorized_keys on
a line tagged with the cluster and the node, so that removing the node deletes exactly that
line and nothing the user wrote. A job's ssh config pins each peer's host key as the control
plane verified it, so no node ever trusts a host key on first use.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..agent.protocol import PrivateFile

DEFAULT_AUTHORIZED_KEYS = "~/.ssh/authorized_keys"


@dataclass(frozen=True)
class PeerSSH:
    """How the other nodes of a job reach one node over ssh, and the host key it must show."""

    node_id: str
    address: str
    port: int
    user: str
    host_key: str  # "<type> <base64>", as the control plane verified it


@dataclass(frozen=True)
class ClusterKey:
    private: str  # OpenSSH PEM
    public: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls) -> ClusterKey:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(private.decode(), public.decode())


def authorization_tag(cluster_uuid: str, node_id: str) -> str:
    """The comment that marks our line in authorized_keys: one per cluster and node."""
    return f"batchai-cluster-{cluster_uuid}-node-{node_id}"


def host_alias(node_id: str) -> str:
    return f"batchai-{node_id}"


def ssh_client_files(peers: list[PeerSSH], identity: str, folder: str) -> tuple[str, list[PrivateFile]]:
    """The job's ssh config and known_hosts (path, text) for the node that runs mpirun.

    Peers are matched by the address the hostfile names; HostKeyAlias ties each to its pinned
    key whatever its port. BatchMode makes a refused login fail at once instead of prompting.
    """
    config_path = posixpath.join(folder, "ssh_config")
    known_hosts_path = posixpath.join(folder, "ssh_known_hosts")
    blocks = []
    for peer in peers:
        blocks.append(
            f"Host {peer.address}\n  HostName {peer.address}\n  Port {peer.port}\n  User {peer.user}\n  HostKeyAlias {host_alias(peer.node_id)}\n"
        )
    blocks.append(
        "Host *\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        "  BatchMode yes\n"
        "  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {known_hosts_path}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  ConnectTimeout 20\n"
        "  LogLevel ERROR\n"
    )
    known_hosts = "".join(f"{host_alias(peer.node_id)} {peer.host_key}\n" for peer in peers)
    files = [PrivateFile(config_path, "".join(blocks)), PrivateFile(known_hosts_path, known_hosts)]
    return config_path, files


def mpi_launcher_env(config_path: str) -> dict[str, str]:
    """Point OpenMPI's and Intel MPI's ssh launchers at the job's ssh config.

    Tree spawn is off: with it, a second node would ssh on to a third with a config path that
    exists only on the first.
    """
    return {
        "OMPI_MCA_plm_rsh_args": f"-F {config_path}",
        "OMPI_MCA_plm_rsh_no_tree_spawn": "1",
        "I_MPI_HYDRA_BOOTSTRAP_EXEC_EXTRA_ARGS": f"-F {config_path}",
    }
