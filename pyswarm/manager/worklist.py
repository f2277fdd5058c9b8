"""What the next reconcile pass has to do, and the rules for marking it.

Rooms that change the cluster do not act on it themselves: they change the state (under its lock), mark the
work here, and wake the loop (`notify`). The pass (orchestrator.py) takes the marks and acts. The rules:

- a task whose state or desired state changed: `task_changed` (it is written, and looked at for engine
  actions); transitions.py does this for every task state change;
- a service whose plan may differ (its spec, or a task of it ended or started as an update waits for):
  `replan(service_id)`;
- a node that appeared, went, or changed status, availability, labels or role: `node_changed` (every
  service is re-planned, unplaceable tasks may fit, and the node's tasks are looked at);
- capacity freed or taken (a task ended, a spec relaxed): `schedule_again = True`.

Engine actions in flight are tracked here too (`inflight` tasks being started, `removing` containers), so that
no pass starts a second action on the same task or container.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from pyswarm.drivers.engine import ContainerEvent
from pyswarm.model import ContainerInfo, Node, Task, TaskState


class StartOutcome(NamedTuple):
    """What became of a task being started: its new state (None: unchanged), the message, the container when
    it runs, and whether the start is over (the task is no longer in flight)."""

    task: Task
    state: TaskState | None
    message: str
    container: ContainerInfo | None
    done: bool


class MeshHook:
    """What the routing mesh is told; the manager runs without a mesh until one is attached."""

    def node_changed(self, node: Node) -> None: ...
    def endpoints_changed(self) -> None: ...
    def stop(self) -> None: ...


class WorkList:
    def __init__(self, task_ids: set[str], service_ids: set[str], pending: set[str]) -> None:
        self.dirty_tasks: set[str] = set()  # to hand to the writer at the end of the pass
        self.dirty_services: set[str] = set(service_ids)  # to re-plan
        # Tasks to look at for engine actions in the next pass: changed, or their node or service did.
        self.attention: set[str] = set(task_ids)
        self.pending: set[str] = pending  # not placed yet
        self.schedule_again = True  # capacity changed: unplaceable tasks may fit now
        # Services with tasks of an older spec: their rolling update waits for tasks to run.
        self.updating: set[str] = set(service_ids)
        self.service_wakes: dict[str, float] = {}  # service -> when its plan is due again
        self.inflight: set[str] = set()  # tasks being started
        self.removing: set[str] = set()  # containers being removed
        self.early_events: dict[str, ContainerEvent] = {}  # task id -> its container's end, seen mid-start
        self.outcomes: deque[StartOutcome] = deque()  # from the engine jobs, applied by the next pass
        self.wake = threading.Event()
        # Closed while a pass runs: engine jobs start no engine call meanwhile. The pass is the critical path
        # (placement, persistence) and CPython's threads share one core: with dozens of busy workers, a pass
        # would get a small share of it and the lock with it.
        self.pass_gate = threading.Event()
        self.pass_gate.set()
        self.stopping = threading.Event()
        self.mesh: MeshHook = MeshHook()

    def notify(self) -> None:
        """Wake the reconcile loop. Event.set takes a lock, and dozens of workers call this per task: if the
        flag is up, the loop has not cleared it yet, and the pass it runs after clearing it sees the change."""
        if not self.wake.is_set():
            self.wake.set()

    def task_changed(self, task_id: str) -> None:
        self.dirty_tasks.add(task_id)
        self.attention.add(task_id)

    def replan(self, service_id: str) -> None:
        self.dirty_services.add(service_id)

    def node_changed(self, service_ids: Iterable[str], node_task_ids: Iterable[str]) -> None:
        self.dirty_services.update(service_ids)
        self.schedule_again = True
        self.attention.update(node_task_ids)
