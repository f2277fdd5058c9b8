"""Every change of a task's or a node's state, in one place (state lock held in every method).

The rooms that learn what happened (the engine jobs' outcomes, engine events, resyncs, heartbeat verdicts,
node commands) report it here; each transition changes the task or node and marks the work list, so that
the next pass writes it and acts on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from pyswarm.drivers.engine import ContainerEvent
from pyswarm.manager.state import ClusterState
from pyswarm.manager.worklist import WorkList
from pyswarm.model import ContainerInfo, Node, NodeStatus, Task, TaskState

log = logging.getLogger("pyswarm.manager")

# A node's status message once it ran `swarm leave`; its tasks' message too.
LEFT = "node left the swarm"
# swarm's words for a task whose health check failed (its container is stopped, and kept for its logs).
UNHEALTHY = "task: non-zero exit (137): dockerexec: unhealthy container"
WAITING_FOR_HEALTH = "starting: waiting for the health check"


def resume_unfinished_starts(tasks: Iterable[Task]) -> None:
    """Starts that the previous manager did not finish are started again: the container name is the task's,
    so a container it did create is adopted, never duplicated. A task with a container (started, waiting for
    its health check) is left to the resync, which judges the container as it is."""
    for task in tasks:
        if (
            task.desired_state is TaskState.RUNNING
            and task.state in (TaskState.PREPARING, TaskState.STARTING)
            and not task.container_id
        ):
            task.state = TaskState.ASSIGNED


def has_left(node: Node) -> bool:
    """The node ran `swarm leave`: it stays Down until it joins again, whatever its engine answers."""
    return node.status_message == LEFT


class Transitions:
    def __init__(self, state: ClusterState, work: WorkList) -> None:
        self.state = state
        self.work = work
        # Set by the wiring (engine_jobs.py): stop an unhealthy task's container, kept for its logs until the
        # task leaves the history.
        self.queue_stop: Callable[[Task], None] = lambda task: None

    # --- tasks ------------------------------------------------------------------------------------------

    def set_state(self, task: Task, state: TaskState, message: str = "", now: float | None = None) -> None:
        now = now or time.time()
        if state is not task.state:
            task.state = state
            task.state_changed_at = now
            if state.terminal:
                self.work.schedule_again = True  # its host ports and its place in max-per-node are free
        if message:
            task.message = message
        task.updated_at = now
        self.work.task_changed(task.id)

    def fail(self, task: Task, error: str) -> None:
        task.error = error
        self.set_state(task, TaskState.FAILED, error)

    def start_preparing(self, task: Task, now: float) -> None:
        """A pass hands the task to its node's engine jobs: in flight until its start ends. Not back into the
        attention set (as set_state would): an in-flight task gets it when its start ends."""
        self.work.inflight.add(task.id)
        task.state = TaskState.PREPARING
        task.message = "preparing"
        task.state_changed_at = task.updated_at = now
        self.work.dirty_tasks.add(task.id)

    def shut_down(self, task: Task, message: str, now: float) -> None:
        """The task is wanted down (a plan, a node that left); its container, if any, is removed by a pass."""
        task.desired_state = TaskState.SHUTDOWN
        task.message = message
        task.updated_at = now
        self.work.task_changed(task.id)

    def apply_outcomes(self) -> None:
        """Record what happened to tasks being started, in order."""
        work, tasks, set_state = self.work, self.state.tasks, self.set_state
        outcomes = [work.outcomes.popleft() for _ in range(len(work.outcomes))]
        last = {outcome[0].id: position for position, outcome in enumerate(outcomes)}
        now = time.time()
        for position, (task, state, message, info, done) in enumerate(outcomes):
            if state is TaskState.STARTING and last[task.id] != position:
                continue  # it started meanwhile: only its latest state is worth recording
            if tasks.get(task.id) is not task:
                work.inflight.discard(task.id)
                continue
            if state is not None:
                self._record_start(task, state, message, info, now, set_state)
            if done:
                self._start_over(task)

    def _record_start(
        self,
        task: Task,
        state: TaskState,
        message: str,
        info: ContainerInfo | None,
        now: float,
        set_state: Callable[[Task, TaskState, str, float], None],
    ) -> None:
        if info is not None:
            task.container_id = info.id
            task.host_ports = dict(info.host_ports)
            task.container_addr = info.container_addr
            task.error = ""
            if state is TaskState.RUNNING and info.health in ("starting", "unhealthy"):
                state, message = TaskState.STARTING, WAITING_FOR_HEALTH  # running once healthy
        if state in (TaskState.REJECTED, TaskState.FAILED):
            task.error = message
        if task.state is not TaskState.FAILED or state is TaskState.RUNNING:
            set_state(task, state, message, now)
        # A task that starts as planned changes no plan, except that of a rolling update waiting for it.
        if state is not TaskState.STARTING and (
            state is not TaskState.RUNNING or task.service_id in self.work.updating
        ):
            self.work.dirty_services.add(task.service_id)

    def _start_over(self, task: Task) -> None:
        work = self.work
        work.inflight.discard(task.id)
        early = work.early_events.pop(task.id, None) if work.early_events else None
        if early is not None and task.container_id == early.container_id and not task.state.terminal:
            self._early_event(task, early)  # it died, or its health changed, before its start was recorded
        if (
            task.state is TaskState.RUNNING
            and task.desired_state is TaskState.RUNNING
            and task.service_id in self.state.services
        ):
            # Running as wanted: a pass has nothing to do for it, so it is not looked at again unless something
            # else changes (its service, node or desired state).
            work.attention.discard(task.id)
        else:
            work.attention.add(task.id)

    def container_event(self, node_id: str, task: Task, event: ContainerEvent) -> bool:
        """A watched engine event about the task's container; True if the task changed."""
        if task.node_id != node_id:
            return False
        work = self.work
        if task.id in work.inflight:
            # Its start is not recorded yet (the task has no container ID): a container that exits at once can
            # die before that. Kept for when the start's outcome is applied (_start_over). A die wins: it
            # carries the exit code, which the oom before it and the destroy after it lack.
            kept = work.early_events.get(task.id)
            if kept is None or kept.action == "health_status" or (event.action == "die" and kept.action != "die"):
                work.early_events[task.id] = event
            return False
        if task.container_id != event.container_id or task.state.terminal:
            return False
        if event.action == "health_status":
            return self.container_health(task, event.health)
        self.container_ended(task, event)
        return True

    def _early_event(self, task: Task, event: ContainerEvent) -> None:
        if event.action == "health_status":
            self.container_health(task, event.health)
        elif task.state in (TaskState.RUNNING, TaskState.STARTING):
            self.container_ended(task, event)

    def container_health(self, task: Task, health: str) -> bool:
        """The container's health check passed or failed; True if the task changed. A task enters the mesh
        (and counts as running) only once healthy; an unhealthy one fails, and its restart policy decides."""
        if task.desired_state is not TaskState.RUNNING or task.state.terminal:
            return False
        if health == "healthy" and task.state is TaskState.STARTING:
            self.set_state(task, TaskState.RUNNING, "started")
        elif health == "unhealthy":
            self.fail(task, UNHEALTHY)
            self.queue_stop(task)
        else:
            return False
        self.work.dirty_services.add(task.service_id)
        return True

    def container_ended(self, task: Task, event: ContainerEvent) -> None:
        """The task's container died or was removed."""
        if task.desired_state is TaskState.RUNNING:
            if event.action == "destroy":
                self.fail(task, "container removed behind the manager's back")
            elif event.exit_code:
                self.fail(task, f"task: non-zero exit ({event.exit_code})")
            elif event.action == "die":
                self.set_state(task, TaskState.COMPLETE, "finished")
            # The container is kept, stopped, for `service logs`, until the task leaves the history.
        self.work.dirty_services.add(task.service_id)

    def container_gone(self, task: Task) -> None:
        """The task's container was removed as asked (a removal, or a listing without it)."""
        task.container_id = ""  # nothing left to remove when the task leaves the history
        self.set_state(task, TaskState.SHUTDOWN, task.message or "shutdown")
        self.work.dirty_services.add(task.service_id)

    def container_vanished(self, task: Task) -> None:
        """A resync did not find the task's container on its node."""
        if task.desired_state is TaskState.RUNNING:
            self.fail(task, "container vanished from the node")
        else:
            self.set_state(task, TaskState.SHUTDOWN, task.message or "shutdown")
        self.work.dirty_services.add(task.service_id)

    def container_exited(self, task: Task, exit_code: int) -> None:
        """A resync found the task's container stopped (its die event was missed)."""
        if exit_code:
            self.fail(task, f"task: non-zero exit ({exit_code})")
        else:
            self.set_state(task, TaskState.COMPLETE, "finished")  # a job's task must not run again
        self.work.dirty_services.add(task.service_id)

    def adopted(self, task: Task, container: ContainerInfo) -> None:
        """A resync found the task's container running (after a manager restart, or with a health status the
        events did not bring): nothing is restarted."""
        task.container_id = container.id
        task.host_ports = dict(container.host_ports) or task.host_ports
        task.container_addr = container.container_addr or task.container_addr
        if container.health == "unhealthy":
            self.fail(task, UNHEALTHY)
            self.queue_stop(task)
        elif container.health == "starting":
            self.set_state(task, TaskState.STARTING, WAITING_FOR_HEALTH)
        else:
            self.set_state(task, TaskState.RUNNING, "running (adopted)")
        self.work.dirty_services.add(task.service_id)

    # --- nodes --------------------------------------------------------------------------------------------

    def node_changed(self, node_id: str) -> None:
        self.state.nodes_version += 1
        self.work.node_changed(self.state.services, self.state.tasks_by_node.get(node_id, ()))

    def node_status(self, node: Node, status: NodeStatus, message: str) -> bool:
        """A heartbeat verdict on the node; True if its status changed. (A node that left is not marked Ready:
        see has_left.)"""
        if node.status is status:
            return False
        log.info("node %s is now %s %s", node.hostname, status.value, message)
        node.status, node.status_message, node.updated_at = status, message, time.time()
        self.node_changed(node.id)
        self.state.changed()
        return True

    def node_removed(self, node: Node) -> None:
        """`node rm`: its tasks are orphaned and shut down, and replaced elsewhere. (They are written by the
        next pass; after a crash before that, tasks on a node that is gone are shut down all the same.)"""
        for task in self.state.tasks_on_node(node.id):
            if not task.state.terminal:
                self.set_state(task, TaskState.ORPHANED, "node removed")
                task.desired_state = TaskState.SHUTDOWN
        self.node_changed(node.id)

    def node_left(self, node: Node) -> None:
        """`swarm leave` on the node: it is Down, and its tasks are wanted down and replaced at once, without
        the restart delay (wanted down, not ended on their own)."""
        node.status, node.status_message = NodeStatus.DOWN, LEFT
        self.node_changed(node.id)
        now = time.time()
        for task in self.state.tasks_on_node(node.id):
            if task.desired_state is TaskState.RUNNING and not task.state.terminal:
                self.shut_down(task, LEFT, now)
                self.work.dirty_services.add(task.service_id)

    def left_container_removed(self, task: Task) -> None:
        """The container of a task on a node that left was removed by the leave's cleanup."""
        task.desired_state = TaskState.SHUTDOWN  # (node_left did, unless it was placed since)
        self.set_state(task, TaskState.SHUTDOWN, LEFT)
        self.work.dirty_services.add(task.service_id)
