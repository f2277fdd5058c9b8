"""The manager's links to the nodes' engines: per node, its engine clients, its queue of engine jobs and its
liveness (NodeLink); how an engine client is made (EngineConnector); and the registry of links (NodeLinks).

(Nothing runs on a node but its Docker Engine: a link is the manager's end of it.)
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyswarm.drivers.engine import DockerEngine, Engine, TlsFiles
from pyswarm.manager.settings import CONNECT_TIMEOUT_MAX, CONNECT_TIMEOUT_MIN
from pyswarm.model import Node


class EngineFactory(Protocol):
    def __call__(self, url: str, timeout: float, tls: TlsFiles | None = None) -> Engine: ...


def docker_engine_factory(url: str, timeout: float, tls: TlsFiles | None = None) -> Engine:
    connect_timeout = min(CONNECT_TIMEOUT_MAX, max(timeout / 2, CONNECT_TIMEOUT_MIN))
    return DockerEngine(url, timeout=timeout, tls=tls, connect_timeout=connect_timeout)


@dataclass
class NodeLink:
    """What the manager keeps per node: engine clients, its queue of engine jobs, and liveness."""

    node_id: str
    url: str
    jobs: deque[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=deque)
    running: int = 0  # queue runners of `jobs` on the shared workers
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


class EngineConnector:
    """Engine clients for URLs, with the TLS files stored for tcp:// engines."""

    def __init__(self, factory: EngineFactory, data_dir: Path, engine_timeout: float) -> None:
        self.factory = factory
        self.data_dir = data_dir
        self.engine_timeout = engine_timeout

    def tls_dir(self, url: str) -> Path:
        return self.data_dir / "tls" / hashlib.sha256(url.encode()).hexdigest()[:16]

    def connect(self, url: str, timeout: float, tls_dir: Path | None = None) -> Engine:
        """An engine client for url, with the TLS files stored for it when it is a tcp:// engine (or those in
        tls_dir: credentials being tried before they are stored)."""
        tls_dir = tls_dir or self.tls_dir(url)
        if url.startswith("tcp://") and (tls_dir / "key.pem").exists():
            tls = TlsFiles(ca=str(tls_dir / "ca.pem"), cert=str(tls_dir / "cert.pem"), key=str(tls_dir / "key.pem"))
            return self.factory(url, timeout, tls)
        return self.factory(url, timeout)

    def engine(self, link: NodeLink) -> Engine:
        """The link's engine client for jobs, made on first use."""
        engine = link.engine
        if engine is None:
            engine = self.connect(link.url, self.engine_timeout)
            link.engine = engine
        return engine

    def drop_engine(self, link: NodeLink) -> None:
        """Close the jobs' client (it failed, or the node came back): the next job makes a new one."""
        engine, link.engine = link.engine, None
        if engine is not None:
            engine.close()


class NodeLinks:
    """The links of the nodes this manager drives, by node ID. Starting one starts its heartbeat; stopping
    one drops its queued jobs and closes its clients (the hooks are set by the wiring, manager.py)."""

    def __init__(self, stopping: threading.Event) -> None:
        self.by_node: dict[str, NodeLink] = {}
        self._stopping = stopping
        self.on_start: Callable[[NodeLink], None] = lambda link: None
        self.on_stop: Callable[[NodeLink], None] = lambda link: None

    def __len__(self) -> int:
        return len(self.by_node)

    def get(self, node_id: str) -> NodeLink | None:
        return self.by_node.get(node_id)

    def start(self, node: Node) -> None:
        """A link for the node, unless it has one (state lock held)."""
        if node.id in self.by_node or self._stopping.is_set():
            return
        link = NodeLink(node_id=node.id, url=node.engine_url)
        self.by_node[node.id] = link
        self.on_start(link)

    def pop(self, node_id: str) -> NodeLink | None:
        """Take the node's link out of the registry (state lock held); stop it after the lock is released."""
        return self.by_node.pop(node_id, None)

    def stop(self, link: NodeLink) -> None:
        link.stop.set()
        self.on_stop(link)
        for engine in (link.engine, link.heartbeat_engine):
            if engine is not None:
                engine.close()
