"""The routing mesh's control loop: keep every Ready node's iptables rules equal to the rendered ones.

Rendering is the pure planners.ingress; applying is drivers.host.IngressApplier (one iptables-restore per
change per node). This module only decides when, and records per node whether its rules are synced.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from pyswarm.drivers.host import HostError, IngressApplier, host_for_url
from pyswarm.manager.core import IngressSync, Manager
from pyswarm.model import Node, NodeStatus
from pyswarm.planners.containers import endpoints
from pyswarm.planners.ingress import IngressPort, ingress_ports_for, render_node_rules

log = logging.getLogger("pyswarm.ingress")


def desired_ingress_ports(manager: Manager) -> tuple[IngressPort, ...]:
    """Every published ingress port of the cluster with its running endpoints, in a stable order."""
    with manager.lock:
        ports: list[IngressPort] = []
        for service in sorted(manager.services.values(), key=lambda s: s.id):
            if not service.spec.ingress_ports():
                continue
            tasks = manager.tasks_by_service.get(service.id, {}).values()
            ports.extend(ingress_ports_for(service, endpoints(service, tasks, manager.nodes)))
        return tuple(ports)


class MeshSync(IngressSync):
    def __init__(self, manager: Manager, drift_check: float = 30.0) -> None:
        self.manager = manager
        self.drift_check = drift_check
        self._appliers: dict[str, IngressApplier] = {}
        self._applied: dict[str, tuple[IngressPort, ...]] = {}
        self._running: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="ingress")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="ingress", daemon=True)
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
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

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

    def desired_ports(self) -> tuple[IngressPort, ...]:
        return desired_ingress_ports(self.manager)

    def sync_once(self) -> None:
        ports = self.desired_ports()
        with self.manager.lock:
            nodes = [n for n in self.manager.nodes.values() if n.status is NodeStatus.READY]
        for node in nodes:
            with self._lock:
                if self._applied.get(node.id) == ports:
                    continue
                busy = self._running.get(node.id)
                if busy is not None and not busy.done():
                    continue  # the apply under way will be followed by another pass: _apply wakes us
                self._running[node.id] = self._pool.submit(self._apply, node, ports)

    def _apply(self, node: Node, ports: tuple[IngressPort, ...]) -> None:
        error = ""
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
        self._record(node.id, error)
        if self.desired_ports() != ports:
            self._wake.set()

    def _applier(self, node: Node) -> IngressApplier:
        with self._lock:
            applier = self._appliers.get(node.id)
        if applier is None:
            applier = IngressApplier(host_for_url(node.engine_url), max_age=self.drift_check)
            with self._lock:
                self._appliers[node.id] = applier
        return applier

    def _record(self, node_id: str, error: str) -> None:
        manager = self.manager
        with manager.lock:
            node = manager.nodes.get(node_id)
            if node is None:
                return
            synced = not error
            if node.ingress_synced is synced and node.ingress_error == error:
                return
            node.ingress_synced, node.ingress_error = synced, error
            manager.store.write(nodes=[node])
