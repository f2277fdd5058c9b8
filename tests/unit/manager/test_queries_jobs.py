"""`service ls` counts for jobs: the read API counts the current iteration, as swarm's ServiceStatus."""

from __future__ import annotations

from pyswarm.manager.api.responses import service_out
from pyswarm.manager.queries import ClusterReader
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store.base import Snapshot
from pyswarm.model import Node, NodeStatus, Service, ServiceMode, ServiceSpec, Task, TaskState


def _task(number: int, slot: int, state: TaskState, version: int, node: str = "n1") -> Task:
    return Task(id=f"t{number}", service_id="job", slot=slot, node_id=node, state=state, spec_version=version)


def test_a_replicated_job_counts_its_current_iteration() -> None:
    spec = ServiceSpec(name="job", image="busybox", mode=ServiceMode.REPLICATED_JOB, replicas=3, max_concurrent=2)
    service = Service(id="job", spec=spec, version=2)
    node = Node(id="n1", hostname="node-1", engine_url="", addr="", status=NodeStatus.READY)
    tasks = [
        _task(1, 1, TaskState.COMPLETE, version=1),  # the earlier iteration's: not counted
        _task(2, 2, TaskState.COMPLETE, version=1),
        _task(3, 1, TaskState.COMPLETE, version=2),
        _task(4, 2, TaskState.RUNNING, version=2),
    ]
    snapshot = Snapshot(nodes={"n1": node}, services={"job": service}, tasks={t.id: t for t in tasks})
    reader = ClusterReader(ClusterState(snapshot), "127.0.0.1:2377", lambda: 5.0)
    view = reader.service("job")
    assert (view.running, view.desired, view.completed) == (1, 2, 1)
    out = service_out(view)
    assert (out.running, out.desired, out.completed) == (1, 2, 1)


def test_a_service_counts_no_completions() -> None:
    service = Service(id="job", spec=ServiceSpec(name="job", image="nginx", replicas=2))
    node = Node(id="n1", hostname="node-1", engine_url="", addr="", status=NodeStatus.READY)
    tasks = [_task(1, 1, TaskState.RUNNING, 1), _task(2, 2, TaskState.COMPLETE, 1)]
    snapshot = Snapshot(nodes={"n1": node}, services={"job": service}, tasks={t.id: t for t in tasks})
    view = ClusterReader(ClusterState(snapshot), "127.0.0.1:2377", lambda: 5.0).service("job")
    assert (view.running, view.desired, view.completed) == (1, 2, 0)


def test_a_jobs_finished_task_is_shown_wanted_complete_a_services_is_not() -> None:
    job = Service(id="job", spec=ServiceSpec(name="job", image="busybox", mode=ServiceMode.REPLICATED_JOB, replicas=2))
    web = Service(id="web", spec=ServiceSpec(name="web", image="nginx"))
    node = Node(id="n1", hostname="node-1", engine_url="", addr="", status=NodeStatus.READY)
    tasks = [
        _task(1, 1, TaskState.COMPLETE, 1),
        _task(2, 2, TaskState.RUNNING, 1),
        Task(id="w1", service_id="web", slot=1, node_id="n1", state=TaskState.COMPLETE),
    ]
    snapshot = Snapshot(nodes={"n1": node}, services={"job": job, "web": web}, tasks={t.id: t for t in tasks})
    state = ClusterState(snapshot)
    reader = ClusterReader(state, "127.0.0.1:2377", lambda: 5.0)
    shown = {view.task.id: view.task.desired_state for view in reader.tasks()}
    assert shown == {"t1": TaskState.COMPLETE, "t2": TaskState.RUNNING, "w1": TaskState.RUNNING}
    assert state.tasks["t1"].desired_state is TaskState.RUNNING  # only the view says so
