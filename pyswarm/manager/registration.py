"""Registering engines as nodes: `swarm init` (this host's engine, as Leader), `swarm join` and `node add`.

An engine is probed before it is recorded (it must answer, and be the engine that asked to join); a tcp://
engine's TLS files are kept only once it is accepted, and a pinned SSH host key is taken back from
known_hosts when the join is refused.

A node's address is where every node forwards its published ports, so it is always stored as an IPv4 address
(a host name is resolved when the node is added). An admin (`node add`, client credential) may name any
engine and address. A join-token holder (`swarm join`) is bound to where it joins from (JoinClaim): its
address must be the one its request comes from, its engine must be reached there (or be an --advertise-engine
that answers with the joining engine's ID), it may only take back a Down node's identity with that node's own
secret, and what a probe of its engine found out is never echoed back to it (generic errors only).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from pyswarm.model.addresses import node_ipv4, source_ipv4

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


@dataclass(frozen=True)
class TlsPem:
    """A tcp:// engine's client credentials as PEM text, as the API receives them."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class JoinClaim:
    """A join-token holder's request to join (`swarm join`), and what it proves about itself.

    source_addr: the address the request came from (the API's client address): the node's address must be
    this one, and so must its engine URL's host unless advertised_engine (`--advertise-engine`: then the
    engine answering with the joining engine's ID is the proof). node_secret: that node's own secret, the only
    way a join takes back the identity of a Down node."""

    source_addr: str
    node_secret: str | None = field(default=None, repr=False)
    advertised_engine: bool = False


def resolve_ipv4(host: str) -> list[str]:
    """host's node addresses (model.addresses.node_ipv4): itself if it is one, else the IPv4 addresses the
    resolver (/etc/hosts, DNS) gives for the host name, in its order; [] when there is none."""
    literal = node_ipv4(host)
    if literal is not None:
        return [literal]
    if not host or ":" in host or re.fullmatch(r"[0-9.]+|0[xX].*", host):  # not a name ("10.1" is no shorthand)
        return []
    try:
        infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []
    found = (node_ipv4(str(info[4][0])) for info in infos)
    return list(dict.fromkeys(address for address in found if address is not None))


def unreachable_for_joiner(url: str) -> str:
    """What a join-token holder is told when its engine could not be probed: never why (no remote banner, body,
    port or file fact), whatever happened."""
    return f"cannot reach engine {url}, or it did not answer as a Docker Engine"


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
        addr = self._node_addr(advertise_addr)  # stored as IPv4, as every node's address
        info = self._probe(local_engine_url)
        meta = new_cluster_meta(self.connector.data_dir)
        node = Node(
            id=new_id(),
            hostname=info.hostname,
            engine_url=local_engine_url,
            addr=addr,
            role=NodeRole.MANAGER,
            availability=availability,
            status=NodeStatus.UNKNOWN,
            engine_id=info.id,
            engine_version=info.version,
            nano_cpus=info.ncpu * 10**9,
            memory_bytes=info.memory,
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
        join: JoinClaim | None = None,
    ) -> tuple[Node, str]:
        """Register an engine (`swarm join`: with join, or `node add`). Returns the node and its own secret.

        tcp:// engines need TLS credentials unless insecure_tcp (never for a join, nor unix://); an ssh://
        engine's host key must be in known_hosts already, or match ssh_fingerprint (then it is recorded there).
        addr is stored as an IPv4 address: resolved for `node add`; for a join, it must be join.source_addr."""
        parsed = urllib.parse.urlparse(engine_url)
        if join is not None:
            if not expected_engine_id:
                raise Invalid("a join must give the ID of the engine that asks to join")
            if parsed.scheme == "unix" or (parsed.scheme == "tcp" and tls is None):
                raise Invalid(
                    f"engine {engine_url}: a join cannot name a unix:// engine, or a tcp:// engine without TLS: "
                    "the manager reaches a joining engine over ssh://, or tcp:// with its TLS files"
                )
            addr = self._joiner_addr(join, addr, parsed, engine_url)
        else:
            addr = self._node_addr(addr)
        if parsed.scheme == "tcp" and tls is None and not insecure_tcp:
            raise Invalid(
                f"engine {engine_url} is tcp:// without TLS: give its CA, certificate and key, "
                "or --insecure-tcp to accept an unauthenticated engine"
            )
        if tls is not None and parsed.scheme != "tcp":
            raise Invalid("TLS credentials only apply to tcp:// engines")
        pinned_line = self._pin_host_key(parsed, ssh_fingerprint, join is not None) if ssh_fingerprint else None
        try:
            return self._register(engine_url, addr, expected_engine_id, role, tls, join)
        except BaseException:
            if pinned_line is not None:
                forget_host_key(pinned_line)  # refused: known_hosts as it was
            raise

    @staticmethod
    def _node_addr(addr: str) -> str:
        """The address to store for a node an admin adds: addr as an IPv4 address, a host name resolved."""
        if not addr:
            raise Invalid("the node's address is not known: give addr, the IPv4 address other nodes reach it at")
        found = resolve_ipv4(addr)
        if not found:
            raise Invalid(
                f"node address {addr[:80]!r} is not an IPv4 address and does not resolve to one: "
                "give the IPv4 address other nodes reach the node at"
            )
        return found[0]

    @staticmethod
    def _joiner_addr(join: JoinClaim, addr: str, parsed: urllib.parse.ParseResult, engine_url: str) -> str:
        """A joining node's address: the one it joins from, which its engine must be reached at too (unless
        it names an --advertise-engine). Forbidden otherwise: a join cannot speak for another address."""
        source = source_ipv4(join.source_addr)
        if source is None or node_ipv4(source) is None:
            raise Forbidden("a join must come from the node's own IPv4 address; this request's address is not one")
        if node_ipv4(addr) != source:
            raise Forbidden(
                f"the join's address {addr[:64]!r} must be the node's own address, the one it joins from ({source})"
            )
        if not join.advertised_engine and source not in resolve_ipv4(parsed.hostname or ""):
            raise Forbidden(
                f"engine {engine_url} is not at the node's own address ({source}), the one it joins from: "
                "a join names the engine on the joining node, or another one with --advertise-engine"
            )
        return source

    @staticmethod
    def _pin_host_key(parsed: urllib.parse.ParseResult, fingerprint: str, joining: bool) -> str | None:
        """Record the host key that matches the fingerprint; the known_hosts line it added, if it added one.
        A join-token holder is not told why it failed (whether an SSH server answers there, and with what)."""
        if parsed.scheme != "ssh":
            raise Invalid("an SSH host key fingerprint only applies to ssh:// engines")
        try:
            return trust_pinned_host_key(parsed.hostname or "", parsed.port or 22, fingerprint)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        except HostError as exc:
            if joining:
                raise EngineUnavailable(
                    f"cannot reach engine {parsed.geturl()}, or its SSH host key is not the one pinned"
                ) from None
            if isinstance(exc, HostKeyMismatch):
                raise Forbidden(str(exc)) from None
            raise EngineUnavailable(str(exc)) from None

    def _register(
        self,
        engine_url: str,
        addr: str,
        expected_engine_id: str | None,
        role: NodeRole,
        tls: TlsPem | None,
        join: JoinClaim | None,
    ) -> tuple[Node, str]:
        """add_node once the engine's host key is trusted: probe the engine and record its node."""
        with self._trial_tls(tls) as trial:
            info = self._probe(engine_url, trial, generic=join is not None)
            if expected_engine_id is not None and not _same(info.id, expected_engine_id):
                raise Forbidden(
                    f"engine at {engine_url} is not the engine that asked to join (engine ID differs): "
                    "check --advertise-engine"
                )
            with self.state.lock:
                node = self._known(info, join)
                if trial is not None:
                    self._keep_tls(engine_url, trial)
                if node is None:
                    node = self._record_new(info, engine_url, addr, role)
                    secret, stale = self.credentials.node_secret(node.id), None
                else:
                    secret, stale = self._record_rejoin(node, info, engine_url, addr, role)
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
            nano_cpus=info.ncpu * 10**9,
            memory_bytes=info.memory,
        )
        meta = self.credentials.new_node_secret(node.id)
        self.store.write(nodes=[node], meta=meta)
        self.state.meta.update(meta)
        self.state.nodes[node.id] = node
        return node

    def _record_rejoin(
        self, node: Node, info: EngineInfo, engine_url: str, addr: str, role: NodeRole
    ) -> tuple[str, NodeLink | None]:
        """A re-join of a known engine: refresh its address and totals, keep its identity. Returns its secret, and
        its old link when the URL changed (that one pings the old URL)."""
        node.engine_url, node.addr = engine_url, addr
        node.engine_version, node.nano_cpus, node.memory_bytes = info.version, info.ncpu * 10**9, info.memory
        node.role = role if not node.leader else node.role
        node.status_message = ""  # it left, but is back: the heartbeat may mark it Ready again
        node.updated_at = time.time()
        self.store.write(nodes=[node])
        link = self.links.get(node.id)
        stale = self.links.pop(node.id) if link is not None and link.url != engine_url else None
        return self.credentials.node_secret(node.id), stale

    def _known(self, info: EngineInfo, join: JoinClaim | None) -> Node | None:
        """The node of an engine being added that is known already (lock held), if it may re-join: only a node
        that is Down (its engine unreachable, or it left the swarm) may, and a join only with that node's own
        secret (anyone may run an engine that answers with a known engine ID: that is no proof). Else a
        conflict, like docker's "This node is already part of a swarm"; nothing is changed."""
        for existing in self.state.nodes.values():
            if existing.engine_id != info.id:
                continue
            if existing.status is NodeStatus.DOWN:
                secret = self.credentials.node_secret(existing.id)
                if join is not None and not (secret and join.node_secret and _same(join.node_secret, secret)):
                    raise Forbidden(
                        f"engine {info.id[:12]} is node {existing.hostname}, which is Down: a join takes its place "
                        "back only with that node's own secret (its node.json); to join it as a new node, run "
                        f"`pyswarm node rm {existing.hostname}` on the manager first"
                    )
                return existing
            raise Conflict(
                f"engine {info.id[:12]} is already in the swarm as {existing.hostname} "
                f"(status {existing.status.value}): this node is already part of a swarm; to add it again, run "
                f"`pyswarm swarm leave` on it first, or remove it with `pyswarm node rm --force {existing.hostname}`"
            )
        return None

    def _probe(self, url: str, tls_dir: Path | None = None, generic: bool = False) -> EngineInfo:
        """The engine's info. generic (a join-token holder asks): whatever went wrong, one message that tells
        nothing about what is at url; the admin gets the reason."""
        if generic:
            try:
                return self._probe(url, tls_dir)
            except Exception:  # an untrusted URL: a fake engine may answer anything
                raise EngineUnavailable(unreachable_for_joiner(url)) from None
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


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison of a presented value (any text) with the expected one."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
