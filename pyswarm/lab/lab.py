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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyswarm.lab import image, ssh
from pyswarm.lab.config import (
    NODE_NAME_RE,
    LabConfig,
    LabError,
    LabNotFound,
    Node,
    default_lab_dir,
    node_index,
)
from pyswarm.lab.sysutil import (
    CHILDREN,
    all_pids,
    cgroup_pids,
    cgroup_remove,
    docker_ping,
    engine_json,
    engine_request,
    iptables_ensure,
    iptables_remove,
    link_exists,
    link_is_up,
    mounts_under,
    ns_inode,
    pid_alive,
    pid_cmdline,
    pid_exe,
    pids_in_netns,
    read_pidfile,
    run,
    tail,
    tcp_open,
    terminate,
    unmount_under,
)

DOCKERD = "/usr/sbin/dockerd"
SSHD = "/usr/sbin/sshd"
REQUIRED_TOOLS = ("ip", "iptables", "nsenter", "unshare", "ssh-keygen", "ldd")
ENGINE_TIMEOUT = 60.0  # dockerd normally answers in ~1 s; a loaded 2-core CI box can be slow
STOP_TIMEOUT = 15.0  # then SIGKILL
# Executables the lab starts; a process of one of these whose command line names a node's
# paths belongs to that node even if its network namespace is already gone.
LAB_DAEMONS = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "sshd", "docker-proxy"}

Log = Callable[[str], None]


def _no_log(_msg: str) -> None:
    pass


class LabExecError(subprocess.CalledProcessError):
    """`Lab.exec(check=True)` failed; str() includes the command's stderr."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else ""
        return super().__str__() + (f"\n{err.strip()}" if err and err.strip() else "")


@dataclass(frozen=True)
class NodeStatus:
    node: Node
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
    def nodes(self) -> list[Node]:
        return self.config.node_list

    def node(self, node: str | Node) -> Node:
        """The lab's node by name; raises LabError for names that are not in this lab."""
        name = node.name if isinstance(node, Node) else node
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

    def up(self, nodes: int | None = None, subnet: str | None = None) -> list[NodeStatus]:
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
            if self._down_locked():
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
        iptables_ensure(self._forward_rule(cfg.bridge))
        ssh.keygen(cfg.identity_file, "pyswarm-lab")
        cfg.authorized_keys.write_text(ssh.public_key(cfg.identity_file) + " pyswarm-lab\n")
        os.chmod(cfg.authorized_keys, 0o600)
        self.log(f"host: bridge {cfg.bridge} {cfg.host_addr}/{cfg.prefixlen}")

    @staticmethod
    def _forward_rule(bridge: str) -> list[str]:
        return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]

    def _node_up(self, node: Node, img: Future[Path]) -> None:
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

        ssh.keygen(node.host_key, f"pyswarm-lab {node.name}")
        node.sshd_config.write_text(ssh.render_sshd_config(cfg, node))
        # sshd daemonizes: the nsenter'd parent exits once it has bound the port.
        run([*self._nsenter(node), SSHD, "-f", str(node.sshd_config), "-E", str(node.sshd_log)])

        self._write_daemon_json(node)
        self._start_dockerd(node)
        self.log(f"{node.name}: engine up in {time.monotonic() - t0:.1f} s")
        self._load_image(node, img.result())
        deadline = time.monotonic() + 10
        while not tcp_open(node.addr, 22, timeout=0.5):
            if time.monotonic() > deadline:
                raise LabError(f"{node.name}: sshd does not answer on {node.addr}:22:\n{tail(node.sshd_log)}")
            time.sleep(0.1)
        self.log(f"{node.name}: ready in {time.monotonic() - t0:.1f} s")

    def _nsenter(self, node: Node) -> list[str]:
        return ["nsenter", f"--net={node.netns_path}", f"--uts={node.uts_path}", "--"]

    def _dockerd_argv(self, node: Node) -> list[str]:
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

    @staticmethod
    def _write_daemon_json(node: Node) -> None:
        # Own config file: the host's /etc/docker/daemon.json must not leak into lab engines.
        # Own trust key: dockerd 20.10 derives the engine ID from /etc/docker/key.json by
        # default, which would give every node the same `docker info` ID.
        conf = {"deprecated-key-path": str(node.dir / "key.json")}
        node.daemon_json.write_text(json.dumps(conf, indent=2) + "\n")

    def _start_dockerd(self, node: Node) -> None:
        node.dockerd_pidfile.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
        # Lets real swarm mode on these engines use local images without a registry lookup.
        env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
        with open(node.dockerd_log, "ab") as logf:
            proc = subprocess.Popen(
                [*self._nsenter(node), *self._dockerd_argv(node)],
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

    def _load_image(self, node: Node, archive: Path) -> None:
        t0 = time.monotonic()
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
        self.log(f"{node.name}: loaded {image.IMAGE_REF} in {time.monotonic() - t0:.1f} s")

    # ------------------------------------------------------------------ status

    def dockerd_pid(self, node: str | Node) -> int | None:
        n = self.node(node)
        return self._dockerd_pid(n)

    @staticmethod
    def _dockerd_pid(node: Node) -> int | None:
        pid = read_pidfile(node.dockerd_pidfile)
        if pid and pid_alive(pid) and os.path.basename(pid_exe(pid)) == "dockerd":
            return pid
        # No (or a stale) pidfile: find it by its data root, e.g. after a half-failed start.
        root = str(node.data_root)
        for p in all_pids():
            if os.path.basename(pid_exe(p)) == "dockerd" and root in pid_cmdline(p) and pid_alive(p):
                return p
        return None

    def status(self, node: str | Node) -> NodeStatus:
        n = self.node(node)
        pid = self._dockerd_pid(n)
        version = None
        running = False
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                version = str(engine_json(n.socket, "/version", timeout=3).get("Version"))
                running = True
        return NodeStatus(
            node=n,
            netns=n.netns_path.exists(),
            running=running,
            cut=link_exists(n.veth_host) and not link_is_up(n.veth_host),
            engine_version=version,
            dockerd_pid=pid,
        )

    def ls(self) -> list[NodeStatus]:
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

    def exec_argv(self, node: str | Node, argv: Sequence[str]) -> list[str]:
        """The command line that runs argv inside node (for Popen of long-running processes)."""
        n = self.node(node)
        if not n.netns_path.exists():
            raise LabError(f"{n.name}: network namespace is gone (run `pyswarm lab up`)")
        return [*self._nsenter(n), *argv]

    def exec_env(self, node: str | Node, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for processes on node: ours plus DOCKER_HOST, PYSWARM_NODE, PYSWARM_DATA_DIR."""
        n = self.node(node)
        return {**os.environ, **n.env, **(env or {})}

    def exec(
        self,
        node: str | Node,
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
        self, node: str | Node, argv: Sequence[str], env: Mapping[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start a long-running process inside node. `lab down` kills it with the node."""
        return subprocess.Popen(self.exec_argv(node, argv), env=self.exec_env(node, env), **popen)

    # ------------------------------------------------------------------ faults

    def kill(self, node: str | Node) -> bool:
        """Stop node's dockerd (SIGTERM, then SIGKILL after 15 s); its containers stop with it.
        False if it was not running."""
        require_root()
        n = self.node(node)
        pid = self._dockerd_pid(n)
        if pid is None:
            return False
        terminate([pid], STOP_TIMEOUT)
        return True

    def start(self, node: str | Node) -> bool:
        """Start node's dockerd again and wait until it answers. False if it was running."""
        require_root()
        n = self.node(node)
        if self._dockerd_pid(n) is not None:
            return False
        if not n.netns_path.exists() or not os.path.ismount(n.uts_path):
            raise LabError(f"{n.name}: namespaces are gone (run `pyswarm lab up`)")
        self._start_dockerd(n)
        return True

    def cut(self, node: str | Node) -> None:
        """Take the node off the network: the host end of its veth goes down."""
        require_root()
        n = self.node(node)
        run(["ip", "link", "set", n.veth_host, "down"])

    def heal(self, node: str | Node) -> None:
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
            return self._down_locked()

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

    def _discover(self) -> tuple[LabConfig, list[Node]]:
        """The config of the lab on disk (if readable) and every node that may have remains."""
        cfg = self.config
        with contextlib.suppress(LabNotFound, LabError):
            cfg = LabConfig.load(self.config.lab_dir)
        indexes: set[int] = {n.index for n in cfg.node_list} if cfg.state_path.exists() else set()
        names: list[str] = []
        with contextlib.suppress(OSError):
            names += os.listdir(cfg.lab_dir / "nodes")
        with contextlib.suppress(OSError):
            names += os.listdir("/run/netns")
        with contextlib.suppress(OSError):
            names += [d[len("psw-") :] for d in os.listdir("/sys/class/net") if d.startswith("psw-")]
        for name in names:
            if NODE_NAME_RE.match(name):
                indexes.add(node_index(name))
        indexes.update(self._orphan_indexes(cfg))
        return cfg, [cfg.node(i) for i in sorted(indexes)]

    @staticmethod
    def _orphan_indexes(cfg: LabConfig) -> set[int]:
        """Nodes whose daemons still run although their dir and netns are gone (e.g. rm -rf)."""
        by_dir = re.compile(re.escape(str(cfg.lab_dir)) + r"/nodes/(node-\d{2,3})(?:/|$)")
        by_exec = re.compile(re.escape(str(cfg.run_dir)) + r"/n(\d{1,3})(?:/|$)")
        found: set[int] = set()
        for p in all_pids():
            if os.path.basename(pid_exe(p)) not in LAB_DAEMONS:
                continue
            for arg in pid_cmdline(p):
                if m := by_dir.search(arg):
                    found.add(node_index(m.group(1)))
                elif m := by_exec.search(arg):
                    found.add(int(m.group(1)))
        return found

    def _down_locked(self) -> bool:
        cfg, nodes = self._discover()
        did = False
        if nodes:
            with ThreadPoolExecutor(max_workers=min(len(nodes), 16)) as pool:
                results = list(pool.map(self._node_down, nodes))
            did = any(results)
        for bridge in {cfg.bridge, self.config.bridge}:
            if link_exists(bridge):
                run(["ip", "link", "del", bridge], check=False)
                did = True
            if iptables_remove(self._forward_rule(bridge)):
                did = True
        if ssh.remove_host_names():
            did = True
        if ssh.remove_user_trust():
            did = True
        did = self._remove_dirs(cfg) or did
        cgroup_remove("/pyswarm-lab")
        if did:
            self.log("lab removed")
        return did

    def _node_down(self, node: Node) -> bool:
        did = False
        # 1. While the engine still answers, let it remove its containers and leave any swarm:
        #    containerd shims and containers outlive a killed dockerd.
        if docker_ping(node.socket, timeout=2):
            did = True
            self._engine_cleanup(node)
        # 2. Stop dockerd (it stops its managed containerd).
        pid = self._dockerd_pid(node)
        if pid is not None:
            did = True
            terminate([pid], STOP_TIMEOUT)
        # 3. Everything else of the node: containers (by cgroup), anything in its netns (containerd,
        #    shims, sshd, `lab exec` daemons), and lab daemons naming its paths.
        for _ in range(5):
            victims = self._node_pids(node)
            if not victims:
                break
            did = True
            terminate(victims, 3)
        # 4. Mounts (overlay, shm, netns bind mounts, the UTS ns file), deepest first.
        if unmount_under([node.dir, node.exec_root]):
            did = True
        if node.netns_path.exists() or os.path.exists(f"/run/netns/{node.name}"):
            run(["ip", "netns", "del", node.name], check=False)
            did = True
        if link_exists(node.veth_host):
            run(["ip", "link", "del", node.veth_host], check=False)
            did = True
        cgroup_remove(node.cgroup_parent)
        return did

    def _engine_cleanup(self, node: Node) -> None:
        sock = node.socket
        # Leave the swarm first, or it would recreate the task containers we remove.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            swarm_state = engine_json(sock, "/info", timeout=10).get("Swarm", {}).get("LocalNodeState")
            if swarm_state not in (None, "", "inactive"):
                engine_request(sock, "POST", "/swarm/leave?force=1", timeout=30)
        with contextlib.suppress(OSError, ValueError):
            containers = engine_json(sock, "/containers/json?all=1", timeout=10)
            ids = [c["Id"] for c in containers]

            def rm(cid: str) -> None:
                with contextlib.suppress(OSError):
                    engine_request(sock, "DELETE", f"/containers/{cid}?force=1&v=1", timeout=30)

            if ids:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(rm, ids))

    @staticmethod
    def _node_pids(node: Node) -> set[int]:
        pids = cgroup_pids(node.cgroup_parent)
        ino = ns_inode(node.netns_path)
        if ino is not None:
            pids.update(pids_in_netns(ino))
        # e.g. a dockerd whose netns was deleted by hand: its flags name the node's paths. A
        # substring test, because sshd rewrites its argv into one "sshd: /usr/sbin/sshd -f ..." string.
        marks = (str(node.dir), str(node.exec_root))
        for p in all_pids():
            if os.path.basename(pid_exe(p)) in LAB_DAEMONS and any(
                (m + "/") in (a + "/") for a in pid_cmdline(p) for m in marks
            ):
                pids.add(p)
        return {p for p in pids if pid_alive(p)}

    def _remove_dirs(self, cfg: LabConfig) -> bool:
        did = False
        unmount_under([cfg.lab_dir, cfg.run_dir])
        left = mounts_under([cfg.lab_dir, cfg.run_dir])
        if left:
            raise LabError("could not unmount: " + ", ".join(left))
        # Only what the lab created: PYSWARM_LAB_DIR may point at a directory with other files.
        for name in ("nodes", "state.json", "state.tmp", "id_ed25519", "id_ed25519.pub", "authorized_keys",
                     "known_hosts"):  # fmt: skip
            p = cfg.lab_dir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
                did = True
            elif p.exists() or p.is_symlink():
                p.unlink()
                did = True
        with contextlib.suppress(OSError):
            cfg.lab_dir.rmdir()  # only if empty
        if cfg.run_dir.exists():
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            did = True
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
