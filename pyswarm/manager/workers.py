"""A pool of threads for fire-and-forget jobs: ThreadPoolExecutor without a Future per job.

A reconcile pass at thousands of nodes hands out one job per node, and nobody waits for their results
(outcomes come back through the manager's queue). A Future, its Condition and the executor's Semaphore cost
several times what the job's hand-over itself does; here a job is a tuple on a C-implemented queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pyswarm.manager")

_Job = tuple[Callable[..., object], tuple[Any, ...]]


class JobPool:
    """Up to `size` daemon threads, started as jobs need them. A job that raises is logged; the thread lives on."""

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("a pool needs a thread at least")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._closed = False

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue fn(*args). RuntimeError once the pool is shut down, as ThreadPoolExecutor does."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit a job after shutdown")
            self._jobs.put((fn, args))
            if self._idle > 0:
                self._idle -= 1  # that thread's: the next submit must not count on it too
                return
            if len(self._threads) >= self._size:
                return
            thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
        thread.start()

    def shutdown(self) -> None:
        """Drop the jobs not started yet and let the threads end after their current job (no waiting)."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in range(threads):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception:
                log.exception("job %s failed", getattr(fn, "__qualname__", fn))
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
