"""The Docker Engine seam: one interface, a real driver (docker SDK over ssh://, tcp:// with TLS, unix://)
and an in-memory double for unit tests and control-plane benchmarks."""

from __future__ import annotations

import contextlib
import re
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import docker
import docker.errors
import docker.tls
import requests.exceptions

from pyswarm.drivers.container_config import create_arguments
from pyswarm.drivers.errors import EngineError, EngineHostUnreachable, EngineUnreachable, ImageNotFound
from pyswarm.drivers.images import DockerImages, ImageEngine
from pyswarm.model import LABEL_CLUSTER_ID, ContainerInfo, ContainerSpec, EngineInfo

# The container events the manager acts on: the engines send no others (one stream per node, over SSH).
# The engine matches "health_status" with "health_status: healthy" and "health_status: unhealthy".
WATCHED_EVENTS = ("die", "destroy", "oom", "health_status")


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
    health: str = ""  # health_status events: healthy or unhealthy


class Engine(ImageEngine, Protocol):
    url: str

    def info(self) -> EngineInfo: ...
    def ping(self) -> None: ...
    def check_host(self, timeout: float) -> None:
        """Raise EngineHostUnreachable unless the engine's host accepts a TCP connection within timeout."""
        ...

    def containers(self, cluster_id: str) -> list[ContainerInfo]: ...
    def run(self, spec: ContainerSpec) -> ContainerInfo: ...
    def remove(self, container_id: str, stop_timeout: int = 10) -> None: ...
    def stop(self, container_id: str, stop_timeout: int = 10) -> None:
        """Stop the container and keep it (its logs stay readable)."""
        ...

    def events(self, cluster_id: str, since: float | None) -> Iterator[ContainerEvent]:
        """The cluster's container events the manager acts on (WATCHED_EVENTS), from since on."""
        ...

    def logs(
        self, container_id: str, tail: int | None, follow: bool, since: float | None = None, timestamps: bool = False
    ) -> Iterator[bytes]: ...
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


class DockerEngine(DockerImages):
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
        try:
            created = self.api.create_container(**create_arguments(self.api, spec))
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

    def stop(self, container_id: str, stop_timeout: int = 10) -> None:
        with contextlib.suppress(_NotFound):
            self._call(self.api.stop, container_id, timeout=stop_timeout)

    def remove(self, container_id: str, stop_timeout: int = 10) -> None:
        with contextlib.suppress(_NotFound):
            self._call(self.api.stop, container_id, timeout=stop_timeout)
        with contextlib.suppress(_NotFound):
            # v: its anonymous volumes go with it (an image's VOLUME, a --mount without source), as swarm's do.
            self._call(self.api.remove_container, container_id, force=True, v=True)

    def events(self, cluster_id: str, since: float | None) -> Iterator[ContainerEvent]:
        filters = {"type": "container", "event": list(WATCHED_EVENTS), "label": [f"{LABEL_CLUSTER_ID}={cluster_id}"]}
        stream = self._call(self.api.events, since=since, filters=filters, decode=True)
        try:
            for raw in stream:
                actor = raw.get("Actor") or {}
                attributes = dict(actor.get("Attributes") or {})
                exit_code = attributes.pop("exitCode", None)
                action, _, detail = str(raw.get("Action") or raw.get("status") or "").partition(":")
                yield ContainerEvent(
                    action=action,
                    container_id=actor.get("ID") or raw.get("id", ""),
                    labels=attributes,
                    exit_code=int(exit_code) if exit_code is not None else None,
                    time=float(raw.get("timeNano", 0)) / 1e9 or float(raw.get("time", 0)),
                    health=detail.strip() if action == "health_status" else "",
                )
        except (requests.exceptions.RequestException, OSError, docker.errors.DockerException) as exc:
            raise EngineUnreachable(f"{self.url}: event stream ended: {exc}") from None

    def logs(
        self, container_id: str, tail: int | None, follow: bool, since: float | None = None, timestamps: bool = False
    ) -> Iterator[bytes]:
        stream = self._call(
            self.api.logs,
            container_id,
            stream=True,
            follow=follow,
            tail="all" if tail is None else tail,
            since=since,
            timestamps=timestamps,
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
# `docker ps` status text: "Up 3 seconds (health: starting)", "Up 1 minute (healthy)", "(unhealthy)".
_HEALTH = re.compile(r"\((health: starting|healthy|unhealthy)\)")


def _from_list_row(row: dict[str, Any]) -> ContainerInfo:
    ports: dict[str, int] = {}
    for port in row.get("Ports") or ():
        if port.get("PublicPort"):
            ports[f"{port['PrivatePort']}/{port['Type']}"] = int(port["PublicPort"])
    exit_match = _EXIT.search(row.get("Status") or "")
    networks = ((row.get("NetworkSettings") or {}).get("Networks")) or {}
    addr = next((n.get("IPAddress", "") for n in networks.values() if n.get("IPAddress")), "")
    names = row.get("Names") or ["/"]
    health = _HEALTH.search(row.get("Status") or "")
    return ContainerInfo(
        id=row["Id"],
        name=names[0].lstrip("/"),
        labels=dict(row.get("Labels") or {}),
        status=row.get("State", ""),
        exit_code=int(exit_match.group(1)) if exit_match else 0,
        host_ports=ports,
        container_addr=addr,
        health=health.group(1).removeprefix("health: ") if health else "",
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
        health=str((state.get("Health") or {}).get("Status", "")),
    )
