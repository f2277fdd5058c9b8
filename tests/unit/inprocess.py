"""A manager on in-memory engines, in this process: for the API and CLI tests.

`Cluster` holds the engines (three in the swarm, one spare that may join) and the Manager; `snapshot()`
is the state a refused request must leave as it found; `ApiServer` serves the real FastAPI app with
uvicorn on 127.0.0.1 (a free port) in a thread, so the real CLI can talk to it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pyswarm.drivers.engine import Engine, EngineUnreachable
from pyswarm.drivers.host import HostUnreachable
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager import registration
from pyswarm.manager.api import create_app
from pyswarm.manager.certificates import CA_CERT, cert_dir, ensure_manager_certificate
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import Availability, NodeStatus, PortConfig, PublishMode, ServiceMode, ServiceSpec, TaskState
from pyswarm.model.codec import node_to_dict, service_to_dict, task_to_dict
from tests.helpers import wait_until

MANAGER_URL = "ssh://root@10.0.0.1"
WORKER_URLS = ("ssh://root@10.0.0.2", "ssh://root@10.0.0.3")
SPARE_URL = "ssh://root@10.0.0.4"  # an engine that exists but is not in the swarm: it may join
UNREACHABLE_URL = "ssh://root@10.0.0.9"  # no engine answers there
ALIAS_URL = "ssh://admin@10.0.0.2"  # node-02's engine, under another URL


class Cluster:
    """node-01 (leader), node-02 and node-03 in the swarm; node-04's engine exists but has not joined."""

    def __init__(self, data_dir: Path, start: bool = True) -> None:
        urls = (MANAGER_URL, *WORKER_URLS, SPARE_URL)
        self.engines = {url: MemoryEngine(url, hostname=f"node-0{i + 1}") for i, url in enumerate(urls)}
        self.aliases = {ALIAS_URL: self.engines[WORKER_URLS[0]]}
        self.manager = Manager(Settings(data_dir=data_dir, heartbeat=0.05), engine_factory=self.factory)
        self.manager.registration.initialise(MANAGER_URL, "10.0.0.1", Availability.ACTIVE)
        for url in WORKER_URLS:
            self.manager.registration.add_node(url, url.split("@")[1], None)
        if start:
            self.manager.start()

    def factory(self, url: str, timeout: float, tls: Any = None) -> Engine:
        engine = self.engines.get(url) or self.aliases.get(url)
        if engine is None:
            raise EngineUnreachable(f"{url}: no route to host (simulated)")
        return engine

    @property
    def spare(self) -> MemoryEngine:
        return self.engines[SPARE_URL]

    def token(self, role: str) -> str:
        """client, worker or manager; or `node` for node-02's own secret."""
        if role == "node":
            node = next(n for n in self.manager.state.nodes.values() if n.hostname == "node-02")
            return self.manager.state.meta[f"node_secret_{node.id}"]
        return self.manager.state.meta[f"token_{role}"]

    def secrets(self) -> list[str]:
        """Every credential the manager holds: join and client tokens and node secrets."""
        return [v for k, v in self.manager.state.meta.items() if k.startswith(("token_", "node_secret_"))]

    def populate(self) -> None:
        """web (2 replicas, 80:80), api (1 replica, 8080:80) and mon (global, host-mode 9100), all running."""
        manager = self.manager
        manager.services.create(ServiceSpec(name="web", image="nginx", replicas=2, ports=(PortConfig(80, 80),)))
        manager.services.create(ServiceSpec(name="api", image="nginx", replicas=1, ports=(PortConfig(8080, 80),)))
        manager.services.create(
            ServiceSpec(
                name="mon",
                image="nginx",
                mode=ServiceMode.GLOBAL,
                ports=(PortConfig(9100, 9100, mode=PublishMode.HOST),),
            )
        )
        self.wait_converged()

    def wait_converged(self) -> None:
        manager = self.manager

        def converged() -> bool:
            with manager.state.lock:
                if any(n.status is not NodeStatus.READY for n in manager.state.nodes.values()):
                    return False
                for service in manager.state.services.values():
                    view = manager.read.service_view(service)
                    running, desired = view.running, view.desired
                    if running != desired:
                        return False
                return all(
                    t.state is TaskState.RUNNING
                    for t in manager.state.tasks.values()
                    if t.desired_state is TaskState.RUNNING
                ) and all(
                    t.state.terminal for t in manager.state.tasks.values() if t.desired_state is not TaskState.RUNNING
                )

        wait_until(converged)
        time.sleep(0.1)  # let the last reconcile pass and heartbeats settle

    def containers(self) -> dict[str, list[str]]:
        return {e.hostname: sorted(e.state.containers) for e in self.engines.values()}

    def close(self) -> None:
        self.manager.close()


def snapshot(cluster: Cluster) -> dict[str, Any]:
    """The whole cluster state as plain data: services, nodes, tasks, credentials and containers."""
    manager = cluster.manager
    with manager.state.lock:
        return {
            "services": {k: service_to_dict(v) for k, v in manager.state.services.items()},
            "nodes": {k: node_to_dict(v) for k, v in manager.state.nodes.items()},
            "tasks": {k: task_to_dict(v) for k, v in manager.state.tasks.items()},
            "meta": dict(manager.state.meta),
            "containers": cluster.containers(),
            "stored": _stored(manager),
        }


def _stored(manager: Manager) -> dict[str, Any]:
    """What the store holds (what a restarted manager would load)."""
    loaded = manager.store.load()
    return {
        "services": {k: service_to_dict(v) for k, v in loaded.services.items()},
        "nodes": sorted(loaded.nodes),
        "meta": dict(loaded.meta),
    }


def _no_ssh(host: str, port: int, fingerprint: str, *args: Any, **kwargs: Any) -> bool:
    raise HostUnreachable(f"cannot reach {host}:{port}: no SSH from unit tests")


@contextmanager
def no_ssh_probes() -> Iterator[None]:
    """A pinned SSH host key is checked by connecting to the host: unit tests never leave this machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registration, "trust_pinned_host_key", _no_ssh)
        yield


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released; nothing else in the test takes it)."""
    return free_port()


class ApiServer:
    """The real app under uvicorn on 127.0.0.1, in a thread. With `logged`, uvicorn's own and access logs
    go to the root logger (where pytest's caplog sees them) instead of its own handlers."""

    def __init__(self, manager: Manager, logged: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        # TLS as the daemon serves it: the manager's certificate from the cluster's CA.
        data_dir = manager.settings.data_dir
        cert, key = ensure_manager_certificate(data_dir, ["127.0.0.1"])
        self.ca_file = str(cert_dir(data_dir) / CA_CERT)
        config = uvicorn.Config(
            create_app(manager),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            lifespan="off",
            log_level="debug" if logged else "warning",
            log_config=None if logged else uvicorn.config.LOGGING_CONFIG,
            access_log=logged,
            timeout_graceful_shutdown=1,  # a client's idle keep-alive connection must not hold a test 10 s
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_operations(manager: Manager) -> list[tuple[str, str]]:
    """Every (method, path) of the API's OpenAPI schema, path parameters filled in (web, node-02, worker)."""
    schema = create_app(manager).openapi()
    operations = []
    for path, item in schema["paths"].items():
        ref = "node-02" if path.startswith("/nodes/") else "web"
        operations += [(method.upper(), path.replace("{ref}", ref).replace("{role}", "worker")) for method in item]
    return operations
