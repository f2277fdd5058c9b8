"""Layer 1: the data model. Dataclasses and enums only; no I/O, no imports from pyswarm.

Task states follow swarmkit's order and only ever move forward.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

# Labels put on every container we create, so that the manager can rebuild its view from the engines.
LABEL_SERVICE_ID = "com.pyswarm.service.id"
LABEL_SERVICE_NAME = "com.pyswarm.service.name"
LABEL_TASK_ID = "com.pyswarm.task.id"
LABEL_SLOT = "com.pyswarm.task.slot"
LABEL_NODE_ID = "com.pyswarm.node.id"
LABEL_CLUSTER_ID = "com.pyswarm.cluster.id"


class TaskState(enum.Enum):
    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    PREPARING = "preparing"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    ORPHANED = "orphaned"

    # Set on each member below. States are tested hundreds of thousands of times per pass at scale: a plain
    # attribute and an identity hash (members are singletons) instead of a lookup that hashes the member
    # with Enum's __hash__, which is Python code.
    _rank: int
    _terminal: bool
    __hash__ = object.__hash__

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def terminal(self) -> bool:
        return self._terminal

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, TaskState):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, TaskState):
            return NotImplemented
        return self.rank <= other.rank


for _index, _state in enumerate(TaskState):
    _state._rank = _index
    _state._terminal = _index > list(TaskState).index(TaskState.RUNNING)
del _index, _state


class NodeStatus(enum.Enum):
    UNKNOWN = "unknown"
    READY = "ready"
    DOWN = "down"


class Availability(enum.Enum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


class NodeRole(enum.Enum):
    MANAGER = "manager"
    WORKER = "worker"


class ServiceMode(enum.Enum):
    REPLICATED = "replicated"
    GLOBAL = "global"
    REPLICATED_JOB = "replicated-job"  # runs `replicas` completions, at most max_concurrent at once
    GLOBAL_JOB = "global-job"  # runs once to completion on every eligible node

    @property
    def is_job(self) -> bool:
        return self in (ServiceMode.REPLICATED_JOB, ServiceMode.GLOBAL_JOB)

    @property
    def is_global(self) -> bool:
        return self in (ServiceMode.GLOBAL, ServiceMode.GLOBAL_JOB)


class Protocol(enum.Enum):
    TCP = "tcp"
    UDP = "udp"


class PublishMode(enum.Enum):
    INGRESS = "ingress"
    HOST = "host"


class RestartCondition(enum.Enum):
    ANY = "any"
    ON_FAILURE = "on-failure"
    NONE = "none"


class ConstraintOp(enum.Enum):
    EQ = "=="
    NE = "!="


@dataclass(frozen=True)
class PortConfig:
    published: int
    target: int
    protocol: Protocol = Protocol.TCP
    mode: PublishMode = PublishMode.INGRESS

    def __str__(self) -> str:
        text = f"*:{self.published}->{self.target}/{self.protocol.value}"
        return text if self.mode is PublishMode.INGRESS else f"{text} (host)"


@dataclass(frozen=True)
class Constraint:
    """`key op value`, e.g. node.hostname==node-01 or node.labels.zone!=east.

    The store keeps the three fields (model.codec), never the text to split again; the text (`str()`) is
    for the API and for people, and the parser reads it back as the same constraint (it refuses a value
    that holds an operator)."""

    key: str
    op: ConstraintOp
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op.value}{self.value}"


@dataclass(frozen=True)
class RestartPolicy:
    condition: RestartCondition = RestartCondition.ANY
    delay: float = 5.0
    max_attempts: int = 0  # 0 means unlimited, as in swarm
    window: float = 0.0  # 0 means attempts are counted over the task's whole life


class MountType(enum.Enum):
    VOLUME = "volume"
    BIND = "bind"
    TMPFS = "tmpfs"


@dataclass(frozen=True)
class Mount:
    """`--mount type=volume,source=data,target=/data,readonly`: docker's mount, made on the task's node."""

    type: MountType
    target: str
    source: str = ""  # a volume name (created on the node when missing) or a host path; empty for tmpfs
    readonly: bool = False
    volume_driver: str = ""
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_nocopy: bool = False
    bind_propagation: str = ""
    tmpfs_size: int = 0  # bytes; 0: the engine's default
    tmpfs_mode: int = 0  # file mode bits; 0: the engine's default (1777)


@dataclass(frozen=True)
class Resources:
    """Limits become the container's; reservations are scheduled against each node's capacity.
    CPUs are in nano CPUs (1e9 = one CPU), memory in bytes, as the engine API counts them; 0 = none."""

    limit_nano_cpus: int = 0
    limit_memory: int = 0
    limit_pids: int = 0
    reserve_nano_cpus: int = 0
    reserve_memory: int = 0


@dataclass(frozen=True)
class HealthCheck:
    """docker's HEALTHCHECK. test: () keeps the image's own check; ("NONE",) disables it (--no-healthcheck);
    otherwise ("CMD-SHELL", "cmd") or ("CMD", arg, ...). Durations in seconds; 0 = the engine's default."""

    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    retries: int = 0
    start_period: float = 0.0

    @property
    def disabled(self) -> bool:
        return self.test == ("NONE",)


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class FileReference:
    """A secret or config given to a service's tasks as a file: `source=NAME,target=PATH,uid,gid,mode`.
    A secret's target is relative to /run/secrets/ (the name by default); a config's is an absolute path
    (/NAME by default)."""

    name: str  # the secret's or config's name, as the user gave it
    target: str
    id: str = ""  # the object's id, resolved by the manager when the service is created or updated
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    mode: ServiceMode = ServiceMode.REPLICATED
    replicas: int = 1
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortConfig, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    placement_prefs: tuple[str, ...] = ()  # label keys, from `spread=node.labels.KEY`
    max_replicas_per_node: int = 0  # 0 means unlimited
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_period: float = 10.0
    force_update: int = 0  # bumped by `service update --force` to replace every task
    max_concurrent: int = 0  # replicated jobs: tasks run at once; 0 means `replicas`
    # Container settings, with docker service create's flag names (see planners/containers.py).
    entrypoint: tuple[str, ...] | None = None  # None: the image's; () clears it (--entrypoint "")
    workdir: str = ""
    user: str = ""
    hostname: str = ""  # may hold swarm's templates: {{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}
    init: bool | None = None  # None: the engine's default
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: tuple[Ulimit, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    log_driver: str = ""
    log_opts: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    mounts: tuple[Mount, ...] = ()
    resources: Resources = field(default_factory=Resources)
    healthcheck: HealthCheck | None = None  # None: the image's own
    secrets: tuple[FileReference, ...] = ()
    configs: tuple[FileReference, ...] = ()

    def ingress_ports(self) -> tuple[PortConfig, ...]:
        return tuple(p for p in self.ports if p.mode is PublishMode.INGRESS)


@dataclass
class Service:
    id: str
    spec: ServiceSpec
    version: int = 1
    # --with-registry-auth: the client's registry credentials, sealed by the store (never shown, never logged).
    registry_auth: str = field(default="", repr=False)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class Node:
    id: str
    hostname: str
    engine_url: str
    addr: str  # the address other nodes and clients reach this node at
    role: NodeRole = NodeRole.WORKER
    availability: Availability = Availability.ACTIVE
    status: NodeStatus = NodeStatus.UNKNOWN
    labels: dict[str, str] = field(default_factory=dict)
    engine_id: str = ""
    engine_version: str = ""
    # What the engine reported when the node registered: reservations are scheduled against it.
    nano_cpus: int = 0
    memory_bytes: int = 0
    leader: bool = False
    status_message: str = ""
    # Ingress: None until the first sync; then whether the node's rules match the cluster's.
    ingress_synced: bool | None = None
    ingress_error: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return self.status is NodeStatus.READY

    @property
    def schedulable(self) -> bool:
        return self.status is NodeStatus.READY and self.availability is Availability.ACTIVE


@dataclass(slots=True)  # the most numerous object: slots make it smaller and its attributes faster to read
class Task:
    id: str
    service_id: str
    slot: int  # 1..N for replicated services; 0 for global services (keyed by node)
    node_id: str = ""
    desired_state: TaskState = TaskState.RUNNING
    state: TaskState = TaskState.NEW
    message: str = ""
    error: str = ""
    container_id: str = ""
    # container port/protocol -> host port the engine chose ("80/tcp" -> 32768); endpoints for the mesh.
    host_ports: dict[str, int] = field(default_factory=dict)
    spec_version: int = 1  # the service version this task was made from
    spec_digest: str = ""  # digest of the task-affecting part of the spec; a change means replace
    container_addr: str = ""  # the container's IP on its node's bridge
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    state_changed_at: float = field(default_factory=time.time)

    @property
    def active(self) -> bool:
        """Counts toward a service's replicas: wanted running and not yet ended."""
        return self.desired_state is TaskState.RUNNING and not self.state.terminal


@dataclass(frozen=True)
class Endpoint:
    """One running task's published port, as the mesh forwards to it."""

    node_addr: str
    host_port: int
    task_id: str
    # Set for the task's own node: there the mesh DNATs straight to the container.
    container_addr: str = ""
    target_port: int = 0


@dataclass(frozen=True)
class ContainerInfo:
    """What an engine reports about one of our containers."""

    id: str
    name: str
    labels: dict[str, str]
    status: str  # docker's: created, running, exited, dead, removing, paused, restarting
    exit_code: int = 0
    error: str = ""
    host_ports: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    container_addr: str = ""
    health: str = ""  # docker's: "" (no health check), starting, healthy, unhealthy

    @property
    def task_id(self) -> str:
        return self.labels.get(LABEL_TASK_ID, "")


@dataclass(frozen=True)
class PortBinding:
    """How a container port is bound on its node: host_port 0 lets the engine choose one."""

    target: int
    protocol: Protocol
    host_port: int = 0


@dataclass(frozen=True)
class ContainerOptions:
    """A service's container settings as the engine applies them: the same for all of its tasks."""

    entrypoint: tuple[str, ...] | None = None
    workdir: str = ""
    user: str = ""
    init: bool | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: tuple[Ulimit, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    log_driver: str = ""
    log_opts: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    mounts: tuple[Mount, ...] = ()
    resources: Resources = field(default_factory=Resources)
    healthcheck: HealthCheck | None = None


NO_OPTIONS = ContainerOptions()


@dataclass(frozen=True)
class FileMount:
    """A file on the task's node (a secret's or config's, written there for the task), bound read-only."""

    host_path: str
    target: str


@dataclass(frozen=True)
class ContainerSpec:
    """Everything an engine needs to run one task's container."""

    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[str, ...]
    labels: dict[str, str]
    ports: tuple[PortBinding, ...]
    stop_timeout: int = 10
    options: ContainerOptions = NO_OPTIONS
    hostname: str = ""
    files: tuple[FileMount, ...] = ()


@dataclass(frozen=True)
class EngineInfo:
    id: str
    hostname: str
    version: str
    api_version: str = ""
    ncpu: int = 0
    memory: int = 0
