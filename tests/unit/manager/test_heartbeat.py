"""The heartbeat's Down rule, on in-memory engines: a node whose engine stops answering is Down after
heartbeat_misses failed pings; one whose host also refuses TCP (cut off, powered off) after two."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.engine import Engine, EngineHostUnreachable
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import Availability, NodeStatus

MANAGER_URL = "ssh://root@10.0.0.1"
WORKER_URL = "ssh://root@10.0.0.2"


class CountingEngine(MemoryEngine):
    def __init__(self, url: str, hostname: str, lock: threading.Lock) -> None:
        super().__init__(url, hostname=hostname)
        self.pings = 0
        self.count_lock = lock  # a ping is counted and judged in one step: no ping straddles a fault's start
        self.slow = False
        self.ping_waiting = threading.Event()
        self.release = threading.Event()

    def ping(self) -> None:
        with self.count_lock:
            self.pings += 1
            if not self.slow:
                super().ping()
                return
        # A slow answer: it comes when the test releases it (no timeout here: none is needed to decide).
        self.ping_waiting.set()
        assert self.release.wait(10), "the test never released the ping"


class Fleet:
    """Two engines; `host_refuses_tcp` makes connecting to the worker fail as a cut-off host does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engines = {
            MANAGER_URL: CountingEngine(MANAGER_URL, "node-01", self.lock),
            WORKER_URL: CountingEngine(WORKER_URL, "node-02", self.lock),
        }
        self.host_refuses_tcp = False
        self.connects = 0

    def factory(self, url: str, timeout: float, tls: object = None) -> Engine:
        if url == WORKER_URL:
            with self.lock:
                self.connects += 1
            if self.host_refuses_tcp:
                raise EngineHostUnreachable(f"{url}: cannot reach 10.0.0.2:22: timed out (simulated)")
        return self.engines[url]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, Manager]]:
    fleet = Fleet()
    manager = Manager(
        Settings(data_dir=tmp_path / "d", heartbeat=0.05, heartbeat_misses=3), engine_factory=fleet.factory
    )
    manager.registration.initialise(MANAGER_URL, "10.0.0.1", Availability.ACTIVE)
    manager.registration.add_node(WORKER_URL, "10.0.0.2", None)
    manager.start()
    try:
        yield fleet, manager
    finally:
        manager.stop()


def worker_status(manager: Manager) -> NodeStatus:
    with manager.state.lock:
        return next(n.status for n in manager.state.nodes.values() if n.hostname == "node-02")


def fail_worker_and_wait_down(fleet: Fleet, manager: Manager, host_refuses_tcp: bool) -> tuple[int, int]:
    """Make the worker fail; return (pings, connects) it took to mark it Down."""
    worker = fleet.engines[WORKER_URL]
    deadline = time.monotonic() + 5
    while worker.pings < 3 and time.monotonic() < deadline:  # healthy beats first
        time.sleep(0.01)
    assert worker_status(manager) is NodeStatus.READY
    with fleet.lock:  # no ping or connect in between: both counters start from here
        fleet.host_refuses_tcp = host_refuses_tcp
        worker.state.down = True
        pings, connects = worker.pings, fleet.connects
    while worker_status(manager) is not NodeStatus.DOWN:
        assert time.monotonic() < deadline, "the worker never went Down"
        time.sleep(0.005)
    return worker.pings - pings, fleet.connects - connects


def test_an_engine_that_stops_answering_is_down_after_three_missed_pings(fleet: tuple[Fleet, Manager]) -> None:
    pings, connects = fail_worker_and_wait_down(*fleet, host_refuses_tcp=False)
    assert pings == 3, pings  # the host accepts TCP: a slow or stopped engine gets every try
    assert connects == 2  # a reconnect after each of the first two misses


def test_a_host_that_refuses_tcp_after_a_missed_ping_is_down_at_once(fleet: tuple[Fleet, Manager]) -> None:
    pings, connects = fail_worker_and_wait_down(*fleet, host_refuses_tcp=True)
    assert (pings, connects) == (1, 1)  # the missed ping, then the refused connect: no third try


def slow_ping_on_worker(fleet: Fleet, manager: Manager, host_down: bool) -> CountingEngine:
    """The worker's next ping waits until released; with host_down its host refuses TCP meanwhile."""
    worker = fleet.engines[WORKER_URL]
    deadline = time.monotonic() + 5
    while worker.pings < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_status(manager) is NodeStatus.READY
    with fleet.lock:
        worker.slow = True
        worker.state.host_down = host_down
    assert worker.ping_waiting.wait(5), "no ping reached the worker"
    return worker


def test_an_unanswered_ping_whose_host_refuses_tcp_is_down_before_the_ping_ends(
    fleet: tuple[Fleet, Manager],
) -> None:
    worker = slow_ping_on_worker(*fleet, host_down=True)
    try:
        deadline = time.monotonic() + 5
        while worker_status(fleet[1]) is not NodeStatus.DOWN:
            assert time.monotonic() < deadline, "the worker never went Down while its ping hung"
            time.sleep(0.005)
        assert not worker.release.is_set()  # the ping is still unanswered: the host check decided
        message = next(n.status_message for n in fleet[1].state.nodes.values() if n.hostname == "node-02")
        assert "host unreachable" in message, message
    finally:
        worker.release.set()


def test_a_slow_ping_whose_host_accepts_tcp_leaves_the_node_ready(fleet: tuple[Fleet, Manager]) -> None:
    manager = fleet[1]
    worker = slow_ping_on_worker(*fleet, host_down=False)
    try:
        until = time.monotonic() + 20 * manager.settings.heartbeat  # twenty periods without an answer
        while time.monotonic() < until:
            assert worker_status(manager) is NodeStatus.READY  # a busy engine is not a dead host
            time.sleep(0.005)
    finally:
        worker.slow = False
        worker.release.set()
    assert worker_status(manager) is NodeStatus.READY


def test_the_period_stretches_so_that_a_large_cluster_gets_a_bounded_ping_rate(tmp_path: Path) -> None:
    from pyswarm.manager.links import NodeLink
    from pyswarm.manager.settings import MAX_PINGS_PER_SECOND, MAX_RESYNCS_PER_SECOND

    manager = Manager(Settings(data_dir=tmp_path / "d", heartbeat=0.5, resync_interval=10.0))
    try:
        assert (manager.heartbeat.period(), manager.resync.current_interval()) == (0.5, 10.0)
        for n in range(5000):  # agents only: what the budgets count
            manager.links.by_node[f"n{n}"] = NodeLink(node_id=f"n{n}", url=f"ssh://root@10.1.{n // 256}.{n % 256}")
        assert manager.heartbeat.period() == 5000 / MAX_PINGS_PER_SECOND == 5.0
        assert manager.resync.current_interval() == 5000 / MAX_RESYNCS_PER_SECOND == 50.0
        # Below the budgets, the settings hold.
        for n in range(400, 5000):
            del manager.links.by_node[f"n{n}"]
        assert (manager.heartbeat.period(), manager.resync.current_interval()) == (0.5, 10.0)
    finally:
        manager.links.by_node.clear()
        manager.close()
