"""The lab: N real Docker Engine hosts on this machine, each in its own network+UTS namespace.

    host (root netns)
      pyswarm0 bridge 192.168.39.254/24, FORWARD accept rule for bridged traffic
        psw-node-01 <-veth-> eth0 192.168.39.1 in netns node-01: dockerd, sshd (hostname node-01)
        psw-node-02 <-veth-> eth0 192.168.39.2 in netns node-02: dockerd, sshd (hostname node-02)
        ...

Lab dir ($PYSWARM_LAB_DIR, default /var/lib/pyswarm-lab):

    state.json                     subnet, node names, bridge: lets later processes find the lab
    id_ed25519{,.pub}              the lab's SSH client key; authorized_keys holds its public key
    known_hosts                    every node's host key, by IP (also merged into ~/.ssh/known_hosts)
    nodes/node-01/
        docker.sock                the engine's API (also ssh://root@192.168.39.1)
        docker/                    dockerd --data-root
        daemon.json, key.json      dockerd's own config file and trust key (engine ID)
        dockerd.log, dockerd.pid
        sshd_config, ssh_host_ed25519_key{,.pub}, sshd.log, sshd.pid
        uts                        the node's UTS namespace, bind-mounted
        pyswarm/                   $PYSWARM_DATA_DIR for pyswarm processes on the node
    /run/pyswarm-lab/n1            dockerd --exec-root (short: containerd sockets live below it)
    /var/cache/pyswarm-lab         the nginx image archive; survives `lab down`

Each dockerd runs in the host's mount namespace (so its unix socket, data and logs are plain
files under the lab dir) but in the node's network and UTS namespaces (so it has its own
iptables, docker0 and hostname). Processes are started with `nsenter --net --uts`, never
`ip netns exec`, which remounts /sys and breaks dockerd's cgroup detection.

This module is the lab's public face (Lab); the pieces behind it: config (naming, addressing, state),
daemons (each node's sshd and dockerd), teardown (`lab down`), ssh (keys, known_hosts), image (the nginx
image archive) and sysutil (Linux plumbing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyswarm.lab import image, ssh
from pyswarm.lab.config import LabConfig, LabError, LabNode, default_lab_dir
from pyswarm.lab.daemons import (
    DOCKERD,
    SSHD,
    STOP_TIMEOUT,
    dockerd_pid,
    load_image,
    nsenter_argv,
    start_dockerd,
    start_sshd,
    wait_for_sshd,
    write_daemon_json,
)
from pyswarm.lab.daemons import (
    LAB_DAEMONS as LAB_DAEMONS,  # re-exported: where the lab's daemons were always looked up
)
from pyswarm.lab.sysutil import engine_json, iptables_ensure, link_exists, link_is_up, run, terminate
from pyswarm.lab.teardown import forward_rule, remove_lab

REQUIRED_TOOLS = ("ip", "iptables", "nsenter", "unshare", "ssh-keygen", "ldd")

Log = Callable[[str], None]


def _no_log(_msg: str) -> None:
    pass


class LabExecError(subprocess.CalledProcessError):
    """`Lab.exec(check=True)` failed; str() includes the command's stderr."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else ""
        return super().__str__() + (f"\n{err.strip()}" if err and err.strip() else "")


@dataclass(frozen=True)
class LabNodeStatus:
    node: LabNode
    netns: bool
    running: bool  # dockerd process alive and answering /_ping
    cut: bool  # host end of the veth is down
    engine_version: str | None
    dockerd_pid: int | None

    @property
    def state(self) -> str:
        if not self.netns:
            return "missing"
        # A dockerd that runs but does not answer is starting up, or hung.
        hung = self.dockerd_pid is not None
        base = "running" if self.running else ("unresponsive" if hung else "stopped")
        if self.cut:
            return "cut" if self.running else f"{base}, cut"
        return base


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "pyswarm lab needs root: it creates network namespaces, a bridge, iptables rules "
            "and dockerds (try: sudo pyswarm lab ...)"
        )


def check_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    missing += [p for p in (DOCKERD, SSHD) if not os.access(p, os.X_OK)]
    if missing:
        raise LabError(
            "missing tools: " + ", ".join(missing) + " (apt-get install docker.io openssh-server iproute2 "
            "iptables util-linux)"
        )


class Lab:
    """A multi-host lab of real Docker Engines on this machine (root only).

    >>> lab = Lab(LabConfig()); lab.up(nodes=3)         # fresh lab, replacing any old one
    >>> lab = Lab.load()                                # the lab a previous process brought up
    >>> lab.exec("node-01", ["docker", "info"]).stdout
    >>> lab.down()
    """

    def __init__(self, config: LabConfig | None = None, *, log: Log | None = None) -> None:
        self.config = config or LabConfig()
        self.log: Log = log or _no_log

    @classmethod
    def load(cls, lab_dir: Path | None = None, *, log: Log | None = None) -> Lab:
        """The lab described by the state file in lab_dir (default: $PYSWARM_LAB_DIR or
        /var/lib/pyswarm-lab). Raises LabNotFound if there is none."""
        return cls(LabConfig.load(lab_dir or default_lab_dir()), log=log)

    # ------------------------------------------------------------------ nodes

    @property
    def nodes(self) -> list[LabNode]:
        return self.config.node_list

    def node(self, node: str | LabNode) -> LabNode:
        """The lab's node by name; raises LabError for names that are not in this lab."""
        name = node.name if isinstance(node, LabNode) else node
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in the lab (nodes: {', '.join(n.name for n in self.nodes)})")

    @property
    def identity_file(self) -> Path:
        return self.config.identity_file

    @property
    def known_hosts(self) -> Path:
        return self.config.known_hosts

    # ------------------------------------------------------------------ up

    def up(self, nodes: int | None = None, subnet: str | None = None) -> list[LabNodeStatus]:
        """Tear down whatever lab exists (keeping the image cache), then build a fresh one."""
        require_root()
        check_tools()
        changes: dict[str, Any] = {}
        if nodes is not None:
            changes["nodes"] = nodes
        if subnet is not None:
            changes["subnet"] = subnet
        cfg = self.config = self.config.with_(**changes)
        with self._lock():
            if self._remove_locked():
                self.log("removed the previous lab")
            cfg.save()  # first, so that `lab down` can clean up a failed `up`
            for n in cfg.node_list:
                n.dir.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(max_workers=1) as img_pool:
                # The image builds while the nodes boot; each node waits for it only to load it.
                img: Future[Path] = img_pool.submit(image.ensure_image_archive, cfg.cache_dir, self.log)
                self._host_up()
                errors: dict[str, BaseException] = {}
                with ThreadPoolExecutor(max_workers=min(len(cfg.node_list), 16)) as pool:
                    futs = {n.name: pool.submit(self._node_up, n, img) for n in cfg.node_list}
                    for name, f in futs.items():
                        exc = f.exception()
                        if exc is not None:
                            errors[name] = exc
                if errors:
                    # Node errors already name their node.
                    detail = "\n".join(
                        str(e) if isinstance(e, LabError) else f"{name}: {e!r}" for name, e in errors.items()
                    )
                    raise LabError(
                        f"lab up failed; the half-built lab is left for inspection "
                        f"(`pyswarm lab down` removes it):\n{detail}"
                    )
            ssh.install_user_trust(cfg, cfg.node_list)
            ssh.install_host_names(cfg.node_list)
            cfg.known_hosts.write_text("\n".join(ssh.known_hosts_lines(cfg.node_list)) + "\n")
        return self.ls()

    def _host_up(self) -> None:
        cfg = self.config
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        run(["ip", "link", "add", cfg.bridge, "type", "bridge", "forward_delay", "0"])
        run(["ip", "addr", "add", f"{cfg.host_addr}/{cfg.prefixlen}", "dev", cfg.bridge])
        run(["ip", "link", "set", cfg.bridge, "up"])
        # br_netfilter sends bridged frames through the host's FORWARD chain, whose policy dockerd
        # may have set to DROP.
        iptables_ensure(forward_rule(cfg.bridge))
        ssh.keygen(cfg.identity_file, "pyswarm-lab")
        cfg.authorized_keys.write_text(ssh.public_key(cfg.identity_file) + " pyswarm-lab\n")
        os.chmod(cfg.authorized_keys, 0o600)
        self.log(f"host: bridge {cfg.bridge} {cfg.host_addr}/{cfg.prefixlen}")

    def _node_up(self, node: LabNode, img: Future[Path]) -> None:
        cfg = self.config
        t0 = time.monotonic()
        node.dir.mkdir(parents=True, exist_ok=True)
        node.pyswarm_data_dir.mkdir(exist_ok=True)
        node.exec_root.mkdir(parents=True, exist_ok=True)
        ns = node.name
        run(["ip", "netns", "add", ns])
        # Create the node end directly inside the namespace as eth0: no temporary names to clash.
        run(["ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", node.veth_host, "master", cfg.bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{node.addr}/{cfg.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", cfg.host_addr])
        # A persistent UTS namespace: unshare bind-mounts it onto the file.
        node.uts_path.touch()
        run(["unshare", f"--uts={node.uts_path}", "hostname", node.name])

        start_sshd(cfg, node)
        write_daemon_json(node)
        start_dockerd(node)
        self.log(f"{node.name}: engine up in {time.monotonic() - t0:.1f} s")
        self._load_image(node, img.result())
        wait_for_sshd(node)
        self.log(f"{node.name}: ready in {time.monotonic() - t0:.1f} s")

    def _load_image(self, node: LabNode, archive: Path) -> None:
        t0 = time.monotonic()
        load_image(node, archive)
        self.log(f"{node.name}: loaded {image.IMAGE_REF} in {time.monotonic() - t0:.1f} s")

    # ------------------------------------------------------------------ status

    def dockerd_pid(self, node: str | LabNode) -> int | None:
        return dockerd_pid(self.node(node))

    def status(self, node: str | LabNode) -> LabNodeStatus:
        n = self.node(node)
        pid = dockerd_pid(n)
        version = None
        running = False
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                version = str(engine_json(n.socket, "/version", timeout=3).get("Version"))
                running = True
        return LabNodeStatus(
            node=n,
            netns=n.netns_path.exists(),
            running=running,
            cut=link_exists(n.veth_host) and not link_is_up(n.veth_host),
            engine_version=version,
            dockerd_pid=pid,
        )

    def ls(self) -> list[LabNodeStatus]:
        require_root()
        with ThreadPoolExecutor(max_workers=min(len(self.nodes), 16)) as pool:
            return list(pool.map(self.status, self.nodes))

    def inventory(self) -> str:
        """An Ansible INI inventory of the nodes."""
        key = self.config.identity_file
        args = f"'-o UserKnownHostsFile={self.config.known_hosts}'"
        lines = ["[nodes]"]
        for n in self.nodes:
            lines.append(
                f"{n.name} ansible_host={n.addr} ansible_user=root ansible_ssh_private_key_file={key} "
                f"ansible_ssh_common_args={args}"
            )
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ exec

    def exec_argv(self, node: str | LabNode, argv: Sequence[str]) -> list[str]:
        """The command line that runs argv inside node (for Popen of long-running processes)."""
        n = self.node(node)
        if not n.netns_path.exists():
            raise LabError(f"{n.name}: network namespace is gone (run `pyswarm lab up`)")
        return [*nsenter_argv(n), *argv]

    def exec_env(self, node: str | LabNode, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for processes on node: ours plus DOCKER_HOST, PYSWARM_NODE, PYSWARM_DATA_DIR."""
        n = self.node(node)
        return {**os.environ, **n.env, **(env or {})}

    def exec(
        self,
        node: str | LabNode,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        check: bool = True,
        capture: bool = True,
        input: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside node (its network and UTS namespaces, DOCKER_HOST set to its engine).

        capture=False passes stdin/stdout/stderr through. check=True raises LabExecError."""
        full = self.exec_argv(node, argv)
        env_ = self.exec_env(node, env)
        cp = subprocess.run(full, env=env_, capture_output=capture, text=True, input=input, timeout=timeout)
        if check and cp.returncode != 0:
            raise LabExecError(cp.returncode, list(argv), cp.stdout, cp.stderr)
        return cp

    def spawn(
        self, node: str | LabNode, argv: Sequence[str], env: Mapping[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start a long-running process inside node. `lab down` kills it with the node."""
        return subprocess.Popen(self.exec_argv(node, argv), env=self.exec_env(node, env), **popen)

    # ------------------------------------------------------------------ faults

    def kill(self, node: str | LabNode) -> bool:
        """Stop node's dockerd (SIGTERM, then SIGKILL after 15 s); its containers stop with it.
        False if it was not running."""
        require_root()
        n = self.node(node)
        pid = dockerd_pid(n)
        if pid is None:
            return False
        terminate([pid], STOP_TIMEOUT)
        return True

    def start(self, node: str | LabNode) -> bool:
        """Start node's dockerd again and wait until it answers. False if it was running."""
        require_root()
        n = self.node(node)
        if dockerd_pid(n) is not None:
            return False
        if not n.netns_path.exists() or not os.path.ismount(n.uts_path):
            raise LabError(f"{n.name}: namespaces are gone (run `pyswarm lab up`)")
        start_dockerd(n)
        return True

    def cut(self, node: str | LabNode) -> None:
        """Take the node off the network: the host end of its veth goes down."""
        require_root()
        n = self.node(node)
        run(["ip", "link", "set", n.veth_host, "down"])

    def heal(self, node: str | LabNode) -> None:
        """Undo cut."""
        require_root()
        n = self.node(node)
        run(["ip", "link", "set", n.veth_host, "up"])

    def restore(self) -> None:
        """Undo all fault injection: heal every node and start every stopped dockerd."""
        require_root()
        for n in self.nodes:
            if link_exists(n.veth_host) and not link_is_up(n.veth_host):
                self.heal(n)
        with ThreadPoolExecutor(max_workers=min(len(self.nodes), 16)) as pool:
            list(pool.map(self.start, self.nodes))

    # ------------------------------------------------------------------ down

    def down(self) -> bool:
        """Remove the lab completely (the image cache stays). True if there was anything to remove.

        Works on half-broken labs too: nodes are found from the state file, the lab dir, the
        netns list and the host's veth names."""
        require_root()
        with self._lock():
            return self._remove_locked()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises up/down of concurrent pyswarm processes. Outside run_dir: down deletes that.
        path = self.config.run_dir.with_name(self.config.run_dir.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _remove_locked(self) -> bool:
        did = remove_lab(self.config)
        if did:
            self.log("lab removed")
        return did


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll pred until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
