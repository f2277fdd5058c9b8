"""The cluster's live state: nodes, services and tasks, their indexes, and the one lock that guards them.

Every room reads and changes this state under `lock`, and never does engine I/O while holding it. The
change counter wakes API clients that wait for changes (progress displays, --watch).
"""

from __future__ import annotations

import threading
from typing import TypeVar

from pyswarm.manager.errors import Conflict, NotFound
from pyswarm.manager.store import Snapshot
from pyswarm.model import Node, Service, Task
from pyswarm.model.secret import Config, Secret

_Object = TypeVar("_Object", Secret, Config)


class ClusterState:
    def __init__(self, snapshot: Snapshot) -> None:
        self.lock = threading.RLock()
        self.meta = snapshot.meta
        self.nodes: dict[str, Node] = snapshot.nodes
        self.services: dict[str, Service] = snapshot.services
        self.tasks: dict[str, Task] = snapshot.tasks
        self.secrets: dict[str, Secret] = snapshot.secrets
        self.configs: dict[str, Config] = snapshot.configs
        self.tasks_by_service: dict[str, dict[str, Task]] = {sid: {} for sid in self.services}
        self.tasks_by_node: dict[str, set[str]] = {}
        for task in self.tasks.values():
            self.tasks_by_service.setdefault(task.service_id, {})[task.id] = task
            if task.node_id:
                self.tasks_by_node.setdefault(task.node_id, set()).add(task.id)
        self._changes = threading.Condition(self.lock)
        self._change_counter = 0
        self.nodes_version = 0  # bumped whenever a node appears, goes or changes (Transitions.node_changed)

    @property
    def cluster_id(self) -> str:
        return self.meta["cluster_id"]

    # --- changes, for waiting clients -----------------------------------------------------------------

    def changed(self) -> None:
        """Wake API clients waiting on state changes (lock held)."""
        self._change_counter += 1
        self._changes.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        with self._changes:
            if self._change_counter == seen:
                self._changes.wait(timeout)
            return self._change_counter

    # --- lookups ----------------------------------------------------------------------------------------

    def find_node(self, ref: str) -> Node:
        """A node by ID, hostname or unique ID prefix."""
        with self.lock:
            if ref in self.nodes:
                return self.nodes[ref]
            matches = [n for n in self.nodes.values() if n.hostname == ref] or [
                n for n in self.nodes.values() if n.id.startswith(ref)
            ]
            if len(matches) == 1 and ref:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"node {ref!r} is ambiguous ({len(matches)} matches)")
            raise NotFound(f"node {ref[:80]!r} not found")

    def find_service(self, ref: str) -> Service:
        """A service by ID, name or unique ID prefix."""
        with self.lock:
            if ref in self.services:
                return self.services[ref]
            matches = [s for s in self.services.values() if s.spec.name == ref] or [
                s for s in self.services.values() if ref and s.id.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"service {ref!r} is ambiguous ({len(matches)} matches)")
            raise NotFound(f"service {ref[:80]!r} not found")

    def find_secret(self, ref: str) -> Secret:
        """A secret by ID, name or unique ID prefix (docker's order and messages)."""
        return _find_object(self, self.secrets, ref, "secret")

    def find_config(self, ref: str) -> Config:
        return _find_object(self, self.configs, ref, "config")

    def tasks_on_node(self, node_id: str) -> list[Task]:
        """The node's tasks (lock held)."""
        tasks = self.tasks
        return [tasks[t] for t in self.tasks_by_node.get(node_id, ()) if t in tasks]

    # --- the task indexes (lock held) ---------------------------------------------------------------------

    def add_task(self, task: Task) -> None:
        self.tasks_by_service.setdefault(task.service_id, {})[task.id] = task
        self.tasks[task.id] = task
        if task.node_id:
            self.tasks_by_node.setdefault(task.node_id, set()).add(task.id)

    def place_task(self, task: Task, node_id: str) -> None:
        if task.node_id != node_id:
            if task.node_id:
                self.tasks_by_node.get(task.node_id, set()).discard(task.id)
            task.node_id = node_id
            self.tasks_by_node.setdefault(node_id, set()).add(task.id)

    def drop_task(self, service_tasks: dict[str, Task], task_id: str) -> Task | None:
        task = service_tasks.pop(task_id, None)
        self.tasks.pop(task_id, None)
        if task is not None and task.node_id:
            self.tasks_by_node.get(task.node_id, set()).discard(task_id)
        return task


def _find_object(state: ClusterState, objects: dict[str, _Object], ref: str, kind: str) -> _Object:
    with state.lock:
        if ref in objects:
            return objects[ref]
        matches = [o for o in objects.values() if o.name == ref] or [
            o for o in objects.values() if ref and o.id.startswith(ref)
        ]
        if len(matches) > 1:
            raise Conflict(f"{kind} {ref[:80]} is ambiguous ({len(matches)} matches found)")
        if not matches:
            raise NotFound(f"{kind} {ref[:80]} not found")
        return matches[0]
