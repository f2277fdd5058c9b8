"""The Docker Engine seam: one interface, a real driver (docker SDK over ssh://, tcp:// with TLS, unix://)
and an in-memory double for unit tests and control-plane benchmarks."""

from __future__ import annotations

import contextlib
import itertools
import queue
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import docker
import docker.errors
import docker.tls
import requests.exceptions

from pyswarm.model import LABEL_CLUSTER_ID, ContainerInfo, ContainerSpec, EngineInfo

# The container events the manager acts on: the engines send no others (one stream per node, over SSH).
WATCHED_EVENTS = ("die", "destroy", "oom")


class EngineError(Exception):
    """An engine refused or failed a request."""


class EngineUnreachable(EngineError):
    """The engine did not answer: the node is down or cut off."""


class EngineHostUnreachable(EngineUnreachable):
    """The engine's host accepts no TCP connection at all: off the network or powered off, not merely busy.
    A kernel answers a connect whatever its processes' load, so this is a stronger sign than a slow reply."""


class ImageNotFound(EngineError):
    """The image is not present on the engine (and no registry can be reached)."""


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # docker's: create, start, die, destroy, kill, oom, stop
    container_id: str
    labels: dict[str, str]
    exit_code: int | None
    time: float


class Engine(Protocol):
    url: str

    def info(self) -> EngineInfo: ...
    def ping(self) -> None: ...
    def check_host(self, timeout: float) -> None:
        """Raise EngineHostUnreachable unless the engine's host accepts a TCP connection within timeout."""
        ...

    def containers(self, cluster_id: str) -> list[ContainerInfo]: ...
    def run(self, spec: ContainerSpec) -> ContainerInfo: ...
    def remove(self, container_id: str, stop_timeout: int = 10) -> None: ...
    def events(self, cluster_id: str, since: float | None) -> Iterator[ContainerEvent]:
        """The cluster's container events the manager acts on (WATCHED_EVENTS), from since on."""
        ...

    def logs(self, container_id: str, tail: int | None, follow: bool) -> Iterator[bytes]: ...
    def close(self) -> None: ...


def validate_engine_url(url: str, insecure_tcp: bool = False, tls: TlsFiles | None = None) -> str:
    """Refuse malformed engine URLs early, with a message that says what is expected."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "unix":
        if not parsed.path.startswith("/"):
            raise ValueError(f"invalid engine URL {url!r}: expected unix:///path/to/docker.sock")
        return url
    if parsed.scheme not in ("ssh", "tcp"):
        raise ValueError(f"invalid engine URL {url!r}: expected ssh://user@host[:port] or tcp://host:port")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"invalid engine URL {url!r}: bad port") from None
    host = parsed.hostname or ""
    if not re.fullmatch(r"[A-Za-z0-9.\-:]{1,253}", host) or parsed.path not in ("", "/") or parsed.query:
        raise ValueError(f"invalid engine URL {url!r}: expected ssh://user@host[:port] or tcp://host:port")
    if parsed.scheme == "ssh" and parsed.username and not re.fullmatch(r"[a-z_][a-z0-9_.\-]{0,31}", parsed.username):
        raise ValueError(f"invalid engine URL {url!r}: bad user name")
    if parsed.scheme == "tcp":
        if port is None:
            raise ValueError(f"invalid engine URL {url!r}: tcp:// needs a port, e.g. tcp://host:2376")
        if tls is None and not insecure_tcp:
            raise ValueError(
                f"engine {url} is tcp:// without TLS: give --tlscacert/--tlscert/--tlskey, "
                "or --insecure-tcp to accept an unauthenticated engine"
            )
    return url


class DockerEngine:
    """A real Docker Engine through the docker SDK. Every method may raise EngineError."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        tls: TlsFiles | None = None,
        connect_timeout: float = 3.0,
        pool_size: int = 16,
    ) -> None:
        self.url = url
        self._timeout = timeout
        parsed = urllib.parse.urlparse(url)
        self._host_port: tuple[str, int] | None = None
        # docker-py's SSH constructor has no timeout: check the port answers first, so a dead node fails fast.
        if parsed.scheme in ("ssh", "tcp"):
            default_port = 22 if parsed.scheme == "ssh" else 2376
            self._host_port = (parsed.hostname or "", parsed.port or default_port)
            _check_reachable(*self._host_port, connect_timeout)
        try:
            if parsed.scheme == "tcp" and tls is not None:
                tls_config = docker.tls.TLSConfig(client_cert=(tls.cert, tls.key), ca_cert=tls.ca, verify=True)
                self.client = docker.DockerClient(
                    base_url=url.replace("tcp://", "https://"),
                    tls=tls_config,
                    timeout=timeout,
                    max_pool_size=pool_size,
                    version="auto",
                )
            else:
                self.client = docker.DockerClient(
                    base_url=url,
                    timeout=timeout,
                    use_ssh_client=False,
                    max_pool_size=pool_size,
                    version="auto",
                )
        except docker.errors.DockerException as exc:
            raise _translate(exc, url) from None
        except Exception as exc:  # paramiko raises many kinds: unknown host key, auth, socket
            raise EngineUnreachable(_ssh_message(exc, url)) from None
        self.api = self.client.api
        if parsed.scheme != "tcp":
            _one_pool_per_engine(self.api)

    def info(self) -> EngineInfo:
        data = self._call(self.api.info)
        version = self._call(self.api.version)
        return EngineInfo(
            id=data.get("ID", ""),
            hostname=data.get("Name", ""),
            version=data.get("ServerVersion", ""),
            api_version=version.get("ApiVersion", ""),
            ncpu=int(data.get("NCPU", 0)),
            memory=int(data.get("MemTotal", 0)),
        )

    def ping(self) -> None:
        self._call(self.api.ping)

    def check_host(self, timeout: float) -> None:
        if self._host_port is not None:  # a unix socket has no host to lose
            _check_reachable(*self._host_port, timeout)

    def containers(self, cluster_id: str) -> list[ContainerInfo]:
        rows = self._call(self.api.containers, all=True, filters={"label": f"{LABEL_CLUSTER_ID}={cluster_id}"})
        return [_from_list_row(row) for row in rows]

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        port_keys = [f"{p.target}/{p.protocol.value}" for p in spec.ports]
        bindings = {f"{p.target}/{p.protocol.value}": (None if p.host_port == 0 else p.host_port) for p in spec.ports}
        host_config = self.api.create_host_config(port_bindings=bindings, restart_policy={"Name": "no"})
        try:
            created = self.api.create_container(
                image=spec.image,
                command=list(spec.command) or None,
                name=spec.name,
                environment=list(spec.env),
                labels=spec.labels,
                ports=[(int(k.split("/")[0]), k.split("/")[1]) for k in port_keys],
                host_config=host_config,
                stop_timeout=spec.stop_timeout,
                detach=True,
            )
            container_id = created["Id"]
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"No such image: {spec.image}") from None
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise _translate(exc, self.url) from None
            # A retry after a lost reply: the container exists already; adopt it if it is ours.
            existing = self._call(self.api.inspect_container, spec.name)
            if existing["Config"]["Labels"].get(LABEL_CLUSTER_ID) != spec.labels.get(LABEL_CLUSTER_ID):
                raise EngineError(
                    f"container name {spec.name} is taken by a container pyswarm did not create"
                ) from None
            container_id = existing["Id"]
        except (requests.exceptions.RequestException, OSError) as exc:
            raise EngineUnreachable(f"{self.url}: {exc}") from None
        self._call(self.api.start, container_id)
        return _from_inspect(self._call(self.api.inspect_container, container_id))

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            return _from_inspect(self._call(self.api.inspect_container, container_id))
        except _NotFound:
            return None

    def remove(self, container_id: str, stop_timeout: int = 10) -> None:
        with contextlib.suppress(_NotFound):
            self._call(self.api.stop, container_id, timeout=stop_timeout)
        with contextlib.suppress(_NotFound):
            self._call(self.api.remove_container, container_id, force=True)

    def events(self, cluster_id: str, since: float | None) -> Iterator[ContainerEvent]:
        filters = {"type": "container", "event": list(WATCHED_EVENTS), "label": [f"{LABEL_CLUSTER_ID}={cluster_id}"]}
        stream = self._call(self.api.events, since=since, filters=filters, decode=True)
        try:
            for raw in stream:
                actor = raw.get("Actor") or {}
                attributes = dict(actor.get("Attributes") or {})
                exit_code = attributes.pop("exitCode", None)
                yield ContainerEvent(
                    action=str(raw.get("Action") or raw.get("status") or "").split(":")[0],
                    container_id=actor.get("ID") or raw.get("id", ""),
                    labels=attributes,
                    exit_code=int(exit_code) if exit_code is not None else None,
                    time=float(raw.get("timeNano", 0)) / 1e9 or float(raw.get("time", 0)),
                )
        except (requests.exceptions.RequestException, OSError, docker.errors.DockerException) as exc:
            raise EngineUnreachable(f"{self.url}: event stream ended: {exc}") from None

    def logs(self, container_id: str, tail: int | None, follow: bool) -> Iterator[bytes]:
        stream = self._call(
            self.api.logs, container_id, stream=True, follow=follow, tail="all" if tail is None else tail
        )
        yield from stream

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except docker.errors.NotFound as exc:
            raise _NotFound(str(exc)) from None
        except docker.errors.DockerException as exc:
            raise _translate(exc, self.url) from None
        except (requests.exceptions.RequestException, OSError, EOFError) as exc:
            raise EngineUnreachable(f"{self.url}: {exc}") from None
        except Exception as exc:  # paramiko's SSHException and friends when the transport dies
            if type(exc).__module__.startswith("paramiko"):
                raise EngineUnreachable(f"{self.url}: {exc}") from None
            raise


class _NotFound(EngineError):
    pass


def _check_reachable(host: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EngineHostUnreachable(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None


def _one_pool_per_engine(api: docker.APIClient) -> None:
    """docker-py's ssh:// and unix:// adapters key their connection pools by the full request URL, so
    every new container path opens a new connection: over SSH, a new channel and a new `docker system
    dial-stdio` process on the node (most of the lab's CPU in a scale-up). Key them all by the engine."""
    adapter = api.get_adapter(api.base_url)
    per_url = adapter.get_connection
    adapter.get_connection = lambda url, proxies=None: per_url(api.base_url, proxies)


def _ssh_message(exc: Exception, url: str) -> str:
    name = type(exc).__name__
    host = urllib.parse.urlparse(url).hostname
    if name == "SSHException" and "not found in known_hosts" in str(exc):
        return (
            f"{url}: the SSH host key of {host} is not trusted. Check its fingerprint on the host "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add it: "
            f"ssh-keyscan -t ed25519 {host} >> ~/.ssh/known_hosts"
        )
    if name == "AuthenticationException":
        return f"{url}: SSH authentication failed: install your public key in the user's authorized_keys"
    return f"{url}: {name}: {exc}"


def _translate(exc: Exception, url: str) -> EngineError:
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation or str(exc)
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return EngineError(f"{url}: {explanation}")
    text = str(exc)
    if "Connection" in text or "Error while fetching server API version" in text:
        return EngineUnreachable(f"{url}: {text}")
    return EngineError(f"{url}: {text}")


_EXIT = re.compile(r"Exited \((-?\d+)\)")


def _from_list_row(row: dict[str, Any]) -> ContainerInfo:
    ports: dict[str, int] = {}
    for port in row.get("Ports") or ():
        if port.get("PublicPort"):
            ports[f"{port['PrivatePort']}/{port['Type']}"] = int(port["PublicPort"])
    exit_match = _EXIT.search(row.get("Status") or "")
    networks = ((row.get("NetworkSettings") or {}).get("Networks")) or {}
    addr = next((n.get("IPAddress", "") for n in networks.values() if n.get("IPAddress")), "")
    names = row.get("Names") or ["/"]
    return ContainerInfo(
        id=row["Id"],
        name=names[0].lstrip("/"),
        labels=dict(row.get("Labels") or {}),
        status=row.get("State", ""),
        exit_code=int(exit_match.group(1)) if exit_match else 0,
        host_ports=ports,
        container_addr=addr,
    )


def _from_inspect(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    ports: dict[str, int] = {}
    for key, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for binding in bindings or ():
            if binding.get("HostPort"):
                ports[key] = int(binding["HostPort"])
                break
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    addr = next((n.get("IPAddress", "") for n in networks.values() if n.get("IPAddress")), "")
    return ContainerInfo(
        id=data["Id"],
        name=data.get("Name", "").lstrip("/"),
        labels=dict((data.get("Config") or {}).get("Labels") or {}),
        status=state.get("Status", ""),
        exit_code=int(state.get("ExitCode", 0)),
        error=state.get("Error", ""),
        host_ports=ports,
        started_at=state.get("StartedAt", ""),
        container_addr=addr,
    )


# --- the in-memory double ---------------------------------------------------------------------------


@dataclass
class MemoryEngineState:
    """What a MemoryEngine holds; shared so tests can look inside and inject faults."""

    images: set[str] = field(default_factory=lambda: {"nginx:latest", "nginx"})
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    down: bool = False  # the engine does not answer
    host_down: bool = False  # nor does its host accept TCP (check_host)
    run_delay: float = 0.0
    fail_runs: int = 0  # make the next N runs fail, as a flaky engine would


class MemoryEngine:
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
        return EngineInfo(id=self.engine_id, hostname=self.hostname, version=self.version, api_version="1.41")

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

    def logs(self, container_id: str, tail: int | None, follow: bool) -> Iterator[bytes]:
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
