"""The API's response bodies, made from the read API's views."""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time.

from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pyswarm.manager.queries import Endpoints, ServiceView, TaskView
from pyswarm.model import Node
from pyswarm.model.codec import spec_to_dict


class ErrorOut(BaseModel):
    detail: str = Field(description="what was refused and why, fit to show the user as is")


class NodeOut(BaseModel):
    id: str
    hostname: str
    status: str
    status_message: str
    availability: str
    role: str
    leader: bool
    engine_version: str
    nano_cpus: int
    memory_bytes: int
    engine_url: str
    addr: str
    labels: dict[str, str]
    ingress_synced: bool | None
    ingress_error: str
    created_at: float
    updated_at: float


class TaskOut(BaseModel):
    id: str
    name: str
    service_id: str
    slot: int
    node_id: str
    node: str
    desired_state: str
    state: str
    message: str
    error: str
    container_id: str
    ports: list[str]
    created_at: float
    state_changed_at: float


class PortOut(BaseModel):
    published: int
    target: int
    protocol: str
    mode: str


class RestartOut(BaseModel):
    condition: str
    delay: float
    max_attempts: int
    window: float


class SpecOut(BaseModel):
    """A service's spec as stored (the codec's dict); fields added there later pass through."""

    model_config = ConfigDict(extra="allow")
    name: str
    image: str
    mode: str
    replicas: int
    command: list[str]
    env: list[str]
    labels: dict[str, str]
    ports: list[PortOut]
    constraints: list[str]
    placement_prefs: list[str]
    max_replicas_per_node: int
    restart_policy: RestartOut
    stop_grace_period: float
    force_update: int


class ServiceOut(BaseModel):
    id: str
    version: int
    created_at: float
    updated_at: float
    spec: SpecOut
    running: int
    desired: int
    completed: int = 0  # jobs: tasks of the current iteration that completed
    endpoints: dict[str, list[str]]
    warnings: list[str] = Field(default_factory=list)  # for the user (an update's: an image left unpinned)


class IdOut(BaseModel):
    id: str
    warnings: list[str] = Field(default_factory=list)  # for the user (a create's: an image left unpinned)


class JoinOut(BaseModel):
    node_id: str
    node_secret: str
    client_token: str | None
    role: str


class TokenOut(BaseModel):
    token: str
    role: str


class InfoOut(BaseModel):
    version: str
    cluster_id: str
    node_id: str
    managers: int
    nodes: int
    services: int
    tasks: int
    running_tasks: int
    manager_addr: str
    heartbeat: float
    started_at: float


class IngressPortOut(BaseModel):
    service: str
    endpoints: list[str]
    synced_nodes: list[str]
    unsynced_nodes: list[str]


class NetworkOut(BaseModel):
    id: str
    name: str
    driver: str
    scope: str
    node: str
    ports: dict[str, IngressPortOut]


class WaitOut(BaseModel):
    counter: int


class TextStream(StreamingResponse):
    media_type = "text/plain"


def node_out(node: Node) -> NodeOut:
    return NodeOut(
        id=node.id,
        hostname=node.hostname,
        status=node.status.value,
        status_message=node.status_message,
        availability=node.availability.value,
        role=node.role.value,
        leader=node.leader,
        engine_version=node.engine_version,
        nano_cpus=node.nano_cpus,
        memory_bytes=node.memory_bytes,
        engine_url=node.engine_url,
        addr=node.addr,
        labels=node.labels,
        ingress_synced=node.ingress_synced,
        ingress_error=node.ingress_error,
        created_at=node.created_at,
        updated_at=node.updated_at,
    )


def task_out(view: TaskView) -> TaskOut:
    task = view.task
    return TaskOut(
        id=task.id,
        name=view.name,
        service_id=task.service_id,
        slot=task.slot,
        node_id=task.node_id,
        node=view.node_hostname,
        desired_state=task.desired_state.value,
        state=task.state.value,
        message=task.message,
        error=task.error,
        container_id=task.container_id,
        ports=[f"*:{port}->{key}" for key, port in sorted(task.host_ports.items())],
        created_at=task.created_at,
        state_changed_at=task.state_changed_at,
    )


def endpoint_texts(endpoints: Endpoints) -> dict[str, list[str]]:
    return {
        f"{port}/{proto}": [f"{e.node_addr}:{e.host_port}" for e in items] for (port, proto), items in endpoints.items()
    }


def service_out(view: ServiceView) -> ServiceOut:
    service = view.service
    return ServiceOut(
        id=service.id,
        version=service.version,
        created_at=service.created_at,
        updated_at=service.updated_at,
        spec=SpecOut.model_validate(spec_to_dict(service.spec)),
        running=view.running,
        desired=view.desired,
        completed=view.completed,
        endpoints=endpoint_texts(view.endpoints),
    )
