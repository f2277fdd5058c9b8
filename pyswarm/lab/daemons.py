"""The daemons of a lab node: its sshd and dockerd, started inside its namespaces, found again by pid.

Processes are started with `nsenter --net --uts`, never `ip netns exec`, which remounts /sys and breaks
dockerd's cgroup detection.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from pyswarm.lab import image, ssh
from pyswarm.lab.config import LabConfig, LabError, LabNode
from pyswarm.lab.sysutil import (
    CHILDREN,
    all_pids,
    docker_ping,
    engine_request,
    pid_alive,
    pid_cmdline,
    pid_exe,
    read_pidfile,
    run,
    tail,
    tcp_open,
)

DOCKERD = "/usr/sbin/dockerd"
SSHD = "/usr/sbin/sshd"
ENGINE_TIMEOUT = 60.0  # dockerd normally answers in ~1 s; a loaded 2-core CI box can be slow
SSHD_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0  # then SIGKILL
# Executables the lab starts; a process of one of these whose command line names a node's
# paths belongs to that node even if its network namespace is already gone.
LAB_DAEMONS = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "sshd", "docker-proxy"}


def nsenter_argv(node: LabNode) -> list[str]:
    """The prefix that runs a command in node's network and UTS namespaces."""
    return ["nsenter", f"--net={node.netns_path}", f"--uts={node.uts_path}", "--"]


# ---------------------------------------------------------------- sshd


def start_sshd(cfg: LabConfig, node: LabNode) -> None:
    """A fresh host key and sshd_config for node, and its sshd, listening on node.addr:22."""
    ssh.keygen(node.host_key, f"pyswarm-lab {node.name}")
    node.sshd_config.write_text(ssh.render_sshd_config(cfg, node))
    # sshd daemonizes: the nsenter'd parent exits once it has bound the port.
    run([*nsenter_argv(node), SSHD, "-f", str(node.sshd_config), "-E", str(node.sshd_log)])


def wait_for_sshd(node: LabNode) -> None:
    deadline = time.monotonic() + SSHD_TIMEOUT
    while not tcp_open(node.addr, 22, timeout=0.5):
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}: sshd does not answer on {node.addr}:22:\n{tail(node.sshd_log)}")
        time.sleep(0.1)


# ---------------------------------------------------------------- dockerd


def dockerd_argv(node: LabNode) -> list[str]:
    return [
        DOCKERD,
        "--data-root", str(node.data_root),
        "--exec-root", str(node.exec_root),
        "--pidfile", str(node.dockerd_pidfile),
        "--config-file", str(node.daemon_json),
        "-H", node.docker_host,
        "--bip", node.bip,
        "--cgroup-parent", node.cgroup_parent,
        # Bounds `lab kill` / `lab down`: containers get 5 s to stop when dockerd exits.
        "--shutdown-timeout", "5",
    ]  # fmt: skip


def write_daemon_json(node: LabNode) -> None:
    # Own config file: the host's /etc/docker/daemon.json must not leak into lab engines.
    # Own trust key: dockerd 20.10 derives the engine ID from /etc/docker/key.json by
    # default, which would give every node the same `docker info` ID.
    conf = {"deprecated-key-path": str(node.dir / "key.json")}
    node.daemon_json.write_text(json.dumps(conf, indent=2) + "\n")


def start_dockerd(node: LabNode) -> None:
    """Start node's dockerd (detached from us) and wait until it answers /_ping."""
    node.dockerd_pidfile.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    # Lets real swarm mode on these engines use local images without a registry lookup.
    env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
    with open(node.dockerd_log, "ab") as logf:
        proc = subprocess.Popen(
            [*nsenter_argv(node), *dockerd_argv(node)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=node.dir,
            start_new_session=True,  # survives the CLI process and its terminal
        )
    CHILDREN[proc.pid] = proc
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while not docker_ping(node.socket, timeout=1.0):
        rc = proc.poll()
        if rc is not None:
            raise LabError(f"{node.name}: dockerd exited with {rc}; {node.dockerd_log}:\n{tail(node.dockerd_log)}")
        if time.monotonic() > deadline:
            raise LabError(
                f"{node.name}: dockerd did not answer /_ping within {ENGINE_TIMEOUT:g} s; "
                f"{node.dockerd_log}:\n{tail(node.dockerd_log)}"
            )
        time.sleep(0.05)


def dockerd_pid(node: LabNode) -> int | None:
    """The pid of node's running dockerd, or None."""
    pid = read_pidfile(node.dockerd_pidfile)
    if pid and pid_alive(pid) and os.path.basename(pid_exe(pid)) == "dockerd":
        return pid
    # No (or a stale) pidfile: find it by its data root, e.g. after a half-failed start.
    root = str(node.data_root)
    for p in all_pids():
        if os.path.basename(pid_exe(p)) == "dockerd" and root in pid_cmdline(p) and pid_alive(p):
            return p
    return None


def load_image(node: LabNode, archive: Path) -> None:
    """Load the lab's image archive into node's engine."""
    with open(archive, "rb") as f:
        status, body = engine_request(
            node.socket,
            "POST",
            "/images/load?quiet=1",
            body=f,
            headers={"Content-Type": "application/x-tar", "Content-Length": str(archive.stat().st_size)},
            timeout=120,
        )
    if status != 200 or b'"error' in body:
        raise LabError(f"{node.name}: loading {image.IMAGE_REF} failed: HTTP {status}: {body[:300]!r}")
