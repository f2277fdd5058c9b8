"""Placing pending tasks on nodes: the pure scheduler's decisions, recorded (state lock held)."""

from __future__ import annotations

from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import TaskState
from pyswarm.planners.scheduler import schedule


class Placement:
    def __init__(self, state: ClusterState, work: WorkList, transitions: Transitions) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions

    def place_pending(self, now: float) -> None:
        """Tasks that could not be placed before are tried again only when capacity may have changed."""
        work, state = self.work, self.state
        if not work.schedule_again:
            return
        work.schedule_again = False
        pending = []
        for task_id in list(work.pending):
            t = state.tasks.get(task_id)
            if t is None or t.state is not TaskState.PENDING or t.desired_state is not TaskState.RUNNING:
                work.pending.discard(task_id)
            elif t.service_id in state.services:
                pending.append(t)
        if not pending:
            return
        # Stopping tasks still hold their host ports until their container is gone.
        # (._terminal: .terminal without a property call per task; this reads every task of the cluster)
        placed = [
            t for t in state.tasks.values() if t.node_id and not t.state._terminal and t.state is not TaskState.PENDING
        ]
        result = schedule(pending, state.services, list(state.nodes.values()), placed)
        for task_id, node_id in result.assignments.items():
            task = state.tasks[task_id]
            state.place_task(task, node_id)
            self.transitions.set_state(task, TaskState.ASSIGNED, "scheduled", now)
            work.pending.discard(task_id)
        for task_id, reason in result.unplaceable.items():
            task = state.tasks[task_id]
            if task.message != reason:
                task.message, task.error = reason, reason
                task.updated_at = now
                work.dirty_tasks.add(task_id)
