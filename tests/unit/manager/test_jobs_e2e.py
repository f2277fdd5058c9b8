"""Jobs end to end against in-memory engines: tasks that exit 0 complete, are never run again, and let the
next ones start; a failure is restarted; an update runs the job again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pyswarm.drivers.engine import Engine
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import Availability, NodeStatus, RestartPolicy, ServiceMode, ServiceSpec, TaskState
from tests.helpers import wait_until

URLS = ["ssh://root@10.0.0.1", "ssh://root@10.0.0.2", "ssh://root@10.0.0.3"]


class Cluster:
    def __init__(self, data_dir: Path) -> None:
        self.engines = {url: MemoryEngine(url, hostname=f"node-0{i + 1}") for i, url in enumerate(URLS)}
        self.manager = Manager(Settings(data_dir=data_dir, heartbeat=0.05, resync_interval=0.5), self.factory)
        self.manager.registration.initialise(URLS[0], "10.0.0.1", Availability.ACTIVE)
        for url in URLS[1:]:
            self.manager.registration.add_node(url, url.split("@")[1], None)
        self.manager.start()

    def factory(self, url: str, timeout: float) -> Engine:
        return self.engines[url]

    def running(self) -> list[tuple[MemoryEngine, str]]:
        cluster_id = self.manager.cluster_id
        return [
            (engine, c.id)
            for engine in self.engines.values()
            for c in engine.containers(cluster_id)
            if c.status == "running"
        ]

    def finish_one(self, exit_code: int = 0) -> None:
        engine, container_id = self.running()[0]
        engine.kill(container_id, exit_code=exit_code)

    def states(self, name: str) -> list[TaskState]:
        service = self.manager.state.find_service(name)
        tasks = self.manager.state.tasks_by_service[service.id].values()
        return sorted((t.state for t in tasks if t.spec_version == service.version), key=lambda s: s.value)

    def counts(self, name: str) -> tuple[int, int, int]:
        view = self.manager.read.service_view(self.manager.state.find_service(name))
        return view.running, view.desired, view.completed


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    wait_until(lambda: all(n.status is NodeStatus.READY for n in c.manager.state.nodes.values()))
    time.sleep(0.2)  # the nodes' event streams are subscribed
    yield c
    c.manager.close()


def test_a_replicated_job_runs_its_completions_max_concurrent_at_a_time(cluster: Cluster) -> None:
    spec = ServiceSpec(name="batch", image="nginx", mode=ServiceMode.REPLICATED_JOB, replicas=4, max_concurrent=2)
    created = cluster.manager.services.create(spec)
    wait_until(lambda: cluster.counts("batch") == (2, 2, 0), what="two tasks running")
    for completed in (1, 2, 3, 4):
        cluster.finish_one()
        wait_until(lambda n=completed: cluster.counts("batch")[2] == n, what=f"{completed} completed")
        wait_until(lambda n=completed: len(cluster.running()) == min(2, 4 - n), what="the next task started")
    time.sleep(0.3)
    assert cluster.states("batch") == [TaskState.COMPLETE] * 4
    assert cluster.counts("batch") == (0, 2, 4)
    assert cluster.running() == []

    cluster.manager.services.update("batch", replace(created.spec, replicas=1), created.version)
    # desired stays max_concurrent, 2, as docker reports it, though one completion is wanted now.
    wait_until(lambda: cluster.counts("batch") == (1, 2, 0), what="the job runs again")
    cluster.finish_one()
    wait_until(lambda: cluster.counts("batch") == (0, 2, 1), what="the second run completed")
    time.sleep(0.3)
    assert cluster.running() == []


def test_a_failed_job_task_is_restarted_and_a_global_job_runs_once_per_node(cluster: Cluster) -> None:
    policy = RestartPolicy(delay=0)
    cluster.manager.services.create(
        ServiceSpec(name="once", image="nginx", mode=ServiceMode.GLOBAL_JOB, restart_policy=policy)
    )
    wait_until(lambda: cluster.counts("once") == (3, 3, 0), what="one task per node")
    cluster.finish_one(exit_code=1)
    wait_until(lambda: TaskState.FAILED in cluster.states("once"), what="a failure")
    wait_until(lambda: cluster.counts("once") == (3, 3, 0), what="the failure restarted")
    while cluster.running():
        cluster.finish_one()
        time.sleep(0.05)
    wait_until(lambda: cluster.counts("once") == (0, 0, 3), what="completed on every node")
    time.sleep(0.3)
    assert cluster.running() == []
