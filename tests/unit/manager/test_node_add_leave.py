"""Manager.add_node and Manager.node_left on in-memory engines: who may (re-)join, where a tcp:// engine's
TLS files go, and what `swarm leave` on a worker leaves behind on its engine (nothing)."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyswarm.drivers.engine import Engine, EngineUnreachable, TlsFiles
from pyswarm.drivers.host import forget_host_key
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager import registration
from pyswarm.manager.api import create_app
from pyswarm.manager.errors import Conflict, Forbidden, ManagerError
from pyswarm.manager.registration import JoinClaim, TlsPem
from pyswarm.model import LABEL_CLUSTER_ID, Node, NodeStatus, TaskState
from tests.unit.inprocess import ALIAS_URL, WORKER_URLS, Cluster, snapshot, wait_until

TCP_URL = "tcp://10.0.0.5:2376"
PEM = "-----BEGIN {0}-----\n{1}\n-----END {0}-----\n"
TLS = TlsPem(ca=PEM.format("CERTIFICATE", "CA"), cert=PEM.format("CERTIFICATE", "CERT"), key=PEM.format("KEY", "K1"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "data")
    try:
        yield cluster
    finally:
        cluster.close()


def node(cluster: Cluster, hostname: str) -> Node:
    return next(n for n in cluster.manager.state.nodes.values() if n.hostname == hostname)


def cluster_containers(engine: MemoryEngine, cluster: Cluster) -> list[str]:
    return [
        c.name for c in engine.state.containers.values() if c.labels.get(LABEL_CLUSTER_ID) == cluster.manager.cluster_id
    ]


# --- who may (re-)join ---------------------------------------------------------------------------------


def test_a_ready_node_is_not_added_again(cluster: Cluster) -> None:
    cluster.wait_converged()
    before = snapshot(cluster)
    with pytest.raises(ManagerError) as refused:
        cluster.manager.registration.add_node(WORKER_URLS[0], "10.0.0.2", None)
    assert isinstance(refused.value, Conflict)
    assert "is already in the swarm as node-02 (status ready): this node is already part of a swarm" in str(
        refused.value
    )
    assert snapshot(cluster) == before


def test_a_node_that_left_may_join_again_and_comes_back_ready(cluster: Cluster) -> None:
    cluster.wait_converged()
    left = node(cluster, "node-02")
    cluster.manager.nodes.node_left(left.id)
    assert node(cluster, "node-02").status is NodeStatus.DOWN
    rejoined, secret = cluster.manager.registration.add_node(WORKER_URLS[0], "10.0.0.2", None)
    assert rejoined.id == left.id and secret == cluster.manager.state.meta[f"node_secret_{left.id}"]
    wait_until(lambda: node(cluster, "node-02").status is NodeStatus.READY)
    assert node(cluster, "node-02").status_message == ""
    assert len(cluster.manager.state.nodes) == 3


def test_a_node_that_left_joins_again_only_with_its_own_secret(cluster: Cluster) -> None:
    """With a join token (JoinClaim), a Down node's identity is taken back only with that node's own secret:
    its engine ID alone is no proof (anyone may run an engine that answers with it)."""
    cluster.wait_converged()
    left = node(cluster, "node-02")
    cluster.manager.nodes.node_left(left.id)
    before = snapshot(cluster)
    for presented in (None, "wrong", cluster.manager.state.meta[f"node_secret_{node(cluster, 'node-03').id}"]):
        claim = JoinClaim(source_addr="10.0.0.2", node_secret=presented)
        with pytest.raises(Forbidden, match="run `pyswarm node rm node-02` on the manager first"):
            cluster.manager.registration.add_node(WORKER_URLS[0], "10.0.0.2", left.engine_id, join=claim)
        assert snapshot(cluster) == before
    secret = cluster.manager.state.meta[f"node_secret_{left.id}"]
    claim = JoinClaim(source_addr="10.0.0.2", node_secret=secret)
    rejoined, returned = cluster.manager.registration.add_node(WORKER_URLS[0], "10.0.0.2", left.engine_id, join=claim)
    assert (rejoined.id, returned) == (left.id, secret)
    wait_until(lambda: node(cluster, "node-02").status is NodeStatus.READY)


def test_a_down_node_may_join_again_under_another_url_and_is_pinged_there(cluster: Cluster) -> None:
    cluster.wait_converged()
    old = cluster.engines[WORKER_URLS[0]]
    moved = MemoryEngine(ALIAS_URL, hostname="node-02", engine_id=old.engine_id)
    old.set_down(True)
    wait_until(lambda: node(cluster, "node-02").status is NodeStatus.DOWN)
    cluster.aliases[ALIAS_URL] = moved
    rejoined, _secret = cluster.manager.registration.add_node(ALIAS_URL, "10.0.0.2", None)
    assert rejoined.engine_url == ALIAS_URL
    wait_until(lambda: node(cluster, "node-02").status is NodeStatus.READY)  # the old URL stays unreachable
    assert cluster.manager.links.by_node[rejoined.id].url == ALIAS_URL


# --- a tcp:// engine's TLS files -----------------------------------------------------------------------


class Probed:
    """Records the TLS files each engine client is made with, and their directory's mode at that time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.calls: list[tuple[TlsFiles, int, str]] = []

    def __call__(self, url: str, timeout: float, tls: TlsFiles | None = None) -> Engine:
        if tls is not None:
            directory = Path(tls.key).parent
            self.calls.append((tls, stat.S_IMODE(directory.stat().st_mode), Path(tls.key).read_text()))
        return self.cluster.factory(url, timeout, tls)


def tls_tree(cluster: Cluster) -> list[str]:
    root = cluster.manager.settings.data_dir / "tls"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_tls_files_are_tried_in_a_private_directory_then_stored(cluster: Cluster) -> None:
    probed = Probed(cluster)
    cluster.manager.connector.factory = probed
    cluster.engines[TCP_URL] = MemoryEngine(TCP_URL, hostname="node-05")
    added, _secret = cluster.manager.registration.add_node(TCP_URL, "10.0.0.5", None, tls=TLS)
    tried, mode, key = probed.calls[0]
    final = cluster.manager.connector.tls_dir(TCP_URL)
    assert Path(tried.key).parent != final and mode == 0o700 and key == TLS.key
    assert not Path(tried.key).parent.exists()  # the trial directory is gone
    assert tls_tree(cluster) == [final.name] + [f"{final.name}/{n}" for n in ("ca.pem", "cert.pem", "key.pem")]
    assert (final / "key.pem").read_text() == TLS.key
    assert stat.S_IMODE((final / "key.pem").stat().st_mode) == 0o600
    # The node's agent (heartbeat, engine jobs) uses the stored files.
    wait_until(lambda: any(Path(tls.key) == final / "key.pem" for tls, _mode, _key in probed.calls[1:]))
    assert cluster.manager.state.nodes[added.id].status is NodeStatus.READY


def test_an_unreachable_tcp_engine_leaves_no_tls_file(cluster: Cluster) -> None:
    with pytest.raises(ManagerError, match="cannot reach engine"):
        cluster.manager.registration.add_node("tcp://10.0.0.9:2376", "10.0.0.9", None, tls=TLS)
    assert tls_tree(cluster) == []


def test_a_refused_add_keeps_the_tls_files_of_the_node_in_the_swarm(cluster: Cluster) -> None:
    cluster.engines[TCP_URL] = MemoryEngine(TCP_URL, hostname="node-05")
    cluster.manager.registration.add_node(TCP_URL, "10.0.0.5", None, tls=TLS)
    stored = tls_tree(cluster)
    other = TlsPem(ca=TLS.ca, cert=TLS.cert, key=PEM.format("KEY", "K2"))
    with pytest.raises(ManagerError) as refused:
        cluster.manager.registration.add_node(TCP_URL, "10.0.0.5", None, tls=other)
    assert isinstance(refused.value, Conflict)
    assert tls_tree(cluster) == stored
    assert (cluster.manager.connector.tls_dir(TCP_URL) / "key.pem").read_text() == TLS.key


# --- swarm leave -----------------------------------------------------------------------------------------


def test_leave_removes_the_workers_task_containers_and_shuts_its_tasks_down(cluster: Cluster) -> None:
    cluster.populate()  # web x2, api x1, mon global: node-02 runs at least mon's task
    worker = cluster.engines[WORKER_URLS[0]]
    leaving = node(cluster, "node-02")
    on_node = {t.id for t in cluster.manager.state.tasks.values() if t.node_id == leaving.id and t.container_id}
    assert cluster_containers(worker, cluster) and on_node
    secret = cluster.manager.state.meta[f"node_secret_{leaving.id}"]
    response = TestClient(create_app(cluster.manager), headers={"Authorization": f"Bearer {secret}"}).post(
        "/swarm/leave"
    )
    assert response.status_code == 204, response.text
    assert cluster_containers(worker, cluster) == []  # removed before the answer
    for task_id in on_node:
        task = cluster.manager.state.tasks[task_id]
        assert (task.state, task.desired_state, task.message) == (
            TaskState.SHUTDOWN,
            TaskState.SHUTDOWN,
            "node left the swarm",
        )
    assert leaving.id not in cluster.manager.links.by_node
    # Replaced elsewhere (mon, global, only where nodes are ready); the node stays listed, Down.
    wait_until(
        lambda: all(
            (view := cluster.manager.read.service_view(s)).running == view.desired
            for s in cluster.manager.state.services.values()
        )
    )
    assert node(cluster, "node-02").status is NodeStatus.DOWN
    assert cluster_containers(worker, cluster) == []


def test_leave_with_an_unreachable_engine_says_so_and_still_takes_the_node_out(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.populate()
    worker = cluster.engines[WORKER_URLS[0]]
    leaving = node(cluster, "node-02")
    original = cluster.factory

    def unreachable(url: str, timeout: float, tls: Any = None) -> Engine:
        if url == WORKER_URLS[0]:
            raise EngineUnreachable(f"{url}: no route to host (simulated)")
        return original(url, timeout, tls)

    cluster.manager.connector.factory = unreachable
    with caplog.at_level(logging.WARNING, logger="pyswarm.manager"):
        cluster.manager.nodes.node_left(leaving.id)
    assert "node node-02 left the swarm, but its engine cannot be reached: its task containers were not removed" in (
        caplog.text
    )
    assert node(cluster, "node-02").status is NodeStatus.DOWN
    assert leaving.id not in cluster.manager.links.by_node
    assert cluster_containers(worker, cluster)  # still there: nothing could remove them


# --- a pinned SSH host key -------------------------------------------------------------------------------

FINGERPRINT = "SHA256:" + "A" * 43


def test_a_refused_add_takes_back_the_pinned_host_key_it_recorded(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`join --ssh-fingerprint` records the host key before the probe; a refusal (here: the engine is not the
    one that asked to join) must leave known_hosts as it was, comments and other hosts included."""
    known_hosts = tmp_path / "known_hosts"
    original = "# kept\n10.0.0.2 ssh-ed25519 AAAAother\n"
    known_hosts.write_text(original)
    appended = "10.0.0.4 ssh-ed25519 AAAApinned"

    def record(host: str, port: int, fingerprint: str, *args: Any, **kwargs: Any) -> str:
        with known_hosts.open("a") as handle:
            handle.write(appended + "\n")
        return appended

    monkeypatch.setattr(registration, "trust_pinned_host_key", record)
    monkeypatch.setattr(registration, "forget_host_key", lambda line: forget_host_key(line, known_hosts))
    spare = cluster.engines["ssh://root@10.0.0.4"]
    with pytest.raises(ManagerError) as refused:
        cluster.manager.registration.add_node(spare.url, "10.0.0.4", "not-this-engine", ssh_fingerprint=FINGERPRINT)
    assert isinstance(refused.value, Forbidden)
    assert known_hosts.read_text() == original

    # Accepted: the key stays recorded.
    cluster.manager.registration.add_node(spare.url, "10.0.0.4", spare.engine_id, ssh_fingerprint=FINGERPRINT)
    assert known_hosts.read_text() == original + appended + "\n"


def test_forget_host_key_removes_only_its_last_line(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    line = "[10.0.0.4]:2222 ssh-ed25519 AAAApinned"
    known_hosts.write_text(f"# comment\n{line}\nother ssh-rsa AAAA\n{line}\n")
    forget_host_key(line, known_hosts)
    assert known_hosts.read_text() == f"# comment\n{line}\nother ssh-rsa AAAA\n"
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    forget_host_key("absent ssh-ed25519 AAAA", known_hosts)  # nothing to take back: unchanged
    assert known_hosts.read_text() == f"# comment\n{line}\nother ssh-rsa AAAA\n"
