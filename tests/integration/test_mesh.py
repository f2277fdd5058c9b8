"""The ingress routing mesh on real engines: every published port answers on every node, load balanced
by iptables NAT, and follows the tasks as they come and go."""

from __future__ import annotations

import re

import pytest

from tests.integration.swarm import Swarm, connect_refused, udp_ask, wait_until

NODES = ("node-01", "node-02", "node-03")


def served_by(swarm: Swarm, service: str) -> set[str]:
    """Container hostnames (docker's 12-char IDs) of the service's running tasks."""
    return {t["container_id"][:12] for t in swarm.running_tasks(service)}


def our_chains(rules: str) -> set[str]:
    return set(re.findall(r"^:(PYSW-(?:SVC|SEP)-\w+)", rules, re.M))


def test_one_task_answers_on_every_node_from_inside_and_outside(swarm: Swarm) -> None:
    swarm.cli(
        "service",
        "create",
        "--replicas",
        "1",
        "--name",
        "web",
        "-p",
        "80:80",
        "--constraint",
        "node.hostname==node-02",
        "nginx",
    )
    task = swarm.running_tasks("web")
    assert [t["node"] for t in task] == ["node-02"]
    only = served_by(swarm, "web")
    for entry in NODES:
        addr = swarm.addr(entry)
        wait_until(
            lambda a=addr: swarm.http_counts(f"http://{a}/", 1).keys() == only, timeout=5, what=f"{entry} to answer"
        )
        assert set(swarm.http_counts(f"http://{addr}/", 20)) == only  # from the host, outside the cluster
        for client in NODES:  # from every node, its own address included (OUTPUT chain, hairpin)
            assert set(swarm.http_counts(f"http://{addr}/", 5, node=client)) == only, (client, entry)
    assert set(swarm.http_counts("http://127.0.0.1/", 5, node="node-01")) == only


def test_scaling_changes_the_pool_and_balances_it(swarm: Swarm) -> None:
    swarm.cli("service", "update", "--replicas", "3", "web")
    pool = served_by(swarm, "web")
    assert len(pool) == 3
    for entry in NODES:
        counts = swarm.http_counts(f"http://{swarm.addr(entry)}/", 300)
        assert set(counts) == pool, (entry, counts)
        assert min(counts.values()) >= 60, f"each task gets at least 20% through {entry}: {counts}"

    swarm.cli("service", "update", "--replicas", "1", "web")
    remaining = served_by(swarm, "web")
    assert len(remaining) == 1
    for entry in NODES:
        assert set(swarm.http_counts(f"http://{swarm.addr(entry)}/", 30)) == remaining


def test_a_killed_task_leaves_the_rotation_and_its_replacement_joins(swarm: Swarm) -> None:
    swarm.cli("service", "update", "--replicas", "2", "--restart-delay", "2s", "web")
    victim = swarm.running_tasks("web")[0]
    swarm.lab.exec(victim["node"], ["docker", "kill", victim["container_id"]])
    wait_until(lambda: victim["container_id"][:12] not in served_by(swarm, "web"), what="victim out of the store")
    counts = swarm.http_counts(f"http://{swarm.addr('node-03')}/", 50)
    assert victim["container_id"][:12] not in counts
    assert not [k for k in counts if k.startswith("error")], counts
    wait_until(lambda: len(swarm.running_tasks("web")) == 2, what="replacement running")
    pool = served_by(swarm, "web")
    wait_until(
        lambda: set(swarm.http_counts(f"http://{swarm.addr('node-03')}/", 40)) == pool,
        timeout=5,
        what="replacement in rotation",
    )


@pytest.mark.reliability("Node link cut: its endpoints leave the mesh")
def test_a_cut_node_leaves_the_other_nodes_rules(swarm: Swarm) -> None:
    swarm.cli("service", "create", "--replicas", "3", "--name", "wide", "-p", "8083:80", "nginx")
    assert {t["node"] for t in swarm.running_tasks("wide")} == set(NODES)
    cut_addr = swarm.addr("node-03")
    wait_until(lambda: f"--to-destination {cut_addr}:" in swarm.rules("node-01"), timeout=5, what="rules")
    try:
        swarm.lab.cut("node-03")
        wait_until(lambda: swarm.node_status()["node-03"] == "down", timeout=15, what="node-03 down")
        for survivor in ("node-01", "node-02"):  # synced in parallel: one may finish a little after the other
            wait_until(
                lambda s=survivor: f"--to-destination {cut_addr}:" not in swarm.rules(s),
                timeout=5,
                what=f"node-03's endpoints out of {survivor}'s rules",
            )
        counts = swarm.http_counts(f"http://{swarm.addr('node-01')}:8083/", 60)
        assert not [k for k in counts if k.startswith("error")], counts
    finally:
        swarm.lab.heal("node-03")
    wait_until(lambda: swarm.node_status()["node-03"] == "ready", what="node-03 back")
    swarm.cli("service", "rm", "wide")


def test_rm_refuses_everywhere_and_leaves_no_rule(swarm: Swarm) -> None:
    swarm.cli("service", "rm", "web")
    for entry in NODES:
        wait_until(lambda e=entry: connect_refused(swarm.addr(e), 80), timeout=5, what=f"{entry} to refuse")
        # The services of earlier tests were removed just before: their chains go within the same bound.
        wait_until(lambda e=entry: not our_chains(swarm.rules(e)), timeout=5, what=f"no chain of ours on {entry}")


def test_no_endpoints_means_refused_not_hanging(swarm: Swarm) -> None:
    swarm.cli("service", "create", "-d", "--replicas", "0", "--name", "empty", "-p", "8081:80", "nginx")
    for entry in NODES:
        wait_until(lambda e=entry: connect_refused(swarm.addr(e), 8081), timeout=5, what=f"{entry} refuses 8081")
    swarm.cli("service", "rm", "empty")


def test_udp_service_answers_on_every_node(swarm: Swarm) -> None:
    swarm.cli(
        "service",
        "create",
        "--replicas",
        "1",
        "--name",
        "echo",
        "-p",
        "5353:5353/udp",
        "--constraint",
        "node.hostname==node-03",
        "nginx",
        "/usr/local/bin/udp-echo",
        "5353",
    )
    only = served_by(swarm, "echo")
    for entry in NODES:
        wait_until(
            lambda e=entry: udp_ask(swarm.addr(e), 5353).replace("served-by ", "") in only,
            timeout=5,
            what=f"udp answer via {entry}",
        )
    swarm.cli("service", "rm", "echo")


def test_network_ls_and_inspect_show_the_ingress(swarm: Swarm) -> None:
    swarm.cli("service", "create", "--replicas", "2", "--name", "seen", "-p", "8082:80", "nginx")
    listing = swarm.cli("network", "ls", node="node-01").stdout
    assert re.search(r"\bingress\s+overlay\s+swarm\b", listing)
    assert re.search(r"\bbridge\s+bridge\s+local\b", listing)
    wait_until(lambda: "node-03" in swarm.cli("network", "inspect", "ingress").stdout, what="synced nodes listed")
    inspect = swarm.cli("network", "inspect", "ingress").stdout
    assert '"8082/tcp"' in inspect and inspect.count("192.168.39.") >= 2
    swarm.cli("service", "rm", "seen")


def test_host_mode_ports_answer_only_where_a_task_runs(swarm: Swarm) -> None:
    """`--publish mode=host` bypasses the mesh: the node's own port goes to its own task only, so no node
    holds two of them, and a node without one refuses the port."""
    swarm.cli(
        "service", "create", "--replicas", "2", "--name", "edge",
        "--publish", "published=8090,target=80,mode=host", "nginx",
    )  # fmt: skip
    tasks = swarm.running_tasks("edge")
    hosts = [t["node"] for t in tasks]
    assert len(hosts) == 2 and len(set(hosts)) == 2, hosts
    for task in tasks:
        counts = swarm.http_counts(f"http://{swarm.addr(task['node'])}:8090/", 20)
        assert set(counts) == {task["container_id"][:12]}, (task["node"], counts)
    (spare,) = set(NODES) - set(hosts)
    assert connect_refused(swarm.addr(spare), 8090)
    for node in NODES:
        assert "--dport 8090" not in "\n".join(line for line in swarm.rules(node).splitlines() if "PYSW" in line), (
            f"the mesh publishes a host-mode port on {node}"
        )

    # A fourth task has no node left with port 8090 free: it waits, and says why.
    swarm.cli("service", "update", "-d", "--replicas", "4", "edge")
    wait_until(lambda: len(swarm.running_tasks("edge")) == 3, what="the third node's task")
    wait_until(
        lambda: [t["state"] for t in swarm.tasks("edge") if t["state"] != "running"] == ["pending"],
        what="one pending task",
    )
    (pending,) = [t for t in swarm.tasks("edge") if t["state"] == "pending"]
    assert "host-mode port already in use on 3 nodes" in pending["error"], pending
    assert [len(swarm.containers(n, "com.pyswarm.service.name=edge")) for n in NODES] == [1, 1, 1]
    swarm.cli("service", "rm", "edge")
