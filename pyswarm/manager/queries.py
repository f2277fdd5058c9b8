"""The read API: what the API, the routing mesh and the benchmarks read, as copies taken under the state lock.
Nothing outside the manager's rooms walks the state's dicts or takes its lock."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from pyswarm import __version__
from pyswarm.manager.state import ClusterState
from pyswarm.model import Endpoint, Node, NodeRole, NodeStatus, Service, ServiceMode, Task, TaskState
from pyswarm.planners.containers import endpoints, task_name
from pyswarm.planners.ingress import IngressPort, ingress_ports_for
from pyswarm.planners.jobs import job_status

Endpoints = dict[tuple[int, str], tuple[Endpoint, ...]]


@dataclass(frozen=True)
class TaskView:
    """A task as `service ps` shows it."""

    task: Task  # a copy
    name: str  # web.1, or web.<node id> for a global service
    node_hostname: str


@dataclass(frozen=True)
class ServiceView:
    """A service as `service ls` and `service inspect` show it."""

    service: Service
    running: int
    desired: int
    endpoints: Endpoints
    completed: int = 0  # jobs: tasks of the current iteration that completed


@dataclass(frozen=True)
class ClusterInfo:
    version: str
    cluster_id: str
    node_id: str
    managers: int
    nodes: int
    services: int
    tasks: int
    running_tasks: int
    manager_addr: str
    heartbeat: float  # the period in use
    started_at: float


@dataclass(frozen=True)
class ClusterCounts:
    """Nodes by status and tasks by state (their enum values)."""

    nodes: dict[str, int]
    tasks: dict[str, int]

    def all_nodes(self, status: NodeStatus) -> bool:
        return set(self.nodes) <= {status.value}


@dataclass(frozen=True)
class MeshPort:
    """One published ingress port as `network inspect ingress` shows it."""

    service_name: str
    published: int
    protocol: str
    endpoints: tuple[Endpoint, ...]


class ClusterReader:
    def __init__(self, state: ClusterState, manager_addr: str, heartbeat_period: Callable[[], float]) -> None:
        self.state = state
        self.manager_addr = manager_addr
        self.heartbeat_period = heartbeat_period
        self.started_at = time.time()

    # --- nodes ----------------------------------------------------------------------------------------------

    def nodes(self) -> list[Node]:
        with self.state.lock:
            return sorted((_node_copy(n) for n in self.state.nodes.values()), key=lambda n: n.hostname)

    def node(self, ref: str) -> Node:
        with self.state.lock:
            return _node_copy(self.state.find_node(ref))

    def ready_nodes(self) -> list[Node]:
        with self.state.lock:
            return [_node_copy(n) for n in self.state.nodes.values() if n.status is NodeStatus.READY]

    # --- services and tasks -----------------------------------------------------------------------------------

    def services(self) -> list[ServiceView]:
        with self.state.lock:
            ordered = sorted(self.state.services.values(), key=lambda s: s.spec.name)
            return [self._service_view(s) for s in ordered]

    def service(self, ref: str) -> ServiceView:
        with self.state.lock:
            return self._service_view(self.state.find_service(ref))

    def service_view(self, service: Service) -> ServiceView:
        """The view of a service a command just returned."""
        with self.state.lock:
            return self._service_view(service)

    def tasks(self, service_ref: str | None = None, node_ref: str | None = None) -> list[TaskView]:
        """Every task, or a service's, or a node's."""
        with self.state.lock:
            if service_ref is not None:
                service_id = self.state.find_service(service_ref).id
                chosen = list(self.state.tasks_by_service.get(service_id, {}).values())
            elif node_ref is not None:
                node_id = self.state.find_node(node_ref).id
                chosen = [t for t in self.state.tasks.values() if t.node_id == node_id]
            else:
                chosen = list(self.state.tasks.values())
            return [self._task_view(t) for t in chosen]

    def info(self) -> ClusterInfo:
        state = self.state
        with state.lock:
            return ClusterInfo(
                version=__version__,
                cluster_id=state.cluster_id,
                node_id=state.meta.get("local_node_id", ""),
                managers=sum(1 for n in state.nodes.values() if n.role is NodeRole.MANAGER),
                nodes=len(state.nodes),
                services=len(state.services),
                tasks=len(state.tasks),
                running_tasks=sum(1 for t in state.tasks.values() if t.state is TaskState.RUNNING),
                manager_addr=self.manager_addr,
                heartbeat=self.heartbeat_period(),
                started_at=self.started_at,
            )

    def counts(self) -> ClusterCounts:
        with self.state.lock:
            nodes = Counter(n.status.value for n in self.state.nodes.values())
            tasks = Counter(t.state._value_ for t in self.state.tasks.values())
        return ClusterCounts(nodes=dict(nodes), tasks=dict(tasks))

    # --- the routing mesh ---------------------------------------------------------------------------------------

    def ingress_ports(self) -> tuple[IngressPort, ...]:
        """Every published ingress port of the cluster with its running endpoints, in a stable order."""
        state = self.state
        with state.lock:
            ports: list[IngressPort] = []
            for service in sorted(state.services.values(), key=lambda s: s.id):
                if not service.spec.ingress_ports():
                    continue
                tasks = state.tasks_by_service.get(service.id, {}).values()
                ports.extend(ingress_ports_for(service, endpoints(service, tasks, state.nodes)))
            return tuple(ports)

    def mesh_ports(self) -> list[MeshPort]:
        state = self.state
        with state.lock:
            result = []
            for service in state.services.values():
                tasks = state.tasks_by_service.get(service.id, {}).values()
                for (port, proto), eps in endpoints(service, tasks, state.nodes).items():
                    result.append(MeshPort(service.spec.name, port, proto, eps))
            return result

    # --- under the lock ------------------------------------------------------------------------------------------

    def _service_view(self, service: Service) -> ServiceView:
        state = self.state
        tasks = state.tasks_by_service.get(service.id, {}).values()
        if service.spec.mode.is_job:
            job = job_status(service, tasks, state.nodes)
            return ServiceView(service, job.running, job.desired, endpoints(service, tasks, state.nodes), job.completed)
        running = sum(
            1
            for t in tasks
            if t.state is TaskState.RUNNING
            and t.desired_state is TaskState.RUNNING
            and (node := state.nodes.get(t.node_id)) is not None
            and node.ready
        )
        desired = (
            sum(1 for t in tasks if t.active) if service.spec.mode is ServiceMode.GLOBAL else service.spec.replicas
        )
        return ServiceView(service, running, desired, endpoints(service, tasks, state.nodes))

    def _task_view(self, task: Task) -> TaskView:
        service = self.state.services.get(task.service_id)
        node = self.state.nodes.get(task.node_id)
        name = task_name(service, task) if service is not None else task.id[:12]
        copy = replace(task, host_ports=dict(task.host_ports))
        if service is not None and service.spec.mode.is_job and task.state is TaskState.COMPLETE:
            copy.desired_state = TaskState.COMPLETE  # docker shows a job's finished task as wanted Complete
        return TaskView(copy, name, node.hostname if node else "")


def _node_copy(node: Node) -> Node:
    return replace(node, labels=dict(node.labels))
