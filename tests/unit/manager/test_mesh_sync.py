"""MeshSync, the routing mesh's sync loop, on a real Manager over in-memory engines (tests.unit.inprocess.Cluster)
with fake hosts: each node's host is an in-memory iptables (nat and filter tables) that answers the commands
IngressApplier runs (sysctl, iptables-save, iptables-restore --noflush), so what a sync leaves on a node can be
read back and compared with what planners.ingress renders.

MeshSync.start() is never called: the tests drive sync_once() and wait for the applies it submitted."""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from pyswarm.drivers.host import CommandResult, HostError, HostUnreachable
from pyswarm.manager.ingress import MeshSync
from pyswarm.manager.queries import ClusterReader
from pyswarm.model import Node, NodeStatus, PortConfig, ServiceSpec, TaskState
from pyswarm.planners.ingress import (
    INGRESS_CHAIN,
    REJECT_CHAIN,
    RuleSet,
    applied_jumps,
    parse_save,
    render_node_rules,
)
from tests.unit.inprocess import MANAGER_URL, WORKER_URLS, Cluster

URLS = (MANAGER_URL, *WORKER_URLS)  # node-01, node-02, node-03: every node of the swarm
BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "filter": ("INPUT", "FORWARD", "OUTPUT")}
DOCKER_JUMP = "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"
APPLY_WAIT = 10.0


class IptablesHost:
    """A node's host as IngressApplier sees it: iptables-save and iptables-restore --noflush on an in-memory nat
    and filter table (a table's changes land at its COMMIT, or not at all when a line fails), and sysctl.

    `fail` makes every command raise it (the host cannot be reached); `refuse_restore` makes iptables-restore
    exit 1 with that message; `gate` makes every command wait until it is set (`waiting` tells one does).
    `commands` lists the name of every command that ran."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.tables: dict[str, dict[str, list[str]]] = {t: {c: [] for c in cs} for t, cs in BUILTIN.items()}
        self.commands: list[str] = []
        self.fail: HostError | None = None
        self.refuse_restore: str | None = None
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult:
        if self.gate is not None:
            self.waiting.set()
            assert self.gate.wait(APPLY_WAIT), "the test never opened the gate"
        with self.lock:
            if self.fail is not None:
                raise self.fail
            self.commands.append(argv[0])
            if argv[0] == "sysctl":
                return CommandResult(0, b"", b"")
            if list(argv[:2]) == ["iptables-save", "-t"] and len(argv) == 3:
                return CommandResult(0, self.save(argv[2]).encode(), b"")
            if argv[0] == "iptables-restore":
                assert "--noflush" in argv and stdin is not None
                if self.refuse_restore is not None:
                    return CommandResult(1, b"", self.refuse_restore.encode())
                return self.restore(stdin.decode())
        raise AssertionError(f"unexpected command {argv}")

    def close(self) -> None:
        pass

    def save(self, table: str) -> str:
        chains = self.tables[table]
        lines = [f"*{table}"]
        lines += [f":{c} {'ACCEPT' if c in BUILTIN[table] else '-'} [0:0]" for c in chains]
        lines += [rule for rules in chains.values() for rule in rules]
        return "\n".join([*lines, "COMMIT"]) + "\n"

    def restore(self, text: str) -> CommandResult:
        table, work = "", {}
        for number, line in enumerate(text.splitlines(), start=1):
            error = ""
            if line.startswith("*"):
                table = line[1:]
                work = {chain: list(rules) for chain, rules in self.tables[table].items()}
            elif line == "COMMIT":
                targets = {w for rules in work.values() for r in rules for w in re.findall(r"-j (PYSW\S+)", r)}
                if not targets <= set(work):
                    error = f"jump to missing chain {sorted(targets - set(work))}"
                else:
                    self.tables[table] = work
            elif line.startswith(":"):
                chain = line[1:].split(" ", 1)[0]
                if chain not in BUILTIN[table]:
                    work[chain] = []  # declaring a chain creates or flushes it
            else:
                op, chain, *rest = line.split(" ", 2)
                spec = rest[0] if rest else ""
                if chain not in work:
                    error = f"no chain {chain}"
                elif op == "-A":
                    work[chain].append(line)
                elif op == "-I":
                    position, spec = spec.split(" ", 1)
                    work[chain].insert(int(position) - 1, f"-A {chain} {spec}")
                elif op == "-D" and f"-A {chain} {spec}" in work[chain]:
                    work[chain].remove(f"-A {chain} {spec}")
                elif op == "-X" and chain not in BUILTIN[table] and not work[chain]:
                    del work[chain]
                else:
                    error = f"cannot {op} {chain}"
            if error:
                return CommandResult(1, b"", f"iptables-restore: line {number} failed: {error}".encode())
        return CommandResult(0, b"", b"")

    def ours(self) -> tuple[RuleSet, dict[tuple[str, str], tuple[tuple[int, str], ...]]]:
        """Our chains and our jumps from the built-in chains, as the applier would read them back."""
        with self.lock:
            return parse_save(self.save("nat") + self.save("filter"))

    def dnat_targets(self) -> set[str]:
        with self.lock:
            rules = [r for rs in self.tables["nat"].values() for r in rs]
        return {m for r in rules for m in re.findall(r"--to-destination (\S+)", r)}

    def count(self, command: str) -> int:
        with self.lock:
            return self.commands.count(command)

    def docker_restarted(self) -> None:
        """As dockerd does when it restarts: its own jump goes first in PREROUTING; and someone flushed one of
        our chains."""
        with self.lock:
            nat = self.tables["nat"]
            nat.setdefault("DOCKER", [])
            nat["PREROUTING"].insert(0, DOCKER_JUMP)
            nat[INGRESS_CHAIN] = []


class Hosts:
    """MeshSync's host_factory: one IptablesHost per engine URL, kept across calls."""

    def __init__(self) -> None:
        self.by_url = {url: IptablesHost(url) for url in URLS}
        self.made: list[str] = []

    def __call__(self, url: str) -> IptablesHost:
        self.made.append(url)
        return self.by_url[url]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "data")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def hosts() -> Hosts:
    return Hosts()


@pytest.fixture
def recorded(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(node id, error) of every outcome MeshSync records through the node commands: one per apply."""
    calls: list[tuple[str, str]] = []
    record_ingress = cluster.manager.nodes.record_ingress

    def record(node_id: str, error: str) -> None:
        calls.append((node_id, error))
        record_ingress(node_id, error)

    monkeypatch.setattr(cluster.manager.nodes, "record_ingress", record)
    return calls


@pytest.fixture
def mesh(cluster: Cluster, hosts: Hosts) -> Iterator[MeshSync]:
    # drift_check is also the appliers' max_age: an hour, so no apply re-reads a host on its own in a test.
    mesh = MeshSync(cluster.manager.read, cluster.manager.nodes, drift_check=3600, host_factory=hosts)
    try:
        yield mesh
    finally:
        mesh.stop()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def sync(mesh: MeshSync) -> None:
    """One sync_once(), then wait (bounded) until every apply it submitted to the pool has finished."""
    mesh.sync_once()
    # MeshSync._running: node id -> the future of its latest apply (it keeps no other handle on its pool).
    _, pending = concurrent.futures.wait(list(mesh._running.values()), timeout=APPLY_WAIT)
    assert not pending, "an ingress apply did not finish in time"


def node(reader: ClusterReader, hostname: str) -> Node:
    return reader.node(hostname)


def url_of(reader: ClusterReader, hostname: str) -> str:
    return node(reader, hostname).engine_url


def create_web(cluster: Cluster, replicas: int) -> None:
    """web, publishing port 80, once the three nodes are Ready (so its tasks are spread over them)."""
    reader = cluster.manager.read
    wait_for(lambda: len(reader.ready_nodes()) == 3, "three Ready nodes")
    spec = ServiceSpec(name="web", image="nginx", replicas=replicas, ports=(PortConfig(80, 80),))
    cluster.manager.services.create(spec)
    cluster.wait_converged()


def scale_web(cluster: Cluster, replicas: int) -> None:
    service = cluster.manager.read.service("web").service
    cluster.manager.services.update("web", replace(service.spec, replicas=replicas), service.version)
    cluster.wait_converged()


def endpoint_addrs(reader: ClusterReader) -> list[str]:
    (port,) = reader.ingress_ports()
    return sorted(e.node_addr for e in port.endpoints)


def expected_targets(reader: ClusterReader, node_addr: str) -> set[str]:
    """Where the mesh on node_addr must DNAT web's port 80 to, from the tasks themselves: each running task on a
    Ready node, straight to its container on its own node, else to its node's address and host port."""
    targets = set()
    for view in reader.tasks("web"):
        task = view.task
        task_node = reader.node(task.node_id)
        if task.state is not TaskState.RUNNING or task.desired_state is not TaskState.RUNNING or not task_node.ready:
            continue
        if task_node.addr == node_addr:
            assert task.container_addr
            targets.add(f"{task.container_addr}:80")
        else:
            targets.add(f"{task_node.addr}:{task.host_ports['80/tcp']}")
    return targets


def assert_node_in_sync(reader: ClusterReader, hosts: Hosts, hostname: str) -> None:
    """The node's host holds exactly the rendered rules for the cluster's current ports, our jumps head their
    built-in chains, the DNAT targets are the running tasks' endpoints, and the node is recorded as synced."""
    current = node(reader, hostname)
    host = hosts.by_url[current.engine_url]
    chains, jumps = host.ours()
    assert chains == render_node_rules(reader.ingress_ports(), current.addr)
    assert jumps == applied_jumps()
    assert host.dnat_targets() == expected_targets(reader, current.addr)
    assert (current.ingress_synced, current.ingress_error) == (True, "")


# ------------------------------------------------------------------------------------------------ tests


def test_one_sync_applies_every_ready_node_with_the_running_tasks_as_dnat_targets(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts, recorded: list[tuple[str, str]]
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    assert {n.hostname for n in reader.ready_nodes()} == {"node-01", "node-02", "node-03"}
    assert all(n.ingress_synced is None for n in reader.nodes())  # never synced yet
    tasks = [v.task for v in reader.tasks("web")]
    assert sorted(reader.node(t.node_id).hostname for t in tasks) == ["node-01", "node-02", "node-03"]

    sync(mesh)

    for current in reader.nodes():
        assert_node_in_sync(reader, hosts, current.hostname)
        host = hosts.by_url[current.engine_url]
        # Its local task goes straight to its container, the two others to their node's address and host port.
        (local,) = [f"{t.container_addr}:80" for t in tasks if t.node_id == current.id]
        remote = {f"{reader.node(t.node_id).addr}:{t.host_ports['80/tcp']}" for t in tasks if t.node_id != current.id}
        assert len(remote) == 2 and host.dnat_targets() == {local} | remote
        # Read once, then one transaction: a single iptables-restore per node.
        assert host.commands == ["sysctl", "iptables-save", "iptables-save", "iptables-restore"]
    assert sorted(hosts.made) == sorted(URLS)  # one host per node, from its engine URL
    assert sorted(recorded) == sorted((n.id, "") for n in reader.nodes())  # one outcome per node
    stored = cluster.manager.store.load().nodes
    assert all(n.ingress_synced is True and n.ingress_error == "" for n in stored.values())  # persisted too


def test_a_second_sync_with_nothing_changed_applies_nothing(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts, recorded: list[tuple[str, str]]
) -> None:
    create_web(cluster, replicas=3)
    sync(mesh)
    before = {url: list(host.commands) for url, host in hosts.by_url.items()}
    assert all(commands.count("iptables-restore") == 1 for commands in before.values())
    assert len(recorded) == 3

    sync(mesh)
    sync(mesh)

    assert {url: host.commands for url, host in hosts.by_url.items()} == before  # no restore, not even a read
    assert len(recorded) == 3  # and no apply was even submitted
    for current in cluster.manager.read.nodes():
        assert_node_in_sync(cluster.manager.read, hosts, current.hostname)


@pytest.mark.parametrize("failure", ["unreachable", "restore refused"])
def test_a_failing_host_is_recorded_and_never_stops_the_other_nodes(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts, failure: str
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    broken = hosts.by_url[url_of(reader, "node-02")]
    if failure == "unreachable":
        broken.fail = HostUnreachable("cannot reach 10.0.0.2:22: no route to host")
        message = "no route to host"
    else:
        broken.refuse_restore = "iptables-restore: line 7 failed"
        message = "line 7 failed"

    sync(mesh)

    assert_node_in_sync(reader, hosts, "node-01")
    assert_node_in_sync(reader, hosts, "node-03")
    failed = node(reader, "node-02")
    assert failed.ingress_synced is False
    assert message in failed.ingress_error
    assert cluster.manager.store.load().nodes[failed.id].ingress_error == failed.ingress_error  # persisted
    assert broken.ours()[0].chains == {}  # nothing of ours landed there

    # The host is back: the next sync retries that node only, without being told, and clears the error.
    broken.fail = broken.refuse_restore = None
    others = {url: list(h.commands) for url, h in hosts.by_url.items() if h is not broken}
    sync(mesh)
    assert_node_in_sync(reader, hosts, "node-02")
    assert broken.count("iptables-restore") == (1 if failure == "unreachable" else 2)
    assert hosts.made.count(broken.url) == 2  # after a failure the node's host is made anew (a new connection)
    assert {url: list(h.commands) for url, h in hosts.by_url.items() if h is not broken} == others


def test_a_down_node_is_not_applied_and_gets_the_current_rules_when_ready_again(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    sync(mesh)
    first = {url: host.dnat_targets() for url, host in hosts.by_url.items()}
    down_url = url_of(reader, "node-03")
    down_host, engine = hosts.by_url[down_url], cluster.engines[down_url]

    engine.state.host_down = True
    engine.set_down(True)
    wait_for(lambda: node(reader, "node-03").status is NodeStatus.DOWN, "node-03 Down")
    # Its task is replaced on the other two nodes: three endpoints again, none on node-03.
    wait_for(lambda: len(addrs := endpoint_addrs(reader)) == 3 and "10.0.0.3" not in addrs, "web off node-03")
    before = list(down_host.commands)

    sync(mesh)

    assert down_host.commands == before  # a Down node is not applied
    assert down_host.dnat_targets() == first[down_url]
    for hostname in ("node-01", "node-02"):
        assert_node_in_sync(reader, hosts, hostname)
        assert not any(t.startswith("10.0.0.3:") for t in hosts.by_url[url_of(reader, hostname)].dnat_targets())

    engine.state.host_down = False
    engine.set_down(False)
    wait_for(lambda: node(reader, "node-03").status is NodeStatus.READY, "node-03 Ready again")
    sync(mesh)
    assert_node_in_sync(reader, hosts, "node-03")
    assert down_host.count("iptables-restore") == 2


def test_node_changed_makes_the_next_sync_reread_and_repair_that_node(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    sync(mesh)
    changed = node(reader, "node-02")
    host = hosts.by_url[changed.engine_url]
    host.docker_restarted()  # our jump is second in PREROUTING now, and PYSWARM-INGRESS is empty
    tampered = host.ours()
    assert tampered[0] != render_node_rules(reader.ingress_ports(), changed.addr)
    before = {url: list(h.commands) for url, h in hosts.by_url.items()}

    sync(mesh)  # nothing tells the mesh: it trusts what it applied
    assert {url: h.commands for url, h in hosts.by_url.items()} == before
    assert host.ours() == tampered

    mesh.node_changed(changed)
    sync(mesh)

    assert host.commands[len(before[changed.engine_url]) :] == ["iptables-save", "iptables-save", "iptables-restore"]
    assert_node_in_sync(reader, hosts, "node-02")
    with host.lock:
        prerouting = list(host.tables["nat"]["PREROUTING"])
    assert prerouting == [f"-A PREROUTING -j {INGRESS_CHAIN}", DOCKER_JUMP]  # ours first again, docker's kept
    assert {url: h.commands for url, h in hosts.by_url.items() if h is not host} == {
        url: commands for url, commands in before.items() if url != changed.engine_url
    }  # only that node


def test_scaling_changes_the_endpoints_and_the_next_sync_applies_them(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    sync(mesh)
    three = {url: host.dnat_targets() for url, host in hosts.by_url.items()}

    scale_web(cluster, replicas=1)
    sync(mesh)
    for current in reader.nodes():
        host = hosts.by_url[current.engine_url]
        assert_node_in_sync(reader, hosts, current.hostname)
        assert len(host.dnat_targets()) == 1 and host.dnat_targets() < three[current.engine_url]
        assert host.count("iptables-restore") == 2 and host.count("iptables-save") == 2  # a diff, no re-read

    scale_web(cluster, replicas=0)
    sync(mesh)
    for current in reader.nodes():
        host = hosts.by_url[current.engine_url]
        assert_node_in_sync(reader, hosts, current.hostname)
        chains = host.ours()[0].chains
        assert host.dnat_targets() == set() and chains[("nat", INGRESS_CHAIN)] == ()
        (reject,) = chains[("filter", REJECT_CHAIN)]  # no endpoint left: port 80 is refused, not forwarded
        assert "--dport 80 " in reject and reject.endswith("-j REJECT --reject-with tcp-reset")
        assert host.count("iptables-restore") == 3

    scale_web(cluster, replicas=2)
    sync(mesh)
    for current in reader.nodes():
        assert_node_in_sync(reader, hosts, current.hostname)
        assert hosts.by_url[current.engine_url].count("iptables-restore") == 4


def test_an_apply_under_way_is_not_submitted_again(
    cluster: Cluster, mesh: MeshSync, hosts: Hosts, recorded: list[tuple[str, str]]
) -> None:
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    slow = hosts.by_url[url_of(reader, "node-02")]
    slow.gate = threading.Event()

    mesh.sync_once()
    assert slow.waiting.wait(APPLY_WAIT), "node-02's apply never reached its host"
    mesh.sync_once()  # node-02's first apply is still under way: not submitted a second time
    mesh.sync_once()
    slow.gate.set()
    _, pending = concurrent.futures.wait(list(mesh._running.values()), timeout=APPLY_WAIT)
    assert not pending

    node_02 = node(reader, "node-02").id
    assert [error for node_id, error in recorded if node_id == node_02] == [""]  # one apply
    assert len(recorded) == 3
    assert slow.commands == ["sysctl", "iptables-save", "iptables-save", "iptables-restore"]
    for current in reader.nodes():
        assert_node_in_sync(reader, hosts, current.hostname)


def test_attached_and_started_the_loop_follows_endpoint_changes_on_its_own(tmp_path: Path, hosts: Hosts) -> None:
    """The wiring: the manager tells the attached mesh about nodes and endpoints; its loop syncs (no sync_once)."""
    cluster = Cluster(tmp_path / "data", start=False)
    mesh = MeshSync(cluster.manager.read, cluster.manager.nodes, drift_check=3600, host_factory=hosts)
    cluster.manager.attach_mesh(mesh)
    cluster.manager.start()
    mesh.start()
    reader = cluster.manager.read

    def in_sync() -> bool:
        ports = reader.ingress_ports()
        return all(
            n.ingress_synced is True and hosts.by_url[n.engine_url].ours()[0] == render_node_rules(ports, n.addr)
            for n in reader.nodes()
        )

    try:
        create_web(cluster, replicas=3)
        wait_for(lambda: in_sync() and len(hosts.by_url[MANAGER_URL].dnat_targets()) == 3, "web's 3 endpoints")
        scale_web(cluster, replicas=1)
        wait_for(lambda: in_sync() and len(hosts.by_url[MANAGER_URL].dnat_targets()) == 1, "web's 1 endpoint")
        for current in reader.nodes():
            assert_node_in_sync(reader, hosts, current.hostname)
    finally:
        cluster.close()  # stops the mesh with the manager
    wait_for(lambda: not mesh._thread.is_alive(), "the mesh's loop to end")


def test_stopping_waits_for_an_apply_under_way_and_nothing_is_recorded_after_the_manager_stops(
    cluster: Cluster, hosts: Hosts
) -> None:
    """An apply still running when the manager closes must not write to its closed store."""
    mesh = MeshSync(cluster.manager.read, cluster.manager.nodes, drift_check=3600, host_factory=hosts)
    cluster.manager.attach_mesh(mesh)
    reader = cluster.manager.read
    create_web(cluster, replicas=3)
    slow = hosts.by_url[url_of(reader, "node-02")]
    slow.gate = threading.Event()
    mesh.sync_once()
    assert slow.waiting.wait(APPLY_WAIT), "node-02's apply never reached its host"
    running = list(mesh._running.values())
    closing = threading.Thread(target=cluster.manager.close)
    closing.start()
    time.sleep(0.3)
    assert closing.is_alive()  # close waits for the apply under way
    slow.gate.set()
    closing.join(APPLY_WAIT)
    assert not closing.is_alive()
    done, _ = concurrent.futures.wait(running, timeout=APPLY_WAIT)
    assert [future.exception() for future in done] == [None] * len(done)
