"""A pyswarm cluster on the lab, driven through the real CLI, plus traffic helpers for the mesh tests."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyswarm.lab import Lab
from tests.helpers import wait_until as _wait_until

PYSWARM = str(Path(sys.executable).parent / "pyswarm")
MANAGER = "node-01"

# Runs inside a node (or on the host): N fresh connections, prints {"served-by": count, "errors": n}.
_HTTP_COUNTER = """
import json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
counts = {}
for _ in range(n):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            key = r.headers.get("X-Served-By", "?")
    except Exception as exc:
        key = "error:" + type(exc).__name__
    counts[key] = counts.get(key, 0) + 1
print(json.dumps(counts))
"""


class Swarm:
    def __init__(self, lab: Lab, config: Path) -> None:
        self.lab = lab
        self.env = {"PYSWARM_CONFIG": str(config)}

    def cli(
        self, *args: str, node: str | None = None, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """`pyswarm ARGS` on the host (outside the cluster) or, with node, inside that node."""
        if node is None:
            result = subprocess.run(
                [PYSWARM, *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
            )
        else:
            result = self.lab.exec(node, [PYSWARM, *args], env=self.env, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"pyswarm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--format", "json").stdout)

    def init(self) -> subprocess.CompletedProcess[str]:
        return self.cli("swarm", "init", "--listen-addr", f"{self.addr(MANAGER)}:2377", node=MANAGER)

    def join(self, node: str) -> subprocess.CompletedProcess[str]:
        token = self.cli("swarm", "join-token", "-q", "worker").stdout.strip()
        return self.cli("swarm", "join", "--token", token, f"{self.addr(MANAGER)}:2377", node=node)

    def leave_all(self) -> None:
        for node in self.lab.nodes:
            if node.name != MANAGER:
                self.cli("swarm", "leave", "--force", node=node.name, check=False)
        self.cli("swarm", "leave", "--force", node=MANAGER, check=False)

    def addr(self, node: str) -> str:
        return self.lab.node(node).addr

    def tasks(self, service: str) -> list[dict[str, Any]]:
        return [t for t in self.json("service", "ps", service) if t["desired_state"] == "running"]

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks(service) if t["state"] == "running"]

    def containers(self, node: str, label: str = "com.pyswarm.service.name") -> list[str]:
        """Names of the node's running containers that carry our label."""
        out = self.lab.exec(node, ["docker", "ps", "--filter", f"label={label}", "--format", "{{.Names}}"]).stdout
        return out.split()

    def all_containers(self) -> dict[str, list[str]]:
        return {n.name: self.containers(n.name) for n in self.lab.nodes}

    def node_status(self) -> dict[str, str]:
        return {n["hostname"]: n["status"] for n in self.json("node", "ls")}

    def http_counts(self, url: str, n: int, node: str | None = None) -> Counter[str]:
        argv = [sys.executable, "-c", _HTTP_COUNTER, url, str(n)]
        if node is None:
            out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
        else:
            out = self.lab.exec(node, argv, timeout=120).stdout
        return Counter(json.loads(out))

    def rules(self, node: str) -> str:
        return self.lab.exec(node, ["iptables-save"]).stdout


def connect_refused(addr: str, port: int, timeout: float = 2.0) -> bool:
    """True when the port refuses at once (RST), False when it answers or hangs."""
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def udp_ask(addr: str, port: int, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"hello", (addr, port))
        try:
            return sock.recv(512).decode().strip()
        except OSError:
            return ""


def node_names(lab: Lab) -> Sequence[str]:
    return [n.name for n in lab.nodes]


# The lab is slower than the in-memory engines: longer waits, polled less often.
wait_until = functools.partial(_wait_until, timeout=30.0, interval=0.2)
