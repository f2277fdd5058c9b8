"""The manager: cluster state, the reconcile loop, and one agent per node.

Decisions come from the pure planners (reconcile plan, scheduler, ingress rules); this module keeps the
state, persists it, and carries the decisions out on the engines. One lock guards the state; engine I/O
always happens outside it, on a worker pool shared by all nodes (each node has its own queue, at most
per_node_parallelism of its jobs run at once).

Built to stay cheap at thousands of nodes and 100k+ tasks: the threads do not grow with the cluster (one
heartbeat scheduler and a bounded ping pool; only the event streams, which block on I/O, are one per node),
and a reconcile pass costs what changed since the last one, not the size of the cluster: services are
re-planned only when something that matters to their plan changed, and only tasks that changed, or whose
node did, are looked at for engine actions. Nothing happens while nothing changes.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import hmac
import itertools
import logging
import os
import secrets
import shutil
import string
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyswarm.drivers.engine import (
    WATCHED_EVENTS,
    ContainerEvent,
    DockerEngine,
    Engine,
    EngineError,
    EngineHostUnreachable,
    EngineUnreachable,
    ImageNotFound,
    TlsFiles,
)
from pyswarm.drivers.host import HostError, forget_host_key, trust_pinned_host_key
from pyswarm.manager.store import Store, secure_dir, task_row
from pyswarm.manager.workers import JobPool
from pyswarm.model import (
    LABEL_TASK_ID,
    Availability,
    ContainerInfo,
    ContainerSpec,
    EngineInfo,
    Node,
    NodeRole,
    NodeStatus,
    PublishMode,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
)
from pyswarm.model.parse import SpecError, check_port_conflicts
from pyswarm.planners.containers import container_spec, container_template, endpoints, task_name
from pyswarm.planners.reconcile import plan_service, task_spec_digest
from pyswarm.planners.scheduler import schedule

log = logging.getLogger("pyswarm.manager")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_BYTES = bytes(ord(_ID_ALPHABET[b % len(_ID_ALPHABET)]) for b in range(256))
# A node's status message once it ran `swarm leave`; its tasks' message too.
LEFT = "node left the swarm"
# How long (seconds) `swarm leave` waits for the node's containers to be removed; the rest goes on behind.
_LEAVE_WAIT = 5.0
_LEFT_UNREACHABLE = (
    "node %s left the swarm, but its engine cannot be reached: its task containers were not removed (%s)"
)
# Ports the mesh must never take over on every node: SSH is how the manager reaches the hosts.
RESERVED_PORTS = frozenset({22})
# Engines pick tasks' host ports from Linux's ephemeral range; a mesh port there would capture them.
EPHEMERAL_PORTS = range(32768, 61000)


_ID_LENGTH = 25
_IDS_PER_READ = 256
_ids: list[str] = []  # made ahead, from one urandom read: a pass makes an id per new task
os.register_at_fork(after_in_child=_ids.clear)  # a forked child must not hand out its parent's ids


def new_id() -> str:
    """25 lowercase alphanumerics, like swarm's object IDs: one random byte each, about 129 bits in all.
    (One urandom call and one translate per 256 ids; list.pop is atomic, so no id is handed out twice.)"""
    try:
        return _ids.pop()
    except IndexError:
        pass
    chars = os.urandom(_ID_LENGTH * _IDS_PER_READ).translate(_ID_BYTES).decode()
    fresh = [chars[i : i + _ID_LENGTH] for i in range(0, len(chars), _ID_LENGTH)]
    mine = fresh.pop()
    _ids.extend(fresh)
    return mine


def tune_gc() -> None:
    """Fewer cyclic garbage collections, for a process that runs a manager.

    A manager holds a large heap that lives long (a Task, its dicts and tuples per task) and makes few
    reference cycles; refcounting frees nearly everything. With CPython's default thresholds (700, 10, 10)
    the collector's passes over that heap took about 20 % of the CPU of a 150k-task ramp (perf, bench sim).
    Here the youngest generation is collected after 50,000 allocations instead of 700, the middle one after
    20 of those; the oldest keeps its default count (10 middle collections), and CPython adds its own rule:
    no full collection before the long-lived objects grew by a quarter."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), gen2)


def new_token(kind: str) -> str:
    return f"PSWTKN-1-{kind}-{secrets.token_hex(24)}"


# The heartbeat's and the resyncs' budgets over all nodes: past 500 nodes (at the default 500 ms) the heartbeat
# period stretches, and past 1,000 nodes the resync interval, so that the manager's steady work does not grow
# with the cluster. Over SSH each ping and each listing is a request that paramiko encrypts in this process;
# at 5,000 nodes the period is 5 s (swarm's own default) instead of 10,000 pings a second.
MAX_PINGS_PER_SECOND = 1000
MAX_RESYNCS_PER_SECOND = 100

# How long (seconds) the store thread holds back the row of a task being started, for its outcome.
_INFLIGHT_ROW_WAIT = 0.5
# An engine call at least this long (seconds) is a slow engine's: the node's other starts go in parallel.
_SLOW_START = 0.05
# What became of a task being started: its new state (None: unchanged), the message, the container when it
# runs, and whether the start is over (the task is no longer in flight).
_Outcome = tuple[Task, TaskState | None, str, ContainerInfo | None, bool]


class ManagerError(Exception):
    """A request the manager refuses; status is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Settings:
    data_dir: Path
    advertise_addr: str = "127.0.0.1"
    listen_port: int = 2377
    heartbeat: float = 0.5
    heartbeat_misses: int = 3  # or 2 when the second is a host that refuses TCP (see _ping_one)
    resync_interval: float = 10.0
    history_limit: int = 5
    per_node_parallelism: int = 8  # below sshd's MaxSessions
    engine_timeout: float = 30.0
    engine_workers: int = 64  # threads for engine calls, shared by all nodes


EngineFactory = Callable[[str, float], Engine]


def docker_engine_factory(url: str, timeout: float, tls: TlsFiles | None = None) -> Engine:
    # A LAN host's kernel accepts a TCP connect in milliseconds, however loaded: half the request timeout.
    return DockerEngine(url, timeout=timeout, tls=tls, connect_timeout=min(3.0, max(timeout / 2, 0.5)))


@dataclass(frozen=True)
class TlsPem:
    """A tcp:// engine's client credentials as PEM text, as the API receives them."""

    ca: str
    cert: str
    key: str


class IngressSync:
    """Hook for the routing mesh; the manager calls it when endpoints or nodes change."""

    def node_changed(self, node: Node) -> None: ...
    def endpoints_changed(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class NodeAgent:
    """What the manager keeps per node: engine clients, its queue of engine jobs, and liveness."""

    node_id: str
    url: str
    jobs: deque[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=deque)
    running: int = 0  # drainers of `jobs` on the shared workers
    busy: int = 0  # of them, those inside a job (the others are about to take one)
    engine: Engine | None = None
    heartbeat_engine: Engine | None = None
    misses: int = 0
    online: bool = False
    events_generation: int = 0
    last_event_time: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    last_resync: float = 0.0
    probed_ping: float = 0.0  # the start of the last unanswered ping whose host was checked


class Manager:
    def __init__(
        self,
        settings: Settings,
        engine_factory: EngineFactory = docker_engine_factory,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.store = store or Store(settings.data_dir)
        self.lock = threading.RLock()
        snapshot = self.store.load()
        self.meta = snapshot.meta
        self.nodes: dict[str, Node] = snapshot.nodes
        self.services: dict[str, Service] = snapshot.services
        self.tasks: dict[str, Task] = snapshot.tasks
        self.tasks_by_service: dict[str, dict[str, Task]] = {sid: {} for sid in self.services}
        self.tasks_by_node: dict[str, set[str]] = {}
        for task in self.tasks.values():
            if task.desired_state is TaskState.RUNNING and task.state in (TaskState.PREPARING, TaskState.STARTING):
                # A start the previous manager did not finish: start it again. The container name is the
                # task's, so a container it did create is adopted, never duplicated.
                task.state = TaskState.ASSIGNED
            self.tasks_by_service.setdefault(task.service_id, {})[task.id] = task
            if task.node_id:
                self.tasks_by_node.setdefault(task.node_id, set()).add(task.id)
        self.agents: dict[str, NodeAgent] = {}
        self.ingress: IngressSync = IngressSync()
        self._inflight: set[str] = set()
        self._removing: set[str] = set()
        self._dirty_tasks: set[str] = set()  # to write at the end of the pass
        self._dirty_services: set[str] = set(self.services)  # to re-plan
        # Tasks to look at for engine actions in the next pass: changed, or their node or service did.
        self._attention: set[str] = set(self.tasks)
        self._pending: set[str] = {t.id for t in self.tasks.values() if t.state is TaskState.PENDING}
        self._schedule_again = True  # capacity changed: unplaceable tasks may fit now
        # Services with tasks of an older spec: their rolling update waits for tasks to run.
        self._updating: set[str] = set(self.services)
        self._service_wakes: dict[str, float] = {}  # service -> when its plan is due again
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._passes_over = threading.Event()  # set by stop() once the loop thread ended: no pass flushes again
        self._loop_thread: threading.Thread | None = None
        self._next_wake: float | None = None
        self._jobs_lock = threading.Lock()
        self._outcomes: deque[_Outcome] = deque()  # from the workers, applied by the next pass
        self._early_events: dict[str, ContainerEvent] = {}  # task id -> its container's end, seen mid-start
        # Closed while a pass runs: workers start no engine call meanwhile. The pass is the critical path
        # (placement, persistence) and CPython's threads share one core: with dozens of busy workers, a pass
        # would get a small share of it and the lock with it.
        self._gate = threading.Event()
        self._gate.set()
        self._workers = JobPool(settings.engine_workers, "engine")
        # Per service: the spec and cluster ID its container template was made from, and the template. Workers
        # read and fill it without a lock (one dict operation each).
        self._templates: dict[str, tuple[ServiceSpec, str, ContainerSpec]] = {}
        # Tasks changed (and deleted) since the store thread last took them: it writes them behind the passes.
        # (The tasks themselves: the writer encodes each as it is when it gets to it, so a task that changes
        # several times before then is encoded and written once.)
        self._unwritten: dict[str, Task] = {}
        self._unwritten_deleted: list[str] = []
        self._writes_ready = threading.Condition(threading.Lock())
        self._writer = threading.Thread(target=self._write_loop, name="store", daemon=True)
        self._writer.start()
        self._pings = ThreadPoolExecutor(16, thread_name_prefix="ping")
        self._pings_in_flight: dict[str, tuple[float, NodeAgent]] = {}  # node id -> (when the ping began, agent)
        self._beats: list[tuple[float, int, NodeAgent]] = []  # heap of (due, tiebreak, agent)
        self._beats_changed = threading.Condition(threading.Lock())
        self._beat_counter = 0
        self._heartbeat_thread: threading.Thread | None = None
        self.started_at = time.time()
        self._adopted: set[str] = set()  # nodes whose containers were adopted since this start
        self._changes = threading.Condition(self.lock)
        self._change_counter = 0

    # --- cluster identity and tokens ----------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self.meta["cluster_id"]

    def initialise(self, local_engine_url: str, advertise_addr: str, availability: Availability) -> Node:
        """First start (`swarm init`): make the cluster and register this host's engine as Leader."""
        with self.lock:
            if "cluster_id" in self.meta:
                raise ManagerError(409, "this node is already part of a swarm")
            meta = {
                "cluster_id": new_id(),
                "created_at": str(time.time()),
                "token_worker": new_token("w"),
                "token_manager": new_token("m"),
                "token_client": new_token("c"),
            }
        info = self._probe_engine(local_engine_url)
        node = Node(
            id=new_id(),
            hostname=info.hostname,
            engine_url=local_engine_url,
            addr=advertise_addr,
            role=NodeRole.MANAGER,
            availability=availability,
            status=NodeStatus.UNKNOWN,
            engine_id=info.id,
            engine_version=info.version,
            leader=True,
        )
        meta["local_node_id"] = node.id
        with self.lock:
            self.store.write(meta=meta, nodes=[node])
            self.meta.update(meta)
            self.nodes[node.id] = node
        return node

    def token_role(self, presented: str) -> str | None:
        """Which credential a bearer token is: client, manager, worker, node:<id>, or None. Constant time."""
        presented_bytes = presented.encode()
        found: str | None = None
        for role in ("client", "manager", "worker"):
            expected = self.meta.get(f"token_{role}", "")
            if expected and hmac.compare_digest(presented_bytes, expected.encode()):
                found = role
        for node in list(self.nodes.values()):
            secret = self.meta.get(f"node_secret_{node.id}", "")
            if secret and hmac.compare_digest(presented_bytes, secret.encode()):
                found = f"node:{node.id}"
        return found

    def join_token(self, role: str, rotate: bool) -> str:
        if role not in ("worker", "manager"):
            raise ManagerError(400, f"unknown role {role!r}: expected worker or manager")
        with self.lock:
            if rotate:
                token = new_token(role[0])
                self.store.write(meta={f"token_{role}": token})
                self.meta[f"token_{role}"] = token
            return self.meta[f"token_{role}"]

    # --- nodes -------------------------------------------------------------------------------------

    def _tls_dir(self, url: str) -> Path:
        return self.settings.data_dir / "tls" / hashlib.sha256(url.encode()).hexdigest()[:16]

    def _connect(self, url: str, timeout: float, tls_dir: Path | None = None) -> Engine:
        """An engine client for url, with the TLS files stored for it when it is a tcp:// engine (or those
        in tls_dir: credentials being tried before they are stored)."""
        tls_dir = tls_dir or self._tls_dir(url)
        if url.startswith("tcp://") and (tls_dir / "key.pem").exists():
            tls = TlsFiles(ca=str(tls_dir / "ca.pem"), cert=str(tls_dir / "cert.pem"), key=str(tls_dir / "key.pem"))
            return self.engine_factory(url, timeout, tls)  # type: ignore[call-arg]
        return self.engine_factory(url, timeout)

    @contextlib.contextmanager
    def _trial_tls(self, tls: TlsPem | None) -> Iterator[Path | None]:
        """The TLS files of an engine being added, in a private (0700) temporary directory that is removed
        on the way out, whatever happens: they are only stored for good (_keep_tls) once the node is
        accepted, so a refused `node add` leaves no key on disk. The directory is in the data directory's
        tls/, on the same filesystem as their final place."""
        if tls is None:
            yield None
            return
        parent = secure_dir(self.settings.data_dir / "tls")
        trial = Path(tempfile.mkdtemp(prefix=".trial-", dir=parent))  # mode 0700
        try:
            for name, text in (("ca.pem", tls.ca), ("cert.pem", tls.cert), ("key.pem", tls.key)):
                fd = os.open(trial / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
            yield trial
        finally:
            shutil.rmtree(trial, ignore_errors=True)

    def _keep_tls(self, url: str, trial: Path) -> None:
        """Move the tried TLS files of an accepted engine to their place (each replaced atomically)."""
        tls_dir = secure_dir(self._tls_dir(url))
        for name in ("ca.pem", "cert.pem", "key.pem"):
            os.replace(trial / name, tls_dir / name)

    def _probe_engine(self, url: str, tls_dir: Path | None = None) -> EngineInfo:
        try:
            engine = self._connect(url, min(self.settings.engine_timeout, 15.0), tls_dir)
        except EngineError as exc:
            raise ManagerError(502, f"cannot reach engine {url}: {exc}") from None
        try:
            return engine.info()
        except EngineError as exc:
            raise ManagerError(502, f"engine {url} did not answer: {exc}") from None
        finally:
            engine.close()

    def add_node(
        self,
        engine_url: str,
        addr: str,
        expected_engine_id: str | None,
        role: NodeRole = NodeRole.WORKER,
        tls: TlsPem | None = None,
        insecure_tcp: bool = False,
        ssh_fingerprint: str | None = None,
    ) -> tuple[Node, str]:
        """Register an engine (`swarm join` or `node add`). Returns the node and its own secret.

        tcp:// engines need TLS credentials unless insecure_tcp; an ssh:// engine's host key must be in
        known_hosts already, or match ssh_fingerprint (then it is recorded there)."""
        parsed = urllib.parse.urlparse(engine_url)
        if parsed.scheme == "tcp" and tls is None and not insecure_tcp:
            raise ManagerError(
                400,
                f"engine {engine_url} is tcp:// without TLS: give its CA, certificate and key, "
                "or --insecure-tcp to accept an unauthenticated engine",
            )
        pinned_line: str | None = None
        if ssh_fingerprint:
            if parsed.scheme != "ssh":
                raise ManagerError(400, "an SSH host key fingerprint only applies to ssh:// engines")
            try:
                pinned_line = trust_pinned_host_key(parsed.hostname or "", parsed.port or 22, ssh_fingerprint)
            except ValueError as exc:
                raise ManagerError(400, str(exc)) from None
            except HostError as exc:
                raise ManagerError(403 if "pinned" in str(exc) else 502, str(exc)) from None
        try:
            return self._register_engine(engine_url, addr, expected_engine_id, role, tls)
        except BaseException:
            if pinned_line is not None:
                forget_host_key(pinned_line)  # refused: known_hosts as it was
            raise

    def _register_engine(
        self, engine_url: str, addr: str, expected_engine_id: str | None, role: NodeRole, tls: TlsPem | None
    ) -> tuple[Node, str]:
        """add_node once the engine's host key is trusted: probe the engine and record its node."""
        parsed = urllib.parse.urlparse(engine_url)
        if tls is not None and parsed.scheme != "tcp":
            raise ManagerError(400, "TLS credentials only apply to tcp:// engines")
        with self._trial_tls(tls) as trial:
            info = self._probe_engine(engine_url, trial)
            if expected_engine_id is not None and not hmac.compare_digest(info.id, expected_engine_id):
                raise ManagerError(
                    403,
                    f"engine at {engine_url} is not the engine that asked to join (engine ID differs): "
                    "check --advertise-engine",
                )
            stale: NodeAgent | None = None
            with self.lock:
                node = self._registered(info)
                if trial is not None:
                    self._keep_tls(engine_url, trial)
                if node is None:
                    node = Node(
                        id=new_id(),
                        hostname=info.hostname,
                        engine_url=engine_url,
                        addr=addr,
                        role=role,
                        status=NodeStatus.READY,  # it just answered; the heartbeat takes over from here
                        engine_id=info.id,
                        engine_version=info.version,
                    )
                    secret = new_token("n")
                    self.store.write(nodes=[node], meta={f"node_secret_{node.id}": secret})
                    self.meta[f"node_secret_{node.id}"] = secret
                    self.nodes[node.id] = node
                else:
                    # A re-join of a known engine: refresh its address, keep its identity.
                    node.engine_url, node.addr = engine_url, addr
                    node.role = role if not node.leader else node.role
                    node.status_message = ""  # it left, but is back: the heartbeat may mark it Ready again
                    node.updated_at = time.time()
                    self.store.write(nodes=[node])
                    secret = self.meta.get(f"node_secret_{node.id}", "")
                    agent = self.agents.get(node.id)
                    if agent is not None and agent.url != engine_url:
                        stale = self.agents.pop(node.id)  # it pings the old URL
                self._start_agent(node)
                self._node_changed(node.id)
        if stale is not None:
            self._stop_agent(stale)
        self._notify()
        return node, secret

    def _registered(self, info: EngineInfo) -> Node | None:
        """The node of an engine being added that is known already (lock held), if it may re-join: only a
        node that is Down (its engine unreachable, or it left the swarm) may. Else a 409, like docker's
        "This node is already part of a swarm"; nothing is changed."""
        for existing in self.nodes.values():
            if existing.engine_id != info.id:
                continue
            if existing.status is NodeStatus.DOWN:
                return existing
            raise ManagerError(
                409,
                f"engine {info.id[:12]} is already in the swarm as {existing.hostname} "
                f"(status {existing.status.value}): this node is already part of a swarm; to add it again, run "
                f"`pyswarm swarm leave` on it first, or remove it with `pyswarm node rm --force {existing.hostname}`",
            )
        return None

    def find_node(self, ref: str) -> Node:
        with self.lock:
            if ref in self.nodes:
                return self.nodes[ref]
            matches = [n for n in self.nodes.values() if n.hostname == ref] or [
                n for n in self.nodes.values() if n.id.startswith(ref)
            ]
            if len(matches) == 1 and ref:
                return matches[0]
            if len(matches) > 1:
                raise ManagerError(409, f"node {ref!r} is ambiguous ({len(matches)} matches)")
            raise ManagerError(404, f"node {ref[:80]!r} not found")

    def update_node(
        self,
        ref: str,
        availability: Availability | None = None,
        label_add: dict[str, str] | None = None,
        label_rm: list[str] | None = None,
        role: NodeRole | None = None,
    ) -> Node:
        with self.lock:
            node = self.find_node(ref)
            updated = replace(node, labels=dict(node.labels), updated_at=time.time())
            if availability is not None:
                updated.availability = availability
            for key in label_rm or ():
                if key not in updated.labels:
                    raise ManagerError(400, f"label {key!r} is not set on node {node.hostname}")
                del updated.labels[key]
            updated.labels.update(label_add or {})
            if role is not None:
                if node.leader and role is NodeRole.WORKER:
                    raise ManagerError(400, "the leader cannot be demoted: it is the only manager")
                updated.role = role
            self.store.write(nodes=[updated])
            self.nodes[node.id] = updated
            self._node_changed(node.id)
        self._notify()
        return updated

    def remove_node(self, ref: str, force: bool) -> None:
        with self.lock:
            node = self.find_node(ref)
            if node.leader:
                raise ManagerError(400, f"node {node.hostname} is the leader; use `swarm leave --force` on it")
            if node.status is NodeStatus.READY and not force:
                raise ManagerError(
                    400,
                    f"node {node.hostname} is not down and can't be removed: run `swarm leave` on it, or use --force",
                )
            agent = self.agents.pop(node.id, None)
            on_node = (self.tasks[t] for t in self.tasks_by_node.get(node.id, ()) if t in self.tasks)
            orphaned = [t for t in on_node if not t.state.terminal]
            for task in orphaned:
                self._set_state(task, TaskState.ORPHANED, "node removed")
                task.desired_state = TaskState.SHUTDOWN
            # The tasks are written by the next pass (only passes write tasks, in order); after a crash
            # before that, tasks on a node that is gone are shut down and replaced all the same.
            self.store.write(delete_nodes=[node.id])
            del self.nodes[node.id]
            self._node_changed(node.id)
        if agent is not None:
            self._stop_agent(agent)
        self._notify()

    def node_left(self, node_id: str) -> None:
        """A worker ran `swarm leave`: it stays listed, Down, as in swarm, and its tasks are shut down and
        replaced elsewhere. As docker's `swarm leave`, its task containers are removed from its engine
        (best effort), then its agent is stopped. That runs in the background; the answer waits for it a
        few seconds at most (the CLI gives up after 10)."""
        with self.lock:
            node = self.nodes.get(node_id)
            if node is None:
                raise ManagerError(404, "node not found")
            agent = self.agents.pop(node_id, None)
            node.status, node.status_message = NodeStatus.DOWN, LEFT
            self.store.write(nodes=[node])
            self._node_changed(node_id)
            for task_id in self.tasks_by_node.get(node_id, ()):
                task = self.tasks.get(task_id)
                if task is not None and task.desired_state is TaskState.RUNNING and not task.state.terminal:
                    # Wanted down, not ended on its own: replaced at once, without the restart delay.
                    task.desired_state, task.message, task.updated_at = TaskState.SHUTDOWN, LEFT, time.time()
                    self._dirty_tasks.add(task.id)
                    self._attention.add(task.id)
                    self._dirty_services.add(task.service_id)
        if agent is not None:
            agent.stop.set()  # no new engine job starts on it: no container is made behind the cleanup
            cleanup = threading.Thread(
                target=self._leave_engine, args=(agent, node.hostname), name=f"leave-{node_id[:8]}", daemon=True
            )
            cleanup.start()
            cleanup.join(_LEAVE_WAIT)
        self._notify()

    def _leave_engine(self, agent: NodeAgent, hostname: str) -> None:
        """Remove the task containers of this cluster from a node that left, record their tasks as shut
        down, then stop the node's agent."""
        try:
            deadline = time.monotonic() + self.settings.engine_timeout
            while agent.busy and time.monotonic() < deadline:  # let a start in progress end (its container
                time.sleep(0.02)  # is then listed below)
            with self.lock:
                self._apply_outcomes()  # what those starts made is on the tasks before the listing
            try:
                engine = self._connect(agent.url, self.settings.engine_timeout)
            except EngineError as exc:
                log.warning(_LEFT_UNREACHABLE, hostname, exc)
                return
            try:
                self._remove_left_containers(agent.node_id, hostname, engine)
            finally:
                engine.close()
        except Exception:
            log.exception("cleaning up node %s after it left the swarm failed", hostname)
        finally:
            self._stop_agent(agent)

    def _remove_left_containers(self, node_id: str, hostname: str, engine: Engine) -> None:
        try:
            containers = engine.containers(self.cluster_id)
        except EngineError as exc:
            log.warning(_LEFT_UNREACHABLE, hostname, exc)
            return
        removed = 0
        for container in containers:
            with self.lock:
                grace = self._stop_grace(container.task_id)
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
            with self.lock:
                task = self.tasks.get(container.task_id)
                if (
                    task is not None
                    and task.node_id == node_id
                    and task.container_id == container.id
                    and not task.state.terminal
                    and task.id not in self._inflight
                ):
                    task.desired_state = TaskState.SHUTDOWN  # (node_left did, unless it was placed since)
                    self._set_state(task, TaskState.SHUTDOWN, LEFT)
                    self._dirty_services.add(task.service_id)
            self._notify()
        log.info("node %s left the swarm: %d of its task containers removed", hostname, removed)

    # --- services ----------------------------------------------------------------------------------

    def find_service(self, ref: str) -> Service:
        with self.lock:
            if ref in self.services:
                return self.services[ref]
            matches = [s for s in self.services.values() if s.spec.name == ref] or [
                s for s in self.services.values() if ref and s.id.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ManagerError(409, f"service {ref!r} is ambiguous ({len(matches)} matches)")
            raise ManagerError(404, f"service {ref[:80]!r} not found")

    def _check_spec(self, spec: ServiceSpec, service_id: str | None) -> None:
        try:
            check_port_conflicts(spec.ports)
        except SpecError as exc:
            raise ManagerError(400, str(exc)) from None
        if spec.mode is ServiceMode.GLOBAL and spec.replicas not in (0, 1):
            raise ManagerError(400, "replicas can only be used with replicated mode")
        for port in spec.ports:
            if port.published in RESERVED_PORTS or port.published == self.settings.listen_port:
                raise ManagerError(400, f"published port {port.published} is reserved (SSH or the manager listen port)")
            if port.mode is PublishMode.INGRESS and port.published in EPHEMERAL_PORTS:
                raise ManagerError(
                    400,
                    f"published port {port.published} is in the engines' ephemeral range 32768-60999, where tasks' "
                    "host ports live; choose a port below 32768",
                )
        for other in self.services.values():
            if other.id == service_id:
                continue
            if other.spec.name == spec.name:
                raise ManagerError(409, f"service name {spec.name!r} is already in use by service {other.id[:12]}")
            for mine in spec.ports:
                for theirs in other.spec.ports:
                    if mine.published != theirs.published or mine.protocol is not theirs.protocol:
                        continue
                    if mine.mode is PublishMode.HOST and theirs.mode is PublishMode.HOST:
                        continue  # host-mode ports only clash per node; the scheduler keeps them apart
                    raise ManagerError(
                        409,
                        f"port '{mine.published}/{mine.protocol.value}' is already in use by service "
                        f"'{other.spec.name}' ({other.id[:12]})",
                    )

    def create_service(self, spec: ServiceSpec) -> Service:
        with self.lock:
            self._check_spec(spec, None)
            service = Service(id=new_id(), spec=spec)
            self.store.write(services=[service])  # durable before we answer
            self.services[service.id] = service
            self.tasks_by_service[service.id] = {}
            self._dirty_services.add(service.id)
        self._notify()
        return service

    def update_service(self, ref: str, spec: ServiceSpec, version: int) -> Service:
        with self.lock:
            current = self.find_service(ref)
            if version != current.version:
                raise ManagerError(
                    409,
                    f"update out of sequence: service {current.spec.name} is at version {current.version}, "
                    f"the update was made against version {version}; read it again and retry",
                )
            if spec.name != current.spec.name:
                raise ManagerError(400, "a service cannot be renamed")
            if spec.mode is not current.spec.mode:
                raise ManagerError(400, "a service's mode cannot be changed")
            self._check_spec(spec, current.id)
            updated = replace(current, spec=spec, version=current.version + 1, updated_at=time.time())
            self.store.write(services=[updated])
            self.services[current.id] = updated
            self._dirty_services.add(current.id)
            self._updating.add(current.id)  # until a pass finds no task of another spec
            self._schedule_again = True  # e.g. constraints or max-per-node relaxed
        self._notify()
        return updated

    def remove_service(self, ref: str) -> Service:
        with self.lock:
            service = self.find_service(ref)
            tasks = list(self.tasks_by_service.get(service.id, {}).values())
            for task in tasks:
                task.desired_state = TaskState.SHUTDOWN
                task.message = "service removed"
            # Durable now: the service is gone. Its tasks are written by the next pass (only passes write
            # tasks, in order); after a crash before that, tasks of a missing service are shut down anyway.
            self.store.write(delete_services=[service.id])
            self._dirty_tasks.update(t.id for t in tasks)
            del self.services[service.id]
            self._attention.update(t.id for t in tasks)
            self._dirty_services.add(service.id)  # the pass tells watchers and the mesh
            self._schedule_again = True
        self._notify()
        return service

    # --- the reconcile loop ------------------------------------------------------------------------

    def start(self) -> None:
        tune_gc()
        with self.lock:
            for node in self.nodes.values():
                self._start_agent(node)
        self._loop_thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._loop_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with self._beats_changed:
            self._beats_changed.notify()
        for agent in list(self.agents.values()):
            self._stop_agent(agent)
        self._workers.shutdown()
        self._pings.shutdown(wait=False, cancel_futures=True)
        self.ingress.stop()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=5)
        self._passes_over.set()  # (the writer ends once it has written what the last pass flushed)
        with self._writes_ready:
            self._writes_ready.notify()
        self._writer.join(timeout=30)  # what the passes wrote lands before the store closes

    def replan_all(self) -> None:
        """Have the next pass re-plan every service, as a node change does."""
        with self.lock:
            self._dirty_services.update(self.services)
        self._notify()

    def _node_changed(self, node_id: str) -> None:
        """A node appeared, went, or changed status, availability, labels or role (lock held): every
        service's plan may change, unplaceable tasks may fit, and the node's tasks may need actions."""
        self._dirty_services.update(self.services)
        self._schedule_again = True
        self._attention.update(self.tasks_by_node.get(node_id, ()))

    def _notify(self) -> None:
        # Event.set takes a lock; dozens of workers call this per task. If the flag is up, the loop has not
        # cleared it yet, and the pass it runs after clearing it sees what the caller changed before.
        if not self._wake.is_set():
            self._wake.set()

    def _changed(self) -> None:
        """Wake API clients waiting on state changes (progress displays, --watch)."""
        self._change_counter += 1
        self._changes.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        with self._changes:
            if self._change_counter == seen:
                self._changes.wait(timeout)
            return self._change_counter

    def _loop(self) -> None:
        took = 0.0
        while not self._stopping.is_set():
            # No polling: a pass runs when something changed, or when a service's plan falls due.
            timeout = None if self._next_wake is None else max(0.0, self._next_wake - time.time())
            self._wake.wait(timeout)
            if self._stopping.is_set():
                return
            self._wake.clear()
            # Debounce: let a burst of events land in one pass. Under a stream of changes, wait as long as
            # the last pass took: passes then take at most half of the time (and of the lock), and each
            # one does more of the work (placing a batch costs a pass over the cluster's tasks).
            time.sleep(min(max(0.01, took), 0.2))
            began = time.monotonic()
            try:
                self.reconcile_once()
            except Exception:  # the loop must survive a bad pass; the next one retries
                log.exception("reconcile pass failed")
                time.sleep(0.5)
            took = time.monotonic() - began

    def reconcile_once(self) -> None:
        """One pass: plan services, schedule, persist, then hand actions to node workers."""
        now = time.time()
        starts: list[tuple[Task, Service]] = []
        removals: list[tuple[str, str, str]] = []
        deleted: list[str] = []
        self._gate.clear()
        try:
            with self.lock:
                changed = self._plan(now, starts, removals, deleted)
                agents = dict(self.agents)
        finally:
            self._gate.set()
        # One job per node; it spreads over more workers if that node's engine is slow (see _run_tasks).
        by_node: dict[str, list[tuple[Task, Service]]] = {}
        for item in starts:
            by_node.setdefault(item[0].node_id, []).append(item)
        for node_id, items in by_node.items():
            agent = agents.get(node_id)
            if agent is None or not self._submit(agent, self._run_tasks, node_id, items):
                self._outcomes.extend((task, TaskState.ASSIGNED, "not started", None, True) for task, _ in items)
                self._notify()
        for node_id, container_id, task_id in removals:
            agent = agents.get(node_id)
            if agent is None or not self._submit(agent, self._remove_container, node_id, container_id, task_id):
                with self.lock:
                    self._removing.discard(container_id)
        if changed:
            self.ingress.endpoints_changed()

    def _plan(
        self, now: float, starts: list[tuple[Task, Service]], removals: list[tuple[str, str, str]], deleted: list[str]
    ) -> bool:
        """The locked part of a pass. Returns whether anything changed."""
        self._apply_outcomes()
        due = [s for s, at in self._service_wakes.items() if at <= now]
        for service_id in due:
            del self._service_wakes[service_id]
        self._dirty_services.update(due)
        dirty, self._dirty_services = self._dirty_services, set()
        for service_id in dirty:
            service = self.services.get(service_id)
            if service is None:
                continue
            tasks = self.tasks_by_service.setdefault(service_id, {})
            plan = plan_service(
                service, list(tasks.values()), self.nodes, now, new_id, history_limit=self.settings.history_limit
            )
            for task_id, reason in plan.shutdown.items():
                task = tasks[task_id]
                task.desired_state = TaskState.SHUTDOWN
                task.message = reason
                task.updated_at = now
                self._dirty_tasks.add(task_id)
                self._attention.add(task_id)
                self._schedule_again = True  # it no longer counts toward max-per-node
            for task in plan.create:
                tasks[task.id] = task
                self.tasks[task.id] = task
                self._dirty_tasks.add(task.id)
                self._attention.add(task.id)
                self._pending.add(task.id)
                self._schedule_again = True
                if task.node_id:
                    self.tasks_by_node.setdefault(task.node_id, set()).add(task.id)
            for task_id in plan.delete:
                doomed = tasks.get(task_id)
                # _removing holds container IDs: keep the task until its container is gone.
                if task_id in self._inflight or (doomed is not None and doomed.container_id in self._removing):
                    continue
                self._forget_task(tasks, task_id, deleted)
            self._service_wakes.pop(service_id, None)
            if plan.wake_at is not None:
                self._service_wakes[service_id] = plan.wake_at
            if service_id in self._updating:
                digest = task_spec_digest(service.spec)
                if all(t.spec_digest == digest for t in tasks.values()):
                    self._updating.discard(service_id)
        self._next_wake = min(self._service_wakes.values(), default=None)
        self._schedule_pending(now)
        self._collect_actions(starts, removals, deleted)
        flushed = self._flush(deleted)
        changed = flushed or bool(dirty)
        if changed:
            self._changed()
        return changed

    def _flush(self, deleted: list[str]) -> bool:
        """Hand the tasks changed since the last flush to the store thread (lock held).

        That one thread writes them behind the passes, and it is the only one that writes tasks (API calls
        write services and nodes): passes go on meanwhile, and a task changed by several passes before it
        gets to them is written once. A start may so run before its task's row lands; after a crash, a
        container whose task the store does not place on its node is a stray, removed by resync, and the
        task is placed again."""
        if not self._dirty_tasks and not deleted:
            return False
        tasks, unwritten = self.tasks, self._unwritten
        for task_id in self._dirty_tasks:
            task = tasks.get(task_id)
            if task is not None:
                unwritten[task_id] = task
        for task_id in deleted:
            unwritten.pop(task_id, None)
        self._unwritten_deleted.extend(deleted)
        self._dirty_tasks = set()
        with self._writes_ready:
            self._writes_ready.notify()
        return True

    def _write_loop(self) -> None:
        # Rows are encoded under the lock (tasks change under it), up to 8 parts at a time: a pass waits for
        # that encoding at most (~25 ms), and the writer does not wait for a whole pass per part (taking one
        # part at a time, it wrote 2,047 rows per pass at 5k nodes, and the running rows lagged seconds).
        # Each part is one transaction: a service or node write waits for one part's write at most.
        taken_at_once = self.store.rows_per_statement * 8
        all_in_flight = False
        while True:
            with self._writes_ready:
                if all_in_flight:  # until a pass applies outcomes (it flushes and notifies), or starts age
                    self._writes_ready.wait(_INFLIGHT_ROW_WAIT / 2)
                while not (self._unwritten or self._unwritten_deleted) and not self._passes_over.is_set():
                    self._writes_ready.wait()
            with self.lock:
                if not (self._unwritten or self._unwritten_deleted):
                    if self._passes_over.is_set():
                        return  # and all written
                    continue
                unwritten, now = self._unwritten, time.time()
                # A task whose start began less than _INFLIGHT_ROW_WAIT ago is left for later (unless the
                # writer is stopping): on a fast engine its outcome comes first, and it is written once, not
                # twice. A slow start still gets its row soon, so that a manager restarted after a crash
                # adopts its container by name instead of removing it as a stray (see _flush).
                inflight = () if self._passes_over.is_set() else self._inflight
                ids = [
                    t
                    for t in itertools.islice(unwritten, 8 * taken_at_once)
                    if t not in inflight or now - unwritten[t].updated_at >= _INFLIGHT_ROW_WAIT
                ]
                taken = [(task_id, unwritten.pop(task_id)) for task_id in ids[:taken_at_once]]
                deleted, self._unwritten_deleted = self._unwritten_deleted, []
                all_in_flight = not taken and not deleted
                if all_in_flight:
                    continue
                rows = [task_row(task) for _, task in taken]
            try:
                self.store.write_task_rows(rows, deleted)
            except Exception:
                log.exception("writing %d tasks failed; trying again in a second", len(rows))
                with self.lock:
                    for task_id, task in taken:
                        if self.tasks.get(task_id) is task:
                            self._unwritten.setdefault(task_id, task)
                    self._unwritten_deleted.extend(deleted)
                time.sleep(1.0)  # (not _stopping.wait: while the manager stops, that would spin)

    def _forget_task(self, tasks: dict[str, Task], task_id: str, deleted: list[str]) -> None:
        task = tasks.pop(task_id, None)
        self.tasks.pop(task_id, None)
        if task is not None and task.node_id:
            self.tasks_by_node.get(task.node_id, set()).discard(task_id)
        self._dirty_tasks.discard(task_id)
        self._attention.discard(task_id)
        self._pending.discard(task_id)
        self._early_events.pop(task_id, None)
        deleted.append(task_id)

    def _schedule_pending(self, now: float) -> None:
        # Tasks that could not be placed before are tried again only when capacity may have changed.
        if not self._schedule_again:
            return
        self._schedule_again = False
        pending = []
        for task_id in list(self._pending):
            t = self.tasks.get(task_id)
            if t is None or t.state is not TaskState.PENDING or t.desired_state is not TaskState.RUNNING:
                self._pending.discard(task_id)
            elif t.service_id in self.services:
                pending.append(t)
        if not pending:
            return
        # Stopping tasks still hold their host ports until their container is gone.
        # (._terminal: .terminal without a property call per task; this reads every task of the cluster)
        placed = [
            t for t in self.tasks.values() if t.node_id and not t.state._terminal and t.state is not TaskState.PENDING
        ]
        result = schedule(pending, self.services, list(self.nodes.values()), placed)
        for task_id, node_id in result.assignments.items():
            task = self.tasks[task_id]
            if task.node_id != node_id:
                if task.node_id:
                    self.tasks_by_node.get(task.node_id, set()).discard(task_id)
                task.node_id = node_id
                self.tasks_by_node.setdefault(node_id, set()).add(task_id)
            self._set_state(task, TaskState.ASSIGNED, "scheduled", now)
            self._pending.discard(task_id)
        for task_id, reason in result.unplaceable.items():
            task = self.tasks[task_id]
            if task.message != reason:
                task.message, task.error = reason, reason
                task.updated_at = now
                self._dirty_tasks.add(task_id)

    def _collect_actions(
        self, starts: list[tuple[Task, Service]], removals: list[tuple[str, str, str]], deleted: list[str]
    ) -> None:
        attention, self._attention = self._attention, set()
        busy_slots: dict[str, set[tuple[int, str]]] = {}
        now = time.time()
        dirty, tasks, inflight = self._dirty_tasks, self.tasks, self._inflight
        # Whether each node takes engine actions: the same for all its tasks in this pass (lock held).
        agents = self.agents
        ready_nodes = {node_id for node_id, node in self.nodes.items() if node.ready and node_id in agents}
        for task_id in attention:
            task = tasks.get(task_id)
            if task is None or task_id in inflight:
                continue  # an in-flight task gets attention again when its action ends
            ready = task.node_id in ready_nodes
            if task.desired_state is TaskState.RUNNING and task.service_id not in self.services:
                task.desired_state = TaskState.SHUTDOWN
            if task.desired_state is TaskState.RUNNING:
                if task.state is TaskState.ASSIGNED and ready and self._slot_busy(task, busy_slots):
                    self._attention.add(task.id)  # stop-first: wait until the slot's old container is gone
                    continue
                if task.state is TaskState.ASSIGNED and ready:
                    self._inflight.add(task.id)
                    # _set_state, but not back into _attention: an in-flight task gets it when its start ends.
                    task.state = TaskState.PREPARING
                    task.message = "preparing"
                    task.state_changed_at = task.updated_at = now
                    dirty.add(task.id)
                    starts.append((task, self.services[task.service_id]))
                continue
            if task.state.terminal:
                continue
            if not task.container_id and task.state < TaskState.PREPARING:
                self._set_state(task, TaskState.SHUTDOWN, task.message or "shut down before start")
            elif ready and task.container_id and task.container_id not in self._removing:
                self._removing.add(task.container_id)
                removals.append((task.node_id, task.container_id, task.id))
        # Tasks of removed services leave the store once they are down.
        for service_id in [s for s in self.tasks_by_service if s not in self.services]:
            tasks = self.tasks_by_service[service_id]
            for task_id in [t.id for t in tasks.values() if t.state.terminal and t.id not in self._inflight]:
                self._forget_task(tasks, task_id, deleted)
            if not tasks:
                del self.tasks_by_service[service_id]
                # Its container template goes with its last task: no start of it can come after that.
                self._templates.pop(service_id, None)

    def _slot_busy(self, task: Task, cache: dict[str, set[tuple[int, str]]]) -> bool:
        """Stop-first, as swarm: a slot's new task starts once the container of the task it replaces is gone,
        so no slot ever runs twice. A predecessor on a node that is not Ready does not hold the slot."""
        busy = cache.get(task.service_id)
        if busy is None:
            busy = set()
            for other in self.tasks_by_service.get(task.service_id, {}).values():
                if other.desired_state is TaskState.RUNNING or other.state.terminal:
                    continue
                node = self.nodes.get(other.node_id)
                if (other.container_id or other.id in self._inflight) and node is not None and node.ready:
                    busy.add((other.slot, other.node_id if other.slot == 0 else ""))
            cache[task.service_id] = busy
        return (task.slot, task.node_id if task.slot == 0 else "") in busy

    def _set_state(self, task: Task, state: TaskState, message: str = "", now: float | None = None) -> None:
        now = now or time.time()
        if state is not task.state:
            task.state = state
            task.state_changed_at = now
            if state.terminal:
                self._schedule_again = True  # its host ports and its place in max-per-node are free
        if message:
            task.message = message
        task.updated_at = now
        self._dirty_tasks.add(task.id)
        self._attention.add(task.id)

    def _action_done(self, task_id: str) -> None:
        """An engine action on the task ended (lock held): the next pass looks at it again."""
        self._inflight.discard(task_id)
        self._attention.add(task_id)

    # --- the shared engine workers -------------------------------------------------------------------

    def _submit(self, agent: NodeAgent, fn: Callable[..., None], *args: Any) -> bool:
        """Queue an engine job for the agent's node, where at most per_node_parallelism jobs run at once,
        each on a drainer that runs the node's jobs until none is left. False if the agent is stopped."""
        with self._jobs_lock:
            if agent.stop.is_set() or self._stopping.is_set():
                return False
            agent.jobs.append((fn, args))
            # Another drainer only if the queue outgrows those about to take a job, and the node has room.
            if agent.running >= self.settings.per_node_parallelism or len(agent.jobs) <= agent.running - agent.busy:
                return True
            agent.running += 1
        try:
            self._workers.submit(self._drain, agent)
        except RuntimeError:  # shut down meanwhile; the job stays queued and dropped with its agent
            with self._jobs_lock:
                agent.running -= 1
        return True

    def _drain(self, agent: NodeAgent) -> None:
        while True:
            with self._jobs_lock:
                if not agent.jobs or agent.stop.is_set():
                    agent.running -= 1
                    return
                fn, args = agent.jobs.popleft()
                agent.busy += 1
            try:
                fn(*args)
            except Exception:
                log.exception("engine job on node %s failed", agent.node_id[:12])
            finally:
                with self._jobs_lock:
                    agent.busy -= 1

    # --- actions on engines, run on node worker pools ------------------------------------------------

    def _run_tasks(self, node_id: str, items: list[tuple[Task, Service]]) -> None:
        """Start some of a node's tasks (marked PREPARING and in flight by the pass), one after another.

        Runs without the manager's lock: what happens is queued as outcomes, which the next pass applies,
        all at once (so the workers never wait for the lock, nor make a busy pass wait for them).

        A pass hands each node all its starts in one job. When an engine call turns out slow (a real engine
        over SSH: a start takes a fraction of a second), the rest is split among up to per_node_parallelism
        jobs; a fast engine is served by one thread, which costs far less CPU than many (they share one core)."""
        agent = self.agents.get(node_id)
        node = self.nodes.get(node_id)
        hostname = node.hostname if node else node_id
        push = self._outcomes.append  # deque.append: atomic, no lock needed
        queue = deque(items)
        while queue:
            task, service = queue.popleft()
            if agent is None or agent.stop.is_set():
                for later, _ in (task, service), *queue:
                    push((later, TaskState.ASSIGNED, "not started: the node left", None, True))
                break
            if not self._gate.is_set():  # no new engine call while a pass runs (is_set takes no lock)
                self._gate.wait()
            push((task, TaskState.STARTING, "starting", None, False))
            began = time.monotonic()
            try:
                info = self._engine(agent).run(container_spec(service, task, self.cluster_id, self._template(service)))
            except ImageNotFound as exc:
                push((task, TaskState.REJECTED, f"{exc} (pull it on {hostname})", None, True))
            except EngineUnreachable as exc:
                # The node may be going down: back to assigned, the heartbeat decides, and we retry.
                self._drop_engine(agent)
                stalled = [task, *(later for later, _ in queue)]
                for later in stalled:
                    push((later, TaskState.ASSIGNED, f"engine unreachable: {exc}", None, False))
                self._notify()
                time.sleep(1.0)
                for later in stalled:
                    push((later, None, "", None, True))
                break
            except Exception as exc:  # EngineError, or a driver bug: the task fails, the worker lives on
                if not isinstance(exc, EngineError):
                    log.exception("starting task %s on %s", task.id, hostname)
                push((task, TaskState.FAILED, str(exc) or type(exc).__name__, None, True))
            else:
                push((task, TaskState.RUNNING, "started", info, True))
            self._notify()
            if queue and time.monotonic() - began >= _SLOW_START:
                rest = list(queue)
                parts = min(self.settings.per_node_parallelism, len(rest))
                queue = deque(rest[0::parts])
                for part in range(1, parts):
                    chunk = rest[part::parts]
                    if not self._submit(agent, self._run_tasks, node_id, chunk):
                        for later, _ in chunk:
                            push((later, TaskState.ASSIGNED, "not started: the node left", None, True))
        self._notify()

    def _template(self, service: Service) -> ContainerSpec:
        cached, cluster_id = self._templates.get(service.id), self.cluster_id
        # Specs are frozen: an update makes a new one.
        if cached is None or cached[0] is not service.spec or cached[1] != cluster_id:
            cached = (service.spec, cluster_id, container_template(service, cluster_id))
            self._templates[service.id] = cached
        return cached[2]

    def _apply_outcomes(self) -> None:
        """Record what happened to tasks being started, in order (lock held)."""
        outcomes = [self._outcomes.popleft() for _ in range(len(self._outcomes))]
        last = {outcome[0].id: position for position, outcome in enumerate(outcomes)}
        now = time.time()
        for position, (task, state, message, info, done) in enumerate(outcomes):
            if state is TaskState.STARTING and last[task.id] != position:
                continue  # it started meanwhile: only its latest state is worth recording
            if self.tasks.get(task.id) is not task:
                self._inflight.discard(task.id)
                continue
            if state is not None:
                if info is not None:
                    task.container_id = info.id
                    task.host_ports = dict(info.host_ports)
                    task.container_addr = info.container_addr
                    task.error = ""
                if state in (TaskState.REJECTED, TaskState.FAILED):
                    task.error = message
                if task.state is not TaskState.FAILED or state is TaskState.RUNNING:
                    self._set_state(task, state, message, now)
                # A task that starts as planned changes no plan, except that of a rolling update waiting for it.
                if state is not TaskState.STARTING and (
                    state is not TaskState.RUNNING or task.service_id in self._updating
                ):
                    self._dirty_services.add(task.service_id)
            if done:
                self._inflight.discard(task.id)
                early = self._early_events.pop(task.id, None) if self._early_events else None
                if early is not None and task.container_id == early.container_id and task.state is TaskState.RUNNING:
                    self._container_ended(task, early)  # it died before its start was recorded
                if (
                    task.state is TaskState.RUNNING
                    and task.desired_state is TaskState.RUNNING
                    and task.service_id in self.services
                ):
                    # Running as wanted: a pass has nothing to do for it (see _collect_actions), so it is not
                    # looked at again unless something else changes (its service, node or desired state).
                    self._attention.discard(task.id)
                else:
                    self._attention.add(task.id)

    def _stop_grace(self, task_id: str) -> int:
        """Seconds a task's container gets to stop before it is killed: its service's grace period, else 10."""
        task = self.tasks.get(task_id)
        service = self.services.get(task.service_id) if task is not None else None
        return int(service.spec.stop_grace_period) if service is not None else 10

    def _remove_container(self, node_id: str, container_id: str, task_id: str) -> None:
        agent = self.agents.get(node_id)
        try:
            if agent is None:
                return
            self._engine(agent).remove(container_id, stop_timeout=self._stop_grace(task_id))
        except EngineUnreachable:
            if agent is not None:
                self._drop_engine(agent)
            return
        except EngineError as exc:
            log.warning("removing container %s on %s failed: %s", container_id[:12], node_id[:12], exc)
            return
        finally:
            with self.lock:
                self._removing.discard(container_id)
                if task_id in self.tasks:
                    self._attention.add(task_id)  # a failed removal is retried by a later pass
        with self.lock:
            task = self.tasks.get(task_id)
            if task is not None and task.container_id == container_id and not task.state.terminal:
                self._set_state(task, TaskState.SHUTDOWN, task.message or "shutdown")
                self._dirty_services.add(task.service_id)
        self._notify()

    def _engine(self, agent: NodeAgent) -> Engine:
        engine = agent.engine
        if engine is None:
            engine = self._connect(agent.url, self.settings.engine_timeout)
            agent.engine = engine
        return engine

    def _drop_engine(self, agent: NodeAgent) -> None:
        engine, agent.engine = agent.engine, None
        if engine is not None:
            engine.close()

    # --- node agents: heartbeat, events, resync --------------------------------------------------------

    def _start_agent(self, node: Node) -> None:
        if node.id in self.agents or self._stopping.is_set():
            return
        agent = NodeAgent(node_id=node.id, url=node.engine_url)
        self.agents[node.id] = agent
        self._schedule_beat(agent, time.monotonic())
        if self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(target=self._heartbeats, name="heartbeats", daemon=True)
            self._heartbeat_thread.start()

    def _stop_agent(self, agent: NodeAgent) -> None:
        agent.stop.set()
        with self._jobs_lock:
            dropped = list(agent.jobs)
            agent.jobs.clear()
        with self.lock:  # what was queued is not in flight any more
            for fn, args in dropped:
                if fn == self._run_tasks:
                    self._outcomes.extend((task, TaskState.ASSIGNED, "not started", None, True) for task, _ in args[1])
                elif fn == self._remove_container:
                    self._removing.discard(args[1])
        self._notify()
        for engine in (agent.engine, agent.heartbeat_engine):
            if engine is not None:
                engine.close()

    def _schedule_beat(self, agent: NodeAgent, at: float) -> None:
        with self._beats_changed:
            self._beat_counter += 1
            heapq.heappush(self._beats, (at, self._beat_counter, agent))
            if self._beats[0][2] is agent:
                self._beats_changed.notify()

    def _heartbeats(self) -> None:
        """One thread for every node's heartbeat: it hands the pings that are due to the ping pool, in
        batches (a ping is I/O; healthy nodes answer fast, so a batch goes one after another; a node that
        just failed gets a batch of its own, so that its timeouts delay no other node)."""
        while not self._stopping.is_set():
            period = self.heartbeat_period()
            due: list[NodeAgent] = []
            if self._pings_in_flight:
                self._check_slow_pings(period)
            with self._beats_changed:
                now = time.monotonic()
                while self._beats and self._beats[0][0] <= now:
                    agent = heapq.heappop(self._beats)[2]
                    if not agent.stop.is_set():
                        due.append(agent)
                if not due:
                    # Wake at least 4 times a period: a batch just handed over may hang on its first ping
                    # (see _check_slow_pings) before the next beat is due, or before any is queued.
                    timeout = min(self._beats[0][0] - now, period / 4) if self._beats else period / 4
                    self._beats_changed.wait(timeout)
                    continue
            healthy = [a for a in due if not a.misses]
            batches = [healthy[i : i + 32] for i in range(0, len(healthy), 32)]
            batches += [[a] for a in due if a.misses]
            for batch in batches:
                try:
                    self._pings.submit(self._ping, batch)
                except RuntimeError:  # shut down
                    return

    def heartbeat_period(self) -> float:
        """The set period, or longer in a cluster too large for it: see MAX_PINGS_PER_SECOND."""
        return max(self.settings.heartbeat, len(self.agents) / MAX_PINGS_PER_SECOND)

    def resync_interval(self) -> float:
        return max(self.settings.resync_interval, len(self.agents) / MAX_RESYNCS_PER_SECOND)

    def _ping(self, agents: Iterable[NodeAgent]) -> None:
        period = self.heartbeat_period()
        beats = []
        for agent in agents:
            began = time.monotonic()
            self._pings_in_flight[agent.node_id] = (began, agent)
            try:
                self._ping_one(agent, period)
            except Exception:
                log.exception("heartbeat of node %s failed", agent.node_id[:12])
            finally:
                self._pings_in_flight.pop(agent.node_id, None)
            if not agent.stop.is_set():
                beats.append((began + period, agent))
        with self._beats_changed:  # the batch's next beats in one go: the ping threads share this lock
            first = self._beats[0][0] if self._beats else None
            for at, agent in beats:
                self._beat_counter += 1
                heapq.heappush(self._beats, (at, self._beat_counter, agent))
            if self._beats and self._beats[0][0] != first:
                self._beats_changed.notify()

    def _check_slow_pings(self, period: float) -> None:
        """A ping unanswered for a period gets its host checked, once, while it still waits: a host that
        refuses TCP then is gone (cut off, powered off), and its node is Down without waiting for the ping's
        timeout. A busy dockerd's host still accepts TCP, so a slow engine is not marked Down by this."""
        now = time.monotonic()
        for began, agent in list(self._pings_in_flight.values()):
            if now - began >= period and agent.probed_ping != began:
                agent.probed_ping = began
                with contextlib.suppress(RuntimeError):  # shut down
                    self._pings.submit(self._check_host, agent, began, min(period, 0.5))

    def _check_host(self, agent: NodeAgent, began: float, timeout: float) -> None:
        engine = agent.heartbeat_engine
        if engine is None:
            return  # reconnecting: the reconnect checks the host itself
        try:
            engine.check_host(timeout)
        except EngineHostUnreachable as exc:
            in_flight = self._pings_in_flight.get(agent.node_id)
            if in_flight is not None and in_flight[0] == began:  # that ping is still unanswered
                waited = time.monotonic() - began
                self._mark_node(agent, NodeStatus.DOWN, f"heartbeat failure: no answer for {waited:.1f}s, {exc}")
        except EngineError:
            pass  # not a verdict on the host: the ping decides

    def _ping_one(self, agent: NodeAgent, period: float) -> None:
        try:
            if agent.heartbeat_engine is None:
                # A loaded dockerd (dozens of starts on 2 cores) can take over a second to answer a ping:
                # that is a slow engine, not a dead one, so a ping gets 2 s at least (with 1 s, three slow
                # answers in a row marked busy nodes Down in the SIGKILL trials). A cut-off host is found
                # sooner, while its ping waits: see _check_slow_pings.
                agent.heartbeat_engine = self._connect(agent.url, max(1.5 * period, 2.0))
            agent.heartbeat_engine.ping()
        except EngineError as exc:
            engine, agent.heartbeat_engine = agent.heartbeat_engine, None
            if engine is not None:
                engine.close()
            agent.misses += 1
            # A missed ping, then a host that refuses TCP (the reconnect's first step, at once): Down
            # without a third miss. A slow engine still gets heartbeat_misses tries.
            host_gone = isinstance(exc, EngineHostUnreachable) and agent.misses >= 2
            if agent.misses >= self.settings.heartbeat_misses or host_gone:
                self._mark_node(agent, NodeStatus.DOWN, f"heartbeat failure: {exc}")
            return
        agent.misses = 0
        node = self.nodes.get(agent.node_id)
        if not (agent.online and node is not None and node.status is NodeStatus.READY):
            self._mark_node(agent, NodeStatus.READY, "")  # a change: the common case above needs no lock
        # Not while the node has engine jobs: its listing would race with them (and be judged only in part),
        # and at thousands of nodes these resyncs would compete with the starts for the one core.
        if time.time() - agent.last_resync >= self.resync_interval() and not agent.running:
            agent.last_resync = time.time()
            self._submit(agent, self.resync_node, agent.node_id)

    def _mark_node(self, agent: NodeAgent, status: NodeStatus, message: str) -> None:
        with self.lock:
            node = self.nodes.get(agent.node_id)
            if node is None:
                return
            if node.status_message == LEFT and status is NodeStatus.READY:
                return
            changed = node.status is not status
            if changed:
                log.info("node %s is now %s %s", node.hostname, status.value, message)
                node.status, node.status_message, node.updated_at = status, message, time.time()
                self.store.write(nodes=[node])
                self._node_changed(node.id)
                self._changed()
            # The agent's own view, not the stored status: a restarted manager finds nodes stored as Ready.
            came_online = status is NodeStatus.READY and not agent.online
            agent.online = status is NodeStatus.READY
        if came_online:
            # Back (or first seen by this manager): fresh engine client, a new event stream, and adopt or
            # clean its containers.
            self._drop_engine(agent)
            agent.events_generation += 1
            threading.Thread(
                target=self._watch_events,
                args=(agent, agent.events_generation),
                daemon=True,
                name=f"events-{agent.node_id[:8]}",
            ).start()
            agent.last_resync = time.time()
            self._submit(agent, self.resync_node, agent.node_id)
            with self.lock:
                self._attention.update(self.tasks_by_node.get(agent.node_id, ()))  # its assigned tasks can start
        if came_online or changed:
            self.ingress.node_changed(node)
            self._notify()

    def _watch_events(self, agent: NodeAgent, generation: int) -> None:
        """Docker events of our containers on one node. Over SSH the stream cannot be closed, so an
        outdated thread just ends at its next event or error."""
        while not agent.stop.is_set() and agent.events_generation == generation:
            since = agent.last_event_time
            try:
                engine = self._connect(agent.url, 3600.0)
            except EngineError:
                agent.stop.wait(1.0)
                continue
            try:
                for event in engine.events(self.cluster_id, since):
                    if agent.events_generation != generation:
                        return
                    agent.last_event_time = event.time
                    self._on_event(agent.node_id, event)
            except EngineError:
                agent.stop.wait(1.0)
            finally:
                engine.close()

    def _on_event(self, node_id: str, event: ContainerEvent) -> None:
        if event.action not in WATCHED_EVENTS:
            return
        with self.lock:
            task = self.tasks.get(event.labels.get(LABEL_TASK_ID, ""))
            if task is None or task.node_id != node_id:
                return
            if task.id in self._inflight:
                # Its start is not recorded yet (the task has no container ID): a container that exits at once
                # can die before that. Kept for when the start's outcome is applied (see _apply_outcomes). A
                # die wins: it carries the exit code, which the oom before it and the destroy after it lack.
                kept = self._early_events.get(task.id)
                if kept is None or (event.action == "die" and kept.action != "die"):
                    self._early_events[task.id] = event
                return
            if task.container_id != event.container_id or task.state.terminal:
                return
            self._container_ended(task, event)
        self._notify()

    def _container_ended(self, task: Task, event: ContainerEvent) -> None:
        """The task's container died or was removed (lock held)."""
        if task.desired_state is TaskState.RUNNING:
            if event.action == "destroy":
                self._fail(task, "container removed behind the manager's back")
            elif event.exit_code:
                self._fail(task, f"task: non-zero exit ({event.exit_code})")
            elif event.action == "die":
                self._set_state(task, TaskState.COMPLETE, "finished")
            self._queue_removal(task)
        self._dirty_services.add(task.service_id)

    def _fail(self, task: Task, error: str) -> None:
        task.error = error
        self._set_state(task, TaskState.FAILED, error)

    def _queue_removal(self, task: Task) -> None:
        """An ended task's container is removed right away: nothing is left behind on the node."""
        agent = self.agents.get(task.node_id)
        if agent is not None and task.container_id and task.container_id not in self._removing:
            self._removing.add(task.container_id)
            self._submit(agent, self._remove_container, task.node_id, task.container_id, task.id)

    def resync_node(self, node_id: str) -> None:
        """Compare a node's containers with the store: adopt ours, fail the vanished, remove strays."""
        agent = self.agents.get(node_id)
        if agent is None:
            return
        # Tasks that change while the engine lists its containers are judged by the next resync, not by
        # this listing: one that started meanwhile is missing from it, without having vanished.
        listed_at = time.time()
        try:
            containers = self._engine(agent).containers(self.cluster_id)
        except EngineError:
            return
        seen: set[str] = set()
        with self.lock:
            changed = False
            for container in containers:
                changed = self._resync_container(node_id, container, seen, listed_at) or changed
            on_node = (self.tasks.get(t) for t in self.tasks_by_node.get(node_id, ()))
            for task in on_node:
                if (
                    task is not None
                    and task.node_id == node_id
                    and task.state_changed_at < listed_at
                    and task.container_id
                    and task.container_id not in seen
                    and not task.state.terminal
                    and task.id not in self._inflight
                    and task.state >= TaskState.RUNNING
                ):
                    if task.desired_state is TaskState.RUNNING:
                        self._fail(task, "container vanished from the node")
                    else:
                        self._set_state(task, TaskState.SHUTDOWN, task.message or "shutdown")
                    self._dirty_services.add(task.service_id)
                    changed = True
            self._adopted.add(node_id)
        if changed:  # a pass only when there is something to plan or write
            self._notify()

    def _resync_container(self, node_id: str, container: ContainerInfo, seen: set[str], listed_at: float) -> bool:
        """Reconcile one listed container with its task (lock held); True if a task changed."""
        seen.add(container.id)
        task = self.tasks.get(container.task_id)
        if task is not None and (
            task.id in self._inflight or container.id in self._removing or task.state_changed_at >= listed_at
        ):
            return False
        stray = task is None or task.node_id != node_id or (task.container_id not in ("", container.id))
        unwanted = task is not None and (task.desired_state is not TaskState.RUNNING or task.state.terminal)
        if stray or unwanted or container.status != "running":
            failed = False
            if task is not None and not stray and task.desired_state is TaskState.RUNNING and not task.state.terminal:
                self._fail(task, f"task: non-zero exit ({container.exit_code})" if container.exit_code else "exited")
                self._dirty_services.add(task.service_id)
                failed = True
            agent = self.agents[node_id]
            if container.id not in self._removing:
                self._removing.add(container.id)
                self._submit(
                    agent, self._remove_container, node_id, container.id, task.id if task and not stray else ""
                )
            return failed
        assert task is not None
        if task.state is not TaskState.RUNNING or not task.container_id:
            # Adoption after a manager restart: the container runs, so the task does; nothing is restarted.
            task.container_id = container.id
            task.host_ports = dict(container.host_ports) or task.host_ports
            task.container_addr = container.container_addr or task.container_addr
            self._set_state(task, TaskState.RUNNING, "running (adopted)")
            self._dirty_services.add(task.service_id)
            return True
        return False

    # --- queries -----------------------------------------------------------------------------------

    def service_tasks(self, service_id: str) -> list[Task]:
        with self.lock:
            return list(self.tasks_by_service.get(service_id, {}).values())

    def running_count(self, service: Service) -> tuple[int, int]:
        """(running, desired) as `service ls` shows them."""
        with self.lock:
            tasks = self.tasks_by_service.get(service.id, {}).values()
            running = sum(
                1
                for t in tasks
                if t.state is TaskState.RUNNING
                and t.desired_state is TaskState.RUNNING
                and self.nodes.get(t.node_id) is not None
                and self.nodes[t.node_id].ready
            )
            if service.spec.mode is ServiceMode.GLOBAL:
                desired = sum(1 for t in tasks if t.active)
            else:
                desired = service.spec.replicas
            return running, desired

    def task_display_name(self, task: Task) -> str:
        service = self.services.get(task.service_id)
        if service is None:
            return task.id[:12]
        return task_name(service, task)

    def service_endpoints(self, service: Service) -> dict[tuple[int, str], tuple[Any, ...]]:
        with self.lock:
            return endpoints(service, self.tasks_by_service.get(service.id, {}).values(), self.nodes)

    def logs(self, service: Service, tail: int | None, follow: bool) -> Iterator[bytes]:
        """Interleaved logs of the service's tasks that have containers, each line prefixed like docker's."""
        import queue as queue_module

        with self.lock:
            sources = [
                (t, self.agents.get(t.node_id), self.nodes.get(t.node_id))
                for t in self.tasks_by_service.get(service.id, {}).values()
                if t.container_id and not t.state.terminal
            ]
        lines: queue_module.Queue[bytes | None] = queue_module.Queue(maxsize=1000)
        live = [0]

        def pump(task: Task, agent: NodeAgent, node: Node) -> None:
            prefix = f"{task_name(service, task)}.{task.id[:12]}@{node.hostname}    | ".encode()
            try:
                buffer = b""
                for chunk in self._engine(agent).logs(task.container_id, tail, follow):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        lines.put(prefix + line + b"\n")
                if buffer:
                    lines.put(prefix + buffer + b"\n")
            except EngineError as exc:
                lines.put(prefix + f"error reading logs: {exc}\n".encode())
            finally:
                lines.put(None)

        for task, agent, node in sources:
            if agent is not None and node is not None:
                live[0] += 1
                threading.Thread(target=pump, args=(task, agent, node), daemon=True).start()
        while live[0]:
            item = lines.get()
            if item is None:
                live[0] -= 1
            else:
                yield item

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            self.store.close()
