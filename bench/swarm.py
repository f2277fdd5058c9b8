"""Docker swarm mode and pyswarm side by side on the same lab engines: `python -m bench swarm`.

Each repetition sets up one cluster at a time on the same three lab dockerds, runs the scenarios, and tears
it down again; the order of the systems rotates every repetition, so that a slow spell of the machine
does not always fall on the same one:

- swarm: `docker swarm init --advertise-addr` on node-01, `docker swarm join` on the others, services made
  with `docker service create -d --no-resolve-image` (the lab's dockerds run with
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, so no registry is asked), `docker service scale -d`;
- pyswarm: `pyswarm swarm init` / `swarm join` / `service create -d` / `service scale -d`, with its
  defaults (1 s heartbeat, 8 engine requests in flight per node);
- engines alone: the same containers made straight through each node's docker API (unix socket, 8 in
  flight per node, no orchestrator): what the engines themselves take, the reference no orchestrator that
  drives them can beat by much.

Every command runs inside node-01 (`lab exec`), as an operator would type it there, and is timed from its
start: CLI start-up counts for both systems (the rows "CLI ..." show what it costs). "Done" is what the
engines report, never what an orchestrator claims: the benchmark counts containers by service label
through each node's unix socket from the host (every 100 ms; that works while a node's link is cut, and
does not add SSH latency of its own). Node status comes from the orchestrator's API (swarm's over
node-01's socket, pyswarm's over HTTP), which is what `node ls` shows.

Scenarios: create (N replicas until N run), scale-up (to M), scale-down (to 0, until no container is left),
node-failure (`lab cut` of node-03 until N run on the survivors; also until the node is marked Down), and
mesh (bench/mesh.py: pyswarm's ingress throughput, and the evidence that swarm's mesh cannot run here).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import mesh
from bench.common import RESULTS_DIR, environment

SCENARIOS = ("create", "scale-up", "scale-down", "node-failure", "mesh")
SCALE_SCENARIOS = ("create", "scale-up", "scale-down")
SYSTEMS = ("swarm", "pyswarm", "engines")
IMAGE = "nginx:latest"
MANAGER = "node-01"
PYSWARM = str(Path(sys.executable).parent / "pyswarm")
SWARM_LABEL = "com.docker.swarm.service.name"
PYSWARM_LABEL = "com.pyswarm.service.name"
FLOOR_LABEL = "com.pyswarm.bench.floor"
MESH_PORT = 8080
ENGINE_PARALLELISM = 8  # pyswarm's default per-node parallelism: the floor gets the same
API_VERSION = "1.41"  # the lab's dockerd 20.10
NOISY_CORES = 0.25  # a step during which other processes used more than this is flagged
SETTLE_S = 3.0  # after a cluster is set up: its first resyncs and mesh syncs are not what we measure

# The goals.
GOAL_RATIO = 0.5  # pyswarm ÷ swarm on create, scale-up, scale-down
GOAL_FAILOVER_S = 3.0  # node cut → all replicas running on the survivors
GOAL_MESH_RATIO = 0.9  # requests/s through the mesh ÷ direct


class BenchError(Exception):
    """A step of a scenario failed; the message says which and why."""


@dataclass(frozen=True)
class SwarmArgs:
    repeat: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    replicas: int = 30
    scale_to: int = 90
    cut_node: str = "node-03"
    mesh_node: str = "node-02"  # runs the mesh benchmark's only task
    mesh_entry: str = "node-03"  # runs no task: load enters the mesh here
    timeout: float = 120.0  # per step
    poll: float = 0.1
    floor: bool = True
    quiet_cores: float = 0.25  # before each session, wait for other processes to use less than this ...
    quiet_wait: float = 60.0  # ... for at most this long
    mesh: mesh.MeshArgs = field(default_factory=mesh.MeshArgs)
    pyswarm_env: dict[str, str] = field(default_factory=dict)
    pyswarm_init_args: tuple[str, ...] = ()  # e.g. ("--heartbeat", "0.5s"): to try settings other than the defaults


# --- observing the engines ------------------------------------------------------------------------------


class Engines:
    """Every lab node's docker API through its unix socket, from the host's namespace."""

    def __init__(self, lab: Any) -> None:
        import docker

        self.lab = lab
        self.names: list[str] = [n.name for n in lab.nodes]
        self.api: dict[str, Any] = {
            n.name: docker.APIClient(base_url=n.docker_host, version=API_VERSION, timeout=60) for n in lab.nodes
        }
        self._pool = ThreadPoolExecutor(len(self.names), thread_name_prefix="observe")

    def count(self, label: str, running: bool = True, nodes: Sequence[str] | None = None) -> dict[str, int]:
        """Containers per node with that label (key or key=value): running ones, or all of them."""
        names = list(nodes or self.names)
        filters: dict[str, Any] = {"label": label}
        if running:
            filters["status"] = "running"

        def one(name: str) -> int:
            return len(self.api[name].containers(all=not running, filters=filters, quiet=True))

        return dict(zip(names, self._pool.map(one, names), strict=True))

    def total(self, label: str, running: bool = True, nodes: Sequence[str] | None = None) -> int:
        return sum(self.count(label, running, nodes).values())

    def remove(self, label: str) -> int:
        """Force-remove every container with that label: leftovers of an interrupted scenario."""
        removed = 0
        for name in self.names:
            for row in self.api[name].containers(all=True, filters={"label": label}, quiet=True):
                with contextlib.suppress(Exception):
                    self.api[name].remove_container(row["Id"], force=True)
                    removed += 1
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for api in self.api.values():
            api.close()


def poll_until(predicate: Callable[[], bool], t0: float, timeout: float, interval: float, what: str) -> float:
    """Seconds from t0 until predicate() first holds, checked every `interval`."""
    while True:
        tick = time.monotonic()
        if predicate():
            return time.monotonic() - t0
        if tick - t0 > timeout:
            raise BenchError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))


class CpuMeter:
    """CPU spent during a step, by process name and by group: `lab` (anything in a node's network namespace:
    dockerds, containerd, shims, sshd, the pyswarm manager, the CLIs run there), `kernel` (kernel threads:
    softirq, kworkers), `bench` (this process) and `other` (everything else on the machine: someone else's
    load, which makes that step's figures suspect). A lab process's time includes that of its reaped
    children, so e.g. the short-lived `docker system dial-stdio` of an SSH session counts in sshd."""

    _KTHREAD = 0x00200000  # PF_KTHREAD in /proc/PID/stat's flags

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._host_netns = os.readlink("/proc/self/ns/net")
        self._start = self._snapshot()

    @staticmethod
    def _machine() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    def _snapshot(self) -> tuple[tuple[int, int], dict[int, tuple[str, str, int]]]:
        procs: dict[int, tuple[str, str, int]] = {}
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            try:
                netns = os.readlink(entry / "ns" / "net")
            except OSError:
                netns = ""  # ended meanwhile, or a kernel thread
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            pid = int(entry.name)
            if int(fields[6]) & self._KTHREAD:
                group = "kernel"
            elif pid == me:
                group = "bench"
            elif netns and netns != self._host_netns:
                group = "lab"
            else:
                group = "other"
            # Other processes count their own time only: a shell that reaps a long test run would otherwise
            # charge the window with that run's whole lifetime.
            procs[pid] = (name, group, sum(int(v) for v in fields[11 : 13 if group == "other" else 15]))
        return self._machine(), procs

    def stop(self, top: int = 8) -> dict[str, Any]:
        (total0, idle0), before = self._start
        (total1, idle1), after = self._snapshot()
        by_name: dict[str, float] = {}
        by_group: dict[str, float] = {}
        for pid, (name, group, ticks) in after.items():
            previous = before.get(pid)
            spent = (ticks - (previous[2] if previous and previous[0] == name else 0)) / self._tick
            key = name if group == "lab" else f"{group}:{name}"  # "python" in the lab is the manager or a CLI
            by_name[key] = by_name.get(key, 0.0) + spent
            by_group[group] = by_group.get(group, 0.0) + spent
        busiest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        return {
            "machine_busy_pct": round(100 * busy, 1),
            "cpu_s_by_group": {k: round(v, 2) for k, v in sorted(by_group.items())},
            "cpu_s_by_process": {k: round(v, 2) for k, v in busiest},
        }


def background_load(window: float = 2.0) -> float:
    """Cores used by processes that are neither the lab's, the kernel's nor this benchmark's, over `window`."""
    meter = CpuMeter()
    time.sleep(window)
    return float(meter.stop()["cpu_s_by_group"].get("other", 0.0)) / window


def wait_quiet(console: Console, limit: float, max_wait: float) -> dict[str, Any]:
    """Wait (up to max_wait) until other processes on the machine use less than `limit` cores: the figures of a
    2-core machine shared with someone's test run mean little. Returns what was seen, for the record."""
    began = time.monotonic()
    load = background_load()
    warned = False
    while load > limit and time.monotonic() - began < max_wait:
        if not warned:
            console.print(
                f"  [yellow]other processes use {load:.2f} cores: waiting up to {max_wait:.0f} s for quiet[/]"
            )
            warned = True
        load = background_load()
    return {"background_cores": round(load, 2), "waited_s": round(time.monotonic() - began, 1)}


def _epoch(text: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z) as seconds since the epoch."""
    match = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if match is None:
        raise ValueError(f"not a docker timestamp: {text!r}")
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + fraction + zone).timestamp()


def timeline(tasks: list[tuple[float, float | None]], wall0: float) -> dict[str, Any]:
    """From the orchestrator's own task records (created, running since) of the tasks made after wall0: when the
    first task existed, and when the orchestrator recorded the last one running, both from the command's start."""
    new = [(created, running) for created, running in tasks if created >= wall0 - 0.05]
    if not new:
        return {}
    result: dict[str, Any] = {"tasks_created": len(new), "first_task_s": min(c for c, _ in new) - wall0}
    started = [r for _, r in new if r is not None]
    if len(started) == len(new):
        result["last_running_recorded_s"] = max(started) - wall0
        result["task_start_median_s"] = statistics.median(r - c for c, r in new if r is not None)
    return result


# --- the two orchestrators --------------------------------------------------------------------------------


class Cluster:
    """One orchestrator on the lab, driven through its CLI inside node-01."""

    system = ""
    label_key = ""

    def __init__(self, lab: Any, engines: Engines, args: SwarmArgs) -> None:
        self.lab = lab
        self.engines = engines
        self.args = args
        self.env: dict[str, str] = {}
        self.addr = lab.node(MANAGER).addr

    def label(self, service: str) -> str:
        return f"{self.label_key}={service}"

    def run(self, node: str, argv: Sequence[str], check: bool = True, timeout: float = 120) -> tuple[float, str]:
        """(seconds, stdout) of argv inside node."""
        began = time.monotonic()
        try:
            done = self.lab.exec(node, list(argv), env=self.env, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{node}: `{' '.join(argv)}` timed out after {timeout:.0f} s") from None
        seconds = time.monotonic() - began
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-500:]
            raise BenchError(f"{node}: `{' '.join(argv)}` exited {done.returncode}: {detail}")
        return seconds, str(done.stdout)

    def cli(self, *argv: str, check: bool = True) -> float:
        return self.run(MANAGER, argv, check=check)[0]

    def wait_ready(self, nodes: Sequence[str], timeout: float = 60.0) -> float:
        def ready() -> bool:
            states = self.node_states()
            return all(states.get(name) == "ready" for name in nodes)

        return poll_until(ready, time.monotonic(), timeout, 0.2, f"{self.system}: nodes {', '.join(nodes)} ready")

    def workers(self) -> list[str]:
        return [name for name in self.engines.names if name != MANAGER]

    # What each system implements.
    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def create(self, service: str, replicas: int, *extra: str) -> float:
        raise NotImplementedError

    def scale(self, service: str, replicas: int) -> float:
        raise NotImplementedError

    def remove(self, service: str) -> float:
        raise NotImplementedError

    def list_services(self) -> float:
        raise NotImplementedError

    def node_states(self) -> dict[str, str]:
        """hostname -> ready / down / unknown / ..., as `node ls` shows it."""
        raise NotImplementedError

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        """(created, running since or None) of the service's tasks wanted running, as the orchestrator records them."""
        raise NotImplementedError


class SwarmCluster(Cluster):
    system = "swarm"
    label_key = SWARM_LABEL

    def setup(self) -> None:
        self.cli("docker", "swarm", "init", "--advertise-addr", self.addr)
        token = self.run(MANAGER, ["docker", "swarm", "join-token", "-q", "worker"])[1].strip()
        for name in self.workers():
            self.run(name, ["docker", "swarm", "join", "--token", token, f"{self.addr}:2377"])
        self.wait_ready(self.engines.names)

    def teardown(self) -> None:
        for name in [*self.workers(), MANAGER]:
            self.run(name, ["docker", "swarm", "leave", "--force"], check=False)
        self.engines.remove(SWARM_LABEL)

    def create(self, service: str, replicas: int, *extra: str) -> float:
        return self.cli(
            "docker",
            "service",
            "create",
            "-d",
            "-q",
            "--no-resolve-image",
            "--name",
            service,
            "--replicas",
            str(replicas),
            *extra,
            IMAGE,
        )

    def scale(self, service: str, replicas: int) -> float:
        return self.cli("docker", "service", "scale", "-d", f"{service}={replicas}")

    def remove(self, service: str) -> float:
        return self.cli("docker", "service", "rm", service, check=False)

    def list_services(self) -> float:
        return self.cli("docker", "service", "ls")

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        times: list[tuple[float, float | None]] = []
        for task in self.engines.api[MANAGER].tasks(filters={"service": service}):
            if task.get("DesiredState") != "running":
                continue
            status = task.get("Status") or {}
            running = _epoch(status["Timestamp"]) if status.get("State") == "running" else None
            times.append((_epoch(task["CreatedAt"]), running))
        return times

    def node_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for node in self.engines.api[MANAGER].nodes():
            name = node["Description"]["Hostname"]
            # A node that left and joined again is listed twice; the live entry wins.
            if states.get(name) != "ready":
                states[name] = node["Status"]["State"]
        return states


class PyswarmCluster(Cluster):
    system = "pyswarm"
    label_key = PYSWARM_LABEL

    def __init__(self, lab: Any, engines: Engines, args: SwarmArgs) -> None:
        super().__init__(lab, engines, args)
        # The CLI's credential goes to a file of our own: the operator's ~/.config is left alone.
        self._tmp = tempfile.TemporaryDirectory(prefix="pyswarm-bench-")
        self.env = {"PYSWARM_CONFIG": str(Path(self._tmp.name) / "config.json"), **args.pyswarm_env}
        self._http: Any = None

    def setup(self) -> None:
        import httpx

        self.cli(PYSWARM, "swarm", "init", "--listen-addr", f"{self.addr}:2377", *self.args.pyswarm_init_args)
        token = self.run(MANAGER, [PYSWARM, "swarm", "join-token", "-q", "worker"])[1].strip()
        for name in self.workers():
            self.run(name, [PYSWARM, "swarm", "join", "--token", token, f"{self.addr}:2377"])
        config = json.loads(Path(self.env["PYSWARM_CONFIG"]).read_text())
        self._http = httpx.Client(
            base_url=config["host"], headers={"Authorization": f"Bearer {config['token']}"}, timeout=5.0
        )
        self.wait_ready(self.engines.names)

    def teardown(self) -> None:
        for name in [*self.workers(), MANAGER]:  # the manager's leave removes every service first
            self.run(name, [PYSWARM, "swarm", "leave", "--force"], check=False, timeout=90)
        if self._http is not None:
            self._http.close()
        self.engines.remove(PYSWARM_LABEL)
        self._tmp.cleanup()

    def create(self, service: str, replicas: int, *extra: str) -> float:
        return self.cli(
            PYSWARM, "service", "create", "-d", "--name", service, "--replicas", str(replicas), *extra, IMAGE
        )

    def scale(self, service: str, replicas: int) -> float:
        return self.cli(PYSWARM, "service", "scale", "-d", f"{service}={replicas}")

    def remove(self, service: str) -> float:
        return self.cli(PYSWARM, "service", "rm", service, check=False)

    def list_services(self) -> float:
        return self.cli(PYSWARM, "service", "ls")

    def node_states(self) -> dict[str, str]:
        import httpx

        try:
            nodes = self._http.get("/nodes").json()
        except httpx.HTTPError:
            return {}
        return {node["hostname"]: node["status"] for node in nodes}

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        tasks = self._http.get(f"/services/{service}/tasks").json()
        return [
            (float(t["created_at"]), float(t["state_changed_at"]) if t["state"] == "running" else None)
            for t in tasks
            if t["desired_state"] == "running"
        ]


# --- scenarios --------------------------------------------------------------------------------------------


def _record(system: str, rep: int, scenario: str, **figures: Any) -> dict[str, Any]:
    return {"system": system, "rep": rep, "scenario": scenario, **figures}


def _drain(cluster: Cluster, service: str, timeout: float = 60.0) -> dict[str, Any]:
    """Remove the service and wait until none of its containers is left; force-remove them after timeout."""
    cluster.remove(service)
    label = cluster.label(service)
    try:
        return {
            "cleanup_s": poll_until(
                lambda: cluster.engines.total(label, running=False) == 0,
                time.monotonic(),
                timeout,
                0.2,
                f"{service} removed",
            )
        }
    except BenchError:
        return {"cleanup_forced": cluster.engines.remove(label)}


def _recorded_timeline(cluster: Cluster, service: str, wall0: float, wait: float = 5.0) -> dict[str, Any]:
    """The orchestrator's own record of the step; its task states may trail the engines by a moment."""
    deadline = time.monotonic() + wait
    while True:
        result = timeline(cluster.task_times(service), wall0)
        if "last_running_recorded_s" in result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def scale_series(cluster: Cluster, args: SwarmArgs, rep: int, console: Console) -> list[dict[str, Any]]:
    """create → scale-up → scale-down on one service; steps before a wanted one run untimed if not wanted."""
    engines = cluster.engines
    service = f"bench-{rep}"
    label = cluster.label(service)
    wanted = [s for s in SCALE_SCENARIOS if s in args.scenarios]
    last = max(SCALE_SCENARIOS.index(s) for s in wanted)
    zero_running: list[float] = []

    def none_left(t0: float) -> bool:
        if not zero_running and engines.total(label) == 0:
            zero_running.append(time.monotonic() - t0)
        return engines.total(label, running=False) == 0

    steps: list[tuple[str, Callable[[], float], Callable[[float], bool], str]] = [
        (
            "create",
            lambda: cluster.create(service, args.replicas),
            lambda _t0: engines.total(label) == args.replicas,
            f"{args.replicas} running",
        ),
        (
            "scale-up",
            lambda: cluster.scale(service, args.scale_to),
            lambda _t0: engines.total(label) == args.scale_to,
            f"{args.scale_to} running",
        ),
        ("scale-down", lambda: cluster.scale(service, 0), none_left, "no container left"),
    ]
    records: list[dict[str, Any]] = []
    try:
        for name, act, done, what in steps[: last + 1]:
            meter = CpuMeter()
            wall0, t0 = time.time(), time.monotonic()
            cli_s = act()
            seconds = poll_until(functools.partial(done, t0), t0, args.timeout, args.poll, f"{cluster.system} {what}")
            if name not in wanted:
                continue
            record = _record(cluster.system, rep, name, seconds=seconds, cli_s=cli_s, **meter.stop())
            if name == "scale-down":
                record["zero_running_s"] = zero_running[0] if zero_running else seconds
            else:
                record["per_node"] = engines.count(label)
                with contextlib.suppress(Exception):  # an explanation, not a figure: never fail the step for it
                    record["timeline"] = _recorded_timeline(cluster, service, wall0)
            records.append(record)
            console.print(f"  {cluster.system:8} {name:12} {seconds:6.2f} s   (CLI {cli_s:.2f} s)")
    except BenchError as exc:
        records.append(_record(cluster.system, rep, "scale-series", error=str(exc), counts=engines.count(label)))
        console.print(f"  [red]{cluster.system} failed: {exc}[/]")
    finally:
        _drain(cluster, service)
    return records


def node_failure(cluster: Cluster, args: SwarmArgs, rep: int, console: Console) -> dict[str, Any]:
    """N replicas over every node; cut one node's link; until N run on the others, and until it is Down."""
    engines, lab = cluster.engines, cluster.lab
    service = f"bench-fail-{rep}"
    label = cluster.label(service)
    cut = args.cut_node
    survivors = [name for name in engines.names if name != cut]
    record = _record(cluster.system, rep, "node-failure")
    try:
        cluster.create(service, args.replicas)
        poll_until(
            lambda: engines.total(label) == args.replicas,
            time.monotonic(),
            args.timeout,
            args.poll,
            f"{cluster.system} {args.replicas} running before the cut",
        )
        record["before"] = engines.count(label)
        if record["before"].get(cut, 0) == 0:
            raise BenchError(f"no task on {cut} to lose: {record['before']}")
        recovered: float | None = None
        down: float | None = None
        meter = CpuMeter()
        t0 = time.monotonic()
        lab.cut(cut)
        while recovered is None or down is None:
            tick = time.monotonic()
            if recovered is None and engines.total(label, nodes=survivors) == args.replicas:
                recovered = tick - t0
            if down is None and cluster.node_states().get(cut) == "down":
                down = tick - t0
            if tick - t0 > args.timeout:
                raise BenchError(
                    f"after the cut: recovered={recovered}, marked down={down} within {args.timeout:.0f} s"
                )
            time.sleep(max(0.0, args.poll - (time.monotonic() - tick)))
        record.update(seconds=recovered, down_s=down, after=engines.count(label, nodes=survivors), **meter.stop())
        console.print(f"  {cluster.system:8} node-failure {recovered:6.2f} s   (marked Down after {down:.2f} s)")
    except BenchError as exc:
        record["error"] = str(exc)
        console.print(f"  [red]{cluster.system} node-failure failed: {exc}[/]")
    finally:
        lab.heal(cut)
        try:
            record["back_ready_s"] = cluster.wait_ready([cut], timeout=90)
        except BenchError as exc:
            record["back_error"] = str(exc)
        record.update(_drain(cluster, service))
    return record


def pyswarm_mesh(cluster: PyswarmCluster, args: SwarmArgs, console: Console) -> dict[str, Any]:
    """One task pinned to mesh_node, load through mesh_entry (no task) and straight to the task."""
    engines, lab = cluster.engines, cluster.lab
    service = "bench-mesh"
    label = cluster.label(service)
    task_node, entry = lab.node(args.mesh_node), lab.node(args.mesh_entry)
    try:
        cluster.create(service, 1, "-p", f"{MESH_PORT}:80", "--constraint", f"node.hostname=={task_node.name}")
        poll_until(
            lambda: engines.count(label, nodes=[task_node.name])[task_node.name] == 1,
            time.monotonic(),
            args.timeout,
            args.poll,
            "mesh task running",
        )
        if engines.total(label, nodes=[entry.name]):
            raise BenchError(f"{entry.name} runs a task of {service}: it must not")
        api = engines.api[task_node.name]
        container = api.containers(filters={"label": label, "status": "running"})[0]
        ports = api.inspect_container(container["Id"])["NetworkSettings"]["Ports"]["80/tcp"]
        direct_url = f"http://{task_node.addr}:{ports[0]['HostPort']}/"
        mesh_url = f"http://{entry.addr}:{MESH_PORT}/"
        # The mesh rules land a moment after the task runs.
        poll_until(
            lambda: mesh.http_ok(mesh_url) and mesh.http_ok(direct_url),
            time.monotonic(),
            30,
            0.2,
            f"{mesh_url} answering",
        )
        console.print(
            f"  pyswarm  mesh: {args.mesh.rounds} rounds x 2 x {args.mesh.duration:g} s of wrk: "
            f"{mesh_url} (mesh) vs {direct_url} (direct)"
        )
        quiet = wait_quiet(console, args.quiet_cores, args.quiet_wait)
        result = {**mesh.measure(mesh_url, direct_url, args.mesh, observe=lambda: CpuMeter().stop), "quiet": quiet}
        console.print(
            f"  pyswarm  mesh: ratio {result['ratio']:.3f} "
            f"(mesh {result['mesh_rps']:,.0f}/s, direct {result['direct_rps']:,.0f}/s)"
        )
        return result
    except (BenchError, RuntimeError, ValueError) as exc:
        console.print(f"  [red]pyswarm mesh failed: {exc}[/]")
        return {"error": str(exc)}
    finally:
        _drain(cluster, service)


def swarm_mesh(cluster: SwarmCluster, args: SwarmArgs, console: Console) -> dict[str, Any]:
    """The same service under swarm: does its published port answer anywhere?"""
    engines, lab = cluster.engines, cluster.lab
    service = "bench-mesh"
    label = cluster.label(service)
    result: dict[str, Any] = {}
    try:
        cluster.create(service, 1, "-p", f"{MESH_PORT}:80", "--constraint", f"node.hostname=={args.mesh_node}")
        result["task_running_s"] = poll_until(
            lambda: engines.count(label, nodes=[args.mesh_node])[args.mesh_node] == 1,
            time.monotonic(),
            args.timeout,
            args.poll,
            "swarm mesh task running",
        )
        result.update(
            mesh.swarm_mesh_evidence(
                {n.name: n.addr for n in lab.nodes}, MESH_PORT, {n.name: n.dockerd_log for n in lab.nodes}
            )
        )
        console.print(
            f"  swarm    mesh: task runs on {args.mesh_node}; port {MESH_PORT}: {result['connect']}; "
            f"kernel IPVS: {result['kernel_has_ipvs']}"
        )
    except BenchError as exc:
        result["error"] = str(exc)
    finally:
        _drain(cluster, service)
    return result


def engine_floor(engines: Engines, args: SwarmArgs, rep: int, console: Console) -> list[dict[str, Any]]:
    """The same containers without an orchestrator: docker API over the unix sockets, spread evenly."""
    label_value = f"rep-{rep}"
    label = f"{FLOOR_LABEL}={label_value}"
    pools = {name: ThreadPoolExecutor(ENGINE_PARALLELISM, thread_name_prefix=f"floor-{name}") for name in engines.names}
    made: list[tuple[str, str]] = []

    def start(index: int) -> tuple[str, str]:
        name = engines.names[index % len(engines.names)]
        api = engines.api[name]
        host_config = api.create_host_config(restart_policy={"Name": "no"})
        created = api.create_container(
            IMAGE,
            name=f"bench-floor-{rep}-{index}",
            labels={FLOOR_LABEL: label_value},
            host_config=host_config,
            detach=True,
        )
        api.start(created["Id"])
        return name, created["Id"]

    def batch(indexes: range) -> float:
        t0 = time.monotonic()
        futures = [pools[engines.names[i % len(engines.names)]].submit(start, i) for i in indexes]
        made.extend(f.result() for f in futures)
        return time.monotonic() - t0

    def stop(item: tuple[str, str]) -> None:
        api = engines.api[item[0]]
        api.stop(item[1], timeout=10)
        api.remove_container(item[1], force=True)

    wanted = [s for s in SCALE_SCENARIOS if s in args.scenarios]
    records: list[dict[str, Any]] = []
    try:
        figures = {"create": batch(range(args.replicas)), "scale-up": batch(range(args.replicas, args.scale_to))}
        t0 = time.monotonic()
        for future in [pools[name].submit(stop, (name, cid)) for name, cid in made]:
            future.result()
        figures["scale-down"] = time.monotonic() - t0
        made.clear()
        for name in wanted:
            records.append(_record("engines", rep, name, seconds=figures[name]))
        console.print("  engines  " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()))
    except Exception as exc:  # the floor is a reference: report it and go on
        records.append(_record("engines", rep, "scale-series", error=f"{type(exc).__name__}: {exc}"))
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True)
        engines.remove(label)
    return records


def ssh_request_costs(lab: Any, samples: int = 20) -> dict[str, Any]:
    """What one docker API request costs the way the manager sends it (docker-py over SSH with paramiko), to a
    URL it used before and to a new one (a new container's path), against the same over the unix socket."""
    import uuid

    import docker

    node = lab.node("node-02")
    costs: dict[str, Any] = {"node": node.name, "samples": samples}
    for transport, url in (("unix", node.docker_host), ("ssh", node.engine_url)):
        client = docker.APIClient(base_url=url, version=API_VERSION, use_ssh_client=False, timeout=30)
        try:
            client.ping()
            t0 = time.monotonic()
            for _ in range(samples):
                client.ping()
            costs[f"{transport}_same_url_ms"] = (time.monotonic() - t0) / samples * 1000
            t0 = time.monotonic()
            for _ in range(samples):
                with contextlib.suppress(docker.errors.NotFound):
                    client.inspect_container(uuid.uuid4().hex)
            costs[f"{transport}_new_url_ms"] = (time.monotonic() - t0) / samples * 1000
        finally:
            client.close()
    return costs


# --- the run ----------------------------------------------------------------------------------------------


def ensure_lab(console: Console) -> tuple[Any, bool]:
    """The running lab, or a fresh one; True if this run brought it up."""
    from pyswarm.lab import Lab, LabConfig
    from pyswarm.lab.config import LabNotFound

    try:
        lab = Lab.load()
    except LabNotFound:
        console.print("no lab is running: bringing one up (`pyswarm lab up`)")
        lab = Lab(LabConfig())
        lab.up()
        return lab, True
    unhealthy = [f"{s.node.name}: {s.state}" for s in lab.ls() if s.state != "running"]
    if unhealthy:
        raise SystemExit(f"the lab is not healthy ({', '.join(unhealthy)}): run `pyswarm lab up`")
    return lab, False


def check_lab(lab: Any, engines: Engines, args: SwarmArgs) -> None:
    """Refuse a lab that some swarm already uses: the benchmark makes and removes its own clusters."""
    names = set(engines.names)
    missing = {args.cut_node, args.mesh_node, args.mesh_entry, MANAGER} - names
    if missing or len(names) < 3:
        raise SystemExit(f"the benchmark needs a lab of at least 3 nodes (node-01..03); this one has {sorted(names)}")
    busy = []
    for node in lab.nodes:
        state = engines.api[node.name].info().get("Swarm", {}).get("LocalNodeState", "inactive")
        if state not in ("", "inactive"):
            busy.append(f"{node.name} is in a Docker swarm (docker swarm leave --force)")
        if (node.pyswarm_data_dir / "node.json").exists():
            busy.append(f"{node.name} is in a pyswarm swarm (pyswarm swarm leave --force)")
    if busy:
        raise SystemExit(
            "the lab is in use; leave those swarms (`pyswarm lab exec NODE -- ...`) or start a fresh lab with "
            "`pyswarm lab up`:\n  " + "\n  ".join(busy)
        )


def _session(
    cluster: Cluster, args: SwarmArgs, rep: int, console: Console, records: list[dict[str, Any]], extras: dict[str, Any]
) -> None:
    records.append(_record(cluster.system, rep, "quiet", **wait_quiet(console, args.quiet_cores, args.quiet_wait)))
    t0 = time.monotonic()
    try:
        cluster.setup()
    except BenchError as exc:
        records.append(_record(cluster.system, rep, "setup", error=str(exc)))
        console.print(f"  [red]{cluster.system} setup failed: {exc}[/]")
        cluster.teardown()  # what did come up must not stay for the next session
        return
    records.append(_record(cluster.system, rep, "setup", seconds=time.monotonic() - t0))
    time.sleep(SETTLE_S)
    try:
        cli = [cluster.list_services() for _ in range(3)]
        records.append(_record(cluster.system, rep, "cli", seconds=statistics.median(cli), samples=cli))
        if any(s in args.scenarios for s in SCALE_SCENARIOS):
            records.extend(scale_series(cluster, args, rep, console))
        if "node-failure" in args.scenarios:
            records.append(node_failure(cluster, args, rep, console))
        if "mesh" in args.scenarios and rep == 1:
            if isinstance(cluster, PyswarmCluster):
                extras["mesh"] = pyswarm_mesh(cluster, args, console)
            elif isinstance(cluster, SwarmCluster):
                extras["swarm_mesh"] = swarm_mesh(cluster, args, console)
    finally:
        cluster.teardown()


def run(args: SwarmArgs, console: Console, keep_lab: bool = False, systems: Sequence[str] = SYSTEMS) -> dict[str, Any]:
    lab, brought_up = ensure_lab(console)
    engines = Engines(lab)
    records: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    began = time.monotonic()
    provenance = _provenance(lab)  # before the run: others may commit meanwhile
    try:
        check_lab(lab, engines, args)
        if any(s in args.scenarios for s in SCALE_SCENARIOS) and "pyswarm" in systems:
            extras["ssh_request_costs"] = ssh_request_costs(lab)
        for rep in range(1, args.repeat + 1):
            # Rotate who goes first, so that drift of the machine is shared out.
            order = [SYSTEMS[(i + rep - 1) % len(SYSTEMS)] for i in range(len(SYSTEMS))]
            order = [s for s in order if s in systems]
            console.print(f"[bold]repetition {rep}/{args.repeat}[/] ({' → '.join(order)})")
            for system in order:
                if system == "engines":
                    if args.floor and any(s in args.scenarios for s in SCALE_SCENARIOS):
                        records.append(
                            _record("engines", rep, "quiet", **wait_quiet(console, args.quiet_cores, args.quiet_wait))
                        )
                        records.extend(engine_floor(engines, args, rep, console))
                    continue
                cluster: Cluster = (SwarmCluster if system == "swarm" else PyswarmCluster)(lab, engines, args)
                _session(cluster, args, rep, console, records, extras)
    finally:
        with contextlib.suppress(Exception):
            lab.heal(args.cut_node)
        engines.close()
        if brought_up and not keep_lab:
            console.print("taking down the lab this run brought up")
            lab.down()
    return {
        "kind": "swarm",
        "created_at": time.time(),
        "environment": {**environment(), **provenance},
        "args": {**asdict(args), "scenarios": list(args.scenarios)},
        "wall_s": time.monotonic() - began,
        "records": records,
        **extras,
    }


def _provenance(lab: Any) -> dict[str, Any]:
    """Which code and engines the figures belong to."""
    info: dict[str, Any] = {"nodes": len(lab.nodes)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(__file__).resolve().parent.parent
        git = ["git", "-C", str(root)]
        info["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "pyswarm"], capture_output=True, text=True)
        info["pyswarm_uncommitted"] = dirty.stdout.split("\n")[:20] if dirty.stdout.strip() else []
    with contextlib.suppress(Exception):
        info["engine_version"] = lab.status(MANAGER).engine_version
    return info


# --- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        return cls(statistics.median(values), min(values), max(values), len(values)) if values else None

    def text(self) -> str:
        """Seconds: `5.21 s [4.90-5.60]`, or in ms below one second: `17.3 ms [15.0-20.1]`."""
        scale, unit, digits = (1000.0, "ms", 1) if self.median < 1 else (1.0, "s", 2)
        text = f"{self.median * scale:.{digits}f} {unit}"
        if self.n > 1:
            text += f" [{self.low * scale:.{digits}f}-{self.high * scale:.{digits}f}]"
        return text


def _values(records: list[dict[str, Any]], system: str, scenario: str, key: str) -> list[float]:
    return [
        float(r[key])
        for r in records
        if r["system"] == system and r["scenario"] == scenario and r.get(key) is not None and "error" not in r
    ]


def summarise(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: each system's median [min-max], pyswarm ÷ swarm, the goal and whether it is met."""
    records = document["records"]
    args = document["args"]
    n, m, cut = args["replicas"], args["scale_to"], args["cut_node"]
    rows: list[dict[str, Any]] = []

    def add(label: str, scenario: str, key: str = "seconds", goal: str = "", check: str = "") -> None:
        stats = {s: Stat.of(_values(records, s, scenario, key)) for s in SYSTEMS}
        swarm, pyswarm = stats["swarm"], stats["pyswarm"]
        ratio = pyswarm.median / swarm.median if swarm and pyswarm and swarm.median else None
        met: bool | None = None
        if check == "ratio" and ratio is not None:
            met = ratio <= GOAL_RATIO
        elif check == "failover" and pyswarm is not None:
            met = pyswarm.median <= GOAL_FAILOVER_S
        rows.append(
            {
                "figure": label,
                "scenario": scenario,
                "key": key,
                **{s: (asdict(st) if st else None) for s, st in stats.items()},
                "ratio": ratio,
                "goal": goal,
                "met": met,
            }
        )

    add(f"create {n} → {n} running", "create", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add(f"scale {n} → {m} running", "scale-up", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add(f"scale {m} → 0, none left", "scale-down", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add("  … until none running", "scale-down", key="zero_running_s")
    add(f"cut {cut} → {n} on the others", "node-failure", goal=f"≤ {GOAL_FAILOVER_S:g} s", check="failover")
    add(f"  … {cut} marked Down", "node-failure", key="down_s")
    add("CLI: `service create -d`", "create", key="cli_s")
    add("CLI: `service ls`", "cli")
    add("init + 2 joins, all Ready", "setup")
    return [r for r in rows if any(r[s] for s in SYSTEMS)]


def render(document: dict[str, Any], console: Console) -> None:
    rows = summarise(document)
    document["summary"] = rows
    table = Table(title="Docker swarm mode vs pyswarm on the same 3 lab engines (median \\[min-max])")
    for column in ("scenario", "swarm", "pyswarm", "÷ swarm", "engines alone", "goal", "met?"):
        table.add_column(column, justify="left" if column in ("scenario", "goal") else "right", no_wrap=True)

    def cell(stat: dict[str, Any] | None) -> str:
        return Stat(**stat).text() if stat else ""

    def met(value: bool | None) -> str:
        return "" if value is None else ("[green]yes[/]" if value else "[red]no[/]")

    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
        table.add_row(
            row["figure"],
            cell(row["swarm"]),
            cell(row["pyswarm"]),
            ratio,
            cell(row["engines"]),
            row["goal"],
            met(row["met"]),
        )
    result = document.get("mesh")
    evidence = document.get("swarm_mesh")
    if result or evidence:
        table.add_section()
        for label, swarm_text, pyswarm_text, goal, ok in _mesh_rows(result, evidence):
            table.add_row(label, swarm_text, pyswarm_text, "", "", goal, met(ok))
    console.print(table)
    changed = {k: v for k, v in document["args"].items() if k in ("pyswarm_env", "pyswarm_init_args") and v}
    if changed:
        console.print(f"[yellow]pyswarm ran with non-default settings: {changed}[/]")
    costs = document.get("ssh_request_costs")
    if costs:
        console.print(
            f"one docker API request, as the manager sends it (docker-py over SSH): {costs['ssh_same_url_ms']:.1f} ms "
            f"to a URL used before, {costs['ssh_new_url_ms']:.0f} ms to a new one "
            f"(unix socket: {costs['unix_same_url_ms']:.1f} / {costs['unix_new_url_ms']:.1f} ms)"
        )
    for record in document["records"]:
        other = (record.get("cpu_s_by_group") or {}).get("other", 0.0)
        if record.get("seconds") and other / record["seconds"] > NOISY_CORES:
            console.print(
                f"[yellow]{record['system']} rep {record['rep']} {record['scenario']}: other processes used "
                f"{other / record['seconds']:.2f} cores meanwhile: a noisy figure[/]"
            )
    mesh_result = document.get("mesh") or {}
    duration = (mesh_result.get("args") or {}).get("duration") or 1.0
    noisy_rounds = [
        r["round"]
        for r in mesh_result.get("rounds", [])
        for t in ("mesh", "direct")
        if ((r.get(t) or {}).get("observed") or {}).get("cpu_s_by_group", {}).get("other", 0.0) / duration > NOISY_CORES
    ]
    if noisy_rounds:
        console.print(f"[yellow]mesh rounds {sorted(set(noisy_rounds))}: other processes were busy meanwhile[/]")
    errors = [r for r in document["records"] if "error" in r]
    for record in errors:
        console.print(f"[red]{record['system']} rep {record['rep']} {record['scenario']}: {record['error']}[/]")


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:+.0f} µs" if abs(seconds) < 1e-3 else f"{seconds * 1e3:+.2f} ms"


def _mesh_rows(
    result: dict[str, Any] | None, evidence: dict[str, Any] | None
) -> list[tuple[str, str, str, str, bool | None]]:
    """(figure, swarm, pyswarm, goal, met) rows of the ingress benchmark."""
    swarm_text = "not measured"
    if evidence and "error" not in evidence:
        outcomes = "/".join(sorted(set(evidence["connect"].values())))
        swarm_text = "works" if evidence["available"] else f"n/a: no IPVS ({outcomes})"
    if not result or "error" in result:
        error = (result or {}).get("error", "not measured")
        return [("ingress req/s, mesh ÷ direct", swarm_text, f"[red]{error[:50]}[/]", "", None)]
    ratio = f"{result['ratio']:.2f}"
    if len(result["rounds"]) > 1:
        ratio += f" [{result['ratio_min']:.2f}-{result['ratio_max']:.2f}]"
    rows: list[tuple[str, str, str, str, bool | None]] = [
        (
            "ingress req/s, mesh ÷ direct",
            swarm_text,
            ratio,
            f"≥ {GOAL_MESH_RATIO:g}",
            result["ratio"] >= GOAL_MESH_RATIO,
        ),
        ("  req/s, direct → mesh", "", f"{result['direct_rps']:,.0f} → {result['mesh_rps']:,.0f}", "", None),
        (
            "  CPU per request, direct → mesh",
            "",
            f"{result['direct_cpu_us_per_request']:.0f} → {result['mesh_cpu_us_per_request']:.0f} µs",
            "",
            None,
        ),
        (
            f"  added p50 / p99, {result['args']['connections']} conns",
            "",
            f"{_us(result['p50_added_s'])} / {_us(result['p99_added_s'])}",
            "",
            None,
        ),
    ]
    light = result.get("light") or {}
    if light:
        rows.append(
            ("  added p50 / p99, 1 conn", "", f"{_us(light['p50_added_s'])} / {_us(light['p99_added_s'])}", "", None)
        )
    return rows


def write(document: dict[str, Any], path: Path | None, kind: str = "swarm") -> Path:
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# --- `python -m bench swarm` and `python -m bench mesh` -------------------------------------------------------


def add_parsers(sub: Any) -> None:
    def mesh_options(parser: argparse.ArgumentParser) -> None:
        defaults = mesh.MeshArgs()
        parser.add_argument("--mesh-rounds", type=int, default=defaults.rounds, help="wrk rounds per target (5)")
        parser.add_argument("--mesh-duration", type=float, default=defaults.duration, help="seconds per wrk run (10)")
        parser.add_argument("--mesh-connections", type=int, default=defaults.connections, help="wrk -c (32)")
        parser.add_argument("--mesh-threads", type=int, default=defaults.threads, help="wrk -t (2)")
        parser.add_argument(
            "--new-connections",
            action="store_true",
            help="send `Connection: close`: every request a new TCP connection and NAT entry",
        )

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--pyswarm-env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="extra environment for pyswarm's CLI and manager (e.g. PYTHONPATH to try a change)",
        )
        parser.add_argument(
            "--pyswarm-init-args",
            default="",
            metavar="ARGS",
            help="extra arguments of `pyswarm swarm init`, e.g. '--heartbeat 0.5s' (not the defaults)",
        )
        parser.add_argument("--keep-lab", action="store_true", help="leave a lab this run brought up running")
        parser.add_argument(
            "--quiet-wait",
            type=float,
            default=60.0,
            help="before each session, wait up to this long (s) for other processes to go quiet",
        )
        parser.add_argument("--json", type=Path, help="where to write the raw figures")

    p_swarm = sub.add_parser("swarm", help="Docker swarm mode vs pyswarm on the lab's real engines (root)")
    p_swarm.add_argument("--repeat", type=int, default=3, help="repetitions of every scenario (default 3)")
    p_swarm.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}"
    )
    p_swarm.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    p_swarm.add_argument("--replicas", type=int, default=30)
    p_swarm.add_argument("--scale-to", type=int, default=90)
    p_swarm.add_argument("--timeout", type=float, default=120.0, help="give up on a step after this (s)")
    p_swarm.add_argument("--no-floor", action="store_true", help="skip the engines-alone reference runs")
    mesh_options(p_swarm)
    common(p_swarm)

    p_mesh = sub.add_parser("mesh", help="pyswarm's ingress throughput: through the mesh vs direct (root)")
    mesh_options(p_mesh)
    common(p_mesh)


def _env_pairs(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--pyswarm-env wants KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def main(options: argparse.Namespace, console: Console) -> int:
    import os

    if os.geteuid() != 0:
        raise SystemExit("this benchmark drives the lab (network namespaces, dockerds): run it as root")
    if not console.is_terminal:
        console = Console(width=160)  # the side-by-side table is wider than the default 120 of a pipe
    mesh_args = mesh.MeshArgs(
        rounds=options.mesh_rounds,
        duration=options.mesh_duration,
        threads=options.mesh_threads,
        connections=options.mesh_connections,
        new_connections=options.new_connections,
    )
    if options.command == "mesh":
        args = SwarmArgs(
            repeat=1,
            scenarios=("mesh",),
            mesh=mesh_args,
            pyswarm_env=_env_pairs(options.pyswarm_env),
            pyswarm_init_args=tuple(shlex.split(options.pyswarm_init_args)),
            quiet_wait=options.quiet_wait,
        )
        document = run(args, console, keep_lab=options.keep_lab, systems=("pyswarm",))
        document["kind"] = "mesh"
    else:
        scenarios = tuple(s.strip() for s in options.scenarios.split(",") if s.strip())
        systems = tuple(s.strip() for s in options.systems.split(",") if s.strip())
        unknown = [s for s in scenarios if s not in SCENARIOS] + [s for s in systems if s not in SYSTEMS]
        if unknown or not scenarios or options.repeat < 1:
            raise SystemExit(f"unknown scenario or system {unknown}; scenarios: {', '.join(SCENARIOS)}")
        args = SwarmArgs(
            repeat=options.repeat,
            scenarios=scenarios,
            replicas=options.replicas,
            scale_to=options.scale_to,
            timeout=options.timeout,
            floor=not options.no_floor,
            mesh=mesh_args,
            pyswarm_env=_env_pairs(options.pyswarm_env),
            pyswarm_init_args=tuple(shlex.split(options.pyswarm_init_args)),
            quiet_wait=options.quiet_wait,
        )
        document = run(args, console, keep_lab=options.keep_lab, systems=systems)
    render(document, console)
    path = write(document, options.json, document["kind"])
    console.print(f"raw figures: {path}")
    failed = [r for r in document["records"] if "error" in r] or [
        k for k in ("mesh", "swarm_mesh") if isinstance(document.get(k), dict) and "error" in document[k]
    ]
    return 1 if failed else 0
