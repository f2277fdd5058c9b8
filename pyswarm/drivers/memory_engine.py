"""The in-memory engine: the Engine interface with containers "started" instantly, in memory, for unit tests
and control-plane benchmarks. Its differences from a real engine are listed by
tests/unit/drivers/test_memory_engine_contract.py."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from pyswarm.drivers.engine import WATCHED_EVENTS, ContainerEvent
from pyswarm.drivers.errors import EngineError, EngineHostUnreachable, EngineUnreachable, ImageNotFound
from pyswarm.drivers.memory_images import MemoryImages
from pyswarm.model import LABEL_CLUSTER_ID, ContainerInfo, ContainerSpec, EngineInfo


def _memory_health(spec: ContainerSpec) -> str:
    """A container with a health check starts "starting"; the in-memory engine knows no image's own check."""
    check = spec.options.healthcheck
    return "starting" if check is not None and check.test and not check.disabled else ""


@dataclass
class MemoryEngineState:
    """What a MemoryEngine holds; shared so tests can look inside and inject faults."""

    images: set[str] = field(default_factory=lambda: {"nginx:latest", "nginx"})
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    down: bool = False  # the engine does not answer
    host_down: bool = False  # nor does its host accept TCP (check_host)
    run_delay: float = 0.0
    ncpu: int = 4
    memory: int = 8 * 1024**3
    fail_runs: int = 0  # make the next N runs fail, as a flaky engine would


class MemoryEngine(MemoryImages):
    """An engine that "starts" containers instantly, in memory. Same interface as DockerEngine.

    Cheap enough per call that thousands of them can stand in for a large cluster in benchmarks: names are
    indexed, and event subscribers get C-implemented queues."""

    def __init__(self, url: str, hostname: str = "", engine_id: str = "", version: str = "memory") -> None:
        self.url = url
        self.hostname = hostname or urllib.parse.urlparse(url).hostname or "memory"
        self.engine_id = engine_id or uuid.uuid4().hex
        self.version = version
        self.state = MemoryEngineState()
        self._lock = threading.Lock()
        self._subscribers: list[queue.SimpleQueue[ContainerEvent | None]] = []
        self._by_name: dict[str, str] = {}  # container name -> id; checked against state.containers
        self._ids = (f"{self.engine_id[:32]:0>32}{n:032x}" for n in itertools.count(1))  # 64 hex, like docker's
        self._ports = itertools.cycle(range(32768, 61000))  # the engine's ephemeral host ports

    def info(self) -> EngineInfo:
        self._check_up()
        return EngineInfo(
            id=self.engine_id,
            hostname=self.hostname,
            version=self.version,
            api_version="1.41",
            ncpu=self.state.ncpu,
            memory=self.state.memory,
        )

    def ping(self) -> None:
        self._check_up()

    def check_host(self, timeout: float) -> None:
        if self.state.host_down:
            raise EngineHostUnreachable(f"{self.url}: host unreachable (simulated)")

    def containers(self, cluster_id: str) -> list[ContainerInfo]:
        self._check_up()
        with self._lock:
            return [c for c in self.state.containers.values() if c.labels.get(LABEL_CLUSTER_ID) == cluster_id]

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        self._check_up()
        if self.state.run_delay:
            time.sleep(self.state.run_delay)
        image = spec.image if ":" in spec.image else spec.image + ":latest"
        if image not in self.state.images and spec.image not in self.state.images:
            raise ImageNotFound(f"No such image: {spec.image}")
        with self._lock:
            if self.state.fail_runs > 0:
                self.state.fail_runs -= 1
                raise EngineError(f"{self.url}: injected failure")
            existing = self.state.containers.get(self._by_name.get(spec.name, ""))
            if existing is not None and existing.name == spec.name:
                return existing
            container = ContainerInfo(
                id=next(self._ids),
                name=spec.name,
                labels=dict(spec.labels),
                status="running",
                # (_value_: Enum's value is a property, a Python call per port)
                host_ports={f"{p.target}/{p.protocol._value_}": p.host_port or next(self._ports) for p in spec.ports},
                container_addr="172.31.0.2",
                health=_memory_health(spec),
            )
            self.state.containers[container.id] = container
            self._by_name[spec.name] = container.id
        self._emit("start", container)
        return container

    def remove(self, container_id: str, stop_timeout: int = 10) -> None:
        self._check_up()
        with self._lock:
            container = self.state.containers.pop(container_id, None)
            if container is not None and self._by_name.get(container.name) == container_id:
                del self._by_name[container.name]
        if container is not None:
            self._emit("die", container, exit_code=0)
            self._emit("destroy", container)

    def stop(self, container_id: str, stop_timeout: int = 10) -> None:
        self._check_up()
        with self._lock:
            container = self.state.containers.get(container_id)
            if container is None or container.status != "running":
                return
            self.state.containers[container_id] = replace(container, status="exited", exit_code=137)
        self._emit("die", container, exit_code=137)

    def set_health(self, container_id: str, health: str) -> None:
        """Test helper: the container's health check passes (healthy) or fails (unhealthy)."""
        with self._lock:
            container = self.state.containers[container_id]
            self.state.containers[container_id] = replace(container, health=health)
        event = ContainerEvent("health_status", container.id, dict(container.labels), None, time.time(), health)
        with self._lock:
            for inbox in self._subscribers:
                inbox.put(event)

    def kill(self, container_id: str, exit_code: int = 137) -> None:
        """Test helper: the container dies behind the manager's back."""
        with self._lock:
            container = self.state.containers[container_id]
            self.state.containers[container_id] = replace(container, status="exited", exit_code=exit_code)
        self._emit("die", container, exit_code=exit_code)

    def events(self, cluster_id: str, since: float | None) -> Iterator[ContainerEvent]:
        self._check_up()
        inbox: queue.SimpleQueue[ContainerEvent | None] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.append(inbox)
        try:
            while (event := inbox.get()) is not None:
                if event.labels.get(LABEL_CLUSTER_ID) == cluster_id:
                    yield event
            raise EngineUnreachable(f"{self.url}: event stream ended")
        finally:
            with self._lock:
                self._subscribers.remove(inbox)

    def logs(
        self, container_id: str, tail: int | None, follow: bool, since: float | None = None, timestamps: bool = False
    ) -> Iterator[bytes]:
        self._check_up()
        yield f"log line from {container_id[:12]}\n".encode()

    def close(self) -> None:
        """Clients share this one engine object, so closing a client leaves the engine as it is."""

    def set_down(self, down: bool) -> None:
        """Test helper: the node goes away (or comes back); open event streams end, as over a cut link."""
        self.state.down = down
        if down:
            with self._lock:
                for inbox in self._subscribers:
                    inbox.put(None)

    def _check_up(self) -> None:
        if self.state.down:
            raise EngineUnreachable(f"{self.url}: unreachable (simulated)")

    def _emit(self, action: str, container: ContainerInfo, exit_code: int | None = None) -> None:
        if action not in WATCHED_EVENTS:
            return  # filtered, as DockerEngine.events asks the engine to
        event = ContainerEvent(action, container.id, dict(container.labels), exit_code, time.time())
        with self._lock:
            for inbox in self._subscribers:
                inbox.put(event)
