"""Node commands: update (availability, labels, role), remove, a worker's `swarm leave`, and what the routing
mesh records about a node. Registering engines is registration.py; heartbeat verdicts are heartbeat.py."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from pyswarm.drivers.engine import Engine, EngineError, EngineUnreachable
from pyswarm.manager.credentials import node_secret_key
from pyswarm.manager.engine_jobs import EngineJobs
from pyswarm.manager.errors import Invalid, NotFound
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import LEAVE_POLL, LEAVE_WAIT
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import Availability, Node, NodeRole, NodeStatus

log = logging.getLogger("pyswarm.manager")

_LEFT_UNREACHABLE = (
    "node %s left the swarm, but its engine cannot be reached: its task containers were not removed (%s)"
)


class NodeCommands:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        store: StateStore,
        transitions: Transitions,
        links: NodeLinks,
        connector: EngineConnector,
        engine_jobs: EngineJobs,
    ) -> None:
        self.state = state
        self.work = work
        self.store = store
        self.transitions = transitions
        self.links = links
        self.connector = connector
        self.engine_jobs = engine_jobs

    def update(
        self,
        ref: str,
        availability: Availability | None = None,
        label_add: dict[str, str] | None = None,
        label_rm: list[str] | None = None,
        role: NodeRole | None = None,
    ) -> Node:
        with self.state.lock:
            node = self.state.find_node(ref)
            updated = replace(node, labels=dict(node.labels), updated_at=time.time())
            if availability is not None:
                updated.availability = availability
            for key in label_rm or ():
                if key not in updated.labels:
                    raise Invalid(f"label {key!r} is not set on node {node.hostname}")
                del updated.labels[key]
            updated.labels.update(label_add or {})
            if role is not None:
                if node.leader and role is NodeRole.WORKER:
                    raise Invalid("the leader cannot be demoted: it is the only manager")
                updated.role = role
            self.store.write(nodes=[updated])
            self.state.nodes[node.id] = updated
            self.transitions.node_changed(node.id)
        self.work.notify()
        return updated

    def remove(self, ref: str, force: bool) -> None:
        with self.state.lock:
            node = self.state.find_node(ref)
            if node.leader:
                raise Invalid(f"node {node.hostname} is the leader; use `swarm leave --force` on it")
            if node.status is NodeStatus.READY and not force:
                raise Invalid(
                    f"node {node.hostname} is not down and can't be removed: run `swarm leave` on it, or use --force"
                )
            link = self.links.pop(node.id)
            self.transitions.node_removed(node)
            # Its secret goes with it: it authenticated only this node, which a later join records anew.
            secret_key = node_secret_key(node.id)
            self.store.write(delete_nodes=[node.id], delete_meta=[secret_key])
            del self.state.nodes[node.id]
            self.state.meta.pop(secret_key, None)
        if link is not None:
            self.links.stop(link)
        self.work.notify()

    def record_ingress(self, node_id: str, error: str) -> None:
        """The routing mesh applied the node's rules (error: why it could not). Not once the manager stops:
        its store may be closed already."""
        if self.work.stopping.is_set():
            return
        with self.state.lock:
            node = self.state.nodes.get(node_id)
            if node is None:
                return
            synced = not error
            if node.ingress_synced is synced and node.ingress_error == error:
                return
            node.ingress_synced, node.ingress_error = synced, error
            self.store.write(nodes=[node])

    # --- swarm leave ------------------------------------------------------------------------------------

    def node_left(self, node_id: str) -> None:
        """A worker ran `swarm leave`: it stays listed, Down, as in swarm, and its tasks are shut down and
        replaced elsewhere. As docker's `swarm leave`, its task containers are removed from its engine (best
        effort), then its link is stopped. That runs in the background; the answer waits for it a few seconds
        at most (the CLI gives up after 10)."""
        with self.state.lock:
            node = self.state.nodes.get(node_id)
            if node is None:
                raise NotFound("node not found")
            link = self.links.pop(node_id)
            self.transitions.node_left(node)
            self.store.write(nodes=[node])
        if link is not None:
            link.stop.set()  # no new engine job starts on it: no container is made behind the cleanup
            cleanup = threading.Thread(
                target=self._leave_engine, args=(link, node.hostname), name=f"leave-{node_id[:8]}", daemon=True
            )
            cleanup.start()
            cleanup.join(LEAVE_WAIT)
        self.work.notify()

    def _leave_engine(self, link: NodeLink, hostname: str) -> None:
        """Remove the task containers of this cluster from a node that left, record their tasks as shut down,
        then stop the node's link."""
        try:
            deadline = time.monotonic() + self.connector.engine_timeout
            while link.busy and time.monotonic() < deadline:  # let a start in progress end (its container is
                time.sleep(LEAVE_POLL)  # then listed below)
            with self.state.lock:
                self.transitions.apply_outcomes()  # what those starts made is on the tasks before the listing
            try:
                engine = self.connector.connect(link.url, self.connector.engine_timeout)
            except EngineError as exc:
                log.warning(_LEFT_UNREACHABLE, hostname, exc)
                return
            try:
                self._remove_left_containers(link.node_id, hostname, engine)
            finally:
                engine.close()
        except Exception:
            log.exception("cleaning up node %s after it left the swarm failed", hostname)
        finally:
            self.links.stop(link)

    def _remove_left_containers(self, node_id: str, hostname: str, engine: Engine) -> None:
        try:
            containers = engine.containers(self.state.cluster_id)
        except EngineError as exc:
            log.warning(_LEFT_UNREACHABLE, hostname, exc)
            return
        removed = 0
        for container in containers:
            with self.state.lock:
                grace = self.engine_jobs.stop_grace(container.task_id)
            try:
                engine.remove(container.id, stop_timeout=grace)
            except EngineError as exc:
                log.warning(
                    "node %s left the swarm: removing its container %s failed: %s", hostname, container.id[:12], exc
                )
                if isinstance(exc, EngineUnreachable):
                    return
                continue
            removed += 1
            with self.state.lock:
                task = self.state.tasks.get(container.task_id)
                if (
                    task is not None
                    and task.node_id == node_id
                    and task.container_id == container.id
                    and not task.state.terminal
                    and task.id not in self.work.inflight
                ):
                    self.transitions.left_container_removed(task)
            self.work.notify()
        log.info("node %s left the swarm: %d of its task containers removed", hostname, removed)
