"""The API's request bodies: every field is validated by the same parsers the CLI uses.

The patterns only document what the parsers of pyswarm.model.parse accept, for the OpenAPI schema (clients
and fuzzers); the parsers enforce it, with messages that say what is expected.
"""

# No `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time.
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from pyswarm.drivers.engine import validate_engine_url
from pyswarm.manager.registration import JoinClaim, TlsPem
from pyswarm.model import RestartCondition, RestartPolicy, ServiceMode, ServiceSpec
from pyswarm.model import parse as p
from pyswarm.model.codec import container_settings_from_dict
from pyswarm.model.parse_container import check_container_settings

# A node's address as other nodes reach it: an IPv4/IPv6 address or a host name.
ADDR_PATTERN = r"^[A-Za-z0-9.:\-]*$"

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
# A key to remove: any key a stored label may have, one an earlier release let in (`zone=a`) included.
RemovedLabelKey = Annotated[
    str, Field(json_schema_extra={"pattern": r"^[^\x00]+$", "maxLength": p.MAX_STORED_LABEL_KEY})
]


def _check_engine_url(url: str, insecure_tcp: bool, joining: bool = False) -> str:
    """joining: a join-token holder names the engine; the manager would probe unix:// on its own host, and an
    unauthenticated tcp:// engine proves nothing, so only ssh://, and tcp:// with TLS (insecure_tcp: TLS
    files given), are accepted."""
    url = validate_engine_url(url, insecure_tcp=insecure_tcp or joining)
    parsed = urlparse(url)
    if parsed.password is not None:
        # It would be stored and shown by `node inspect`: SSH engines are reached with keys.
        raise ValueError("an engine URL cannot carry a password: use an SSH key")
    if joining and parsed.scheme == "unix":
        raise ValueError(
            "a join cannot name a unix:// engine: the manager reaches a joining node's engine over ssh://, "
            "or tcp:// with TLS (--advertise-engine)"
        )
    if joining and parsed.scheme == "tcp" and not insecure_tcp:
        raise ValueError(
            f"engine {url} is tcp:// without TLS: a join needs its TLS files (--tlscacert/--tlscert/--tlskey), "
            "or an ssh:// engine"
        )
    return url


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


Text = Annotated[str, Field(max_length=4096, json_schema_extra={"pattern": _NO_NUL})]
Texts = Annotated[list[Text], Field(default_factory=list, max_length=256)]
Options = Annotated[dict[str, Text], Field(default_factory=dict, max_length=256)]


class MountIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["volume", "bind", "tmpfs"] = "volume"
    source: Text = ""
    target: Text
    readonly: bool = False
    volume_driver: str = Field(default="", max_length=64)
    volume_labels: Labels
    volume_nocopy: bool = False
    bind_propagation: str = Field(default="", max_length=16)
    tmpfs_size: int = Field(default=0, ge=0, le=2**62)
    tmpfs_mode: int = Field(default=0, ge=0, le=0o7777)


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    limit_nano_cpus: int = Field(default=0, ge=0, le=4096 * 10**9)
    limit_memory: int = Field(default=0, ge=0, le=2**62)
    limit_pids: int = Field(default=0, ge=0, le=2**31)
    reserve_nano_cpus: int = Field(default=0, ge=0, le=4096 * 10**9)
    reserve_memory: int = Field(default=0, ge=0, le=2**62)


class HealthIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    test: Texts
    interval: float = Field(default=0.0, ge=0, le=86400)
    timeout: float = Field(default=0.0, ge=0, le=86400)
    retries: int = Field(default=0, ge=0, le=10000)
    start_period: float = Field(default=0.0, ge=0, le=86400)


class UlimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=16)
    soft: int = Field(ge=-1, le=2**62)
    hard: int = Field(ge=-1, le=2**62)


class FileReferenceIn(BaseModel):
    """A secret or config given to the tasks as a file; `id` is filled in by the manager."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64)
    target: Text = ""
    id: str = Field(default="", max_length=64)
    uid: str = Field(default="0", max_length=10, pattern=r"^[0-9]+$")
    gid: str = Field(default="0", max_length=10, pattern=r"^[0-9]+$")
    mode: int = Field(default=0o444, ge=0, le=0o777)


class ContainerSettingsIn(BaseModel):
    """A service's container settings, with docker service create's flag names (see ServiceSpec)."""

    max_concurrent: int = Field(default=0, ge=0, le=10000, description="replicated jobs: tasks at once")
    entrypoint: list[Text] | None = Field(default=None, max_length=256)
    workdir: Text = ""
    user: str = Field(default="", max_length=65)
    hostname: str = Field(default="", max_length=256)
    init: bool | None = None
    read_only: bool = False
    cap_add: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=64)
    cap_drop: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list, max_length=64)
    sysctls: Options
    ulimits: list[UlimitIn] = Field(default_factory=list, max_length=32)
    dns: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=8)
    dns_search: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=8)
    dns_options: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=16)
    log_driver: str = Field(default="", max_length=64)
    log_opts: Options
    stop_signal: str = Field(default="", max_length=16)
    mounts: list[MountIn] = Field(default_factory=list, max_length=100)
    resources: ResourcesIn = Field(default_factory=ResourcesIn)
    healthcheck: HealthIn | None = None
    secrets: list[FileReferenceIn] = Field(default_factory=list, max_length=100)
    configs: list[FileReferenceIn] = Field(default_factory=list, max_length=100)

    def container_settings(self) -> dict[str, Any]:
        """ServiceSpec's keyword arguments for these settings."""
        return container_settings_from_dict(self.model_dump(include=set(ContainerSettingsIn.model_fields)))


class SpecIn(ContainerSettingsIn):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=63, json_schema_extra={"pattern": _NAME})
    image: str = Field(max_length=255, json_schema_extra={"pattern": _IMAGE})
    mode: Literal["replicated", "global", "replicated-job", "global-job"] = "replicated"
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
        return p.labels(value)  # each key on its own: `a=b` is not the key `a` with a value `b=...`

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
        if ServiceMode(self.mode).is_global and self.replicas not in (0, 1):
            raise ValueError("replicas can only be used with replicated or replicated-job mode")
        return self

    def to_spec(self) -> ServiceSpec:
        """The spec, every field checked (SpecError otherwise)."""
        mode = ServiceMode(self.mode)
        spec = ServiceSpec(
            name=self.name,
            image=self.image,
            mode=mode,
            replicas=1 if mode.is_global else self.replicas,
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
            **self.container_settings(),
        )
        return check_container_settings(spec)


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
    """`swarm join`, with a join token: bound to the joining node (see registration.JoinClaim)."""

    engine_id: str = Field(min_length=1, max_length=128)
    addr: str = Field(
        min_length=1,
        max_length=64,
        pattern=ADDR_PATTERN,
        description="the node's own IPv4 address: the one this request comes from",
    )
    advertise_engine: bool = Field(
        default=False,
        description="engine_url is not at addr (`--advertise-engine`): the engine's answering with engine_id "
        "is the proof that it is the joining node's",
    )
    node_secret: SecretStr | None = Field(
        default=None,
        max_length=256,
        description="the node's own secret, from its node.json: only with it may a join take back a Down node",
    )

    @model_validator(mode="after")
    def _url(self) -> Self:  # replaces EngineAccessIn's: no unix://, and no tcp:// without TLS
        if self.insecure_tcp:
            raise ValueError(
                "insecure_tcp: a join cannot use a tcp:// engine without TLS: give its TLS files, or use ssh://"
            )
        self.engine_url = _check_engine_url(self.engine_url, self.tls is not None, joining=True)
        return self

    def claim(self, source_addr: str) -> JoinClaim:
        """What registration checks this join against, for a request from source_addr."""
        secret = self.node_secret.get_secret_value() if self.node_secret is not None else None
        return JoinClaim(source_addr=source_addr, node_secret=secret, advertised_engine=self.advertise_engine)


class NodeAddIn(EngineAccessIn):
    addr: str = Field(
        default="",
        max_length=64,
        pattern=ADDR_PATTERN,
        description="the node's address, stored as IPv4: an IPv4 address or a host name that resolves to one "
        "(default: the engine URL's host)",
    )


class NodeUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    availability: Literal["active", "pause", "drain"] | None = None
    label_add: Labels
    label_rm: list[RemovedLabelKey] = Field(default_factory=list, max_length=1000)
    role: Literal["manager", "worker"] | None = None

    @field_validator("label_add")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return p.labels(value)  # each key on its own: `a=b` is not the key `a` with a value `b=...`

    @field_validator("label_rm")
    @classmethod
    def _label_keys(cls, value: list[str]) -> list[str]:
        return [p.removable_label_key(key) for key in value]
