"""Which engine actions a pass takes (state lock held): start the assigned tasks of Ready nodes, remove the
containers of tasks wanted down, and leave each slot to one live container (stop-first, as swarm)."""

from __future__ import annotations

import time

from pyswarm.manager.engine_jobs import Removal, Start
from pyswarm.manager.links import NodeLinks
from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import Task, TaskState


class ActionPicker:
    def __init__(self, state: ClusterState, work: WorkList, transitions: Transitions, links: NodeLinks) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions
        self.links = links

    def pick(self, starts: list[Start], removals: list[Removal]) -> None:
        """Look at the tasks that need attention; an in-flight task gets it again when its action ends."""
        work, state = self.work, self.state
        attention, work.attention = work.attention, set()
        busy_slots: dict[str, set[tuple[int, str]]] = {}
        now = time.time()
        tasks, inflight, services = state.tasks, work.inflight, state.services
        # Whether each node takes engine actions: the same for all its tasks in this pass.
        links = self.links.by_node
        ready_nodes = {node_id for node_id, node in state.nodes.items() if node.ready and node_id in links}
        for task_id in attention:
            task = tasks.get(task_id)
            if task is None or task_id in inflight:
                continue
            ready = task.node_id in ready_nodes
            if task.desired_state is TaskState.RUNNING and task.service_id not in services:
                task.desired_state = TaskState.SHUTDOWN
            if task.desired_state is TaskState.RUNNING:
                if task.state is TaskState.ASSIGNED and ready:
                    if self._slot_busy(task, busy_slots):
                        work.attention.add(task.id)  # stop-first: wait until the slot's old container is gone
                        continue
                    self.transitions.start_preparing(task, now)
                    starts.append((task, services[task.service_id]))
                continue
            if task.state.terminal:
                continue
            if not task.container_id and task.state < TaskState.PREPARING:
                self.transitions.set_state(task, TaskState.SHUTDOWN, task.message or "shut down before start")
            elif ready and task.container_id and task.container_id not in work.removing:
                work.removing.add(task.container_id)
                removals.append((task.node_id, task.container_id, task.id))

    def _slot_busy(self, task: Task, cache: dict[str, set[tuple[int, str]]]) -> bool:
        """Stop-first, as swarm: a slot's new task starts once the container of the task it replaces is gone,
        so no slot ever runs twice. A predecessor on a node that is not Ready does not hold the slot."""
        busy = cache.get(task.service_id)
        if busy is None:
            busy = set()
            nodes, inflight = self.state.nodes, self.work.inflight
            for other in self.state.tasks_by_service.get(task.service_id, {}).values():
                if other.desired_state is TaskState.RUNNING or other.state.terminal:
                    continue
                node = nodes.get(other.node_id)
                if (other.container_id or other.id in inflight) and node is not None and node.ready:
                    busy.add((other.slot, other.node_id if other.slot == 0 else ""))
            cache[task.service_id] = busy
        return (task.slot, task.node_id if task.slot == 0 else "") in busy
