"""Removing a lab, whole or half-built: what `lab down` (and `lab up`, before it builds) does.

Nodes are found from the state file, the lab dir, the netns list, the host's veth names and the lab
daemons still running. Each node loses its containers, processes, mounts, namespace, veth and cgroup;
then the bridge, its FORWARD rule, the ~/.ssh and /etc/hosts blocks and the lab's files go.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

from pyswarm.lab import ssh
from pyswarm.lab.config import NODE_NAME_RE, LabConfig, LabError, LabNode, LabNotFound, node_index
from pyswarm.lab.daemons import LAB_DAEMONS, STOP_TIMEOUT, dockerd_pid
from pyswarm.lab.sysutil import (
    all_pids,
    cgroup_pids,
    cgroup_remove,
    docker_ping,
    engine_json,
    engine_request,
    iptables_remove,
    link_exists,
    mounts_under,
    ns_inode,
    pid_alive,
    pid_cmdline,
    pid_exe,
    pids_in_netns,
    run,
    terminate,
    unmount_under,
)

# Only what the lab created in its dir: PYSWARM_LAB_DIR may point at a directory with other files.
LAB_DIR_ENTRIES = (
    "nodes", "state.json", "state.tmp", "id_ed25519", "id_ed25519.pub", "authorized_keys", "known_hosts",
)  # fmt: skip


def forward_rule(bridge: str) -> list[str]:
    """The host's FORWARD rule that lets bridged traffic between the nodes through."""
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def remove_lab(config: LabConfig) -> bool:
    """Remove every trace of the lab that config (or the state file in its lab dir) describes, keeping the
    image cache. True if there was anything to remove. The caller holds the lab's lock."""
    cfg, nodes = discover(config)
    did = False
    if nodes:
        with ThreadPoolExecutor(max_workers=min(len(nodes), 16)) as pool:
            results = list(pool.map(remove_node, nodes))
        did = any(results)
    for bridge in {cfg.bridge, config.bridge}:
        if link_exists(bridge):
            run(["ip", "link", "del", bridge], check=False)
            did = True
        if iptables_remove(forward_rule(bridge)):
            did = True
    if ssh.remove_host_names():
        did = True
    if ssh.remove_user_trust():
        did = True
    did = remove_lab_files(cfg) or did
    cgroup_remove("/pyswarm-lab")
    return did


# ---------------------------------------------------------------- finding the remains


def discover(config: LabConfig) -> tuple[LabConfig, list[LabNode]]:
    """The config of the lab on disk (if readable) and every node that may have remains."""
    cfg = config
    with contextlib.suppress(LabNotFound, LabError):
        cfg = LabConfig.load(config.lab_dir)
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
    indexes.update(orphan_indexes(cfg))
    return cfg, [cfg.node(i) for i in sorted(indexes)]


def orphan_indexes(cfg: LabConfig) -> set[int]:
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


def node_pids(node: LabNode) -> set[int]:
    """Every live process of node: in its cgroup, in its netns, or a lab daemon naming its paths."""
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


# ---------------------------------------------------------------- removing


def remove_node(node: LabNode) -> bool:
    """Everything of one node; True if anything was there."""
    did = False
    # 1. While the engine still answers, let it remove its containers and leave any swarm:
    #    containerd shims and containers outlive a killed dockerd.
    if docker_ping(node.socket, timeout=2):
        did = True
        engine_cleanup(node)
    # 2. Stop dockerd (it stops its managed containerd).
    pid = dockerd_pid(node)
    if pid is not None:
        did = True
        terminate([pid], STOP_TIMEOUT)
    # 3. Everything else of the node: containers (by cgroup), anything in its netns (containerd,
    #    shims, sshd, `lab exec` daemons), and lab daemons naming its paths.
    for _ in range(5):
        victims = node_pids(node)
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


def engine_cleanup(node: LabNode) -> None:
    """Through node's engine API: leave any swarm, then remove every container."""
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


def remove_lab_files(cfg: LabConfig) -> bool:
    """Unmount what is left under the lab and run dirs, then delete the lab's files."""
    did = False
    unmount_under([cfg.lab_dir, cfg.run_dir])
    left = mounts_under([cfg.lab_dir, cfg.run_dir])
    if left:
        raise LabError("could not unmount: " + ", ".join(left))
    for name in LAB_DIR_ENTRIES:
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
