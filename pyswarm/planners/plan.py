"""What the service and job planners share: the plan they return, their reasons, and the node checks. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pyswarm.model import Availability, Constraint, Node, NodeStatus, Task, TaskState
from pyswarm.planners.constraints import node_matches

REASON_SCALE_DOWN = "scale down"
REASON_DUPLICATE = "duplicate task for the slot"
REASON_SUPERSEDED = "superseded by a newer task"
REASON_UPDATE = "updating to the new spec"
REASON_NODE_GONE = "node is gone"
REASON_NODE_DOWN = "node is down"
REASON_NODE_DRAINED = "node is drained"
REASON_CONSTRAINTS = "constraints not satisfied"


@dataclass
class ReconcilePlan:
    """What the manager must do, in this order:

    1. `shutdown`: set each task's desired_state to SHUTDOWN (the reason is its message) and stop its
       container if it has one. When the container stops, record the task's state as SHUTDOWN (not
       COMPLETE/FAILED): only tasks that ended while wanted running count as restart attempts.
    2. `create`: store the new tasks (state PENDING, desired RUNNING); replicated ones have no node yet
       and go to the scheduler, global ones have their node preset (the scheduler validates it).
    3. `delete`: forget these tasks; each is ended, unwanted and has no container left to clean up.
    4. `wake_at`: plan this service again at that time (a delayed restart falls due), even if nothing
       else happened.
    """

    create: list[Task] = field(default_factory=list)
    shutdown: dict[str, str] = field(default_factory=dict)  # task id -> reason
    delete: list[str] = field(default_factory=list)
    wake_at: float | None = None

    @property
    def empty(self) -> bool:
        return not (self.create or self.shutdown or self.delete)

    def wake(self, at: float) -> None:
        """Plan again at `at`, or earlier if another part of the plan asks for earlier."""
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


class NodeCheck:
    """Whether a service's tasks may stay on a node, and whether a node takes a new one; cached per node."""

    def __init__(self, nodes: Mapping[str, Node], constraints: tuple[Constraint, ...]) -> None:
        self.nodes = nodes
        self.constraints = constraints
        self._problems: dict[str, str | None] = {}

    def problem(self, node_id: str) -> str | None:
        """Why a task may not stay on `node_id`, or None. Paused and not-yet-ready nodes keep their tasks."""
        try:
            return self._problems[node_id]
        except KeyError:
            pass
        node = self.nodes.get(node_id)
        problem: str | None = None
        if node is None:
            problem = REASON_NODE_GONE
        elif node.status is NodeStatus.DOWN:
            problem = REASON_NODE_DOWN
        elif node.availability is Availability.DRAIN:
            problem = REASON_NODE_DRAINED
        elif self.constraints and not node_matches(self.constraints, node):
            problem = REASON_CONSTRAINTS
        self._problems[node_id] = problem
        return problem

    def takes_new_task(self, node_id: str) -> bool:
        """Ready, active and satisfying the constraints."""
        node = self.nodes.get(node_id)
        return node is not None and node.schedulable and self.problem(node_id) is None


def slot_task(task_id: str, service_id: str, key: int | str, version: int, digest: str, now: float) -> Task:
    """A slot's new task, pending: key is the slot number (replicated) or the node id (global)."""
    is_global = isinstance(key, str)
    return Task(
        id=task_id,
        service_id=service_id,
        slot=0 if is_global else int(key),
        node_id=str(key) if is_global else "",
        desired_state=TaskState.RUNNING,
        state=TaskState.PENDING,
        spec_version=version,
        spec_digest=digest,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
    )
