"""The manager's HTTP API (FastAPI). Every route needs a bearer token; workers' tokens may only join."""

# No `from __future__ import annotations`: FastAPI must see the real annotations of the nested routes.
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pyswarm import __version__
from pyswarm.drivers.engine import validate_engine_url
from pyswarm.manager.core import Manager, ManagerError
from pyswarm.model import (
    Availability,
    Node,
    NodeRole,
    RestartCondition,
    RestartPolicy,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
)
from pyswarm.model import parse as p
from pyswarm.model.codec import spec_to_dict

# --- request bodies: every field is validated by the same parsers the CLI uses ----------------------


class PortIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    published: int = Field(ge=1, le=65535)
    target: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class RestartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    condition: Literal["any", "on-failure", "none"] = "any"
    delay: float = Field(default=5.0, ge=0, le=86400)
    max_attempts: int = Field(default=0, ge=0, le=1_000_000)
    window: float = Field(default=0.0, ge=0, le=86400 * 365)


class SpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63)
    image: str = Field(max_length=255)
    mode: Literal["replicated", "global"] = "replicated"
    replicas: int = Field(default=1, ge=0, le=10000)
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    env: list[str] = Field(default_factory=list, max_length=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[PortIn] = Field(default_factory=list, max_length=100)
    constraints: list[str] = Field(default_factory=list, max_length=100)
    placement_prefs: list[str] = Field(default_factory=list, max_length=10)
    max_replicas_per_node: int = Field(default=0, ge=0, le=10000)
    restart_policy: RestartIn = Field(default_factory=RestartIn)
    stop_grace_period: float = Field(default=10.0, ge=0, le=3600)
    force_update: int = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return p.service_name(value)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return p.image(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        return [p.env(item) for item in value]

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            p.label(f"{key}={item}")
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        return [str(p.constraint(item)) for item in value]

    @field_validator("placement_prefs")
    @classmethod
    def _prefs(cls, value: list[str]) -> list[str]:
        return [p.label_key(item) for item in value]

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if any("\x00" in item for item in value):
            raise ValueError("command arguments cannot contain NUL bytes")
        return value

    def to_spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.name,
            image=self.image,
            mode=ServiceMode(self.mode),
            replicas=1 if self.mode == "global" else self.replicas,
            command=tuple(self.command),
            env=tuple(self.env),
            labels=dict(self.labels),
            ports=tuple(
                p.publish(f"published={x.published},target={x.target},protocol={x.protocol},mode={x.mode}")
                for x in self.ports
            ),
            constraints=tuple(p.constraint(c) for c in self.constraints),
            placement_prefs=tuple(self.placement_prefs),
            max_replicas_per_node=self.max_replicas_per_node,
            restart_policy=RestartPolicy(
                condition=RestartCondition(self.restart_policy.condition),
                delay=self.restart_policy.delay,
                max_attempts=self.restart_policy.max_attempts,
                window=self.restart_policy.window,
            ),
            stop_grace_period=self.stop_grace_period,
            force_update=self.force_update,
        )


class ServiceUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    spec: SpecIn


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine_url: str = Field(max_length=512)
    engine_id: str = Field(max_length=128)
    addr: str = Field(max_length=64)

    @field_validator("engine_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_engine_url(value, insecure_tcp=value.startswith("tcp://"))


class NodeAddIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine_url: str = Field(max_length=512)
    addr: str = Field(default="", max_length=64)
    insecure_tcp: bool = False

    @field_validator("engine_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_engine_url(value, insecure_tcp=True)


class NodeUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    availability: Literal["active", "pause", "drain"] | None = None
    label_add: dict[str, str] = Field(default_factory=dict)
    label_rm: list[str] = Field(default_factory=list)
    role: Literal["manager", "worker"] | None = None

    @field_validator("label_add")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            p.label(f"{key}={item}")
        return value


# --- responses ---------------------------------------------------------------------------------------


class NodeOut(BaseModel):
    id: str
    hostname: str
    status: str
    status_message: str
    availability: str
    role: str
    leader: bool
    engine_version: str
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


class ServiceOut(BaseModel):
    id: str
    version: int
    created_at: float
    updated_at: float
    spec: dict[str, Any]
    running: int
    desired: int
    endpoints: dict[str, list[str]]


class IdOut(BaseModel):
    id: str


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


class NetworkOut(BaseModel):
    id: str
    name: str
    driver: str
    scope: str
    node: str
    ports: dict[str, dict[str, Any]]


def _node_out(node: Node) -> NodeOut:
    return NodeOut(
        id=node.id,
        hostname=node.hostname,
        status=node.status.value,
        status_message=node.status_message,
        availability=node.availability.value,
        role=node.role.value,
        leader=node.leader,
        engine_version=node.engine_version,
        engine_url=node.engine_url,
        addr=node.addr,
        labels=node.labels,
        ingress_synced=node.ingress_synced,
        ingress_error=node.ingress_error,
        created_at=node.created_at,
        updated_at=node.updated_at,
    )


def create_app(manager: Manager) -> FastAPI:
    app = FastAPI(
        title="pyswarm manager",
        version=__version__,
        description="Docker swarm mode rebuilt in Python. Every call needs `Authorization: Bearer <token>`. "
        "Serve it on a private network, or behind a TLS-terminating proxy: the API itself speaks plain HTTP.",
    )

    @app.exception_handler(ManagerError)
    async def _manager_error(_: Request, exc: ManagerError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(p.SpecError)
    async def _spec_error(_: Request, exc: p.SpecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        for error in exc.errors():
            where = ".".join(str(x) for x in error.get("loc", ()) if x != "body")
            messages.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
        return JSONResponse({"detail": "; ".join(messages)[:2000]}, status_code=422)

    bearer = HTTPBearer(auto_error=False, description="a client credential, join token or node secret")

    def credential(auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        role = manager.token_role(auth.credentials) if auth is not None and auth.credentials else None
        if role is None:
            raise HTTPException(401, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})
        return role

    def client(role: Annotated[str, Depends(credential)]) -> str:
        if role != "client":
            raise HTTPException(403, "this token may only be used to join the swarm")
        return role

    Client = Annotated[str, Depends(client)]

    def task_out(task: Task) -> TaskOut:
        node = manager.nodes.get(task.node_id)
        return TaskOut(
            id=task.id,
            name=manager.task_display_name(task),
            service_id=task.service_id,
            slot=task.slot,
            node_id=task.node_id,
            node=node.hostname if node else "",
            desired_state=task.desired_state.value,
            state=task.state.value,
            message=task.message,
            error=task.error,
            container_id=task.container_id,
            ports=[f"*:{port}->{key}" for key, port in sorted(task.host_ports.items())],
            created_at=task.created_at,
            state_changed_at=task.state_changed_at,
        )

    def service_out(service: Service) -> ServiceOut:
        running, desired = manager.running_count(service)
        eps = manager.service_endpoints(service)
        return ServiceOut(
            id=service.id,
            version=service.version,
            created_at=service.created_at,
            updated_at=service.updated_at,
            spec=spec_to_dict(service.spec),
            running=running,
            desired=desired,
            endpoints={
                f"{port}/{proto}": [f"{e.node_addr}:{e.host_port}" for e in items]
                for (port, proto), items in eps.items()
            },
        )

    @app.get("/info", response_model=InfoOut)
    def info(_: Client) -> InfoOut:
        with manager.lock:
            return InfoOut(
                version=__version__,
                cluster_id=manager.cluster_id,
                node_id=manager.meta.get("local_node_id", ""),
                managers=sum(1 for n in manager.nodes.values() if n.role is NodeRole.MANAGER),
                nodes=len(manager.nodes),
                services=len(manager.services),
                tasks=len(manager.tasks),
                running_tasks=sum(1 for t in manager.tasks.values() if t.state.value == "running"),
                manager_addr=f"{manager.settings.advertise_addr}:{manager.settings.listen_port}",
                heartbeat=manager.settings.heartbeat,
                started_at=manager.started_at,
            )

    @app.post("/swarm/join", response_model=JoinOut)
    def join(body: JoinIn, role: Annotated[str, Depends(credential)]) -> JoinOut:
        if role not in ("worker", "manager"):
            raise HTTPException(403, "joining needs a worker or manager join token")
        node, secret = manager.add_node(
            body.engine_url, body.addr, body.engine_id, NodeRole.MANAGER if role == "manager" else NodeRole.WORKER
        )
        return JoinOut(
            node_id=node.id,
            node_secret=secret,
            role=node.role.value,
            client_token=manager.meta["token_client"] if role == "manager" else None,
        )

    @app.post("/swarm/leave", status_code=204)
    def leave(role: Annotated[str, Depends(credential)]) -> None:
        if not role.startswith("node:"):
            raise HTTPException(403, "only a node's own credential can make it leave")
        manager.node_left(role.split(":", 1)[1])

    @app.get("/swarm/join-token/{role}", response_model=TokenOut)
    def join_token(role: Literal["worker", "manager"], _: Client, rotate: bool = False) -> TokenOut:
        return TokenOut(token=manager.join_token(role, rotate), role=role)

    @app.post("/swarm/join-token/{role}/rotate", response_model=TokenOut)
    def rotate_token(role: Literal["worker", "manager"], _: Client) -> TokenOut:
        return TokenOut(token=manager.join_token(role, True), role=role)

    @app.get("/nodes", response_model=list[NodeOut])
    def nodes(_: Client) -> list[NodeOut]:
        with manager.lock:
            return [_node_out(n) for n in sorted(manager.nodes.values(), key=lambda n: n.hostname)]

    @app.post("/nodes", response_model=NodeOut, status_code=201)
    def node_add(body: NodeAddIn, _: Client) -> NodeOut:
        from urllib.parse import urlparse

        addr = body.addr or (urlparse(body.engine_url).hostname or "")
        node, _secret = manager.add_node(body.engine_url, addr, None)
        return _node_out(node)

    @app.get("/nodes/{ref}", response_model=NodeOut)
    def node_get(ref: str, _: Client) -> NodeOut:
        return _node_out(manager.find_node(ref))

    @app.post("/nodes/{ref}/update", response_model=NodeOut)
    def node_update(ref: str, body: NodeUpdateIn, _: Client) -> NodeOut:
        node = manager.update_node(
            ref,
            availability=Availability(body.availability) if body.availability else None,
            label_add=body.label_add,
            label_rm=body.label_rm,
            role=NodeRole(body.role) if body.role else None,
        )
        return _node_out(node)

    @app.delete("/nodes/{ref}", status_code=204)
    def node_rm(ref: str, _: Client, force: bool = False) -> None:
        manager.remove_node(ref, force)

    @app.get("/nodes/{ref}/tasks", response_model=list[TaskOut])
    def node_tasks(ref: str, _: Client) -> list[TaskOut]:
        node = manager.find_node(ref)
        with manager.lock:
            return [task_out(t) for t in manager.tasks.values() if t.node_id == node.id]

    @app.get("/services", response_model=list[ServiceOut])
    def services(_: Client) -> list[ServiceOut]:
        with manager.lock:
            return [service_out(s) for s in sorted(manager.services.values(), key=lambda s: s.spec.name)]

    @app.post("/services", response_model=IdOut, status_code=201)
    def service_create(body: SpecIn, _: Client) -> IdOut:
        return IdOut(id=manager.create_service(body.to_spec()).id)

    @app.get("/services/{ref}", response_model=ServiceOut)
    def service_get(ref: str, _: Client) -> ServiceOut:
        with manager.lock:
            return service_out(manager.find_service(ref))

    @app.post("/services/{ref}/update", response_model=ServiceOut)
    def service_update(ref: str, body: ServiceUpdateIn, _: Client) -> ServiceOut:
        updated = manager.update_service(ref, body.spec.to_spec(), body.version)
        with manager.lock:
            return service_out(updated)

    @app.delete("/services/{ref}", response_model=IdOut)
    def service_rm(ref: str, _: Client) -> IdOut:
        return IdOut(id=manager.remove_service(ref).id)

    @app.get("/services/{ref}/tasks", response_model=list[TaskOut])
    def service_tasks(ref: str, _: Client) -> list[TaskOut]:
        service = manager.find_service(ref)
        return [task_out(t) for t in manager.service_tasks(service.id)]

    @app.get("/services/{ref}/logs")
    def service_logs(
        ref: str, _: Client, tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None, follow: bool = False
    ) -> StreamingResponse:
        service = manager.find_service(ref)
        return StreamingResponse(manager.logs(service, tail, follow), media_type="text/plain")

    @app.get("/tasks", response_model=list[TaskOut])
    def tasks(_: Client) -> list[TaskOut]:
        with manager.lock:
            return [task_out(t) for t in manager.tasks.values()]

    @app.get("/events/wait")
    def wait(
        _: Client, seen: Annotated[int, Query(ge=0)] = 0, timeout: Annotated[float, Query(ge=0, le=30)] = 10.0
    ) -> dict[str, int]:
        """Long poll: returns when the cluster state changes after `seen`, or at the timeout."""
        return {"counter": manager.wait_for_change(seen, timeout)}

    @app.get("/networks", response_model=list[NetworkOut])
    def networks(_: Client) -> list[NetworkOut]:
        with manager.lock:
            ports: dict[str, dict[str, Any]] = {}
            for service in manager.services.values():
                for (port, proto), eps in manager.service_endpoints(service).items():
                    ports[f"{port}/{proto}"] = {
                        "service": service.spec.name,
                        "endpoints": [f"{e.node_addr}:{e.host_port}" for e in eps],
                        "synced_nodes": sorted(n.hostname for n in manager.nodes.values() if n.ingress_synced),
                        "unsynced_nodes": sorted(n.hostname for n in manager.nodes.values() if not n.ingress_synced),
                    }
            return [
                NetworkOut(
                    id=manager.cluster_id[:12], name="ingress", driver="overlay", scope="swarm", node="", ports=ports
                )
            ]

    return app
