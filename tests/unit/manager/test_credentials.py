"""Credentials.token_role against near misses: a token one character off, cut short, lengthened, with
whitespace, in another case, or of another kind is never taken for the credential it resembles. Each near
miss gives None, or, when it is exactly another credential, that credential's role: never a wrong one.

Also: a removed node's secret is gone, from the manager's memory and from its store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.manager.credentials import node_secret_key
from tests.unit.inprocess import Cluster, no_ssh_probes

KINDS = ("client", "worker", "manager", "node")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("credentials") / "data", start=False)
    with no_ssh_probes():
        yield cluster
    cluster.close()


def role_of(cluster: Cluster, kind: str) -> str:
    if kind == "node":
        node = next(n for n in cluster.manager.state.nodes.values() if n.hostname == "node-02")
        return f"node:{node.id}"
    return kind


def every_credential(cluster: Cluster) -> dict[str, str]:
    """Each credential the manager holds -> the role it gives."""
    meta = cluster.manager.state.meta
    found = {meta[f"token_{role}"]: role for role in ("client", "worker", "manager")}
    for node in cluster.manager.state.nodes.values():
        if node_secret_key(node.id) in meta:  # the manager's own node (swarm init) has none
            found[meta[node_secret_key(node.id)]] = f"node:{node.id}"
    return found


def _other(char: str) -> str:
    """Another character of the same sort (a hex digit for a hex digit), so the token keeps its form."""
    return "0" if char != "0" else "1"


def near_misses(token: str) -> dict[str, str]:
    middle = len(token) // 2
    variants = {
        "first character off": _other(token[0]) + token[1:],
        "middle character off": token[:middle] + _other(token[middle]) + token[middle + 1 :],
        "last character off": token[:-1] + _other(token[-1]),
        "two characters swapped at the end": token[:-2] + token[-1] + token[-2],
        "the first 24 characters": token[:24],
        "all but the last character": token[:-1],
        "all but the first character": token[1:],
        "the token and one character more": token + "0",
        "the token and a suffix": token + "-extra",
        "the token twice": token + token,
        "a space before": " " + token,
        "a space after": token + " ",
        "a newline after": token + "\n",
        "a tab inside": token[:middle] + "\t" + token[middle:],
        "upper case": token.upper(),
        "lower case": token.lower(),
        "swapped case": token.swapcase(),
        "the first letter's case changed": _first_letter_case_changed(token),
        "empty": "",
    }
    return {name: variant for name, variant in variants.items() if variant != token}


def _first_letter_case_changed(token: str) -> str:
    index = next(i for i, char in enumerate(token) if char.isalpha())
    return token[:index] + token[index].swapcase() + token[index + 1 :]


def test_each_credential_gives_its_own_role(cluster: Cluster) -> None:
    credentials = every_credential(cluster)
    assert len(credentials) == 5  # 3 tokens, and a secret for each node that joined: all different
    for token, role in credentials.items():
        assert cluster.manager.credentials.token_role(token) == role


@pytest.mark.parametrize("kind", KINDS)
def test_near_misses_of_a_credential_give_no_role(cluster: Cluster, kind: str) -> None:
    credentials = every_credential(cluster)
    token = next(t for t, role in credentials.items() if role == role_of(cluster, kind))
    variants = near_misses(token)
    assert len(variants) >= 17  # the case changes are real changes: the tokens hold letters of both cases
    for name, variant in variants.items():
        role = cluster.manager.credentials.token_role(variant)
        assert role == credentials.get(variant), (kind, name, variant, role)
        assert role is None, (kind, name)  # no near miss is another credential exactly


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("other", KINDS)
def test_a_credential_of_another_kind_gives_that_kind_exactly(cluster: Cluster, kind: str, other: str) -> None:
    credentials = every_credential(cluster)
    presented = next(t for t, role in credentials.items() if role == role_of(cluster, other))
    role = cluster.manager.credentials.token_role(presented)
    assert role == role_of(cluster, other)
    if other != kind:
        assert role != role_of(cluster, kind)


def test_another_nodes_secret_is_that_node_only(cluster: Cluster) -> None:
    meta = cluster.manager.state.meta
    nodes = [n for n in cluster.manager.state.nodes.values() if node_secret_key(n.id) in meta]
    assert len(nodes) == 2
    for node in nodes:
        secret = meta[node_secret_key(node.id)]
        assert cluster.manager.credentials.token_role(secret) == f"node:{node.id}"
        for variant in near_misses(secret).values():
            assert cluster.manager.credentials.token_role(variant) is None


@pytest.mark.parametrize("presented", ["", " ", "\x00", "PSWTKN-1-", "Bearer", "null", "é" * 40, "x" * 100_000])
def test_junk_gives_no_role(cluster: Cluster, presented: str) -> None:
    assert cluster.manager.credentials.token_role(presented) is None


def test_a_removed_nodes_secret_is_gone_from_memory_and_the_store(tmp_path: Path) -> None:
    """Security review, problem 7: `node rm` left the node's secret in the stored state."""
    cluster = Cluster(tmp_path / "data", start=False)
    try:
        manager = cluster.manager
        node = next(n for n in manager.state.nodes.values() if n.hostname == "node-02")
        key = node_secret_key(node.id)
        secret = manager.state.meta[key]
        assert manager.store.load().meta[key] == secret
        manager.nodes.remove("node-02", force=True)
        assert key not in manager.state.meta
        assert key not in manager.store.load().meta  # a restarted manager would not know it either
        assert manager.credentials.token_role(secret) is None
        node_03 = next(n for n in manager.state.nodes.values() if n.hostname == "node-03")
        assert node_secret_key(node_03.id) in manager.store.load().meta  # the other nodes' are kept
    finally:
        cluster.close()
