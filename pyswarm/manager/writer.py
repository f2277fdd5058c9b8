"""The task writer: one thread that writes changed tasks to the store behind the reconcile passes.

It is the only writer of tasks (commands write services and nodes): passes go on meanwhile, and a task changed
by several passes before the writer gets to it is encoded and written once. A start may so run before its
task's row lands; after a crash, a container whose task the store does not place on its node is a stray,
removed by a resync, and the task is placed again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

from pyswarm.manager.settings import (
    INFLIGHT_ROW_WAIT,
    WRITE_RETRY_DELAY,
    WRITER_PARTS_PER_TAKE,
    WRITER_SCAN_FACTOR,
    WRITER_STOP_TIMEOUT,
)
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.manager.worklist import WorkList
from pyswarm.model import Task

log = logging.getLogger("pyswarm.manager")


class TaskWriter:
    def __init__(self, state: ClusterState, work: WorkList, store: StateStore) -> None:
        self.state = state
        self.work = work
        self.store = store
        # Tasks changed (and deleted) since the writer last took them. (The tasks themselves: each is encoded
        # as it is when the writer gets to it.)
        self._unwritten: dict[str, Task] = {}
        self._unwritten_deleted: list[str] = []
        self._ready = threading.Condition(threading.Lock())
        self._passes_over = threading.Event()  # set once the loop thread ended: no pass flushes again
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self, deleted: list[str]) -> bool:
        """Hand the tasks marked dirty since the last flush, and the deleted ones, to the writer (lock held).
        Returns whether there was anything."""
        work = self.work
        if not work.dirty_tasks and not deleted:
            return False
        tasks, unwritten = self.state.tasks, self._unwritten
        for task_id in work.dirty_tasks:
            task = tasks.get(task_id)
            if task is not None:
                unwritten[task_id] = task
        for task_id in deleted:
            unwritten.pop(task_id, None)
        self._unwritten_deleted.extend(deleted)
        work.dirty_tasks = set()
        with self._ready:
            self._ready.notify()
        return True

    def stop(self) -> None:
        """After the last pass: the writer ends once it has written what that pass flushed."""
        self._passes_over.set()
        with self._ready:
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=WRITER_STOP_TIMEOUT)

    def _run(self) -> None:
        # Rows are encoded under the lock (tasks change under it), several parts at a time: a pass waits for
        # that encoding at most, and the writer does not wait for a whole pass per part (taking one part at a
        # time, it fell seconds behind at thousands of nodes). Each part is one transaction: a service or node
        # write waits for one part's write at most.
        taken_at_once = self.store.task_batch_size * WRITER_PARTS_PER_TAKE
        all_in_flight = False
        while True:
            with self._ready:
                if all_in_flight:  # until a pass applies outcomes (it flushes and notifies), or starts age
                    self._ready.wait(INFLIGHT_ROW_WAIT / 2)
                while not (self._unwritten or self._unwritten_deleted) and not self._passes_over.is_set():
                    self._ready.wait()
            with self.state.lock:
                if not (self._unwritten or self._unwritten_deleted):
                    if self._passes_over.is_set():
                        return  # and all written
                    continue
                taken, deleted = self._take(taken_at_once)
                all_in_flight = not taken and not deleted
                if all_in_flight:
                    continue
                encode = self.store.encode_task
                rows = [encode(task) for _, task in taken]
            self._write(taken, rows, deleted)

    def _take(self, most: int) -> tuple[list[tuple[str, Task]], list[str]]:
        """Up to `most` unwritten tasks, and every deleted one (lock held). A task whose start began less than
        INFLIGHT_ROW_WAIT ago is left for later (unless the writer is stopping): on a fast engine its outcome
        comes first, and it is written once, not twice. A slow start still gets its row soon, so that a manager
        restarted after a crash adopts its container by name instead of removing it as a stray."""
        unwritten, now = self._unwritten, time.time()
        inflight = () if self._passes_over.is_set() else self.work.inflight
        ids = [
            t
            for t in itertools.islice(unwritten, WRITER_SCAN_FACTOR * most)
            if t not in inflight or now - unwritten[t].updated_at >= INFLIGHT_ROW_WAIT
        ]
        taken = [(task_id, unwritten.pop(task_id)) for task_id in ids[:most]]
        deleted, self._unwritten_deleted = self._unwritten_deleted, []
        return taken, deleted

    def _write(self, taken: list[tuple[str, Task]], rows: list[object], deleted: list[str]) -> None:
        try:
            self.store.write_task_rows(rows, deleted)
        except Exception:
            log.exception("writing %d tasks failed; trying again in a second", len(rows))
            with self.state.lock:
                for task_id, task in taken:
                    if self.state.tasks.get(task_id) is task:
                        self._unwritten.setdefault(task_id, task)
                self._unwritten_deleted.extend(deleted)
            time.sleep(WRITE_RETRY_DELAY)  # (not an Event wait: while the manager stops, that would spin)
