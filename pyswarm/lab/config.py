"""Lab configuration, node naming/addressing and the persisted state file.

Pure data: nothing here touches the system, so it is unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_LAB_DIR = Path("/var/lib/pyswarm-lab")
DEFAULT_SUBNET = "192.168.39.0/24"
DEFAULT_NODES = 3
DEFAULT_BRIDGE = "pyswarm0"
# Exec roots live here; kept short because containerd puts unix sockets (108-byte limit) beneath them.
DEFAULT_RUN_DIR = Path("/run/pyswarm-lab")
# Survives `lab down` so a second `lab up` does not rebuild the image.
DEFAULT_CACHE_DIR = Path("/var/cache/pyswarm-lab")
STATE_FILE = "state.json"
STATE_VERSION = 1
MAX_NODES = 99

NODE_NAME_RE = re.compile(r"^node-(\d{2,3})$")


class LabError(Exception):
    """Anything that goes wrong while driving the lab; the CLI prints it and exits 1."""


class LabNotFound(LabError):
    """There is no lab state (no `lab up` ran, or `lab down` removed it)."""


def default_lab_dir() -> Path:
    env = os.environ.get("PYSWARM_LAB_DIR")
    return Path(env) if env else DEFAULT_LAB_DIR


def node_name(index: int) -> str:
    return f"node-{index:02d}"


def node_index(name: str) -> int:
    m = NODE_NAME_RE.match(name)
    if not m:
        raise LabError(f"not a lab node name: {name!r} (expected node-01, node-02, ...)")
    return int(m.group(1))


@dataclass(frozen=True)
class LabNode:
    """One lab host: a network + UTS namespace with its own dockerd and sshd."""

    name: str
    index: int
    addr: str
    dir: Path
    exec_root: Path
    bridge: str

    @property
    def socket(self) -> Path:
        """The node's Docker Engine unix socket (reachable from the host namespace)."""
        return self.dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def engine_url(self) -> str:
        """How pyswarm reaches this engine: over SSH, like a real remote host."""
        return f"ssh://root@{self.addr}"

    @property
    def data_root(self) -> Path:
        return self.dir / "docker"

    @property
    def pyswarm_data_dir(self) -> Path:
        return self.dir / "pyswarm"

    @property
    def dockerd_log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def daemon_json(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def dockerd_pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def sshd_pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def uts_path(self) -> Path:
        """File the node's persistent UTS namespace is bind-mounted on."""
        return self.dir / "uts"

    @property
    def netns_path(self) -> Path:
        return Path("/var/run/netns") / self.name

    @property
    def veth_host(self) -> str:
        # Interface names are limited to 15 characters: "psw-node-100" is 12.
        return f"psw-{self.name}"

    @property
    def bip(self) -> str:
        """docker0 of this node: off the lab subnet and off docker's default 172.17/16."""
        return f"172.18.{self.index}.1/24"

    @property
    def cgroup_parent(self) -> str:
        # Per-node cgroup parent, so teardown can find this node's container processes.
        return f"/pyswarm-lab/{self.name}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of processes "on" the node (lab exec, and SSH sessions via SetEnv)."""
        return {
            "DOCKER_HOST": self.docker_host,
            "PYSWARM_NODE": self.name,
            "PYSWARM_DATA_DIR": str(self.pyswarm_data_dir),
        }


@dataclass(frozen=True)
class LabConfig:
    """Where the lab lives and how it is addressed. Persisted as state.json in lab_dir."""

    lab_dir: Path = field(default_factory=default_lab_dir)
    subnet: str = DEFAULT_SUBNET
    nodes: int = DEFAULT_NODES
    bridge: str = DEFAULT_BRIDGE
    run_dir: Path = DEFAULT_RUN_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR

    def __post_init__(self) -> None:
        net = self.network
        if net.prefixlen > 29:
            raise LabError(f"subnet {self.subnet} is too small")
        if not 1 <= self.nodes <= min(MAX_NODES, net.num_addresses - 3):
            raise LabError(f"node count must be between 1 and {min(MAX_NODES, net.num_addresses - 3)}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", self.bridge):
            raise LabError(f"bad bridge name {self.bridge!r}")
        # Unix socket paths are limited to 108 bytes: docker.sock sits in the node dir, and
        # containerd nests its sockets a few levels below the exec root.
        last = self.node(self.nodes)
        if len(str(last.socket).encode()) > 100:
            raise LabError(f"lab dir {self.lab_dir} is too long for unix socket paths (use a shorter one)")
        if len(str(last.exec_root).encode()) > 40:
            raise LabError(f"run dir {self.run_dir} is too long for containerd's sockets")

    @property
    def network(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as e:
            raise LabError(f"bad subnet {self.subnet!r}: {e}") from e

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def host_addr(self) -> str:
        """The host bridge's address: .254 in a /24 (the last usable address)."""
        return str(self.network.broadcast_address - 1)

    def node_addr(self, index: int) -> str:
        return str(self.network.network_address + index)

    def node(self, index: int) -> LabNode:
        name = node_name(index)
        return LabNode(
            name=name,
            index=index,
            addr=self.node_addr(index),
            dir=self.lab_dir / "nodes" / name,
            exec_root=self.run_dir / f"n{index}",
            bridge=self.bridge,
        )

    @property
    def node_list(self) -> list[LabNode]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    @property
    def state_path(self) -> Path:
        return self.lab_dir / STATE_FILE

    @property
    def identity_file(self) -> Path:
        return self.lab_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.lab_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.lab_dir / "known_hosts"

    def with_(self, **changes: Any) -> LabConfig:
        return replace(self, **changes)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "subnet": self.subnet,
            "nodes": [n.name for n in self.node_list],
            "bridge": self.bridge,
            "run_dir": str(self.run_dir),
            "cache_dir": str(self.cache_dir),
        }

    @classmethod
    def from_state(cls, lab_dir: Path, state: dict[str, Any]) -> LabConfig:
        if state.get("version") != STATE_VERSION:
            raise LabError(f"unsupported lab state version {state.get('version')!r} in {lab_dir}")
        names = state["nodes"]
        indexes = [node_index(n) for n in names]
        if indexes != list(range(1, len(names) + 1)):
            raise LabError(f"corrupt lab state in {lab_dir}: nodes {names}")
        return cls(
            lab_dir=lab_dir,
            subnet=state["subnet"],
            nodes=len(names),
            bridge=state["bridge"],
            run_dir=Path(state["run_dir"]),
            cache_dir=Path(state["cache_dir"]),
        )

    def save(self) -> None:
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_state(), indent=2) + "\n")
        tmp.replace(self.state_path)

    @classmethod
    def load(cls, lab_dir: Path | None = None) -> LabConfig:
        lab_dir = lab_dir or default_lab_dir()
        path = lab_dir / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabNotFound(f"no lab at {lab_dir} (run `pyswarm lab up`)") from None
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read {path}: {e}") from e
        try:
            return cls.from_state(lab_dir, state)
        except (KeyError, TypeError) as e:
            raise LabError(f"corrupt lab state in {path}: {e}") from e
