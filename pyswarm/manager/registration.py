"""Registering engines as nodes: `swarm init` (this host's engine, as Leader), `swarm join` and `node add`.

An engine is probed before it is recorded (it must answer, and be the engine that asked to join); a tcp://
engine's TLS files are kept only once it is accepted, and a pinned SSH host key is taken back from
known_hosts when the join is refused.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyswarm.drivers.engine import EngineError
from pyswarm.drivers.host import HostError, HostKeyMismatch, forget_host_key, trust_pinned_host_key
from pyswarm.manager.credentials import Credentials, new_cluster_meta
from pyswarm.manager.errors import Conflict, EngineUnavailable, Forbidden, Invalid
from pyswarm.manager.files import secure_dir
from pyswarm.manager.ids import new_id
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import PROBE_TIMEOUT_MAX
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import Availability, EngineInfo, Node, NodeRole, NodeStatus

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


@dataclass(frozen=True)
class TlsPem:
    """A tcp:// engine's client credentials as PEM text, as the API receives them."""

    ca: str
    cert: str
    key: str


class Registration:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        store: StateStore,
        transitions: Transitions,
        credentials: Credentials,
        links: NodeLinks,
        connector: EngineConnector,
    ) -> None:
        self.state = state
        self.work = work
        self.store = store
        self.transitions = transitions
        self.credentials = credentials
        self.links = links
        self.connector = connector

    def initialise(self, local_engine_url: str, advertise_addr: str, availability: Availability) -> Node:
        """First start (`swarm init`): make the cluster and register this host's engine as Leader."""
        with self.state.lock:
            if "cluster_id" in self.state.meta:
                raise Conflict("this node is already part of a swarm")
            meta = new_cluster_meta()
        info = self._probe(local_engine_url)
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
        with self.state.lock:
            self.store.write(meta=meta, nodes=[node])
            self.state.meta.update(meta)
            self.state.nodes[node.id] = node
        return node

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
            raise Invalid(
                f"engine {engine_url} is tcp:// without TLS: give its CA, certificate and key, "
                "or --insecure-tcp to accept an unauthenticated engine"
            )
        if tls is not None and parsed.scheme != "tcp":
            raise Invalid("TLS credentials only apply to tcp:// engines")
        pinned_line = self._pin_host_key(parsed, ssh_fingerprint) if ssh_fingerprint else None
        try:
            return self._register(engine_url, addr, expected_engine_id, role, tls)
        except BaseException:
            if pinned_line is not None:
                forget_host_key(pinned_line)  # refused: known_hosts as it was
            raise

    @staticmethod
    def _pin_host_key(parsed: urllib.parse.ParseResult, fingerprint: str) -> str | None:
        """Record the host key that matches the fingerprint; the known_hosts line it added, if it added one."""
        if parsed.scheme != "ssh":
            raise Invalid("an SSH host key fingerprint only applies to ssh:// engines")
        try:
            return trust_pinned_host_key(parsed.hostname or "", parsed.port or 22, fingerprint)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        except HostKeyMismatch as exc:
            raise Forbidden(str(exc)) from None
        except HostError as exc:
            raise EngineUnavailable(str(exc)) from None

    def _register(
        self, engine_url: str, addr: str, expected_engine_id: str | None, role: NodeRole, tls: TlsPem | None
    ) -> tuple[Node, str]:
        """add_node once the engine's host key is trusted: probe the engine and record its node."""
        with self._trial_tls(tls) as trial:
            info = self._probe(engine_url, trial)
            if expected_engine_id is not None and not hmac.compare_digest(info.id, expected_engine_id):
                raise Forbidden(
                    f"engine at {engine_url} is not the engine that asked to join (engine ID differs): "
                    "check --advertise-engine"
                )
            with self.state.lock:
                node = self._known(info)
                if trial is not None:
                    self._keep_tls(engine_url, trial)
                if node is None:
                    node = self._record_new(info, engine_url, addr, role)
                    secret, stale = self.credentials.node_secret(node.id), None
                else:
                    secret, stale = self._record_rejoin(node, engine_url, addr, role)
                self.links.start(node)
                self.transitions.node_changed(node.id)
        if stale is not None:
            self.links.stop(stale)
        self.work.notify()
        return node, secret

    def _record_new(self, info: EngineInfo, engine_url: str, addr: str, role: NodeRole) -> Node:
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
        meta = self.credentials.new_node_secret(node.id)
        self.store.write(nodes=[node], meta=meta)
        self.state.meta.update(meta)
        self.state.nodes[node.id] = node
        return node

    def _record_rejoin(self, node: Node, engine_url: str, addr: str, role: NodeRole) -> tuple[str, NodeLink | None]:
        """A re-join of a known engine: refresh its address, keep its identity. Returns its secret, and its old
        link when the URL changed (that one pings the old URL)."""
        node.engine_url, node.addr = engine_url, addr
        node.role = role if not node.leader else node.role
        node.status_message = ""  # it left, but is back: the heartbeat may mark it Ready again
        node.updated_at = time.time()
        self.store.write(nodes=[node])
        link = self.links.get(node.id)
        stale = self.links.pop(node.id) if link is not None and link.url != engine_url else None
        return self.credentials.node_secret(node.id), stale

    def _known(self, info: EngineInfo) -> Node | None:
        """The node of an engine being added that is known already (lock held), if it may re-join: only a node
        that is Down (its engine unreachable, or it left the swarm) may. Else a conflict, like docker's "This
        node is already part of a swarm"; nothing is changed."""
        for existing in self.state.nodes.values():
            if existing.engine_id != info.id:
                continue
            if existing.status is NodeStatus.DOWN:
                return existing
            raise Conflict(
                f"engine {info.id[:12]} is already in the swarm as {existing.hostname} "
                f"(status {existing.status.value}): this node is already part of a swarm; to add it again, run "
                f"`pyswarm swarm leave` on it first, or remove it with `pyswarm node rm --force {existing.hostname}`"
            )
        return None

    def _probe(self, url: str, tls_dir: Path | None = None) -> EngineInfo:
        try:
            engine = self.connector.connect(url, min(self.connector.engine_timeout, PROBE_TIMEOUT_MAX), tls_dir)
        except EngineError as exc:
            raise EngineUnavailable(f"cannot reach engine {url}: {exc}") from None
        try:
            return engine.info()
        except EngineError as exc:
            raise EngineUnavailable(f"engine {url} did not answer: {exc}") from None
        finally:
            engine.close()

    @contextlib.contextmanager
    def _trial_tls(self, tls: TlsPem | None) -> Iterator[Path | None]:
        """The TLS files of an engine being added, in a private (0700) temporary directory that is removed on
        the way out, whatever happens: they are only stored for good (_keep_tls) once the node is accepted, so
        a refused `node add` leaves no key on disk. The directory is in the data directory's tls/, on the same
        filesystem as their final place."""
        if tls is None:
            yield None
            return
        parent = secure_dir(self.connector.data_dir / "tls")
        trial = Path(tempfile.mkdtemp(prefix=".trial-", dir=parent))  # mode 0700
        try:
            for name, text in zip(TLS_FILES, (tls.ca, tls.cert, tls.key), strict=True):
                fd = os.open(trial / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
            yield trial
        finally:
            shutil.rmtree(trial, ignore_errors=True)

    def _keep_tls(self, url: str, trial: Path) -> None:
        """Move the tried TLS files of an accepted engine to their place (each replaced atomically)."""
        tls_dir = secure_dir(self.connector.tls_dir(url))
        for name in TLS_FILES:
            os.replace(trial / name, tls_dir / name)
