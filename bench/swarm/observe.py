"""The engines as the benchmark sees them: every lab node's docker API from the host, polling until the engines
report what a step wanted, and the orchestrators' own task records turned into a timeline."""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench.swarm.config import API_VERSION, BenchError


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


def docker_epoch(text: str) -> float:
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
