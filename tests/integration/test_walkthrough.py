"""Docker 1.12's swarm-mode walkthrough with pyswarm, on real engines, checking each command's output;
then the orchestrator's behaviour under the faults and mistakes an operator meets."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pyswarm.lab import Lab
from tests.integration.swarm import MANAGER, Swarm, wait_until


@pytest.fixture(scope="module")
def fresh(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """A lab with no swarm yet: the walkthrough makes it."""
    cluster = Swarm(lab, tmp_path_factory.mktemp("client") / "config.json")
    cluster.leave_all()
    try:
        yield cluster
    finally:
        lab.restore()
        cluster.leave_all()


def rows(output: str) -> list[list[str]]:
    """Table rows, split on runs of 2+ spaces, header dropped."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()[1:]]


def test_walkthrough(fresh: Swarm) -> None:
    swarm = fresh
    init = swarm.init()
    assert "Swarm initialized: current node" in init.stdout
    assert re.search(
        r"pyswarm swarm join --token PSWTKN-1-[0-9a-f]{64}-w-[0-9a-f]{48} 192\.168\.39\.1:2377", init.stdout
    )

    listing = rows(swarm.cli("node", "ls").stdout)
    assert [r[1:5] for r in listing] == [["node-01", "Ready", "Active", "Leader"]]
    mine = rows(swarm.cli("node", "ls", node=MANAGER).stdout)
    assert mine[0][0].endswith(" *"), "the node you are on is marked with *"

    for node in ("node-02", "node-03"):
        assert "This node joined a swarm as a worker." in swarm.join(node).stdout
    wait_until(lambda: swarm.node_status() == {f"node-0{i}": "ready" for i in (1, 2, 3)}, what="3 ready nodes")
    info = swarm.cli("info").stdout
    for expected in ("Swarm: active", " NodeID: ", " Managers: 1", " Nodes: 3", "IsManager: Yes"):
        assert expected in info

    created = swarm.cli("service", "create", "--replicas", "1", "--name", "web", "-p", "80:80", "nginx")
    service_id = created.stdout.splitlines()[0].strip()
    assert re.fullmatch(r"[a-z0-9]{25}", service_id)
    assert "verify: Service converged" in created.stdout
    service_rows = rows(swarm.cli("service", "ls").stdout)
    assert service_rows == [[service_id[:12], "web", "replicated", "1/1", "nginx", "*:80->80/tcp"]]

    for verb in ("tasks", "ps"):
        task_rows = rows(swarm.cli("service", verb, "web").stdout)
        assert len(task_rows) == 1
        assert task_rows[0][1:5] == ["web.1", "nginx", task_rows[0][3], "Running"]
        assert task_rows[0][5].startswith("Running ")

    swarm.cli("service", "update", "--replicas", "3", "web")
    assert rows(swarm.cli("service", "ls").stdout)[0][3] == "3/3"
    placed = swarm.running_tasks("web")
    assert sorted(t["node"] for t in placed) == ["node-01", "node-02", "node-03"], "spread: one task per node"
    assert sorted(len(names) for names in swarm.all_containers().values()) == [1, 1, 1]

    swarm.cli("service", "update", "--replicas", "1", "web")
    wait_until(lambda: sum(len(c) for c in swarm.all_containers().values()) == 1, what="one container in total")
    assert rows(swarm.cli("service", "ls").stdout)[0][3] == "1/1"

    swarm.cli("service", "rm", "web")
    wait_until(lambda: not any(swarm.all_containers().values()), what="no container left")
    assert swarm.cli("service", "ls").stdout.strip().splitlines()[1:] == []


@pytest.mark.reliability("Container killed behind the manager's back")
def test_killed_container_is_replaced(swarm_on: Swarm) -> None:
    swarm = swarm_on
    swarm.cli("service", "create", "--replicas", "2", "--restart-delay", "0s", "--name", "victim", "nginx")
    before = swarm.running_tasks("victim")
    target = before[0]
    swarm.lab.exec(target["node"], ["docker", "kill", target["container_id"]])
    wait_until(
        lambda: (
            len(swarm.running_tasks("victim")) == 2
            and target["id"] not in {t["id"] for t in swarm.running_tasks("victim")}
        ),
        what="a replacement task",
    )
    history = swarm.json("service", "ps", "victim")
    dead = next(t for t in history if t["id"] == target["id"])
    assert dead["state"] == "failed" and "non-zero exit (137)" in dead["error"]
    swarm.cli("service", "rm", "victim")


@pytest.mark.reliability("Node link cut, then healed")
def test_cut_node_loses_its_tasks_and_comes_back_clean(swarm_on: Swarm) -> None:
    swarm = swarm_on
    swarm.cli("service", "create", "--replicas", "3", "--name", "spread", "nginx")
    try:
        swarm.lab.cut("node-03")
        wait_until(lambda: swarm.node_status()["node-03"] == "down", timeout=15, what="node-03 Down")
        wait_until(
            lambda: (
                sorted(t["node"] for t in swarm.running_tasks("spread"))
                in (["node-01", "node-01", "node-02"], ["node-01", "node-02", "node-02"])
            ),
            what="tasks moved to node-01/02",
        )
        assert len(swarm.containers("node-03")) == 1, "the cut node still runs its stale container"
    finally:
        swarm.lab.heal("node-03")
    wait_until(lambda: swarm.node_status()["node-03"] == "ready", what="node-03 Ready again")
    wait_until(lambda: not swarm.containers("node-03"), what="stale container removed from node-03")
    assert len(swarm.running_tasks("spread")) == 3
    swarm.cli("service", "rm", "spread")


def test_drain_empties_a_node(swarm_on: Swarm) -> None:
    swarm = swarm_on
    swarm.cli("service", "create", "--replicas", "3", "--name", "drainme", "nginx")
    swarm.cli("node", "update", "--availability", "drain", "node-02")
    try:
        wait_until(lambda: not swarm.containers("node-02"), what="node-02 empty")
        wait_until(lambda: len(swarm.running_tasks("drainme")) == 3, what="3 tasks on the others")
        assert "node-02" not in {t["node"] for t in swarm.running_tasks("drainme")}
        assert rows(swarm.cli("node", "ls").stdout)[1][3] == "Drain"
    finally:
        swarm.cli("node", "update", "--availability", "active", "node-02")
        swarm.cli("service", "rm", "drainme")


@pytest.mark.reliability("CLI mistakes on a live cluster", cases=10)
def test_operator_mistakes_are_refused_and_change_nothing(swarm_on: Swarm) -> None:
    swarm = swarm_on
    swarm.cli("service", "create", "--replicas", "1", "--name", "keep", "-p", "8080:80", "nginx")
    before = swarm.json("service", "ls")
    cases = [
        (("service", "create", "--name", "keep", "nginx"), "already in use"),
        (("service", "create", "--name", "p1", "-p", "8080:80", "nginx"), "port '8080/tcp' is already in use"),
        (("service", "create", "--name", "p2", "-p", "80:", "nginx"), "invalid target port"),
        (("service", "create", "--name", "p3", "--replicas", "-1", "nginx"), "invalid replicas"),
        (("service", "create", "--name", "p4", "--replicas", "three", "nginx"), "invalid replicas"),
        (("service", "scale", "nosuch=2"), "not found"),
        (("service", "rm", "nosuch"), "not found"),
        (("node", "update", "--availability", "drain", "nosuch"), "not found"),
        (("node", "add", "ssh://root@192.168.39.99"), "cannot reach"),
    ]
    for args, message in cases:
        result = swarm.cli(*args, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    assert swarm.json("service", "ls") == before
    missing = swarm.cli("service", "create", "--name", "ghost", "nosuch/image:1", check=False)
    assert missing.returncode != 0 and "No such image: nosuch/image:1" in missing.stderr
    errors = {t["error"] for t in swarm.json("service", "ps", "ghost")}
    assert any("No such image" in e for e in errors)
    swarm.cli("service", "rm", "ghost", "keep")


def test_global_service_follows_a_node_that_joins_later(lab: Lab, swarm_partial: Swarm) -> None:
    swarm = swarm_partial
    swarm.cli("service", "create", "--mode", "global", "--name", "agent", "nginx")
    assert sorted(t["node"] for t in swarm.running_tasks("agent")) == ["node-01", "node-02"]
    swarm.join("node-03")
    wait_until(lambda: len(swarm.running_tasks("agent")) == 3, what="a task on the new node")
    assert sorted(len(c) for c in swarm.all_containers().values()) == [1, 1, 1]
    swarm.cli("service", "rm", "agent")


@pytest.fixture
def swarm_on(fresh: Swarm) -> Swarm:
    """The walkthrough's cluster (3 nodes), made again if an earlier test left none."""
    if fresh.cli("node", "ls", check=False).returncode != 0:
        fresh.init()
        fresh.join("node-02")
        fresh.join("node-03")
    wait_until(lambda: set(fresh.node_status().values()) == {"ready"}, what="nodes ready")
    return fresh


@pytest.fixture
def swarm_partial(fresh: Swarm) -> Iterator[Swarm]:
    """A new cluster of node-01 and node-02 only; node-03 joins during the test."""
    fresh.leave_all()
    fresh.init()
    fresh.join("node-02")
    yield fresh
    fresh.leave_all()
