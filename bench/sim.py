"""Simulated scale: the real Manager (scheduler, orchestrator, SQLite store, node agents) against thousands
of in-process MemoryEngines, which start containers instantly. It measures the control plane alone.

One run, in its own process:

1. register N nodes (`initialise` + `add_node`, as `swarm init` / `swarm join` do) and wait until all are Ready;
2. create S services through the manager's service commands (each one written to SQLite before the call returns),
   T tasks in total, each service publishing one ingress port;
3. poll the state file through a second, read-only SQLite connection until it says every task has a node
   ("placed") and then that every task is running ("running"): both clocks start at the first create, so
   they are end to end, persisted;
4. time reconcile passes on the settled cluster: with nothing to do, and with every service re-planned (what a
   node change causes);
5. time the routing mesh's work for one node: compute every service's endpoints from the manager's state,
   render the node's iptables rules, and diff them against the rules of a moment before (one task moved).
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.common import Figure, Goal, peak_rss_mib
from bench.cpu import load_average
from pyswarm.drivers.engine import Engine, TlsFiles
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.manager.store import STATE_FILE
from pyswarm.model import Availability, NodeStatus, PortConfig, ServiceSpec, TaskState
from pyswarm.planners.ingress import (
    IngressPort,
    applied_jumps,
    render_node_rules,
    restore_text,
)

# The goals.
GOAL_RATE = 20_000.0  # tasks/s, end to end in the control plane
GOAL_150K_S = 10.0  # 150k tasks on 5k nodes
GOAL_PASS_S = 1.0  # one steady-state reconcile pass
FIRST_PORT = 10_000  # services publish 10000, 10001, ... (below the engines' ephemeral range)


@dataclass(frozen=True)
class SimArgs:
    scenario: str
    nodes: int
    tasks: int
    services: int = 1000
    passes: int = 5
    timeout: float = 600.0


SCENARIOS: dict[str, SimArgs] = {
    "1k-nodes-100k-tasks": SimArgs("1k-nodes-100k-tasks", nodes=1000, tasks=100_000),
    "5k-nodes-150k-tasks": SimArgs("5k-nodes-150k-tasks", nodes=5000, tasks=150_000),
}


def figures(run: dict[str, Any]) -> list[Figure]:
    big = run.get("nodes", 0) >= 5000 and run.get("tasks", 0) >= 150_000
    return [
        Figure("nodes x tasks (services)", "size", ""),
        Figure("tasks/s placed and persisted", "placed_per_s", "/s"),
        Figure("tasks/s running and persisted", "running_per_s", "/s", Goal(GOAL_RATE, at_most=False)),
        Figure("time to all running", "running_s", "s", Goal(GOAL_150K_S, at_most=True) if big else None),
        Figure("create_service calls", "create_s", "s"),
        Figure("CPU time per task (all threads)", "cpu_us_per_task", "µs"),
        Figure("reconcile pass, steady (nothing to do)", "steady_pass_s", "s", Goal(GOAL_PASS_S, at_most=True)),
        Figure("reconcile pass, every service re-planned", "full_pass_s", "s", Goal(GOAL_PASS_S, at_most=True)),
        Figure("ingress: endpoints of all services", "ingress_endpoints_s", "s"),
        Figure("ingress: render one node's rules", "ingress_render_s", "s"),
        Figure("ingress: diff after one task moved", "ingress_diff_s", "s"),
        Figure("ingress rules on one node", "ingress_rules", "lines"),
        Figure("ingress, 3 endpoints a service: render", "ingress_small_render_s", "s"),
        Figure("ingress, 3 endpoints a service: diff", "ingress_small_diff_s", "s"),
        Figure("tasks replaced on the way", "extra_tasks", "", Goal(0, at_most=True)),
        Figure("tasks running when it timed out", "running_at_timeout", ""),
        Figure("peak memory (RSS)", "peak_rss_mib", "MiB"),
        Figure("peak threads", "peak_threads", ""),
    ]


def sized(run: dict[str, Any]) -> dict[str, Any]:
    """Adds the `size` column the table shows."""
    if "error" not in run:
        run["size"] = f"{run['nodes']:,} x {run['tasks']:,} ({run['services']:,})"
    return run


class _Cluster:
    """N MemoryEngines behind the engine factory the Manager calls, as DockerEngines would be."""

    def __init__(self, nodes: int) -> None:
        self.urls = [f"ssh://root@10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(1, nodes + 1)]
        self.engines = {url: MemoryEngine(url, hostname=f"node-{i:05d}") for i, url in enumerate(self.urls, 1)}

    def factory(self, url: str, timeout: float, tls: TlsFiles | None = None) -> Engine:
        return self.engines[url]

    @staticmethod
    def addr(url: str) -> str:
        return url.split("@", 1)[1]


class _StoreProbe:
    """Reads the state file as another process would: how many tasks are placed, and running. Its CPU
    (`cpu_s`, mostly SQLite scanning the table) is the benchmark's, not the manager's."""

    def __init__(self, path: Path) -> None:
        self.cpu_s = 0.0
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        if {"node_id", "state"} <= columns:
            self._query = "SELECT count(*), coalesce(sum(node_id != ''), 0), coalesce(sum(state = ?), 0) FROM tasks"
        else:  # documents only
            self._query = (
                "SELECT count(*), coalesce(sum(json_extract(doc, '$.node_id') != ''), 0), "
                "coalesce(sum(json_extract(doc, '$.state') = ?), 0) FROM tasks"
            )

    def counts(self) -> tuple[int, int, int]:
        """(tasks, placed, running) in the last committed state."""
        began = time.thread_time()
        total, placed, running = self._db.execute(self._query, (TaskState.RUNNING.value,)).fetchone()
        self.cpu_s += time.thread_time() - began
        return int(total), int(placed), int(running)

    def close(self) -> None:
        self._db.close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s")
        time.sleep(0.05)


def _time_passes(manager: Manager, passes: int, replan_all: bool) -> float:
    """Median time of one reconcile pass. Holding the manager's lock keeps the loop thread out meanwhile."""
    times = []
    for _ in range(passes):
        with manager.state.lock:
            if replan_all:
                manager.orchestrator.replan_all()
            began = time.perf_counter()
            manager.orchestrator.reconcile_once()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def _ingress_ports(manager: Manager) -> tuple[IngressPort, ...]:
    """What the mesh sync computes on every change."""
    return manager.read.ingress_ports()


def _measure_ingress(manager: Manager, node_addr: str) -> dict[str, Any]:
    began = time.perf_counter()
    ports = _ingress_ports(manager)
    endpoints_s = time.perf_counter() - began
    began = time.perf_counter()
    desired = render_node_rules(ports, node_addr)
    render_s = time.perf_counter() - began
    # The rules of a moment ago: one endpoint of the first service was elsewhere.
    first = ports[0]
    moved = replace(first.endpoints[0], host_port=first.endpoints[0].host_port + 1)
    before = render_node_rules((replace(first, endpoints=(moved, *first.endpoints[1:])), *ports[1:]), node_addr)
    began = time.perf_counter()
    text = restore_text(desired, before, applied_jumps())
    diff_s = time.perf_counter() - began
    full = restore_text(desired, None)
    # The same 1,000 services with 3 replicas each, a more usual mesh.
    small = tuple(replace(p, endpoints=p.endpoints[:3]) for p in ports)
    small_before = (replace(small[0], endpoints=(moved, *small[0].endpoints[1:])), *small[1:])
    began = time.perf_counter()
    small_desired = render_node_rules(small, node_addr)
    small_render_s = time.perf_counter() - began
    began = time.perf_counter()
    restore_text(small_desired, render_node_rules(small_before, node_addr), applied_jumps())
    small_diff_s = time.perf_counter() - began
    return {
        "ingress_small_render_s": small_render_s,
        "ingress_small_diff_s": small_diff_s,
        "ingress_services": len(ports),
        "ingress_endpoints": sum(len(p.endpoints) for p in ports),
        "ingress_endpoints_s": endpoints_s,
        "ingress_render_s": render_s,
        "ingress_diff_s": diff_s,
        "ingress_diff_lines": text.count("\n"),
        "ingress_rules": full.count("\n"),
    }


def _register_nodes(manager: Manager, cluster: _Cluster, timeout: float) -> float:
    """Every node in, as `swarm init` / `swarm join` do, and the manager started; seconds until all are Ready."""
    began = time.perf_counter()
    manager.registration.initialise(cluster.urls[0], cluster.addr(cluster.urls[0]), Availability.ACTIVE)
    for url in cluster.urls[1:]:
        manager.registration.add_node(url, cluster.addr(url), None)
    manager.start()
    _wait(
        lambda: manager.read.counts().all_nodes(NodeStatus.READY),
        timeout,
        "all nodes ready",
    )
    return time.perf_counter() - began


def _create_services(manager: Manager, args: SimArgs) -> None:
    """`services` services sharing `tasks` replicas, each publishing its own ingress port."""
    per_service, extra = divmod(args.tasks, args.services)
    for i in range(args.services):
        manager.services.create(
            ServiceSpec(
                name=f"svc-{i:05d}",
                image="nginx",
                replicas=per_service + (1 if i < extra else 0),
                ports=(PortConfig(published=FIRST_PORT + i, target=80),),
            )
        )


def _wait_all_running(
    probe: _StoreProbe, args: SimArgs, began: float, result: dict[str, Any]
) -> tuple[float, float, int]:
    """Poll the store until every task is placed and then running: (placed_at, running_at, peak threads).
    Records the progress in `result`, and what was reached if it times out."""
    placed_at = running_at = None
    peak_threads = 0
    deadline = time.monotonic() + args.timeout
    progress: list[tuple[float, int, int]] = []  # (seconds since the first create, placed, running)
    result["progress"] = progress
    while running_at is None:
        total, placed, running = probe.counts()
        now = time.perf_counter()
        progress.append((round(now - began, 3), placed, running))
        peak_threads = max(peak_threads, threading.active_count())
        # Counting tasks in the store, not the wanted ones: one replaced on the way would be extra.
        if placed_at is None and placed >= args.tasks:
            placed_at = now
        if running >= args.tasks:
            running_at = now
            break
        if time.monotonic() > deadline:
            result.update(running_at_timeout=running, tasks_at_timeout=total, peak_rss_mib=peak_rss_mib())
            raise TimeoutError(f"{running:,} of {args.tasks:,} tasks running after {args.timeout:.0f} s")
        time.sleep(0.1)
    assert placed_at is not None
    return placed_at, running_at, peak_threads


def _cross_check(manager: Manager, cluster: _Cluster, probe: _StoreProbe, tasks: int) -> dict[str, Any]:
    """The engines hold exactly one container per task, the manager agrees with its store."""
    containers = sum(len(e.state.containers) for e in cluster.engines.values())
    in_memory = manager.read.counts().tasks.get(TaskState.RUNNING.value, 0)
    return {
        "containers": containers,
        "extra_tasks": probe.counts()[0] - tasks,  # replaced on the way (failed, rejected)
        "all_running": containers == tasks and in_memory == tasks,
    }


def run(args: SimArgs, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scenario, in this process. Fills in and returns `result`, the raw figures (partly filled in if
    it raises)."""
    result = {} if result is None else result
    result.update(kind="sim", **asdict(args))
    tmp = Path(tempfile.mkdtemp(prefix="pyswarm-bench-"))
    cluster = _Cluster(args.nodes)
    manager = Manager(Settings(data_dir=tmp / "data"), engine_factory=cluster.factory)
    probe: _StoreProbe | None = None
    peak_threads = threading.active_count()
    try:
        result["setup_s"] = _register_nodes(manager, cluster, args.timeout)
        time.sleep(1.0)  # let the first resyncs of the nodes finish
        probe = _StoreProbe(tmp / "data" / STATE_FILE)

        result["loadavg_before"] = load_average()  # others' load on the machine skews wall times
        cpu_began = time.process_time()
        began = time.perf_counter()
        _create_services(manager, args)
        result["create_s"] = time.perf_counter() - began
        placed_at, running_at, waited_threads = _wait_all_running(probe, args, began, result)
        peak_threads = max(peak_threads, waited_threads)
        # CPU of the whole process (every thread), but the probe's.
        result["probe_cpu_s"] = probe.cpu_s
        result["cpu_s"] = time.process_time() - cpu_began - probe.cpu_s
        result["cpu_us_per_task"] = result["cpu_s"] / args.tasks * 1e6
        result["loadavg_after"] = load_average()
        result["placed_s"] = placed_at - began
        result["running_s"] = running_at - began
        result["placed_per_s"] = args.tasks / result["placed_s"]
        result["running_per_s"] = args.tasks / result["running_s"]
        result.update(_cross_check(manager, cluster, probe, args.tasks))

        time.sleep(0.5)  # let the loop's last pass and the events of the starts settle
        result["steady_pass_s"] = _time_passes(manager, args.passes, replan_all=False)
        result["full_pass_s"] = _time_passes(manager, args.passes, replan_all=True)
        result.update(_measure_ingress(manager, cluster.addr(cluster.urls[0])))
        result["peak_threads"] = max(peak_threads, threading.active_count())
        result["peak_rss_mib"] = peak_rss_mib()
        return result
    finally:
        if probe is not None:
            probe.close()
        manager.close()
        shutil.rmtree(tmp, ignore_errors=True)
