"""The manager end to end against in-memory engines: the walkthrough, faults, restarts and refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.engine import Engine
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.errors import Conflict, ManagerError, NotFound
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import (
    LABEL_CLUSTER_ID,
    LABEL_TASK_ID,
    Availability,
    ContainerInfo,
    ContainerSpec,
    NodeStatus,
    PortConfig,
    ServiceSpec,
    TaskState,
)
from tests.helpers import wait_until

URLS = ["ssh://root@10.0.0.1", "ssh://root@10.0.0.2", "ssh://root@10.0.0.3"]


class Cluster:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.engines = {url: MemoryEngine(url, hostname=f"node-0{i + 1}") for i, url in enumerate(URLS)}
        self.manager = self.start_manager(init=True)

    def factory(self, url: str, timeout: float) -> Engine:
        return self.engines[url]

    def start_manager(self, init: bool = False) -> Manager:
        settings = Settings(data_dir=self.data_dir, heartbeat=0.05, resync_interval=0.5)
        manager = Manager(settings, engine_factory=self.factory)
        if init:
            manager.registration.initialise(URLS[0], "10.0.0.1", Availability.ACTIVE)
            for url in URLS[1:]:
                manager.registration.add_node(url, url.split("@")[1], None)
        manager.start()
        return manager

    def containers(self) -> dict[str, list[str]]:
        """hostname -> ids of running containers of this cluster."""
        return {
            engine.hostname: [c.id for c in engine.containers(self.manager.cluster_id) if c.status == "running"]
            for engine in self.engines.values()
        }

    def running(self, name: str) -> int:
        service = self.manager.state.find_service(name)
        return self.manager.read.service_view(service).running

    def total_containers(self) -> int:
        return sum(len(ids) for ids in self.containers().values())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    wait_until(lambda: all(n.status is NodeStatus.READY for n in c.manager.state.nodes.values()))
    yield c
    c.manager.close()


def web(replicas: int = 1, image: str = "nginx") -> ServiceSpec:
    return ServiceSpec(name="web", image=image, replicas=replicas, ports=(PortConfig(80, 80),))


def test_walkthrough_scale_spreads_and_rm_leaves_nothing(cluster: Cluster) -> None:
    manager = cluster.manager
    manager.services.create(web(1))
    wait_until(lambda: cluster.running("web") == 1)
    service = manager.state.find_service("web")
    manager.services.update("web", web(3), service.version)
    wait_until(lambda: cluster.running("web") == 3)
    assert sorted(len(ids) for ids in cluster.containers().values()) == [1, 1, 1]
    service = manager.state.find_service("web")
    manager.services.update("web", web(1), service.version)
    wait_until(lambda: cluster.total_containers() == 1)
    assert cluster.running("web") == 1
    manager.services.remove("web")
    wait_until(lambda: cluster.total_containers() == 0 and not manager.state.tasks)


def test_killed_container_is_replaced(cluster: Cluster) -> None:
    spec = ServiceSpec(name="web", image="nginx", replicas=2)
    cluster.manager.services.create(spec)
    wait_until(lambda: cluster.running("web") == 2)
    engine = next(e for e in cluster.engines.values() if e.containers(cluster.manager.cluster_id))
    victim = engine.containers(cluster.manager.cluster_id)[0]
    engine.kill(victim.id)
    # The restart delay (5 s by default) is respected; use a service with none to keep the test short.
    wait_until(lambda: any(t.state is TaskState.FAILED for t in cluster.manager.state.tasks.values()))
    failed = next(t for t in cluster.manager.state.tasks.values() if t.state is TaskState.FAILED)
    assert failed.error == "task: non-zero exit (137)"


def test_failed_task_restarts_after_delay(cluster: Cluster) -> None:
    from dataclasses import replace

    from pyswarm.model import RestartPolicy

    spec = replace(ServiceSpec(name="web", image="nginx", replicas=1), restart_policy=RestartPolicy(delay=0.2))
    cluster.manager.services.create(spec)
    wait_until(lambda: cluster.running("web") == 1)
    first = next(iter(cluster.containers()[h][0] for h in cluster.containers() if cluster.containers()[h]))
    engine = next(e for e in cluster.engines.values() if first in e.state.containers)
    engine.kill(first)
    wait_until(lambda: cluster.running("web") == 1 and all(first not in ids for ids in cluster.containers().values()))
    slots = {t.slot for t in cluster.manager.state.tasks.values() if t.active}
    assert slots == {1}


def test_node_down_moves_tasks_and_stale_containers_go_when_it_returns(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=3))
    wait_until(lambda: cluster.running("web") == 3)
    lost = cluster.engines[URLS[2]]
    stale = [c.id for c in lost.containers(cluster.manager.cluster_id)]
    assert len(stale) == 1
    lost.set_down(True)
    node3 = next(n for n in cluster.manager.state.nodes.values() if n.engine_url == URLS[2])
    wait_until(lambda: node3.status is NodeStatus.DOWN)
    wait_until(lambda: cluster.running("web") == 3)
    on_survivors = sum(len(e.state.containers) for u, e in cluster.engines.items() if u != URLS[2])
    assert on_survivors == 3
    lost.set_down(False)
    wait_until(lambda: node3.status is NodeStatus.READY)
    wait_until(lambda: not lost.state.containers)
    assert cluster.running("web") == 3


@pytest.mark.reliability("Manager restart adopts running containers (in-memory engines)")
def test_restart_adopts_running_containers_without_restarting(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=3))
    wait_until(lambda: cluster.running("web") == 3)
    before = cluster.containers()
    cluster.manager.close()
    cluster.manager = cluster.start_manager()
    wait_until(lambda: cluster.running("web") == 3)
    time.sleep(0.5)  # a few resync periods: nothing may change
    assert cluster.containers() == before
    assert sum(1 for t in cluster.manager.state.tasks.values() if t.active) == 3


def test_unknown_container_with_our_labels_is_removed(cluster: Cluster) -> None:
    engine = cluster.engines[URLS[1]]
    stray = engine.run(
        ContainerSpec(
            name="ghost.1.x",
            image="nginx",
            command=(),
            env=(),
            ports=(),
            labels={LABEL_CLUSTER_ID: cluster.manager.cluster_id, LABEL_TASK_ID: "not-a-task"},
        )
    )
    wait_until(lambda: stray.id not in engine.state.containers)


def test_missing_image_is_rejected_with_the_error(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="bad", image="nosuch:1.0", replicas=1))
    wait_until(lambda: any(t.state is TaskState.REJECTED for t in cluster.manager.state.tasks.values()))
    task = next(t for t in cluster.manager.state.tasks.values() if t.state is TaskState.REJECTED)
    assert "No such image: nosuch:1.0" in task.error


def test_refusals_leave_state_unchanged(cluster: Cluster) -> None:
    manager = cluster.manager
    created = manager.services.create(web(1))
    with pytest.raises(ManagerError) as duplicate:
        manager.services.create(web(2))
    assert isinstance(duplicate.value, Conflict)
    other = ServiceSpec(name="api", image="nginx", ports=(PortConfig(80, 8080),))
    with pytest.raises(ManagerError, match="port '80/tcp' is already in use"):
        manager.services.create(other)
    with pytest.raises(ManagerError, match="out of sequence"):
        manager.services.update("web", web(5), created.version + 7)
    with pytest.raises(ManagerError) as missing:
        manager.state.find_service("nope")
    assert isinstance(missing.value, NotFound)
    assert [s.spec for s in manager.state.services.values()] == [web(1)]
    reloaded = Manager(Settings(data_dir=cluster.data_dir), engine_factory=cluster.factory)
    assert [s.spec for s in reloaded.state.services.values()] == [web(1)]


def test_drain_empties_a_node(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=3))
    wait_until(lambda: cluster.running("web") == 3)
    cluster.manager.nodes.update("node-02", availability=Availability.DRAIN)
    wait_until(lambda: not cluster.engines[URLS[1]].state.containers and cluster.running("web") == 3)


def test_global_service_follows_nodes(cluster: Cluster) -> None:
    from pyswarm.model import ServiceMode

    cluster.manager.services.create(ServiceSpec(name="agent", image="nginx", mode=ServiceMode.GLOBAL))
    wait_until(lambda: sorted(len(v) for v in cluster.containers().values()) == [1, 1, 1])
    url = "ssh://root@10.0.0.4"
    cluster.engines[url] = MemoryEngine(url, hostname="node-04")
    cluster.manager.registration.add_node(url, "10.0.0.4", None)
    wait_until(lambda: len(cluster.engines[url].state.containers) == 1)


def one_node_manager(tmp_path: Path, engine: MemoryEngine) -> Manager:
    """A started manager of one Ready node on `engine`, with no periodic resync (it would hide what the
    manager learns from events and outcomes)."""
    manager = Manager(
        Settings(data_dir=tmp_path / "d", heartbeat=0.05, resync_interval=60.0), engine_factory=lambda u, t: engine
    )
    manager.registration.initialise(URLS[0], "10.0.0.1", Availability.ACTIVE)
    manager.start()
    wait_until(lambda: all(n.status is NodeStatus.READY for n in manager.state.nodes.values()))
    return manager


class DiesAtOnceEngine(MemoryEngine):
    """Its containers exit right after they start, before `run` returns: the die event reaches the manager
    while the task's start is still in flight. With `oom_first`, an `oom` event (no exit code) comes first,
    as docker sends it before the die of a container the kernel killed."""

    def __init__(self, url: str, hostname: str, exit_code: int, oom_first: bool = False) -> None:
        super().__init__(url, hostname=hostname)
        self.exit_code, self.oom_first = exit_code, oom_first

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        info = super().run(spec)
        if self.oom_first:
            self._emit("oom", info)
        self.kill(info.id, exit_code=self.exit_code)
        time.sleep(0.2)  # the event thread handles the events meanwhile
        return info


@pytest.mark.parametrize(("exit_code", "oom_first"), [(3, False), (137, True)])
def test_a_container_that_dies_during_its_start_fails_its_task_at_once(
    tmp_path: Path, exit_code: int, oom_first: bool
) -> None:
    # No resync for a minute: only the die event can tell that the container is gone.
    manager = one_node_manager(tmp_path, DiesAtOnceEngine(URLS[0], "node-01", exit_code, oom_first))
    try:
        time.sleep(0.2)  # the node's event stream is subscribed
        manager.services.create(ServiceSpec(name="crash", image="nginx", replicas=1))
        wait_until(lambda: any(t.state is TaskState.FAILED for t in manager.state.tasks.values()), timeout=5)
        failed = next(t for t in manager.state.tasks.values() if t.state is TaskState.FAILED)
        assert failed.error == f"task: non-zero exit ({exit_code})"
        assert not manager.work.early_events  # consumed, not kept
    finally:
        manager.close()


def test_an_update_starts_containers_of_the_new_spec(cluster: Cluster) -> None:
    """The per-service container template follows the spec: after an update, new containers carry it."""
    from dataclasses import replace

    created = cluster.manager.services.create(ServiceSpec(name="web", image="nginx", replicas=2, labels={"tier": "a"}))
    wait_until(lambda: cluster.running("web") == 2)

    def tiers() -> list[str]:
        return sorted(
            c.labels.get("tier", "")
            for e in cluster.engines.values()
            for c in e.containers(cluster.manager.cluster_id)
            if c.status == "running"
        )

    assert tiers() == ["a", "a"]
    cluster.manager.services.update("web", replace(created.spec, labels={"tier": "b"}), created.version)
    wait_until(lambda: tiers() == ["b", "b"])


def test_a_slow_start_gets_its_row_before_it_ends(tmp_path: Path) -> None:
    """The store thread holds back a starting task's row for its outcome only briefly: a manager that
    crashed during a slow start finds the task in the state file and adopts its container by name."""
    import sqlite3

    from pyswarm.manager.settings import INFLIGHT_ROW_WAIT as _INFLIGHT_ROW_WAIT
    from pyswarm.manager.store import STATE_FILE

    engine = MemoryEngine(URLS[0], hostname="node-01")
    manager = one_node_manager(tmp_path, engine)
    try:
        engine.state.run_delay = 4 * _INFLIGHT_ROW_WAIT
        manager.services.create(ServiceSpec(name="slow", image="nginx", replicas=1))
        db = sqlite3.connect(f"file:{tmp_path / 'd' / STATE_FILE}?mode=ro", uri=True)

        def stored_states() -> list[str]:
            return [row[0] for row in db.execute("SELECT state FROM tasks")]

        wait_until(lambda: stored_states() != [], timeout=3 * _INFLIGHT_ROW_WAIT)
        assert stored_states()[0] in ("preparing", "starting")  # written while the start still runs
        assert not engine.state.containers
        wait_until(lambda: stored_states() == ["running"], timeout=10)
        db.close()
    finally:
        manager.close()
