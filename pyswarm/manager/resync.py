"""Resync: compare a node's containers with the state; adopt ours, fail the vanished, remove strays.

It runs as an engine job on the node's queue when the node comes online, and then every resync interval
(stretched past MAX_RESYNCS_PER_SECOND over all nodes), never while the node has other engine jobs.
"""

from __future__ import annotations

import time

from pyswarm.drivers.engine import EngineError
from pyswarm.manager.engine_jobs import EngineJobs
from pyswarm.manager.executor import Executor
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import MAX_RESYNCS_PER_SECOND
from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import ContainerInfo, TaskState


class Resync:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        transitions: Transitions,
        links: NodeLinks,
        connector: EngineConnector,
        executor: Executor,
        engine_jobs: EngineJobs,
        interval: float,
    ) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions
        self.links = links
        self.connector = connector
        self.executor = executor
        self.engine_jobs = engine_jobs
        self.interval = interval

    def current_interval(self) -> float:
        """The set interval, or longer in a cluster too large for it: see MAX_RESYNCS_PER_SECOND."""
        return max(self.interval, len(self.links) / MAX_RESYNCS_PER_SECOND)

    def submit(self, link: NodeLink) -> None:
        link.last_resync = time.time()
        self.executor.submit(link, self.resync_node, link.node_id)

    def submit_if_due(self, link: NodeLink) -> None:
        """After a good ping. Not while the node has engine jobs: its listing would race with them (and be
        judged only in part), and at thousands of nodes these resyncs would compete with the starts."""
        if time.time() - link.last_resync >= self.current_interval() and not link.running:
            self.submit(link)

    def resync_node(self, node_id: str) -> None:
        link = self.links.get(node_id)
        if link is None:
            return
        # Tasks that change while the engine lists its containers are judged by the next resync, not by this
        # listing: one that started meanwhile is missing from it, without having vanished.
        listed_at = time.time()
        try:
            containers = self.connector.engine(link).containers(self.state.cluster_id)
        except EngineError:
            return
        seen: set[str] = set()
        with self.state.lock:
            changed = False
            for container in containers:
                changed = self._resync_container(link, container, seen, listed_at) or changed
            changed = self._find_vanished(node_id, seen, listed_at) or changed
        if changed:  # a pass only when there is something to plan or write
            self.work.notify()

    def _find_vanished(self, node_id: str, seen: set[str], listed_at: float) -> bool:
        changed = False
        inflight = self.work.inflight
        for task in self.state.tasks_on_node(node_id):
            if (
                task.node_id == node_id
                and task.state_changed_at < listed_at
                and task.container_id
                and task.container_id not in seen
                and not task.state.terminal
                and task.id not in inflight
                and task.state >= TaskState.STARTING
            ):
                self.transitions.container_vanished(task)
                changed = True
        return changed

    def _resync_container(self, link: NodeLink, container: ContainerInfo, seen: set[str], listed_at: float) -> bool:
        """Reconcile one listed container with its task (lock held); True if a task changed."""
        seen.add(container.id)
        work = self.work
        task = self.state.tasks.get(container.task_id)
        if task is not None and (
            task.id in work.inflight or container.id in work.removing or task.state_changed_at >= listed_at
        ):
            return False
        stray = task is None or task.node_id != link.node_id or (task.container_id not in ("", container.id))
        if not stray and task is not None and task.state.terminal and container.status != "running":
            return False  # an ended task's container, kept for its logs until the task leaves the history
        unwanted = task is not None and (task.desired_state is not TaskState.RUNNING or task.state.terminal)
        if not stray and not unwanted and task is not None and container.status in ("exited", "dead"):
            self.transitions.container_exited(task, container.exit_code)  # a missed die: kept for its logs
            return True
        if not stray and not unwanted and container.status == "paused":
            return False  # someone paused it (docker pause): it has not ended
        if stray or unwanted or container.status != "running":
            failed = False
            if task is not None and not stray and task.desired_state is TaskState.RUNNING and not task.state.terminal:
                self.transitions.container_exited(task, container.exit_code)
                failed = True
            self.engine_jobs.queue_container_removal(link, container.id, task.id if task and not stray else "")
            return failed
        assert task is not None
        health = container.health
        settled = task.container_id == container.id and (
            (task.state is TaskState.RUNNING and health != "unhealthy")
            or (task.state is TaskState.STARTING and health == "starting")
        )
        if settled:
            return False
        self.transitions.adopted(task, container)  # or its health changed without an event reaching us
        return True
