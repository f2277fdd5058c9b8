"""Idle cost: the manager's CPU while nothing changes (goal: at most 2 % of one core).

Two ways to measure:

- in process (default): a real Manager with its default settings (1 s heartbeat, 10 s resync) against
  MemoryEngines, N nodes and T tasks all running; the process's CPU time over the window is the manager's,
  because the benchmark's own thread only sleeps meanwhile. A per-thread breakdown says where it goes.
- a running manager (`--lab`, or `--pid`): reads utime+stime of that process from /proc/<pid>/stat at the
  start and the end of the window. `--lab` finds the pid in the lab's node-01 (the walkthrough's manager):
  <lab dir>/nodes/node-01/pyswarm/manager.pid. Nothing in the lab is changed.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import Figure, Goal, peak_rss_mib
from bench.cpu import by_thread_kind, process_cpu, thread_cpu

GOAL_CPU_PERCENT = 2.0


@dataclass(frozen=True)
class IdleArgs:
    scenario: str = "idle-memory"
    nodes: int = 3
    tasks: int = 100
    services: int = 10
    duration: float = 60.0
    settle: float = 5.0  # after everything runs, before the window: the first resyncs are not idle
    timeout: float = 120.0


def figures(run: dict[str, Any]) -> list[Figure]:
    return [
        Figure("nodes", "nodes", ""),
        Figure("tasks", "tasks", ""),
        Figure("window", "duration_s", "s"),
        Figure("manager CPU while idle", "cpu_percent", "%", Goal(GOAL_CPU_PERCENT, at_most=True)),
        Figure("reconcile passes / state changes in window", "changes", ""),
        Figure("threads", "threads", ""),
        Figure("peak memory (RSS)", "peak_rss_mib", "MiB"),
    ]


# --- in process, against MemoryEngines ---------------------------------------------------------------


def run(args: IdleArgs, result: dict[str, Any] | None = None) -> dict[str, Any]:
    from pyswarm.drivers.engine import Engine, TlsFiles
    from pyswarm.drivers.memory_engine import MemoryEngine
    from pyswarm.manager.manager import Manager
    from pyswarm.manager.settings import Settings
    from pyswarm.model import Availability, NodeStatus, ServiceSpec, TaskState

    result = {} if result is None else result
    result.update(kind="idle", mode="memory", **asdict(args))
    urls = [f"ssh://root@10.0.0.{i}" for i in range(1, args.nodes + 1)]
    engines = {url: MemoryEngine(url, hostname=f"node-{i:02d}") for i, url in enumerate(urls, 1)}

    def factory(url: str, timeout: float, tls: TlsFiles | None = None) -> Engine:
        return engines[url]

    tmp = Path(tempfile.mkdtemp(prefix="pyswarm-bench-idle-"))
    manager = Manager(Settings(data_dir=tmp / "data"), engine_factory=factory)  # default timings
    try:
        manager.registration.initialise(urls[0], "10.0.0.1", Availability.ACTIVE)
        for url in urls[1:]:
            manager.registration.add_node(url, url.split("@")[1], None)
        manager.start()
        per_service, extra = divmod(args.tasks, args.services)
        for i in range(args.services):
            manager.services.create(
                ServiceSpec(name=f"idle-{i:03d}", image="nginx", replicas=per_service + (1 if i < extra else 0))
            )
        deadline = time.monotonic() + args.timeout
        while True:
            counts = manager.read.counts()
            ready = counts.all_nodes(NodeStatus.READY)
            running = counts.tasks.get(TaskState.RUNNING.value, 0)
            if ready and running == args.tasks:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{running} of {args.tasks} tasks running after {args.timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(args.settle)

        # The window: this thread only sleeps, so the process's CPU time is the manager's.
        changes_before = manager.state.wait_for_change(-1, 0)
        threads_before = thread_cpu()
        cpu_before, wall_before = time.process_time(), time.monotonic()
        time.sleep(args.duration)
        cpu_after, wall_after = time.process_time(), time.monotonic()
        threads_after = thread_cpu()
        changes_after = manager.state.wait_for_change(-1, 0)

        wall = wall_after - wall_before
        result["duration_s"] = wall
        result["cpu_s"] = cpu_after - cpu_before
        result["cpu_percent"] = 100.0 * (cpu_after - cpu_before) / wall
        result["cpu_by_thread"] = by_thread_kind(threads_before, threads_after)
        result["changes"] = changes_after - changes_before
        result["threads"] = threading.active_count()
        result["peak_rss_mib"] = peak_rss_mib()
        return result
    finally:
        manager.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --- a running manager (the lab's) -------------------------------------------------------------------


def lab_pid_file(lab_dir: Path | None, node: str) -> Path:
    from pyswarm.lab.config import LabConfig, default_lab_dir
    from pyswarm.manager.daemon import PID_FILE

    config = LabConfig.load(lab_dir or default_lab_dir())
    for lab_node in config.node_list:
        if lab_node.name == node:
            return lab_node.pyswarm_data_dir / PID_FILE
    raise ValueError(f"no node {node!r} in the lab at {config.lab_dir}")


def _state_counts(data_dir: Path) -> dict[str, int]:
    """Nodes and tasks in the manager's state file, read-only; empty if it cannot be read."""
    path = data_dir / "state.db"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            nodes = db.execute("SELECT count(*) FROM nodes").fetchone()[0]
            tasks = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return {"nodes": int(nodes), "tasks": int(tasks)}


def measure_pid(pid: int, duration: float, scenario: str, data_dir: Path | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"kind": "idle", "mode": "process", "scenario": scenario, "pid": pid}
    if data_dir is not None:
        result.update(_state_counts(data_dir))
    own_before, children_before = process_cpu(pid)
    wall_before = time.monotonic()
    time.sleep(duration)
    own_after, children_after = process_cpu(pid)
    wall = time.monotonic() - wall_before
    result["duration_s"] = wall
    result["cpu_s"] = own_after - own_before
    result["children_cpu_s"] = children_after - children_before
    result["cpu_percent"] = 100.0 * (own_after - own_before) / wall
    result["threads"] = len(list(Path(f"/proc/{pid}/task").iterdir()))
    return result
