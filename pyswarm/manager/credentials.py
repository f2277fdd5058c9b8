"""The cluster's credentials: join tokens, the client credential, and each node's own secret."""

from __future__ import annotations

import hmac
import time
from pathlib import Path

from pyswarm.manager.certificates import ca_digest, create_ca, read_ca
from pyswarm.manager.errors import Invalid
from pyswarm.manager.ids import new_id, new_token
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore

ROLES = ("client", "manager", "worker")


def new_cluster_meta(data_dir: Path) -> dict[str, str]:
    """A new cluster's identity, certificate authority and tokens (`swarm init`)."""
    cluster_id = new_id()
    digest = ca_digest(create_ca(data_dir, cluster_id))
    return {
        "cluster_id": cluster_id,
        "created_at": str(time.time()),
        "ca_digest": digest,
        "token_worker": new_token("w", digest),
        "token_manager": new_token("m", digest),
        "token_client": new_token("c", digest),
    }


def node_secret_key(node_id: str) -> str:
    return f"node_secret_{node_id}"


class Credentials:
    def __init__(self, state: ClusterState, store: StateStore, data_dir: Path) -> None:
        self.state = state
        self.store = store
        self.data_dir = data_dir

    def ca_certificate(self) -> str | None:
        """The cluster CA's certificate (PEM): public, what a joining node checks against its token."""
        return read_ca(self.data_dir)

    def token_role(self, presented: str) -> str | None:
        """Which credential a bearer token is: client, manager, worker, node:<id>, or None. Constant time."""
        presented_bytes = presented.encode()
        meta = self.state.meta
        found: str | None = None
        for role in ROLES:
            expected = meta.get(f"token_{role}", "")
            if expected and hmac.compare_digest(presented_bytes, expected.encode()):
                found = role
        for node in list(self.state.nodes.values()):
            secret = meta.get(node_secret_key(node.id), "")
            if secret and hmac.compare_digest(presented_bytes, secret.encode()):
                found = f"node:{node.id}"
        return found

    def join_token(self, role: str, rotate: bool) -> str:
        if role not in ("worker", "manager"):
            raise Invalid(f"unknown role {role!r}: expected worker or manager")
        with self.state.lock:
            if rotate:
                token = new_token(role[0], self.state.meta.get("ca_digest", ""))
                self.store.write(meta={f"token_{role}": token})
                self.state.meta[f"token_{role}"] = token
            return self.state.meta[f"token_{role}"]

    def client_token(self) -> str:
        return self.state.meta["token_client"]

    def node_secret(self, node_id: str) -> str:
        return self.state.meta.get(node_secret_key(node_id), "")

    def new_node_secret(self, node_id: str) -> dict[str, str]:
        """A new node's secret, as the meta entry to write with the node (lock held: recorded once written)."""
        return {node_secret_key(node_id): new_token("n", self.state.meta.get("ca_digest", ""))}
