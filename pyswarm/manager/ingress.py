"""The routing mesh's control loop: keep every Ready node's iptables rules equal to the rendered ones.

Rendering is the pure planners.ingress; applying is drivers.host.IngressApplier (one iptables-restore per
change per node). This module only decides when, and records per node whether its rules are synced.

A bad address is one node's problem, never the cluster's: an endpoint the mesh cannot forward to (its node's
address is not IPv4, e.g. a node stored with a host name) is left out of every node's rules and reported as
that node's ingress error; a node whose own address is not IPv4 gets no rules and that error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor

from pyswarm.drivers.host import HostError, HostRunner, IngressApplier, host_for_url
from pyswarm.manager.nodes import NodeCommands
from pyswarm.manager.queries import ClusterReader
from pyswarm.manager.worklist import MeshHook
from pyswarm.model import Node
from pyswarm.planners.ingress import IngressPort, render_node_rules, skipped_endpoints

log = logging.getLogger("pyswarm.ingress")

DRIFT_CHECK = 30.0  # seconds between full re-applies, which repair rules changed behind the mesh's back
APPLY_THREADS = 8
STOP_WAIT = 10.0


class MeshSync(MeshHook):
    """Reads the desired ports through the read API, and records each node's outcome through the node
    commands. host_factory makes a node's host from its engine URL (SSH by default)."""

    def __init__(
        self,
        reader: ClusterReader,
        nodes: NodeCommands,
        drift_check: float = DRIFT_CHECK,
        host_factory: Callable[[str], HostRunner] = host_for_url,
    ) -> None:
        self.reader = reader
        self.nodes = nodes
        self.drift_check = drift_check
        self.host_factory = host_factory
        self._appliers: dict[str, IngressApplier] = {}
        self._applied: dict[str, tuple[IngressPort, ...]] = {}
        self._running: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(APPLY_THREADS, thread_name_prefix="ingress")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="ingress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def node_changed(self, node: Node) -> None:
        with self._lock:
            self._applied.pop(node.id, None)  # dockerd may have restarted and reordered the jumps
            applier = self._appliers.get(node.id)
        if applier is not None:
            applier.forget()
        self._wake.set()

    def endpoints_changed(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """No new apply starts; those under way get STOP_WAIT seconds to end (their hosts' commands have
        timeouts of their own), so that none records its outcome after the manager closed its store."""
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running.values())
        futures.wait(running, timeout=STOP_WAIT)

    def _loop(self) -> None:
        last_full = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=self.drift_check / 3)
            if self._stop.is_set():
                return
            self._wake.clear()
            if time.monotonic() - last_full > self.drift_check:
                with self._lock:
                    self._applied.clear()  # re-apply everywhere: the appliers re-read and repair drift
                last_full = time.monotonic()
            try:
                self.sync_once()
            except Exception:
                log.exception("ingress sync failed")

    def sync_once(self) -> None:
        ports = self.reader.ingress_ports()
        for node in self.reader.ready_nodes():
            with self._lock:
                if self._applied.get(node.id) == ports:
                    continue
                busy = self._running.get(node.id)
                if busy is not None and not busy.done():
                    continue  # the apply under way will be followed by another pass: _apply wakes us
                self._running[node.id] = self._pool.submit(self._apply, node, ports)

    def _apply(self, node: Node, ports: tuple[IngressPort, ...]) -> None:
        error = self._skipped_here(node, ports)
        began = time.monotonic()
        try:
            applier = self._applier(node)
            changed = applier.apply(render_node_rules(ports, node.addr))
            log.info(
                "ingress on %s: %s in %.2fs",
                node.hostname,
                "applied" if changed else "unchanged",
                time.monotonic() - began,
            )
            with self._lock:
                self._applied[node.id] = ports
        except (HostError, ValueError, OSError) as exc:
            error = str(exc)[:500]
            log.warning("ingress on %s: %s", node.hostname, error)
            with self._lock:
                self._appliers.pop(node.id, None)
        self.nodes.record_ingress(node.id, error)
        if self.reader.ingress_ports() != ports:
            self._wake.set()

    @staticmethod
    def _skipped_here(node: Node, ports: tuple[IngressPort, ...]) -> str:
        """Why this node's own endpoints (its tasks' published ports) are left out of every node's rules, if
        they are: logged, and recorded as its ingress error ("" when none is)."""
        problems = []
        for port, endpoint, problem in skipped_endpoints(ports):
            if endpoint.node_addr != node.addr:
                continue
            log.warning(
                "ingress: endpoint of %s:%d/%s (task %s) on %s skipped: %s",
                port.service_name,
                port.published,
                port.protocol.value,
                endpoint.task_id[:12],
                node.hostname,
                problem,
            )
            problems.append(f"{port.service_name}:{port.published}/{port.protocol.value}: {problem}")
        if not problems:
            return ""
        return f"endpoints skipped on every node: {'; '.join(dict.fromkeys(problems))}"[:500]

    def _applier(self, node: Node) -> IngressApplier:
        with self._lock:
            applier = self._appliers.get(node.id)
        if applier is None:
            applier = IngressApplier(self.host_factory(node.engine_url), max_age=self.drift_check)
            with self._lock:
                self._appliers[node.id] = applier
        return applier
