"""The reconcile loop: one pass plans every service marked for it, places pending tasks, picks engine
actions, hands changed tasks to the writer, and then (outside the lock) hands the actions to the engine jobs.

No polling: a pass runs when something changed (WorkList.notify), or when a service's plan falls due (a
restart delay). A pass costs what changed since the last one, not the size of the cluster.
"""

from __future__ import annotations

import logging
import threading
import time

from pyswarm.manager.actions import ActionPicker
from pyswarm.manager.engine_jobs import EngineJobs, Removal, Start
from pyswarm.manager.ids import new_id
from pyswarm.manager.links import NodeLinks
from pyswarm.manager.scheduling import Placement
from pyswarm.manager.settings import FAILED_PASS_PAUSE, PASS_DEBOUNCE_MAX, PASS_DEBOUNCE_MIN, STOP_JOIN_TIMEOUT
from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.manager.writer import TaskWriter
from pyswarm.model import Service, Task
from pyswarm.planners.reconcile import plan_service, task_spec_digest

log = logging.getLogger("pyswarm.manager")


class Orchestrator:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        transitions: Transitions,
        links: NodeLinks,
        engine_jobs: EngineJobs,
        writer: TaskWriter,
        history_limit: int,
    ) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions
        self.links = links
        self.engine_jobs = engine_jobs
        self.writer = writer
        self.history_limit = history_limit
        self.placement = Placement(state, work, transitions)
        self.actions = ActionPicker(state, work, transitions, links)
        self._next_wake: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Wait for the loop to end (the work list's stopping flag is set already)."""
        self.work.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_TIMEOUT)

    def replan_all(self) -> None:
        """Have the next pass re-plan every service, as a node change does."""
        with self.state.lock:
            self.work.dirty_services.update(self.state.services)
        self.work.notify()

    def _loop(self) -> None:
        took = 0.0
        work = self.work
        while not work.stopping.is_set():
            timeout = None if self._next_wake is None else max(0.0, self._next_wake - time.time())
            work.wake.wait(timeout)
            if work.stopping.is_set():
                return
            work.wake.clear()
            # Debounce: let a burst of events land in one pass. Under a stream of changes, wait as long as the
            # last pass took: passes then take at most half of the time (and of the lock), and each one does
            # more of the work (placing a batch costs a pass over the cluster's tasks).
            time.sleep(min(max(PASS_DEBOUNCE_MIN, took), PASS_DEBOUNCE_MAX))
            began = time.monotonic()
            try:
                self.reconcile_once()
            except Exception:  # the loop must survive a bad pass; the next one retries
                log.exception("reconcile pass failed")
                time.sleep(FAILED_PASS_PAUSE)
            took = time.monotonic() - began

    def reconcile_once(self) -> None:
        """One pass: plan services, schedule, persist, then hand actions to the engine jobs."""
        now = time.time()
        starts: list[Start] = []
        removals: list[Removal] = []
        deleted: list[str] = []
        gate = self.work.pass_gate
        gate.clear()
        try:
            with self.state.lock:
                changed = self._plan(now, starts, removals, deleted)
                links = dict(self.links.by_node)
        finally:
            gate.set()
        self.engine_jobs.dispatch(starts, removals, links)
        if changed:
            self.work.mesh.endpoints_changed()

    def _plan(self, now: float, starts: list[Start], removals: list[Removal], deleted: list[str]) -> bool:
        """The locked part of a pass. Returns whether anything changed."""
        work = self.work
        self.transitions.apply_outcomes()
        due = [s for s, at in work.service_wakes.items() if at <= now]
        for service_id in due:
            del work.service_wakes[service_id]
        work.dirty_services.update(due)
        dirty, work.dirty_services = work.dirty_services, set()
        for service_id in dirty:
            service = self.state.services.get(service_id)
            if service is not None:
                self._plan_service(service, now, deleted)
        self._next_wake = min(work.service_wakes.values(), default=None)
        self.placement.place_pending(now)
        self.actions.pick(starts, removals)
        self._forget_removed_services(deleted)
        flushed = self.writer.flush(deleted)
        changed = flushed or bool(dirty)
        if changed:
            self.state.changed()
        return changed

    def _plan_service(self, service: Service, now: float, deleted: list[str]) -> None:
        work, state = self.work, self.state
        tasks = state.tasks_by_service.setdefault(service.id, {})
        plan = plan_service(service, list(tasks.values()), state.nodes, now, new_id, history_limit=self.history_limit)
        for task_id, reason in plan.shutdown.items():
            self.transitions.shut_down(tasks[task_id], reason, now)
            work.schedule_again = True  # it no longer counts toward max-per-node
        for task in plan.create:
            state.add_task(task)
            work.task_changed(task.id)
            work.pending.add(task.id)
            work.schedule_again = True
        for task_id in plan.delete:
            doomed = tasks.get(task_id)
            # `removing` holds container IDs: keep the task until its container is gone.
            if task_id in work.inflight or (doomed is not None and doomed.container_id in work.removing):
                continue
            self._forget_task(tasks, task_id, deleted)
        work.service_wakes.pop(service.id, None)
        if plan.wake_at is not None:
            work.service_wakes[service.id] = plan.wake_at
        if service.id in work.updating:
            digest = task_spec_digest(service.spec)
            # A job is never rolled: its earlier iterations' tasks stay as history, whatever their spec.
            if service.spec.mode.is_job or all(t.spec_digest == digest for t in tasks.values()):
                work.updating.discard(service.id)

    def _forget_task(self, tasks: dict[str, Task], task_id: str, deleted: list[str]) -> None:
        task = tasks.get(task_id)
        if task is not None and task.container_id:
            self.engine_jobs.queue_removal(task)  # an ended task's container, kept for its logs until now
        self.state.drop_task(tasks, task_id)
        work = self.work
        work.dirty_tasks.discard(task_id)
        work.attention.discard(task_id)
        work.pending.discard(task_id)
        work.early_events.pop(task_id, None)
        deleted.append(task_id)

    def _forget_removed_services(self, deleted: list[str]) -> None:
        """Tasks of removed services leave the store once they are down."""
        state, inflight = self.state, self.work.inflight
        for service_id in [s for s in state.tasks_by_service if s not in state.services]:
            tasks = state.tasks_by_service[service_id]
            for task_id in [t.id for t in tasks.values() if t.state.terminal and t.id not in inflight]:
                self._forget_task(tasks, task_id, deleted)
            if not tasks:
                del state.tasks_by_service[service_id]
                self.engine_jobs.forget_service(service_id)
