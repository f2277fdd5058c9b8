"""The heartbeat: every node's engine is pinged each period, and the verdicts (Ready, Down) are recorded.

One thread schedules every node's beats (a heap of due times) and hands the pings that are due to a small
pool, in batches: a ping is I/O, and healthy nodes answer fast, so a batch goes one after another; a node that
just failed gets a batch of its own, so that its timeouts delay no other node. A node is Down after
heartbeat_misses missed pings, or sooner when its host refuses TCP (a cut-off or powered-off host).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from pyswarm.drivers.engine import EngineError, EngineHostUnreachable
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import (
    BEAT_WAKES_PER_PERIOD,
    HOST_CHECK_TIMEOUT,
    MAX_PINGS_PER_SECOND,
    PING_THREADS,
    PING_TIMEOUT_MIN,
    PING_TIMEOUT_PERIODS,
    PINGS_PER_BATCH,
    Settings,
)
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.manager.transitions import Transitions, has_left
from pyswarm.manager.worklist import WorkList
from pyswarm.model import NodeStatus

log = logging.getLogger("pyswarm.manager")


class Heartbeat:
    def __init__(
        self,
        settings: Settings,
        state: ClusterState,
        work: WorkList,
        store: StateStore,
        transitions: Transitions,
        links: NodeLinks,
        connector: EngineConnector,
    ) -> None:
        self.settings = settings
        self.state = state
        self.work = work
        self.store = store
        self.transitions = transitions
        self.links = links
        self.connector = connector
        # Set by the wiring: what a good ping may trigger (a resync), and what a node coming online starts.
        self.after_good_ping: Callable[[NodeLink], None] = lambda link: None
        self.came_online: Callable[[NodeLink], None] = lambda link: None
        self._pings = ThreadPoolExecutor(PING_THREADS, thread_name_prefix="ping")
        self._pings_in_flight: dict[str, tuple[float, NodeLink]] = {}  # node id -> (when the ping began, link)
        self._beats: list[tuple[float, int, NodeLink]] = []  # heap of (due, tiebreak, link)
        self._beats_changed = threading.Condition(threading.Lock())
        self._beat_counter = 0
        self._thread: threading.Thread | None = None

    def period(self) -> float:
        """The set period, or longer in a cluster too large for it: see MAX_PINGS_PER_SECOND."""
        return max(self.settings.heartbeat, len(self.links) / MAX_PINGS_PER_SECOND)

    def add(self, link: NodeLink) -> None:
        """Start beating for a new link (its first ping is due now)."""
        self._schedule(link, time.monotonic())
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._beats_changed:
            self._beats_changed.notify()
        self._pings.shutdown(wait=False, cancel_futures=True)

    def _schedule(self, link: NodeLink, at: float) -> None:
        with self._beats_changed:
            self._beat_counter += 1
            heapq.heappush(self._beats, (at, self._beat_counter, link))
            if self._beats[0][2] is link:
                self._beats_changed.notify()

    def _run(self) -> None:
        while not self.work.stopping.is_set():
            period = self.period()
            if self._pings_in_flight:
                self._check_slow_pings(period)
            due = self._due(period)
            healthy = [link for link in due if not link.misses]
            batches = [healthy[i : i + PINGS_PER_BATCH] for i in range(0, len(healthy), PINGS_PER_BATCH)]
            batches += [[link] for link in due if link.misses]
            for batch in batches:
                try:
                    self._pings.submit(self._ping, batch)
                except RuntimeError:  # shut down
                    return

    def _due(self, period: float) -> list[NodeLink]:
        """The links whose beat is due, or none after a wait."""
        due: list[NodeLink] = []
        with self._beats_changed:
            now = time.monotonic()
            while self._beats and self._beats[0][0] <= now:
                link = heapq.heappop(self._beats)[2]
                if not link.stop.is_set():
                    due.append(link)
            if not due:
                # Wake several times a period: a batch just handed over may hang on its first ping (see
                # _check_slow_pings) before the next beat is due, or before any is queued.
                wake = period / BEAT_WAKES_PER_PERIOD
                self._beats_changed.wait(min(self._beats[0][0] - now, wake) if self._beats else wake)
        return due

    def _ping(self, links: Iterable[NodeLink]) -> None:
        period = self.period()
        beats = []
        for link in links:
            began = time.monotonic()
            self._pings_in_flight[link.node_id] = (began, link)
            try:
                self._ping_one(link, period)
            except Exception:
                log.exception("heartbeat of node %s failed", link.node_id[:12])
            finally:
                self._pings_in_flight.pop(link.node_id, None)
            if not link.stop.is_set():
                beats.append((began + period, link))
        with self._beats_changed:  # the batch's next beats in one go: the ping threads share this lock
            first = self._beats[0][0] if self._beats else None
            for at, link in beats:
                self._beat_counter += 1
                heapq.heappush(self._beats, (at, self._beat_counter, link))
            if self._beats and self._beats[0][0] != first:
                self._beats_changed.notify()

    def _check_slow_pings(self, period: float) -> None:
        """A ping unanswered for a period gets its host checked, once, while it still waits: a host that refuses
        TCP then is gone (cut off, powered off), and its node is Down without waiting for the ping's timeout.
        A busy dockerd's host still accepts TCP, so a slow engine is not marked Down by this."""
        now = time.monotonic()
        for began, link in list(self._pings_in_flight.values()):
            if now - began >= period and link.probed_ping != began:
                link.probed_ping = began
                with contextlib.suppress(RuntimeError):  # shut down
                    self._pings.submit(self._check_host, link, began, min(period, HOST_CHECK_TIMEOUT))

    def _check_host(self, link: NodeLink, began: float, timeout: float) -> None:
        engine = link.heartbeat_engine
        if engine is None:
            return  # reconnecting: the reconnect checks the host itself
        try:
            engine.check_host(timeout)
        except EngineHostUnreachable as exc:
            in_flight = self._pings_in_flight.get(link.node_id)
            if in_flight is not None and in_flight[0] == began:  # that ping is still unanswered
                waited = time.monotonic() - began
                self.record(link, NodeStatus.DOWN, f"heartbeat failure: no answer for {waited:.1f}s, {exc}")
        except EngineError:
            pass  # not a verdict on the host: the ping decides

    def _ping_one(self, link: NodeLink, period: float) -> None:
        try:
            if link.heartbeat_engine is None:
                timeout = max(PING_TIMEOUT_PERIODS * period, PING_TIMEOUT_MIN)
                link.heartbeat_engine = self.connector.connect(link.url, timeout)
            link.heartbeat_engine.ping()
        except EngineError as exc:
            engine, link.heartbeat_engine = link.heartbeat_engine, None
            if engine is not None:
                engine.close()
            link.misses += 1
            # A missed ping, then a host that refuses TCP (the reconnect's first step, at once): Down without a
            # third miss. A slow engine still gets heartbeat_misses tries.
            host_gone = isinstance(exc, EngineHostUnreachable) and link.misses >= 2
            if link.misses >= self.settings.heartbeat_misses or host_gone:
                self.record(link, NodeStatus.DOWN, f"heartbeat failure: {exc}")
            return
        link.misses = 0
        node = self.state.nodes.get(link.node_id)
        if not (link.online and node is not None and node.status is NodeStatus.READY):
            self.record(link, NodeStatus.READY, "")  # a change: the common case above needs no lock
        self.after_good_ping(link)

    def record(self, link: NodeLink, status: NodeStatus, message: str) -> None:
        """The verdict on a node: its status is recorded and persisted if it changed. A node that comes online
        (back, or first seen by this manager) gets a fresh engine client, a new event stream and a resync."""
        with self.state.lock:
            node = self.state.nodes.get(link.node_id)
            if node is None or (has_left(node) and status is NodeStatus.READY):
                return
            changed = self.transitions.node_status(node, status, message)
            if changed:
                self.store.write(nodes=[node])
            # The link's own view, not the stored status: a restarted manager finds nodes stored as Ready.
            came_online = status is NodeStatus.READY and not link.online
            link.online = status is NodeStatus.READY
        if came_online:
            self.connector.drop_engine(link)
            self.came_online(link)
            with self.state.lock:
                self.work.attention.update(self.state.tasks_by_node.get(link.node_id, ()))  # its tasks can start
        if came_online or changed:
            self.work.mesh.node_changed(node)
            self.work.notify()
