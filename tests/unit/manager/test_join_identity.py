"""A join token may only join the node it is used on (security review of a three-node manager).

Problem 2: a join was not tied to the joining node: any `addr` made every node forward published ports to it,
and presenting a Down node's engine ID took that node over. Problem 3: join probes echoed what they found
(port-scan results, file facts, remote banners and bodies) to a worker-token holder. Problem 5: one node with
a non-IPv4 address stopped the routing mesh's rules for the whole cluster.

The API is driven with FastAPI's TestClient, whose client address (what the join route sees as the caller's
source address) is set per test; engines are in memory (tests.unit.inprocess), node-04's at 10.0.0.4 is the
spare one that may join.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyswarm.drivers.engine import DockerEngine, Engine, EngineUnreachable
from pyswarm.drivers.host import HostKeyMismatch, HostUnreachable
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager import ingress, registration
from pyswarm.manager.api import create_app
from pyswarm.manager.errors import Invalid
from pyswarm.manager.ingress import MeshSync
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import Availability, Node, NodeStatus, PortConfig, ServiceMode, ServiceSpec
from pyswarm.planners.ingress import RuleSet
from tests.unit.inprocess import MANAGER_URL, SPARE_URL, WORKER_URLS, Cluster, closed_port, snapshot, wait_until

SPARE_ADDR = "10.0.0.4"
FINGERPRINT = "SHA256:" + "A" * 43


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "data")
    try:
        cluster.wait_converged()  # every node Ready: the state a refusal must leave as it was
        yield cluster
    finally:
        cluster.close()


def api(cluster: Cluster, token: str, source: str = SPARE_ADDR) -> TestClient:
    """The API for a caller at `source` with a worker token, the client credential (client) or a node secret."""
    credential = cluster.manager.state.meta["token_worker"] if token == "worker" else cluster.token(token)
    return TestClient(
        create_app(cluster.manager), headers={"Authorization": f"Bearer {credential}"}, client=(source, 50000)
    )


def join_body(cluster: Cluster, **changes: Any) -> dict[str, Any]:
    """node-04 joining, as `pyswarm swarm join` on it sends it."""
    return {"engine_url": SPARE_URL, "engine_id": cluster.spare.engine_id, "addr": SPARE_ADDR, **changes}


def node(cluster: Cluster, hostname: str) -> Node:
    return next(n for n in cluster.manager.state.nodes.values() if n.hostname == hostname)


def refused(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    return detail


# --- the join's address is the joining node's own (problem 2) ---------------------------------------------


@pytest.mark.parametrize("addr", ["10.0.0.2", "10.0.0.77", "10.0.0.1"])
def test_a_join_with_someone_elses_addr_is_refused_and_changes_nothing(cluster: Cluster, addr: str) -> None:
    """Before: accepted, and every node DNATed published ports to addr (a node's, or any internal IP)."""
    before = snapshot(cluster)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=join_body(cluster, addr=addr)), 403)
    assert f"the join's address '{addr}' must be the node's own address, the one it joins from (10.0.0.4)" in detail
    assert snapshot(cluster) == before
    assert len(cluster.manager.state.nodes) == 3


def test_a_join_is_recorded_at_the_address_it_comes_from(cluster: Cluster) -> None:
    response = api(cluster, "worker").post("/swarm/join", json=join_body(cluster))
    assert response.status_code == 200, response.text
    assert node(cluster, "node-04").addr == SPARE_ADDR


def test_a_join_from_an_ipv4_mapped_ipv6_peer_is_its_ipv4_address(cluster: Cluster) -> None:
    """A manager listening on a dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d."""
    response = api(cluster, "worker", source="::ffff:10.0.0.4").post("/swarm/join", json=join_body(cluster))
    assert response.status_code == 200, response.text
    assert node(cluster, "node-04").addr == SPARE_ADDR


def test_a_join_must_name_an_engine_at_its_own_address_unless_advertised(cluster: Cluster) -> None:
    """The engine a join registers is reached at the joining node's own address; another URL only as an
    --advertise-engine, whose engine must answer with the joining engine's ID (the proof it controls it)."""
    elsewhere = "ssh://root@10.0.0.5"
    cluster.engines[elsewhere] = MemoryEngine(elsewhere, hostname="node-05")
    before = snapshot(cluster)
    body = join_body(cluster, engine_url=elsewhere, engine_id=cluster.engines[elsewhere].engine_id)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 403)
    assert "engine ssh://root@10.0.0.5 is not at the node's own address (10.0.0.4)" in detail
    assert "--advertise-engine" in detail
    # Advertised, but the engine there is not the joining one (node-04 presents its own engine ID).
    body = join_body(cluster, engine_url=elsewhere, advertise_engine=True)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 403)
    assert "is not the engine that asked to join" in detail
    assert snapshot(cluster) == before
    # Advertised, and it is: accepted, at the address the join comes from.
    body = join_body(cluster, engine_url=elsewhere, engine_id=cluster.engines[elsewhere].engine_id)
    response = api(cluster, "worker").post("/swarm/join", json={**body, "advertise_engine": True})
    assert response.status_code == 200, response.text
    assert (node(cluster, "node-05").engine_url, node(cluster, "node-05").addr) == (elsewhere, SPARE_ADDR)


# --- a Down node's identity (problem 2) -----------------------------------------------------------------


@pytest.fixture
def node_02_down(cluster: Cluster) -> Node:
    """node-02's engine is gone: node-02 is Down. node-04's address now answers with node-02's engine ID."""
    down = node(cluster, "node-02")
    cluster.engines[WORKER_URLS[0]].set_down(True)
    wait_until(lambda: node(cluster, "node-02").status is NodeStatus.DOWN)
    cluster.engines[SPARE_URL] = MemoryEngine(SPARE_URL, hostname="intruder", engine_id=down.engine_id)
    return down


@pytest.mark.parametrize("secret", [None, "", "PSWTKN-1-n-" + "0" * 48, "é"])
def test_a_join_cannot_take_over_a_down_node_without_its_secret(
    cluster: Cluster, node_02_down: Node, secret: str | None
) -> None:
    """Before: same node ID, hostname and secret, a new engine, and node-02's tasks."""
    before = snapshot(cluster)
    body = join_body(cluster, engine_id=node_02_down.engine_id)
    if secret is not None:
        body["node_secret"] = secret
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 403)
    assert "is node node-02, which is Down: a join takes its place back only with that node's own secret" in detail
    assert "run `pyswarm node rm node-02` on the manager first" in detail
    assert cluster.token("node") not in detail
    assert snapshot(cluster) == before


def test_another_nodes_secret_does_not_take_over_a_down_node(cluster: Cluster, node_02_down: Node) -> None:
    node_03 = node(cluster, "node-03")
    body = join_body(
        cluster, engine_id=node_02_down.engine_id, node_secret=cluster.manager.credentials.node_secret(node_03.id)
    )
    refused(api(cluster, "worker").post("/swarm/join", json=body), 403)


def test_a_down_node_takes_its_place_back_with_its_own_secret(cluster: Cluster, node_02_down: Node) -> None:
    """node-02 came back at another address (node-04's, here) with its engine and its node.json."""
    secret = cluster.token("node")
    body = join_body(cluster, engine_id=node_02_down.engine_id, node_secret=secret)
    response = api(cluster, "worker").post("/swarm/join", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["node_id"] == node_02_down.id and response.json()["node_secret"] == secret
    back = cluster.manager.state.nodes[node_02_down.id]
    assert (back.engine_url, back.addr) == (SPARE_URL, SPARE_ADDR)
    wait_until(lambda: cluster.manager.state.nodes[node_02_down.id].status is NodeStatus.READY)
    assert len(cluster.manager.state.nodes) == 3


def test_after_node_rm_the_engine_joins_as_a_new_node(cluster: Cluster, node_02_down: Node) -> None:
    """The admin's way to let an engine of a Down node join without its secret: remove the node first."""
    cluster.manager.nodes.remove("node-02", False)
    response = api(cluster, "worker").post("/swarm/join", json=join_body(cluster, engine_id=node_02_down.engine_id))
    assert response.status_code == 200, response.text
    assert response.json()["node_id"] != node_02_down.id
    assert response.json()["node_secret"] != cluster.manager.credentials.node_secret(node_02_down.id)


def test_the_admin_may_still_add_a_down_nodes_engine_back(cluster: Cluster, node_02_down: Node) -> None:
    """`node add` (the client credential) is trusted: it re-adds a Down node's engine under its identity."""
    response = api(cluster, "client").post("/nodes", json={"engine_url": SPARE_URL})
    assert response.status_code == 201, response.text
    assert response.json()["id"] == node_02_down.id


# --- what a join probe tells a join-token holder (problem 3) ---------------------------------------------

REMOTE = "SSH-2.0-OpenSSH_9.6 HTTP/1.1 400 Bad Request <html>REMOTE-BODY</html> /root/.ssh/id_ed25519 exists"


class Probes:
    """The manager's engine factory, recording the URLs it is asked for; `leak` makes it fail for node-04's
    URL with an error that carries remote banners, bodies and file facts (what real drivers put in theirs)."""

    def __init__(self, cluster: Cluster, leak: BaseException | None = None) -> None:
        self.cluster = cluster
        self.leak = leak
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float, tls: Any = None) -> Engine:
        self.urls.append(url)
        if self.leak is not None and url == SPARE_URL:
            raise self.leak
        if "127.0.0.1" in url:
            return DockerEngine(url, timeout=timeout, tls=tls, connect_timeout=1)
        return self.cluster.factory(url, timeout, tls)


@pytest.mark.parametrize(
    "leak",
    [EngineUnreachable(f"{SPARE_URL}: {REMOTE}"), ValueError(REMOTE), KeyError(REMOTE)],
    ids=["engine error", "unexpected error", "malformed answer"],
)
def test_a_join_probe_failure_gets_a_generic_message(cluster: Cluster, leak: BaseException) -> None:
    cluster.manager.connector.factory = Probes(cluster, leak)
    before = snapshot(cluster)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=join_body(cluster)), 422)
    assert detail == f"cannot reach engine {SPARE_URL}, or it did not answer as a Docker Engine"
    assert snapshot(cluster) == before


def test_the_admin_still_gets_the_reason(cluster: Cluster) -> None:
    cluster.manager.connector.factory = Probes(cluster, EngineUnreachable(f"{SPARE_URL}: {REMOTE}"))
    detail = refused(api(cluster, "client").post("/nodes", json={"engine_url": SPARE_URL}), 422)
    assert REMOTE in detail


def test_a_join_probe_of_a_closed_port_is_not_a_port_scan(cluster: Cluster) -> None:
    """A real engine client against a closed port: the joiner is not told it was refused; the admin is."""
    cluster.manager.connector.factory = Probes(cluster)
    url = f"ssh://root@127.0.0.1:{closed_port()}"
    body = {"engine_url": url, "engine_id": "ANY", "addr": "127.0.0.1"}
    detail = refused(api(cluster, "worker", source="127.0.0.1").post("/swarm/join", json=body), 422)
    assert detail == f"cannot reach engine {url}, or it did not answer as a Docker Engine"
    admin = refused(api(cluster, "client").post("/nodes", json={"engine_url": url}), 422)
    assert "Connection refused" in admin


@pytest.mark.parametrize(
    "engine_url",
    ["unix:///var/run/docker.sock", "unix:///etc/shadow", "unix:///nonexistent/docker.sock"],
)
def test_a_join_cannot_name_a_unix_socket_and_is_told_nothing_about_the_file(cluster: Cluster, engine_url: str) -> None:
    probes = Probes(cluster)
    cluster.manager.connector.factory = probes
    body = join_body(cluster, engine_url=engine_url, advertise_engine=True)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 422)
    assert detail == (
        "request body: a join cannot name a unix:// engine: the manager reaches a joining node's engine over "
        "ssh://, or tcp:// with TLS (--advertise-engine)"
    )
    assert probes.urls == []  # refused before anything is probed


@pytest.mark.parametrize("insecure", [False, True])
def test_a_join_cannot_name_a_tcp_engine_without_tls(cluster: Cluster, insecure: bool) -> None:
    probes = Probes(cluster)
    cluster.manager.connector.factory = probes
    body = join_body(cluster, engine_url="tcp://10.0.0.4:2375", advertise_engine=True, insecure_tcp=insecure)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 422)
    assert "without TLS" in detail
    assert probes.urls == []


def test_the_core_refuses_them_too(cluster: Cluster) -> None:
    """Not only the API's validation: registration refuses them for a join (a 400 there)."""
    claim = registration.JoinClaim(source_addr=SPARE_ADDR, advertised_engine=True)
    for url, insecure in (("unix:///var/run/docker.sock", False), ("tcp://10.0.0.4:2375", True)):
        with pytest.raises(Invalid, match="a join cannot name a unix:// engine, or a tcp:// engine"):
            cluster.manager.registration.add_node(url, SPARE_ADDR, "x", insecure_tcp=insecure, join=claim)


@pytest.mark.parametrize(
    "failure",
    [HostUnreachable(f"cannot reach 10.0.0.4:22: {REMOTE}"), HostKeyMismatch(f"10.0.0.4 key is {REMOTE}")],
    ids=["unreachable", "other key"],
)
def test_a_join_pinning_an_ssh_host_key_is_told_nothing_about_the_host(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def fail(*args: Any, **kwargs: Any) -> str:
        raise failure

    monkeypatch.setattr(registration, "trust_pinned_host_key", fail)
    body = join_body(cluster, ssh_fingerprint=FINGERPRINT)
    detail = refused(api(cluster, "worker").post("/swarm/join", json=body), 422)
    assert detail == f"cannot reach engine {SPARE_URL}, or its SSH host key is not the one pinned"


# --- addresses are IPv4 (problem 5) ---------------------------------------------------------------------


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host names the resolver knows (any other name: not found), for registration's lookups only."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, family: int = 0, type: int = 0, *args: Any) -> list[Any]:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in names[host]]
        if host.endswith(".example"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, family, type, *args)

    monkeypatch.setattr(registration.socket, "getaddrinfo", getaddrinfo)
    return names


def test_node_add_of_a_host_name_stores_its_ipv4_address(cluster: Cluster, resolver: dict[str, list[str]]) -> None:
    """Before: `node add ssh://root@host.example` stored the host name as the node's address."""
    url = "ssh://root@node-05.example"
    cluster.engines[url] = MemoryEngine(url, hostname="node-05")
    resolver["node-05.example"] = ["10.0.0.5", "10.0.0.50"]
    response = api(cluster, "client").post("/nodes", json={"engine_url": url})
    assert response.status_code == 201, response.text
    assert response.json()["addr"] == "10.0.0.5"
    assert node(cluster, "node-05").addr == "10.0.0.5"


def test_node_add_with_an_addr_host_name_stores_its_ipv4_address(
    cluster: Cluster, resolver: dict[str, list[str]]
) -> None:
    resolver["mesh.example"] = ["10.0.1.4"]
    response = api(cluster, "client").post("/nodes", json={"engine_url": SPARE_URL, "addr": "mesh.example"})
    assert response.status_code == 201, response.text
    assert node(cluster, "node-04").addr == "10.0.1.4"


@pytest.mark.parametrize("addr", ["nowhere.example", "10.1", "::1", "0.0.0.0", "224.0.0.1"])
def test_node_add_is_refused_when_the_address_is_not_ipv4(
    cluster: Cluster, resolver: dict[str, list[str]], addr: str
) -> None:
    before = snapshot(cluster)
    detail = refused(api(cluster, "client").post("/nodes", json={"engine_url": SPARE_URL, "addr": addr}), 400)
    assert f"node address {addr!r} is not an IPv4 address and does not resolve to one" in detail
    assert snapshot(cluster) == before


def test_swarm_init_stores_the_leaders_address_as_ipv4(tmp_path: Path, resolver: dict[str, list[str]]) -> None:
    resolver["manager.example"] = ["10.0.0.1"]
    engine = MemoryEngine(MANAGER_URL, hostname="node-01")
    manager = Manager(Settings(data_dir=tmp_path / "data"), engine_factory=lambda url, timeout, tls=None: engine)
    try:
        with pytest.raises(Invalid, match=r"node address 'nowhere\.example' is not an IPv4 address"):
            manager.registration.initialise(MANAGER_URL, "nowhere.example", Availability.ACTIVE)
        assert "cluster_id" not in manager.state.meta
        assert manager.registration.initialise(MANAGER_URL, "manager.example", Availability.ACTIVE).addr == "10.0.0.1"
    finally:
        manager.close()


class RecordingApplier:
    """IngressApplier's part MeshSync uses: the last rules applied on each host (by its engine URL)."""

    applied: dict[str, RuleSet] = {}

    def __init__(self, host: str, max_age: float) -> None:
        self.host = host

    def apply(self, rules: RuleSet) -> bool:
        RecordingApplier.applied[self.host] = rules
        return True

    def forget(self) -> None:
        pass


def test_a_node_stored_with_a_host_name_does_not_stop_the_other_nodes_rules(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: render_node_rules raised ValueError for every node (each renders every endpoint), so no node's
    rules were updated. Now that node's endpoints are skipped, and it alone gets an ingress error."""
    monkeypatch.setattr(ingress, "IngressApplier", RecordingApplier)
    RecordingApplier.applied = {}
    manager = cluster.manager
    manager.services.create(ServiceSpec(name="g", image="nginx", mode=ServiceMode.GLOBAL, ports=(PortConfig(80, 80),)))
    cluster.wait_converged()
    with manager.state.lock:
        node(cluster, "node-03").addr = "node-03.example"  # as `node add` stored it before addresses were checked
    mesh = MeshSync(manager.read, manager.nodes, drift_check=3600, host_factory=lambda url: url)
    try:
        mesh.sync_once()
        wait_until(lambda: all(n.ingress_synced is not None for n in manager.state.nodes.values()))
    finally:
        mesh.stop()
    good = [node(cluster, "node-01"), node(cluster, "node-02")]
    for each in good:
        assert (each.ingress_synced, each.ingress_error) == (True, "")
        rules = RecordingApplier.applied[each.engine_url]
        dnat = [r for chain in rules.chains.values() for r in chain if "-j DNAT" in r]
        assert len(dnat) == 2  # its own task (to the container) and the other good node's
        assert not any("node-03" in r for chain in rules.chains.values() for r in chain)
    bad = node(cluster, "node-03")
    assert bad.ingress_synced is False
    assert bad.ingress_error == "node address must be an IPv4 address, got 'node-03.example'"
    assert WORKER_URLS[1] not in RecordingApplier.applied


def test_a_bad_endpoint_is_recorded_on_its_own_node(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose container address is not IPv4: left out everywhere, reported on its node, which keeps the
    rest of its rules."""
    monkeypatch.setattr(ingress, "IngressApplier", RecordingApplier)
    RecordingApplier.applied = {}
    manager = cluster.manager
    manager.services.create(ServiceSpec(name="g", image="nginx", mode=ServiceMode.GLOBAL, ports=(PortConfig(80, 80),)))
    cluster.wait_converged()
    node_02 = node(cluster, "node-02")
    with manager.state.lock:
        task = next(t for t in manager.state.tasks.values() if t.node_id == node_02.id)
        task.container_addr = "fe80::2"
    mesh = MeshSync(manager.read, manager.nodes, drift_check=3600, host_factory=lambda url: url)
    try:
        mesh.sync_once()
        wait_until(lambda: all(n.ingress_synced is not None for n in manager.state.nodes.values()))
    finally:
        mesh.stop()
    assert node(cluster, "node-02").ingress_error == (
        "endpoints skipped on every node: g:80/tcp: container address must be an IPv4 address, got 'fe80::2'"
    )
    assert node(cluster, "node-01").ingress_error == node(cluster, "node-03").ingress_error == ""
    for url in (WORKER_URLS[0], "ssh://root@10.0.0.1"):
        rules = RecordingApplier.applied[url]
        assert len([r for chain in rules.chains.values() for r in chain if "-j DNAT" in r]) == 2
