"""The manager's HTTP API (FastAPI). Every route needs a bearer token; workers' tokens may only join.

Every refusal is a 4xx with `{"detail": "<message>"}` (documented per route), and leaves the state as it
was. The OpenAPI schema is served at /openapi.json, to clients only; there are no /docs pages.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations of the nested routes.
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlparse

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pyswarm import __version__
from pyswarm.drivers.engine import validate_engine_url
from pyswarm.manager.core import Manager, ManagerError, TlsPem
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

# Node and service references: an ID, an ID prefix or a name (the CLI refuses longer ones too).
Ref = Annotated[str, Path(min_length=1, max_length=256, description="ID, unique ID prefix, or name")]
# A node's address as other nodes reach it: an IPv4/IPv6 address or a host name.
ADDR_PATTERN = r"^[A-Za-z0-9.:\-]*$"
_T = TypeVar("_T")

# What the parsers of pyswarm.model.parse accept, for the OpenAPI schema: the parsers enforce it (with
# messages that say what is expected), these patterns only document it, for clients and fuzzers.
_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"
_IMAGE = r"^[a-zA-Z0-9][a-zA-Z0-9._\-/:@]{0,254}$"  # and no ".."
_ENV = r"^[A-Za-z_][A-Za-z0-9_]{0,255}(=[^\x00]*)?$"
_LABEL_KEY = r"^[a-zA-Z0-9][a-zA-Z0-9_.\-/]{0,127}$"
_NO_NUL = r"^[^\x00]*$"
_CONSTRAINT = (
    r"^\s*(node\.role\s*(==|!=)\s*(manager|worker)"
    r"|(node\.id|node\.hostname|(node|engine)\.labels\.[a-zA-Z0-9_.\-]+)\s*(==|!=)\s*[^=!\s]\S*)\s*$"
)


def _documented(pattern: str, description: str = "") -> Any:
    extra: dict[str, Any] = {"pattern": pattern}
    if description:
        extra["description"] = description
    return Field(json_schema_extra=extra)


Label = Annotated[str, Field(max_length=4096, json_schema_extra={"pattern": _NO_NUL})]
Labels = Annotated[
    dict[str, Label],
    Field(default_factory=dict, max_length=1000, json_schema_extra={"propertyNames": {"pattern": _LABEL_KEY}}),
]
LabelKey = Annotated[str, _documented(_LABEL_KEY)]


def _check_engine_url(url: str, insecure_tcp: bool) -> str:
    url = validate_engine_url(url, insecure_tcp=insecure_tcp)
    if urlparse(url).password is not None:
        # It would be stored and shown by `node inspect`: SSH engines are reached with keys.
        raise ValueError("an engine URL cannot carry a password: use an SSH key")
    return url


# --- request bodies: every field is validated by the same parsers the CLI uses ----------------------


class PortIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    published: int = Field(ge=1, le=65535)
    target: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class RestartIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    condition: Literal["any", "on-failure", "none"] = "any"
    delay: float = Field(default=5.0, ge=0, le=86400)
    max_attempts: int = Field(default=0, ge=0, le=1_000_000)
    window: float = Field(default=0.0, ge=0, le=86400 * 365)


class SpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=63, json_schema_extra={"pattern": _NAME})
    image: str = Field(max_length=255, json_schema_extra={"pattern": _IMAGE})
    mode: Literal["replicated", "global"] = "replicated"
    replicas: int = Field(default=1, ge=0, le=10000, description="replicated mode only (global: 1)")
    command: list[Annotated[str, Field(max_length=4096, json_schema_extra={"pattern": _NO_NUL})]] = Field(
        default_factory=list, max_length=256
    )
    env: list[Annotated[str, _documented(_ENV, "NAME=VALUE")]] = Field(default_factory=list, max_length=1000)
    labels: Labels
    ports: list[PortIn] = Field(default_factory=list, max_length=100)
    constraints: list[Annotated[str, Field(max_length=1024), _documented(_CONSTRAINT, "e.g. node.role==worker")]] = (
        Field(default_factory=list, max_length=100)
    )
    placement_prefs: list[LabelKey] = Field(
        default_factory=list, max_length=10, description="node label keys to spread the tasks over"
    )
    max_replicas_per_node: int = Field(default=0, ge=0, le=10000)
    restart_policy: RestartIn = Field(default_factory=RestartIn)
    stop_grace_period: float = Field(default=10.0, ge=0, le=3600)
    force_update: int = Field(default=0, ge=0, le=2**31 - 1)

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
        if any("\x00" in item for item in value):
            raise ValueError("constraints cannot contain NUL bytes")
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

    @model_validator(mode="after")
    def _global_has_no_replicas(self) -> "SpecIn":
        # A global service runs one task per node; its stored spec says replicas 1 (what GET returns).
        if self.mode == "global" and self.replicas not in (0, 1):
            raise ValueError("replicas can only be used with replicated mode")
        return self

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
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(ge=1, description="the version the update was made against (optimistic concurrency)")
    spec: SpecIn


def _pem(what: str) -> Any:
    return Field(max_length=65536, description=f"{what}, PEM", json_schema_extra={"pattern": "-----BEGIN "})


class TlsIn(BaseModel):
    """A tcp:// engine's client credentials. The key is a secret: never shown, logged or echoed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ca: str = _pem("the CA that signed the engine's certificate")
    cert: str = _pem("the client certificate")
    key: SecretStr = _pem("the client key")

    @field_validator("ca", "cert", "key")
    @classmethod
    def _is_pem(cls, value: str | SecretStr, info: ValidationInfo) -> str | SecretStr:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if "-----BEGIN " not in text or "\x00" in text:
            raise ValueError(f"tls.{info.field_name} is not a PEM file")
        return value

    def pem(self) -> TlsPem:
        return TlsPem(ca=self.ca, cert=self.cert, key=self.key.get_secret_value())


class EngineAccessIn(BaseModel):
    """How the manager reaches an engine and knows it is the right one."""

    model_config = ConfigDict(extra="forbid", strict=True)
    engine_url: str = Field(max_length=512, description="ssh://[user@]host[:port], tcp://host:port or unix:///path")
    insecure_tcp: bool = Field(default=False, description="accept a tcp:// engine without TLS")
    tls: TlsIn | None = None
    ssh_fingerprint: str | None = Field(default=None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")

    @model_validator(mode="after")
    def _url(self) -> Self:
        self.engine_url = _check_engine_url(self.engine_url, self.insecure_tcp or self.tls is not None)
        return self

    def access(self) -> dict[str, Any]:
        """Manager.add_node's keyword arguments for it."""
        tls = self.tls.pem() if self.tls is not None else None
        return {"tls": tls, "insecure_tcp": self.insecure_tcp, "ssh_fingerprint": self.ssh_fingerprint}


class JoinIn(EngineAccessIn):
    engine_id: str = Field(min_length=1, max_length=128)
    addr: str = Field(min_length=1, max_length=64, pattern=ADDR_PATTERN)


class NodeAddIn(EngineAccessIn):
    addr: str = Field(default="", max_length=64, pattern=ADDR_PATTERN)


class NodeUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    availability: Literal["active", "pause", "drain"] | None = None
    label_add: Labels
    label_rm: list[LabelKey] = Field(default_factory=list, max_length=1000)
    role: Literal["manager", "worker"] | None = None

    @field_validator("label_add")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            p.label(f"{key}={item}")
        return value

    @field_validator("label_rm")
    @classmethod
    def _label_keys(cls, value: list[str]) -> list[str]:
        return [p.label_key(key) for key in value]


# --- responses ---------------------------------------------------------------------------------------


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


_ERROR_TEXT = {
    400: "the request is refused (e.g. a port conflict, a reserved port, removing the leader)",
    401: "missing or invalid token",
    403: "the token may not do this (e.g. a join token on anything but join)",
    404: "no such node or service",
    409: "conflict: a name or port in use, an ambiguous reference, or an update out of sequence",
    422: "invalid input: a malformed field, or an engine that cannot be reached or used",
}


def _errors(*codes: int, plain_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented refusals of a route: these codes, plus 401, 403 and 422 that every route may answer.

    FastAPI documents a `model` under the route's own media type; a text/plain route (logs) names the
    JSON schema itself, so that its errors are documented as the JSON they are."""
    documented = sorted({401, 403, 422, *codes})
    if plain_route:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        return {code: {"description": _ERROR_TEXT[code], "content": content} for code in documented}
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in documented}


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


def _registering(call: Callable[[], _T]) -> _T:
    """Adding an engine probes the URL the request names: an engine that cannot be reached (or whose SSH
    host key cannot be checked) is a problem with that input, so a 4xx, not a 5xx of the manager."""
    try:
        return call()
    except ManagerError as exc:
        if exc.status >= 500:
            raise ManagerError(422, exc.message) from None
        raise


def _validation_message(errors: list[Any]) -> str:
    """One line per problem, naming the field; never the submitted value (it may be a secret)."""
    messages = []
    for error in errors:
        loc = [str(x) for x in error.get("loc", ())]
        kind = error.get("type", "")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if loc[:1] == ["body"] and kind == "json_invalid":
            messages.append("the request body is not valid JSON")
            continue
        where = ".".join(loc[1:]) if loc[:1] in (["body"], ["query"], ["path"], ["header"]) else ".".join(loc)
        if not where and loc[:1] == ["body"]:
            if kind in ("model_attributes_type", "dict_type"):
                messages.append("the request body must be a JSON object, sent as application/json")
                continue
            where = "request body"
        messages.append(f"{where}: {message}" if where else message)
    return "; ".join(messages)[:2000]


def _known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not have: a typo (`?forse=true`) must not be ignored."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = {param.alias for param in route.dependant.query_params}
    unknown = sorted(key for key in request.query_params if key not in known)
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query",), "msg": f"unknown query parameter {key[:40]!r}", "type": "extra_forbidden"}
                for key in unknown
            ]
        )


def create_app(manager: Manager) -> FastAPI:
    app = FastAPI(
        title="pyswarm manager",
        version=__version__,
        description="Docker swarm mode rebuilt in Python. Every call needs `Authorization: Bearer <token>`. "
        "Serve it on a private network, or behind a TLS-terminating proxy: the API itself speaks plain HTTP.",
        openapi_url=None,  # served below, behind the client credential
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ManagerError)
    async def _manager_error(_: Request, exc: ManagerError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(p.SpecError)
    async def _spec_error(_: Request, exc: p.SpecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the first route of the path; RFC 9110 wants every method it has.
            allowed = {
                method
                for route in app.router.routes
                if route.matches(request.scope)[0] is not Match.NONE
                for method in getattr(route, "methods", None) or ()
            }
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(list(exc.errors()))}, status_code=422)

    bearer = HTTPBearer(auto_error=False, description="a client credential, join token or node secret")

    def credential(auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        role = manager.token_role(auth.credentials) if auth is not None and auth.credentials else None
        if role is None:
            raise HTTPException(401, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})
        return role

    # Who may call what: 401 (no or unknown token), then 403 (the wrong kind), then 422 (bad input).
    def client(request: Request, role: Annotated[str, Depends(credential)]) -> str:
        if role != "client":
            raise HTTPException(403, "this token may only be used to join the swarm")
        _known_query_only(request)
        return role

    def joiner(request: Request, role: Annotated[str, Depends(credential)]) -> str:
        if role not in ("worker", "manager"):
            raise HTTPException(403, "joining needs a worker or manager join token")
        _known_query_only(request)
        return role

    def leaver(request: Request, role: Annotated[str, Depends(credential)]) -> str:
        if not role.startswith("node:"):
            raise HTTPException(403, "only a node's own credential can make it leave")
        _known_query_only(request)
        return role.split(":", 1)[1]

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
            spec=SpecOut.model_validate(spec_to_dict(service.spec)),
            running=running,
            desired=desired,
            endpoints={
                f"{port}/{proto}": [f"{e.node_addr}:{e.host_port}" for e in items]
                for (port, proto), items in eps.items()
            },
        )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Client) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/info", response_model=InfoOut, responses=_errors())
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
                heartbeat=manager.heartbeat_period(),
                started_at=manager.started_at,
            )

    @app.post("/swarm/join", response_model=JoinOut, responses=_errors(400, 409))
    def join(body: JoinIn, role: Annotated[str, Depends(joiner)]) -> JoinOut:
        node, secret = _registering(
            lambda: manager.add_node(
                body.engine_url,
                body.addr,
                body.engine_id,
                NodeRole.MANAGER if role == "manager" else NodeRole.WORKER,
                **body.access(),
            )
        )
        return JoinOut(
            node_id=node.id,
            node_secret=secret,
            role=node.role.value,
            client_token=manager.meta["token_client"] if role == "manager" else None,
        )

    @app.post("/swarm/leave", status_code=204, responses=_errors(404))
    def leave(node_id: Annotated[str, Depends(leaver)]) -> None:
        manager.node_left(node_id)

    @app.get("/swarm/join-token/{role}", response_model=TokenOut, responses=_errors())
    def join_token(role: Literal["worker", "manager"], _: Client) -> TokenOut:
        return TokenOut(token=manager.join_token(role, False), role=role)

    @app.post("/swarm/join-token/{role}/rotate", response_model=TokenOut, responses=_errors())
    def rotate_token(role: Literal["worker", "manager"], _: Client) -> TokenOut:
        return TokenOut(token=manager.join_token(role, True), role=role)

    @app.get("/nodes", response_model=list[NodeOut], responses=_errors())
    def nodes(_: Client) -> list[NodeOut]:
        with manager.lock:
            return [_node_out(n) for n in sorted(manager.nodes.values(), key=lambda n: n.hostname)]

    @app.post("/nodes", response_model=NodeOut, status_code=201, responses=_errors(400, 409))
    def node_add(body: NodeAddIn, _: Client) -> NodeOut:
        addr = body.addr or (urlparse(body.engine_url).hostname or "")
        node, _secret = _registering(lambda: manager.add_node(body.engine_url, addr, None, **body.access()))
        return _node_out(node)

    @app.get("/nodes/{ref}", response_model=NodeOut, responses=_errors(404, 409))
    def node_get(ref: Ref, _: Client) -> NodeOut:
        return _node_out(manager.find_node(ref))

    @app.post("/nodes/{ref}/update", response_model=NodeOut, responses=_errors(400, 404, 409))
    def node_update(ref: Ref, body: NodeUpdateIn, _: Client) -> NodeOut:
        node = manager.update_node(
            ref,
            availability=Availability(body.availability) if body.availability else None,
            label_add=body.label_add,
            label_rm=body.label_rm,
            role=NodeRole(body.role) if body.role else None,
        )
        return _node_out(node)

    @app.delete("/nodes/{ref}", status_code=204, responses=_errors(400, 404, 409))
    def node_rm(ref: Ref, _: Client, force: bool = False) -> None:
        manager.remove_node(ref, force)

    @app.get("/nodes/{ref}/tasks", response_model=list[TaskOut], responses=_errors(404, 409))
    def node_tasks(ref: Ref, _: Client) -> list[TaskOut]:
        node = manager.find_node(ref)
        with manager.lock:
            return [task_out(t) for t in manager.tasks.values() if t.node_id == node.id]

    @app.get("/services", response_model=list[ServiceOut], responses=_errors())
    def services(_: Client) -> list[ServiceOut]:
        with manager.lock:
            return [service_out(s) for s in sorted(manager.services.values(), key=lambda s: s.spec.name)]

    @app.post("/services", response_model=IdOut, status_code=201, responses=_errors(400, 409))
    def service_create(body: SpecIn, _: Client) -> IdOut:
        return IdOut(id=manager.create_service(body.to_spec()).id)

    @app.get("/services/{ref}", response_model=ServiceOut, responses=_errors(404, 409))
    def service_get(ref: Ref, _: Client) -> ServiceOut:
        with manager.lock:
            return service_out(manager.find_service(ref))

    @app.post("/services/{ref}/update", response_model=ServiceOut, responses=_errors(400, 404, 409))
    def service_update(ref: Ref, body: ServiceUpdateIn, _: Client) -> ServiceOut:
        updated = manager.update_service(ref, body.spec.to_spec(), body.version)
        with manager.lock:
            return service_out(updated)

    @app.delete("/services/{ref}", response_model=IdOut, responses=_errors(404, 409))
    def service_rm(ref: Ref, _: Client) -> IdOut:
        return IdOut(id=manager.remove_service(ref).id)

    @app.get("/services/{ref}/tasks", response_model=list[TaskOut], responses=_errors(404, 409))
    def service_tasks(ref: Ref, _: Client) -> list[TaskOut]:
        service = manager.find_service(ref)
        return [task_out(t) for t in manager.service_tasks(service.id)]

    @app.get(
        "/services/{ref}/logs",
        response_class=TextStream,
        responses={
            200: {"description": "the tasks' log lines, each prefixed with its task and node, as they come"},
            **_errors(404, 409, plain_route=True),
        },
    )
    def service_logs(
        ref: Ref, _: Client, tail: Annotated[int | None, Query(ge=0, le=1_000_000)] = None, follow: bool = False
    ) -> StreamingResponse:
        service = manager.find_service(ref)
        return TextStream(manager.logs(service, tail, follow))

    @app.get("/tasks", response_model=list[TaskOut], responses=_errors())
    def tasks(_: Client) -> list[TaskOut]:
        with manager.lock:
            return [task_out(t) for t in manager.tasks.values()]

    @app.get("/events/wait", response_model=WaitOut, responses=_errors())
    def wait(
        _: Client, seen: Annotated[int, Query(ge=0)] = 0, timeout: Annotated[float, Query(ge=0, le=30)] = 10.0
    ) -> WaitOut:
        """Long poll: returns when the cluster state changes after `seen`, or at the timeout."""
        return WaitOut(counter=manager.wait_for_change(seen, timeout))

    @app.get("/networks", response_model=list[NetworkOut], responses=_errors())
    def networks(_: Client) -> list[NetworkOut]:
        with manager.lock:
            ports: dict[str, IngressPortOut] = {}
            for service in manager.services.values():
                for (port, proto), eps in manager.service_endpoints(service).items():
                    ports[f"{port}/{proto}"] = IngressPortOut(
                        service=service.spec.name,
                        endpoints=[f"{e.node_addr}:{e.host_port}" for e in eps],
                        synced_nodes=sorted(n.hostname for n in manager.nodes.values() if n.ingress_synced),
                        unsynced_nodes=sorted(n.hostname for n in manager.nodes.values() if not n.ingress_synced),
                    )
            return [
                NetworkOut(
                    id=manager.cluster_id[:12], name="ingress", driver="overlay", scope="swarm", node="", ports=ports
                )
            ]

    return app
