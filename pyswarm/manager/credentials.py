"""The cluster's credentials: join tokens, the client credential, and each node's own secret."""

from __future__ import annotations

import hmac
import time

from pyswarm.manager.errors import Invalid
from pyswarm.manager.ids import new_id, new_token
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore

ROLES = ("client", "manager", "worker")


def new_cluster_meta() -> dict[str, str]:
    """A new cluster's identity and tokens (`swarm init`)."""
    return {
        "cluster_id": new_id(),
        "created_at": str(time.time()),
        "token_worker": new_token("w"),
        "token_manager": new_token("m"),
        "token_client": new_token("c"),
    }


def node_secret_key(node_id: str) -> str:
    return f"node_secret_{node_id}"


class Credentials:
    def __init__(self, state: ClusterState, store: StateStore) -> None:
        self.state = state
        self.store = store

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
                token = new_token(role[0])
                self.store.write(meta={f"token_{role}": token})
                self.state.meta[f"token_{role}"] = token
            return self.state.meta[f"token_{role}"]

    def client_token(self) -> str:
        return self.state.meta["token_client"]

    def node_secret(self, node_id: str) -> str:
        return self.state.meta.get(node_secret_key(node_id), "")

    def new_node_secret(self, node_id: str) -> dict[str, str]:
        """A new node's secret, as the meta entry to write with the node (lock held: recorded once written)."""
        return {node_secret_key(node_id): new_token("n")}
