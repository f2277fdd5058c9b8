"""Health checks drive task state (starting until healthy, failed when unhealthy), and an ended task's
container is kept, stopped, for its logs until the task leaves the history. In-memory engines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.transitions import UNHEALTHY
from pyswarm.model import (
    HealthCheck,
    NodeStatus,
    PortConfig,
    RestartCondition,
    RestartPolicy,
    ServiceSpec,
    Task,
    TaskState,
)
from tests.helpers import wait_until
from tests.unit.manager.test_manager import Cluster

CHECKED = ServiceSpec(
    name="web",
    image="nginx",
    ports=(PortConfig(80, 80),),
    healthcheck=HealthCheck(("CMD-SHELL", "wget -q -O- localhost"), interval=1.0),
    restart_policy=RestartPolicy(delay=0.1),
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    wait_until(lambda: all(n.status is NodeStatus.READY for n in c.manager.state.nodes.values()))
    yield c
    c.manager.close()


def only_task(cluster: Cluster, state: TaskState | None = None) -> Task:
    tasks = [t for t in cluster.manager.state.tasks.values() if state is None or t.state is state]
    assert len(tasks) == 1, tasks
    return tasks[0]


def engine_of(cluster: Cluster, task: Task) -> MemoryEngine:
    return next(e for e in cluster.engines.values() if task.container_id in e.state.containers)


def endpoints(cluster: Cluster) -> int:
    service = cluster.manager.state.find_service("web")
    return sum(len(e) for e in cluster.manager.read.service_view(service).endpoints.values())


def containers_on_nodes(cluster: Cluster) -> set[str]:
    return {c for engine in cluster.engines.values() for c in engine.state.containers}


def test_a_task_with_a_health_check_runs_and_enters_the_mesh_only_once_healthy(cluster: Cluster) -> None:
    cluster.manager.services.create(CHECKED)
    wait_until(lambda: any(t.container_id for t in cluster.manager.state.tasks.values()))
    wait_until(lambda: only_task(cluster).state is TaskState.STARTING)
    task = only_task(cluster)
    assert task.message == "starting: waiting for the health check"
    assert cluster.running("web") == 0 and endpoints(cluster) == 0
    engine_of(cluster, task).set_health(task.container_id, "healthy")
    wait_until(lambda: only_task(cluster).state is TaskState.RUNNING)
    assert cluster.running("web") == 1 and endpoints(cluster) == 1


def test_an_unhealthy_task_fails_keeps_its_stopped_container_and_is_replaced(cluster: Cluster) -> None:
    cluster.manager.services.create(CHECKED)
    wait_until(
        lambda: any(t.state is TaskState.STARTING and t.container_id for t in cluster.manager.state.tasks.values())
    )
    first = only_task(cluster)
    engine = engine_of(cluster, first)
    engine.set_health(first.container_id, "unhealthy")
    wait_until(lambda: first.state is TaskState.FAILED)
    assert first.error == UNHEALTHY
    # Stopped, not removed: `service logs` can still read it.
    wait_until(lambda: engine.state.containers[first.container_id].status == "exited")
    wait_until(
        lambda: len(cluster.manager.state.tasks) == 2 and any(t.active for t in cluster.manager.state.tasks.values())
    )
    replacement = next(t for t in cluster.manager.state.tasks.values() if t.active)
    assert replacement.slot == first.slot and replacement.id != first.id


def test_a_health_event_before_the_start_is_recorded_is_not_lost(cluster: Cluster) -> None:
    """The healthy event can beat the start's outcome: it is kept with the early events and applied."""
    manager = cluster.manager
    for engine in cluster.engines.values():
        engine.state.run_delay = 0.3
    manager.services.create(CHECKED)
    wait_until(lambda: any(e.state.containers for e in cluster.engines.values()), timeout=5)
    engine = next(e for e in cluster.engines.values() if e.state.containers)
    container_id = next(iter(engine.state.containers))
    engine.set_health(container_id, "healthy")
    wait_until(lambda: only_task(cluster).state is TaskState.RUNNING)


def test_crashed_containers_stay_until_the_history_forgets_their_task(cluster: Cluster) -> None:
    manager = cluster.manager
    manager.services.create(replace(CHECKED, healthcheck=None))
    wait_until(lambda: cluster.running("web") == 1)
    crashed: list[str] = []

    def replaced() -> bool:
        return any(t.active and t.state is TaskState.RUNNING and t.container_id not in crashed for t in tasks())

    def tasks() -> list[Task]:
        return list(manager.state.tasks.values())

    for _ in range(6):
        task = next(t for t in tasks() if t.active and t.state is TaskState.RUNNING)
        engine_of(cluster, task).kill(task.container_id, exit_code=3)
        crashed.append(task.container_id)
        wait_until(replaced)
    # The history keeps 5 tasks per slot, the running one included: the 4 newest crashes, whose stopped
    # containers are still on their nodes; the 2 oldest are forgotten, and their containers removed.
    wait_until(lambda: len([c for c in crashed if c in containers_on_nodes(cluster)]) == 4)
    assert [c for c in crashed if c in containers_on_nodes(cluster)] == crashed[-4:]
    assert {t.container_id for t in tasks() if t.state is TaskState.FAILED} == set(crashed[-4:])
    manager.services.remove("web")
    wait_until(lambda: not manager.state.tasks and not containers_on_nodes(cluster))


def test_a_resync_keeps_an_ended_tasks_container(cluster: Cluster) -> None:
    manager = cluster.manager
    manager.services.create(replace(CHECKED, healthcheck=None, restart_policy=RestartPolicy(RestartCondition.NONE)))
    wait_until(lambda: cluster.running("web") == 1)
    task = only_task(cluster)
    engine = engine_of(cluster, task)
    engine.kill(task.container_id, exit_code=1)
    wait_until(lambda: task.state is TaskState.FAILED)
    manager.resync.resync_node(task.node_id)
    time.sleep(0.3)  # a removal would be queued on the node's job queue: give it the time to run
    assert engine.state.containers[task.container_id].status == "exited"


def test_a_missed_die_found_by_resync_keeps_the_container(cluster: Cluster) -> None:
    manager = cluster.manager
    manager.services.create(replace(CHECKED, healthcheck=None, restart_policy=RestartPolicy(RestartCondition.NONE)))
    wait_until(lambda: cluster.running("web") == 1)
    task = only_task(cluster)
    engine = engine_of(cluster, task)
    container = engine.state.containers[task.container_id]
    engine.state.containers[task.container_id] = replace(container, status="exited", exit_code=3)  # no event
    manager.resync.resync_node(task.node_id)
    assert task.state is TaskState.FAILED and task.error == "task: non-zero exit (3)"
    time.sleep(0.3)  # a removal would be queued on the node's job queue
    assert engine.state.containers[task.container_id].status == "exited"


def test_a_restart_leaves_a_task_waiting_for_its_health_check_to_the_resync() -> None:
    from pyswarm.manager.transitions import resume_unfinished_starts

    waiting = Task(id="a", service_id="s", slot=1, state=TaskState.STARTING, container_id="c1")
    unfinished = Task(id="b", service_id="s", slot=2, state=TaskState.STARTING)
    resume_unfinished_starts([waiting, unfinished])
    assert (waiting.state, unfinished.state) == (TaskState.STARTING, TaskState.ASSIGNED)
