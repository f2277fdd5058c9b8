"""The lab itself: real engines, real namespaces, real SSH, real faults, clean teardown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pyswarm.lab import Lab, LabExecError, LabNode
from pyswarm.lab.lab import LAB_DAEMONS
from pyswarm.lab.ssh import BEGIN_MARK
from pyswarm.lab.sysutil import (
    all_pids,
    docker_ping,
    iptables_has,
    link_exists,
    mounts_under,
    pid_alive,
    pid_cmdline,
    pid_exe,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

# Runs only the lab command group, as `pyswarm lab ...` does.
LAB_CLI = [sys.executable, "-c", "import sys; from pyswarm.cli.lab_cmds import lab; lab()"]


def engine(node: LabNode) -> docker.DockerClient:
    return docker.DockerClient(base_url=node.docker_host, timeout=30)


def tcp_connects(addr: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False


# Connect from inside a node's namespace; prints "ok" or the error.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("ok")
except OSError as e:
    print("fail", e)
"""


def connect_from(lab: Lab, node: LabNode, addr: str, port: int) -> bool:
    out = lab.exec(node, [sys.executable, "-c", CONNECT, addr, str(port)], timeout=30).stdout
    return out.strip() == "ok"


@pytest.fixture
def nginx_container(lab: Lab) -> Iterator[tuple[LabNode, docker.models.containers.Container]]:
    node = lab.nodes[0]
    client = engine(node)
    c = client.containers.run("nginx:latest", detach=True, ports={"80/tcp": None})
    try:
        yield node, c
    finally:
        c.remove(force=True)
        client.close()


def test_each_node_is_its_own_engine(lab: Lab) -> None:
    seen_ids = set()
    for node in lab.nodes:
        assert docker_ping(node.socket)
        out = lab.exec(node, ["docker", "info", "--format", "{{.Name}} {{.ID}}"]).stdout.split()
        assert out[0] == node.name
        seen_ids.add(out[1])
        info = engine(node).info()
        assert info["Name"] == node.name
        assert lab.exec(node, ["hostname"]).stdout.strip() == node.name
    assert len(seen_ids) == len(lab.nodes)
    # One image, loaded everywhere: the same ID on every node, as after a registry pull.
    image_ids = {engine(n).images.get("nginx:latest").id for n in lab.nodes}
    assert len(image_ids) == 1


def test_status_and_inventory(lab: Lab) -> None:
    for st in lab.ls():
        assert st.state == "running", st
        assert st.engine_version
        assert st.node.engine_url == f"ssh://root@{st.node.addr}"
    inv = lab.inventory().splitlines()
    assert inv[0] == "[nodes]"
    n1 = lab.nodes[0]
    assert inv[1].startswith(
        f"{n1.name} ansible_host={n1.addr} ansible_user=root ansible_ssh_private_key_file={lab.identity_file}"
    )
    assert f"ansible_ssh_common_args='-o UserKnownHostsFile={lab.known_hosts}'" in inv[1]


def test_exec_env_and_exit_status(lab: Lab) -> None:
    node = lab.nodes[-1]
    out = lab.exec(node, ["sh", "-c", 'echo "$DOCKER_HOST $PYSWARM_NODE $PYSWARM_DATA_DIR $X"'], env={"X": "y"})
    assert out.stdout.split() == [node.docker_host, node.name, str(node.pyswarm_data_dir), "y"]
    assert lab.exec(node, ["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(LabExecError, match="boom"):
        lab.exec(node, ["sh", "-c", "echo boom >&2; exit 1"])
    with pytest.raises(Exception, match="no node"):
        lab.exec("node-99", ["true"])


def test_cli_exec_passes_through(lab: Lab) -> None:
    node = lab.nodes[0]
    cp = subprocess.run(
        [*LAB_CLI, "exec", node.name, "--", "sh", "-c", "cat; hostname; echo err >&2; exit 5"],
        input="from-stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 5
    assert cp.stdout.split() == ["from-stdin", node.name]
    assert cp.stderr.strip() == "err"
    cp = subprocess.run([*LAB_CLI, "ls"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0
    assert all(n.name in cp.stdout for n in lab.nodes)


def test_nodes_reach_each_other(lab: Lab) -> None:
    if len(lab.nodes) < 2:
        pytest.skip("needs two nodes")
    for src in lab.nodes:
        for dst in lab.nodes:
            if dst is not src:
                assert connect_from(lab, src, dst.addr, 22), f"{src.name} -> {dst.name}"


@pytest.mark.timeout(120)
def test_docker_py_over_ssh(lab: Lab) -> None:
    for node in lab.nodes:
        # docker-py's SSH constructor has no timeout: make sure sshd answers before trying.
        assert tcp_connects(node.addr, 22)
        client = docker.DockerClient(base_url=node.engine_url, use_ssh_client=False, timeout=30)
        try:
            assert client.version()["Version"]
            assert client.info()["Name"] == node.name
        finally:
            client.close()


def test_openssh_client_trusts_nodes(lab: Lab) -> None:
    node = lab.nodes[0]
    cp = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", node.addr, "docker info --format '{{.Name}}'"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == node.name


def test_cut_isolates_and_heal_restores(lab: Lab) -> None:
    victim = lab.nodes[-1]
    try:
        lab.cut(victim)
        assert lab.status(victim).state == "cut"
        assert not tcp_connects(victim.addr, 22, timeout=2)
        if len(lab.nodes) > 1:
            assert not connect_from(lab, lab.nodes[0], victim.addr, 22)
        # The victim cannot get out either.
        assert not connect_from(lab, victim, lab.config.host_addr, 1)  # would be refused if reachable
        # Its engine still runs: the cut is on the network only.
        assert docker_ping(victim.socket)
        lab.heal(victim)
        assert lab.status(victim).state == "running"
        assert wait_until(lambda: tcp_connects(victim.addr, 22), 10)
        if len(lab.nodes) > 1:
            assert connect_from(lab, lab.nodes[0], victim.addr, 22)
    finally:
        lab.restore()


def test_nginx_answers_with_container_hostname(
    lab: Lab, nginx_container: tuple[LabNode, docker.models.containers.Container]
) -> None:
    node, c = nginx_container
    c.reload()
    port = int(c.ports["80/tcp"][0]["HostPort"])
    hostname = c.attrs["Config"]["Hostname"]

    def fetch() -> tuple[str, str | None]:
        with urllib.request.urlopen(f"http://{node.addr}:{port}/any/path", timeout=5) as r:
            assert r.status == 200
            return r.read().decode(), r.headers.get("X-Served-By")

    assert wait_until(lambda: tcp_connects(node.addr, port), 10)
    body, header = fetch()
    assert body == f"served-by {hostname}\n"
    assert header == hostname
    t0 = time.monotonic()
    c.stop(timeout=10)
    assert time.monotonic() - t0 < 2.0


def test_udp_echo(lab: Lab) -> None:
    node = lab.nodes[0]
    client = engine(node)
    c = client.containers.run(
        "nginx:latest", ["/usr/local/bin/udp-echo", "5353"], detach=True, ports={"5353/udp": None}
    )
    try:
        c.reload()
        port = int(c.ports["5353/udp"][0]["HostPort"])
        hostname = c.attrs["Config"]["Hostname"]
        reply = b""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for _ in range(20):  # the container may still be binding
                s.sendto(b"ping", (node.addr, port))
                try:
                    reply = s.recv(256)
                    break
                except TimeoutError:
                    continue
        assert reply == f"served-by {hostname}\n".encode()
        t0 = time.monotonic()
        c.stop(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        c.remove(force=True)
        client.close()


def test_kill_and_start(lab: Lab) -> None:
    node = lab.nodes[-1]
    client = engine(node)
    c = client.containers.run("nginx:latest", detach=True)
    c.reload()
    container_pid = c.attrs["State"]["Pid"]
    assert pid_alive(container_pid)
    try:
        assert lab.kill(node)
        st = lab.status(node)
        assert st.state == "stopped" and st.engine_version is None
        assert not docker_ping(node.socket)
        assert not pid_alive(container_pid)  # containers stop with their engine
        assert not lab.kill(node)  # already stopped
        assert lab.start(node)
        assert lab.status(node).state == "running"
        assert engine(node).info()["Name"] == node.name
        assert client.containers.get(c.id).status == "exited"
        assert not lab.start(node)  # already running
    finally:
        lab.restore()
        with_client = engine(node)
        with_client.containers.get(c.id).remove(force=True)


def _lab_processes(lab: Lab) -> list[tuple[int, list[str]]]:
    marks = (str(lab.config.lab_dir) + "/", str(lab.config.run_dir) + "/")
    found = []
    for p in all_pids():
        if os.path.basename(pid_exe(p)) in LAB_DAEMONS and pid_alive(p):
            argv = pid_cmdline(p)
            if any(m in a for a in argv for m in marks):
                found.append((p, argv))
    return found


def test_down_leaves_nothing_behind(lab: Lab) -> None:
    """Last in this module: takes the shared lab down, checks, and brings it back up."""
    node = lab.nodes[0]
    # Leave work behind that must be cleaned: a container, a swarm, a daemon started by exec.
    engine(node).containers.run("nginx:latest", detach=True, ports={"80/tcp": None})
    lab.exec(node, ["docker", "swarm", "init", "--advertise-addr", node.addr])
    sleeper = lab.spawn(node, ["sleep", "600"], stdin=subprocess.DEVNULL)
    shims_before = [p for p in all_pids() if "shim" in os.path.basename(pid_exe(p))]
    assert shims_before
    try:
        assert lab.down()
        sleeper.wait(timeout=10)
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(n.name in netns for n in lab.nodes), netns
        assert not link_exists(lab.config.bridge)
        assert not [d for d in os.listdir("/sys/class/net") if d.startswith("psw-")]
        assert not _lab_processes(lab)
        assert not [p for p in shims_before if pid_alive(p)]
        assert not mounts_under([lab.config.lab_dir, lab.config.run_dir])
        assert not (lab.config.lab_dir / "state.json").exists()
        assert not lab.config.run_dir.exists()
        assert not iptables_has(["FORWARD", "-i", lab.config.bridge, "-o", lab.config.bridge, "-j", "ACCEPT"])
        for f in ("config", "known_hosts"):
            p = Path("~/.ssh").expanduser() / f
            assert not p.exists() or BEGIN_MARK not in p.read_text()
        assert not Path("/sys/fs/cgroup/pids/pyswarm-lab").exists()
        assert not lab.down()  # second down: nothing to do
        cp = subprocess.run([*LAB_CLI, "down"], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0 and "nothing to do" in cp.stdout
    finally:
        # Other modules share this session lab.
        lab.up()
