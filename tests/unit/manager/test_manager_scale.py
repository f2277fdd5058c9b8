"""What the manager's design for scale must keep: parallel starts on slow engines, no passes while nothing
changes, task writes that land, resyncs that do not race with starts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.engine import Engine
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.manager.store import SqliteStore
from pyswarm.model import Availability, NodeStatus, ServiceSpec, Task, TaskState
from tests.helpers import wait_until

URLS = ["ssh://root@10.0.0.1", "ssh://root@10.0.0.2"]


class Cluster:
    def __init__(self, data_dir: Path) -> None:
        self.engines = {url: MemoryEngine(url, hostname=f"node-{i}") for i, url in enumerate(URLS, 1)}
        self.manager = Manager(Settings(data_dir=data_dir, heartbeat=0.05, resync_interval=0.2), self.factory)
        self.manager.registration.initialise(URLS[0], "10.0.0.1", Availability.ACTIVE)
        for url in URLS[1:]:
            self.manager.registration.add_node(url, url.split("@")[1], None)
        self.manager.start()
        wait_until(lambda: all(n.status is NodeStatus.READY for n in self.manager.state.nodes.values()))

    def factory(self, url: str, timeout: float) -> Engine:
        return self.engines[url]

    def running(self) -> int:
        with self.manager.state.lock:
            return sum(1 for t in self.manager.state.tasks.values() if t.state is TaskState.RUNNING)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    yield c
    c.manager.close()


def test_a_slow_engine_gets_its_starts_in_parallel(cluster: Cluster) -> None:
    for engine in cluster.engines.values():
        engine.state.run_delay = 0.3
    began = time.monotonic()
    cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=16))
    wait_until(lambda: cluster.running() == 16)
    # 8 per node, 0.3 s each: one after another that is 2.4 s; the first shows the engine is slow, and the
    # other 7 go in parallel.
    assert time.monotonic() - began < 1.5


def test_nothing_runs_while_nothing_changes(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=6))
    wait_until(lambda: cluster.running() == 6)
    time.sleep(0.3)
    seen = cluster.manager.state.wait_for_change(-1, 0)
    time.sleep(1.0)  # 20 heartbeats and 5 resyncs per node
    assert cluster.manager.state.wait_for_change(-1, 0) == seen


def test_task_writes_land_and_service_removal_is_durable_at_once(cluster: Cluster, tmp_path: Path) -> None:
    manager = cluster.manager
    service = manager.services.create(ServiceSpec(name="web", image="nginx", replicas=4))
    wait_until(lambda: cluster.running() == 4)
    wait_until(
        lambda: sum(t.state is TaskState.RUNNING for t in SqliteStore(tmp_path / "data").load().tasks.values()) == 4
    )
    manager.services.remove("web")
    assert service.id not in SqliteStore(tmp_path / "data").load().services  # before any pass
    wait_until(lambda: not manager.state.tasks)
    manager.close()
    assert SqliteStore(tmp_path / "data").load().tasks == {}


def test_resync_judges_only_tasks_that_did_not_change_during_the_listing(cluster: Cluster) -> None:
    manager = cluster.manager
    manager.services.create(ServiceSpec(name="web", image="nginx", replicas=2))
    wait_until(lambda: cluster.running() == 2)
    node_id = next(n.id for n in manager.state.nodes.values() if n.engine_url == URLS[1])
    engine = cluster.engines[URLS[1]]
    with manager.state.lock:
        on_node = [t for t in manager.state.tasks.values() if t.node_id == node_id]
        assert on_node, "the spread puts a task on each node"
        started_late, gone = on_node[0], Task(id="x" * 25, service_id=on_node[0].service_id, slot=99)
    # The engine lists its containers; then a task starts (its container missing from that listing) and
    # another one, running long before, has vanished from it too.
    listing = engine.containers(manager.cluster_id)
    engine.containers = lambda cluster_id: [c for c in listing if c.id != started_late.container_id]  # type: ignore[method-assign]
    with manager.state.lock:
        gone.node_id, gone.state, gone.container_id = node_id, TaskState.RUNNING, "f" * 64
        gone.state_changed_at = time.time() - 60
        manager.state.tasks[gone.id] = gone
        manager.state.tasks_by_node[node_id].add(gone.id)
        started_late.state_changed_at = time.time() + 60  # it changed after the listing began
    manager.resync.resync_node(node_id)
    assert started_late.state is TaskState.RUNNING
    assert gone.state is TaskState.FAILED and gone.error == "container vanished from the node"
