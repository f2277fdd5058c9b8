"""Per-node queues of engine jobs, run on one pool of threads shared by all nodes.

Each node has its own queue (on its NodeLink); at most per_node_parallelism of its jobs run at once, each on a
queue runner that takes the node's jobs until none is left. Engine I/O happens only here, never under the
state lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pyswarm.manager.links import NodeLink
from pyswarm.manager.workers import JobPool

log = logging.getLogger("pyswarm.manager")

QueuedJob = tuple[Callable[..., None], tuple[Any, ...]]


class Executor:
    def __init__(self, workers: int, per_node_parallelism: int, stopping: threading.Event) -> None:
        self._per_node = per_node_parallelism
        self._stopping = stopping
        self._lock = threading.Lock()
        self._workers = JobPool(workers, "engine")

    def submit(self, link: NodeLink, fn: Callable[..., None], *args: Any) -> bool:
        """Queue an engine job on the link's node. False if the link is stopped (the job is not queued)."""
        with self._lock:
            if link.stop.is_set() or self._stopping.is_set():
                return False
            link.jobs.append((fn, args))
            # Another runner only if the queue outgrows those about to take a job, and the node has room.
            if link.running >= self._per_node or len(link.jobs) <= link.running - link.busy:
                return True
            link.running += 1
        try:
            self._workers.submit(self._run_queue, link)
        except RuntimeError:  # shut down meanwhile; the job stays queued and dropped with its link
            with self._lock:
                link.running -= 1
        return True

    def _run_queue(self, link: NodeLink) -> None:
        while True:
            with self._lock:
                if not link.jobs or link.stop.is_set():
                    link.running -= 1
                    return
                fn, args = link.jobs.popleft()
                link.busy += 1
            try:
                fn(*args)
            except Exception:
                log.exception("engine job on node %s failed", link.node_id[:12])
            finally:
                with self._lock:
                    link.busy -= 1

    def take_queued(self, link: NodeLink) -> list[QueuedJob]:
        """The jobs of a stopped link that did not start; they never will."""
        with self._lock:
            dropped = list(link.jobs)
            link.jobs.clear()
        return dropped

    def shutdown(self) -> None:
        self._workers.shutdown()
