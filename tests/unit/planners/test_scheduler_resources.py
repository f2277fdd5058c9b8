"""Reservations: a task goes only where the node's engine totals, minus what its tasks reserve, still fit."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pyswarm.model import Node, NodeStatus, Resources, Service, ServiceSpec, Task, TaskState
from pyswarm.planners.scheduler import schedule

GIB = 1024**3
CPU = 10**9


def node(number: int, cpus: int = 2, memory: int = 4 * GIB) -> Node:
    return Node(
        id=f"id-{number}",
        hostname=f"node-{number:02d}",
        engine_url="",
        addr=f"10.0.0.{number}",
        status=NodeStatus.READY,
        nano_cpus=cpus * CPU,
        memory_bytes=memory,
    )


def service(name: str, replicas: int, **reserve: int) -> Service:
    res = Resources(reserve_nano_cpus=reserve.get("cpu", 0), reserve_memory=reserve.get("memory", 0))
    return Service(id=name, spec=ServiceSpec(name=name, image="nginx", replicas=replicas, resources=res))


def pending(svc: Service, count: int) -> list[Task]:
    return [Task(id=f"{svc.id}.{i}", service_id=svc.id, slot=i, state=TaskState.PENDING) for i in range(1, count + 1)]


def test_a_reservation_no_node_meets_stays_pending_with_swarms_reason() -> None:
    big = service("big", 1, memory=64 * GIB)
    result = schedule(pending(big, 1), {"big": big}, [node(1), node(2), node(3)], [])
    assert result.assignments == {}
    assert result.unplaceable == {"big.1": "no suitable node (insufficient resources on 3 nodes)"}


def test_reservations_fill_nodes_then_leave_the_rest_pending() -> None:
    web = service("web", 5, cpu=CPU)  # two per 2-CPU node
    nodes = [node(1), node(2)]
    result = schedule(pending(web, 5), {"web": web}, nodes, [])
    assert Counter(result.assignments.values()) == {"id-1": 2, "id-2": 2}
    assert result.unplaceable == {"web.5": "no suitable node (insufficient resources on 2 nodes)"}


def test_running_and_stopping_tasks_hold_their_reservation_ended_ones_do_not() -> None:
    db = service("db", 3, memory=3 * GIB)
    placed = [
        Task(id="db.1.old", service_id="db", slot=1, node_id="id-1", state=TaskState.RUNNING),
        Task(id="db.2.old", service_id="db", slot=2, node_id="id-2", desired_state=TaskState.SHUTDOWN,
             state=TaskState.RUNNING),
        Task(id="db.3.old", service_id="db", slot=3, node_id="id-3", state=TaskState.FAILED),
    ]  # fmt: skip
    result = schedule(pending(db, 1), {"db": db}, [node(1), node(2), node(3)], placed)
    assert result.assignments == {"db.1": "id-3"}


def test_services_without_reservations_ignore_capacity() -> None:
    web = service("web", 3)
    result = schedule(pending(web, 3), {"web": web}, [node(1, cpus=0, memory=0)], [])
    assert len(result.assignments) == 3


@settings(max_examples=200, deadline=None)
@given(
    capacities=st.lists(st.tuples(st.integers(1, 8), st.integers(0, 16)), min_size=1, max_size=6),  # known totals
    wants=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(1, 6)), min_size=1, max_size=4),
)
def test_no_node_is_ever_overcommitted(capacities: list[tuple[int, int]], wants: list[tuple[int, int, int]]) -> None:
    nodes = [node(i, cpus, memory * GIB) for i, (cpus, memory) in enumerate(capacities, 1)]
    services = {}
    tasks: list[Task] = []
    for number, (cpus, memory, replicas) in enumerate(wants):
        svc = service(f"s{number}", replicas, cpu=cpus * CPU, memory=memory * GIB)
        services[svc.id] = svc
        tasks += pending(svc, replicas)
    result = schedule(tasks, services, nodes, [])
    used = {n.id: [0, 0] for n in nodes}
    by_id = {t.id: t for t in tasks}
    for task_id, node_id in result.assignments.items():
        res = services[by_id[task_id].service_id].spec.resources
        used[node_id][0] += res.reserve_nano_cpus
        used[node_id][1] += res.reserve_memory
    for n in nodes:
        assert used[n.id][0] <= n.nano_cpus and used[n.id][1] <= n.memory_bytes
    # Every task left over was refused for resources: nothing else filters here.
    for reason in result.unplaceable.values():
        assert "insufficient resources" in reason, reason
    assert set(result.assignments) | set(result.unplaceable) == set(by_id)


def test_a_node_whose_totals_are_unknown_is_not_filtered() -> None:
    """Nodes that joined before their totals were recorded (0, 0) take reservations rather than none."""
    db = service("db", 2, memory=GIB)
    result = schedule(pending(db, 2), {"db": db}, [node(1, cpus=0, memory=0)], [])
    assert len(result.assignments) == 2 and result.unplaceable == {}
