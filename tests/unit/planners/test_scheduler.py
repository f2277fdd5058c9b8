"""The spread scheduler: filters, ranking, placement preferences, explanations, and its invariants."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyswarm.model import (
    Availability,
    Constraint,
    ConstraintOp,
    Node,
    NodeStatus,
    PortConfig,
    Protocol,
    PublishMode,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
)
from pyswarm.planners.constraints import node_matches
from pyswarm.planners.scheduler import ScheduleResult, host_ports, schedule

EQ, NE = ConstraintOp.EQ, ConstraintOp.NE


def make_node(
    number: int,
    *,
    status: NodeStatus = NodeStatus.READY,
    availability: Availability = Availability.ACTIVE,
    labels: dict[str, str] | None = None,
) -> Node:
    return Node(
        id=f"id-{number:02d}",
        hostname=f"node-{number:02d}",
        engine_url="",
        addr=f"10.0.0.{number}",
        status=status,
        availability=availability,
        labels=labels or {},
    )


def make_service(service_id: str = "web", **spec: object) -> Service:
    return Service(id=service_id, spec=ServiceSpec(name=service_id, image="nginx", **spec))  # type: ignore[arg-type]


def pending_tasks(service: Service, count: int, first_slot: int = 1) -> list[Task]:
    return [
        Task(id=f"{service.id}.{slot}", service_id=service.id, slot=slot, state=TaskState.PENDING)
        for slot in range(first_slot, first_slot + count)
    ]


def running_task(service: Service, slot: int, node: Node) -> Task:
    return Task(
        id=f"{service.id}.{slot}.running",
        service_id=service.id,
        slot=slot,
        node_id=node.id,
        state=TaskState.RUNNING,
    )


def services_map(*services: Service) -> dict[str, Service]:
    return {service.id: service for service in services}


def per_node(result: ScheduleResult) -> Counter[str]:
    return Counter(result.assignments.values())


# --- examples -------------------------------------------------------------------------------------


def test_three_replicas_on_three_nodes_one_each() -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    web = make_service(replicas=3)
    result = schedule(pending_tasks(web, 3), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 1, "id-02": 1, "id-03": 1}
    assert result.unplaceable == {}


def test_ties_break_by_hostname() -> None:
    nodes = [make_node(3), make_node(1), make_node(2)]
    web = make_service()
    result = schedule(pending_tasks(web, 1), services_map(web), nodes, [])
    assert result.assignments == {"web.1": "id-01"}


def test_unavailable_nodes_get_nothing_new() -> None:
    nodes = [
        make_node(1),
        make_node(2, availability=Availability.DRAIN),
        make_node(3, availability=Availability.PAUSE),
        make_node(4, status=NodeStatus.DOWN),
        make_node(5, status=NodeStatus.UNKNOWN),
    ]
    web = make_service(replicas=4)
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 4}


def test_no_schedulable_node_explains() -> None:
    nodes = [make_node(1, availability=Availability.DRAIN), make_node(2, status=NodeStatus.DOWN)]
    web = make_service()
    result = schedule(pending_tasks(web, 1), services_map(web), nodes, [])
    assert result.unplaceable == {"web.1": "no suitable node (2 nodes not available for new tasks)"}


def test_no_nodes_at_all() -> None:
    web = make_service()
    result = schedule(pending_tasks(web, 1), services_map(web), [], [])
    assert result.unplaceable == {"web.1": "no suitable node"}


def test_hostname_constraint_puts_everything_on_that_node() -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    web = make_service(replicas=5, constraints=(Constraint("node.hostname", EQ, "node-02"),))
    result = schedule(pending_tasks(web, 5), services_map(web), nodes, [])
    assert per_node(result) == {"id-02": 5}


def test_label_constraint_spreads_over_matching_nodes_only() -> None:
    nodes = [make_node(1, labels={"zone": "a"}), make_node(2, labels={"zone": "b"}), make_node(3, labels={"zone": "a"})]
    web = make_service(replicas=4, constraints=(Constraint("node.labels.zone", EQ, "a"),))
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 2, "id-03": 2}


def test_unsatisfiable_constraint_explains() -> None:
    nodes = [make_node(1), make_node(2), make_node(3, availability=Availability.DRAIN)]
    web = make_service(constraints=(Constraint("node.labels.gpu", EQ, "yes"),))
    result = schedule(pending_tasks(web, 1), services_map(web), nodes, [])
    assert result.unplaceable == {
        "web.1": "no suitable node (scheduling constraints not satisfied on 2 nodes; "
        "1 node not available for new tasks)"
    }


def test_max_replicas_per_node_leaves_the_rest_unplaceable() -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    web = make_service(replicas=4, max_replicas_per_node=1)
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 1, "id-02": 1, "id-03": 1}
    assert result.unplaceable == {"web.4": "no suitable node (max replicas per node limit exceed)"}


def test_explanation_lists_the_most_frequent_failure_first() -> None:
    nodes = [make_node(i, labels={"tier": "front" if i <= 3 else "back"}) for i in range(1, 6)]
    web = make_service(replicas=4, max_replicas_per_node=1, constraints=(Constraint("node.labels.tier", EQ, "front"),))
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert result.unplaceable == {
        "web.4": "no suitable node (max replicas per node limit exceed; "
        "scheduling constraints not satisfied on 2 nodes)"
    }


def test_max_replicas_counts_tasks_already_placed() -> None:
    nodes = [make_node(1), make_node(2)]
    web = make_service(replicas=4, max_replicas_per_node=2)
    placed = [running_task(web, 1, nodes[0]), running_task(web, 2, nodes[0])]
    result = schedule(pending_tasks(web, 2, first_slot=3), services_map(web), nodes, placed)
    assert per_node(result) == {"id-02": 2}


def test_host_ports_conflict_across_services() -> None:
    nodes = [make_node(1), make_node(2)]
    port = PortConfig(published=8080, target=80, mode=PublishMode.HOST)
    api = make_service("api", ports=(port,))
    web = make_service("web", ports=(port,))
    placed = [running_task(api, 1, nodes[0])]
    result = schedule(pending_tasks(web, 1), services_map(api, web), nodes, placed)
    assert result.assignments == {"web.1": "id-02"}


def test_host_port_protocols_do_not_conflict_with_each_other() -> None:
    nodes = [make_node(1)]
    tcp = make_service("tcp", ports=(PortConfig(53, 53, Protocol.TCP, PublishMode.HOST),))
    udp = make_service("udp", ports=(PortConfig(53, 53, Protocol.UDP, PublishMode.HOST),))
    placed = [running_task(tcp, 1, nodes[0])]
    result = schedule(pending_tasks(udp, 1), services_map(tcp, udp), nodes, placed)
    assert result.assignments == {"udp.1": "id-01"}


def test_a_host_port_service_gets_one_task_per_node() -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    web = make_service(replicas=4, ports=(PortConfig(8080, 80, mode=PublishMode.HOST),))
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 1, "id-02": 1, "id-03": 1}
    assert result.unplaceable == {"web.4": "no suitable node (host-mode port already in use on 3 nodes)"}


def test_ingress_ports_never_conflict() -> None:
    nodes = [make_node(1)]
    web = make_service(replicas=3, ports=(PortConfig(8080, 80),))
    result = schedule(pending_tasks(web, 3), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 3}


def test_a_stopping_task_still_holds_its_host_port_but_does_not_count() -> None:
    nodes = [make_node(1), make_node(2)]
    port = PortConfig(8080, 80, mode=PublishMode.HOST)
    web = make_service(ports=(port,))
    stopping = running_task(web, 1, nodes[0])
    stopping.desired_state = TaskState.SHUTDOWN
    other = make_service("other")
    busy = [running_task(other, slot, nodes[1]) for slot in (1, 2)]
    result = schedule(pending_tasks(web, 1, first_slot=2), services_map(web, other), nodes, [stopping, *busy])
    assert result.assignments == {"web.2": "id-02"}
    # Without the port, the stopping task does not count: node-01 has no active task.
    plain = make_service()
    result = schedule(pending_tasks(plain, 1, first_slot=2), services_map(plain, other), nodes, [stopping, *busy])
    assert result.assignments == {"web.2": "id-01"}


def test_fewest_tasks_of_the_service_first_then_fewest_in_total() -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    web, db = make_service("web"), make_service("db")
    placed = [
        running_task(web, 1, nodes[0]),
        running_task(db, 1, nodes[1]),
        running_task(db, 2, nodes[1]),
        running_task(db, 3, nodes[2]),
    ]
    # node-01 holds web; of the others node-03 has fewer tasks in total.
    result = schedule(pending_tasks(web, 1, first_slot=2), services_map(web, db), nodes, placed)
    assert result.assignments == {"web.2": "id-03"}


def test_tasks_placed_in_the_same_call_count_for_the_next_ones() -> None:
    nodes = [make_node(i) for i in (1, 2, 3, 4)]
    services = [make_service(f"s{i}") for i in range(4)]
    pending = [task for service in services for task in pending_tasks(service, 1)]
    result = schedule(pending, services_map(*services), nodes, [])
    assert sorted(per_node(result).values()) == [1, 1, 1, 1]


def test_nodes_with_recent_failures_rank_last() -> None:
    nodes = [make_node(1), make_node(2)]
    web = make_service(replicas=2)
    failures = {("web", "id-01"): 5, ("web", "id-02"): 4, ("other", "id-02"): 9}
    result = schedule(pending_tasks(web, 1), services_map(web), nodes, [], failures)
    assert result.assignments == {"web.1": "id-02"}
    # Ranked last, not excluded.
    result = schedule(pending_tasks(web, 3), services_map(web), [nodes[0]], [], failures)
    assert per_node(result) == {"id-01": 3}


def test_penalised_node_is_used_after_every_other_node_even_if_emptier() -> None:
    nodes = [make_node(1), make_node(2)]
    web = make_service(replicas=4)
    placed = [running_task(web, 1, nodes[1]), running_task(web, 2, nodes[1])]
    result = schedule(pending_tasks(web, 1, first_slot=3), services_map(web), nodes, placed, {("web", "id-01"): 5})
    assert result.assignments == {"web.3": "id-02"}


def test_preset_node_is_kept_when_the_node_passes() -> None:
    nodes = [make_node(1), make_node(2)]
    agent = make_service("agent", mode=ServiceMode.GLOBAL)
    tasks = [Task(id=f"agent.{n.id}", service_id="agent", slot=0, node_id=n.id, state=TaskState.PENDING) for n in nodes]
    result = schedule(tasks, services_map(agent), nodes, [])
    assert result.assignments == {"agent.id-01": "id-01", "agent.id-02": "id-02"}


def test_preset_node_that_fails_the_filters_is_unplaceable() -> None:
    nodes = [make_node(1, availability=Availability.PAUSE), make_node(2, labels={"a": "b"})]
    agent = make_service("agent", mode=ServiceMode.GLOBAL, constraints=(Constraint("node.labels.a", NE, "b"),))
    tasks = [
        Task(id="on-paused", service_id="agent", slot=0, node_id="id-01", state=TaskState.PENDING),
        Task(id="on-excluded", service_id="agent", slot=0, node_id="id-02", state=TaskState.PENDING),
        Task(id="on-missing", service_id="agent", slot=0, node_id="id-99", state=TaskState.PENDING),
    ]
    result = schedule(tasks, services_map(agent), nodes, [])
    assert result.assignments == {}
    assert result.unplaceable == {
        "on-paused": "no suitable node (1 node not available for new tasks)",
        "on-excluded": "no suitable node (scheduling constraints not satisfied on 1 node)",
        "on-missing": "node id-99 not found",
    }


def test_tasks_of_unknown_services_and_unwanted_tasks() -> None:
    nodes = [make_node(1)]
    ghost = Task(id="ghost.1", service_id="ghost", slot=1, state=TaskState.PENDING)
    web = make_service()
    unwanted = Task(id="web.1", service_id="web", slot=1, state=TaskState.PENDING, desired_state=TaskState.SHUTDOWN)
    result = schedule([ghost, unwanted], services_map(web), nodes, [])
    assert result.assignments == {}
    assert result.unplaceable == {"ghost.1": "service not found"}


def test_inputs_are_not_mutated_and_results_are_deterministic() -> None:
    nodes = [make_node(i, labels={"zone": "a" if i % 2 else "b"}) for i in range(1, 6)]
    web = make_service(replicas=7, placement_prefs=("zone",))
    db = make_service("db", replicas=6)
    pending = pending_tasks(web, 7) + pending_tasks(db, 6)
    placed = [running_task(db, 9, nodes[0])]
    before = copy.deepcopy((pending, nodes, placed))
    first = schedule(pending, services_map(web, db), nodes, placed)
    assert (pending, nodes, placed) == before
    second = schedule(pending, services_map(web, db), list(reversed(nodes)), placed)
    assert first == second


# --- placement preferences --------------------------------------------------------------------------


def test_spread_over_label_values() -> None:
    nodes = [make_node(1, labels={"zone": "a"}), make_node(2, labels={"zone": "a"}), make_node(3, labels={"zone": "b"})]
    web = make_service(replicas=4, placement_prefs=("zone",))
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    counts = per_node(result)
    assert counts["id-01"] + counts["id-02"] == 2
    assert counts["id-03"] == 2


def test_nodes_without_the_label_form_their_own_branch() -> None:
    nodes = [make_node(1, labels={"zone": "a"}), make_node(2, labels={"zone": "b"}), make_node(3), make_node(4)]
    web = make_service(replicas=6, placement_prefs=("zone",))
    result = schedule(pending_tasks(web, 6), services_map(web), nodes, [])
    counts = per_node(result)
    assert counts["id-01"] == 2
    assert counts["id-02"] == 2
    assert counts["id-03"] + counts["id-04"] == 2


def test_preferences_count_existing_tasks_per_branch() -> None:
    nodes = [make_node(1, labels={"zone": "a"}), make_node(2, labels={"zone": "b"})]
    web = make_service(replicas=5, placement_prefs=("zone",))
    placed = [running_task(web, slot, nodes[0]) for slot in (1, 2, 3)]
    result = schedule(pending_tasks(web, 2, first_slot=4), services_map(web), nodes, placed)
    assert per_node(result) == {"id-02": 2}


def test_a_full_branch_leaves_the_rest_to_the_others() -> None:
    nodes = [make_node(1, labels={"zone": "a"}), make_node(2, labels={"zone": "b"}), make_node(3, labels={"zone": "b"})]
    web = make_service(replicas=6, placement_prefs=("zone",), max_replicas_per_node=2)
    result = schedule(pending_tasks(web, 7), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 2, "id-02": 2, "id-03": 2}
    assert result.unplaceable == {"web.7": "no suitable node (max replicas per node limit exceed)"}


def test_nested_preferences() -> None:
    nodes = [
        make_node(1, labels={"dc": "x", "rack": "1"}),
        make_node(2, labels={"dc": "x", "rack": "2"}),
        make_node(3, labels={"dc": "y", "rack": "1"}),
        make_node(4, labels={"dc": "y", "rack": "1"}),
    ]
    web = make_service(replicas=8, placement_prefs=("dc", "rack"))
    result = schedule(pending_tasks(web, 8), services_map(web), nodes, [])
    counts = per_node(result)
    assert counts["id-01"] == counts["id-02"] == 2  # dc x: 4 tasks over two racks
    assert counts["id-03"] + counts["id-04"] == 4  # dc y: 4 tasks in its single rack
    assert abs(counts["id-03"] - counts["id-04"]) <= 1


def test_preferences_only_use_eligible_nodes() -> None:
    nodes = [
        make_node(1, labels={"zone": "a"}),
        make_node(2, labels={"zone": "b"}, availability=Availability.DRAIN),
        make_node(3, labels={"zone": "c", "tier": "back"}),
    ]
    web = make_service(replicas=4, placement_prefs=("zone",), constraints=(Constraint("node.labels.tier", NE, "back"),))
    result = schedule(pending_tasks(web, 4), services_map(web), nodes, [])
    assert per_node(result) == {"id-01": 4}


# --- properties ------------------------------------------------------------------------------------

LABEL_VALUES = ("a", "b", "c")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Node], dict[str, Service], list[Task], list[Task]]:
    node_count = draw(st.integers(min_value=0, max_value=8))
    nodes = []
    for number in range(1, node_count + 1):
        labels = {}
        if draw(st.booleans()):
            labels["zone"] = draw(st.sampled_from(LABEL_VALUES))
        nodes.append(
            make_node(
                number,
                status=draw(st.sampled_from([NodeStatus.READY] * 4 + [NodeStatus.DOWN, NodeStatus.UNKNOWN])),
                availability=draw(
                    st.sampled_from([Availability.ACTIVE] * 4 + [Availability.PAUSE, Availability.DRAIN])
                ),
                labels=labels,
            )
        )
    services: dict[str, Service] = {}
    for number in range(draw(st.integers(min_value=1, max_value=3))):
        constraints: tuple[Constraint, ...] = ()
        if draw(st.booleans()):
            constraints = (
                Constraint("node.labels.zone", draw(st.sampled_from([EQ, NE])), draw(st.sampled_from(LABEL_VALUES))),
            )
        ports: tuple[PortConfig, ...] = ()
        if draw(st.booleans()):
            ports = (PortConfig(draw(st.sampled_from([80, 443])), 80, mode=PublishMode.HOST),)
        service = make_service(
            f"s{number}",
            constraints=constraints,
            ports=ports,
            max_replicas_per_node=draw(st.integers(min_value=0, max_value=3)),
            placement_prefs=("zone",) if draw(st.booleans()) else (),
        )
        services[service.id] = service
    slots = itertools.count(1)
    placed: list[Task] = []
    if nodes:
        for service in services.values():
            for _ in range(draw(st.integers(min_value=0, max_value=6))):
                node = draw(st.sampled_from(nodes))
                state = draw(st.sampled_from([TaskState.RUNNING, TaskState.ASSIGNED, TaskState.COMPLETE]))
                desired = draw(st.sampled_from([TaskState.RUNNING, TaskState.RUNNING, TaskState.SHUTDOWN]))
                slot = next(slots)
                placed.append(
                    Task(
                        id=f"{service.id}.p{slot}",
                        service_id=service.id,
                        slot=slot,
                        node_id=node.id,
                        state=state,
                        desired_state=desired,
                    )
                )
    pending = [
        task
        for service in services.values()
        for task in pending_tasks(service, draw(st.integers(min_value=0, max_value=12)), first_slot=next(slots))
    ]
    if nodes:
        # Some tasks come with their node preset, as global services' tasks do.
        for task in pending:
            if draw(st.integers(min_value=0, max_value=4)) == 0:
                task.node_id = draw(st.sampled_from(nodes)).id
    return nodes, services, placed, pending


def check_filters(
    nodes: Sequence[Node], services: dict[str, Service], placed: Iterable[Task], result: ScheduleResult
) -> Counter[tuple[str, str]]:
    """Every assignment passes every filter, counting what was there before and what landed before it.
    Returns the active task count per (service, node) afterwards."""
    by_id = {node.id: node for node in nodes}
    active: Counter[tuple[str, str]] = Counter()
    used_ports: dict[str, set[tuple[int, str]]] = {node.id: set() for node in nodes}
    for task in placed:
        if task.state.terminal:
            continue
        if task.desired_state is TaskState.RUNNING:
            active[task.service_id, task.node_id] += 1
        used_ports[task.node_id] |= host_ports(services[task.service_id].spec)
    for task_id, node_id in result.assignments.items():
        service = services[task_id.split(".")[0]]
        node = by_id[node_id]
        assert node.schedulable, f"{task_id} on unschedulable {node_id}"
        assert node_matches(service.spec.constraints, node), f"{task_id} breaks constraints on {node_id}"
        active[service.id, node_id] += 1
        limit = service.spec.max_replicas_per_node
        assert not limit or active[service.id, node_id] <= limit, f"{service.id} above max per node on {node_id}"
        ports = host_ports(service.spec)
        assert not used_ports[node_id] & ports, f"{task_id}: host port conflict on {node_id}"
        used_ports[node_id] |= ports
    return active


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_assignments_respect_every_filter_and_unplaceable_is_honest(
    cluster: tuple[list[Node], dict[str, Service], list[Task], list[Task]],
) -> None:
    nodes, services, placed, pending = cluster
    result = schedule(pending, services, nodes, placed)
    assert set(result.assignments) | set(result.unplaceable) == {task.id for task in pending}
    assert not set(result.assignments) & set(result.unplaceable)
    active = check_filters(nodes, services, placed, result)
    # Unplaceable only when, at the end, no node could take one more task of that service.
    preset = {task.id: task.node_id for task in pending if task.node_id}
    for task_id, node_id in result.assignments.items():
        assert preset.get(task_id, node_id) == node_id, f"{task_id} moved off its preset node"
    for task_id in result.unplaceable:
        if task_id in preset:
            continue
        service = services[task_id.split(".")[0]]
        used_ports: dict[str, set[tuple[int, str]]] = {node.id: set() for node in nodes}
        for task in [*placed, *(t for t in pending if t.id in result.assignments)]:
            if not task.state.terminal:
                node_id = result.assignments.get(task.id, task.node_id)
                used_ports[node_id] |= host_ports(services[task.service_id].spec)
        for node in nodes:
            limit = service.spec.max_replicas_per_node
            fits = (
                node.schedulable
                and node_matches(service.spec.constraints, node)
                and not (used_ports[node.id] & host_ports(service.spec))
                and not (limit and active[service.id, node.id] >= limit)
            )
            assert not fits, f"{task_id} unplaceable but {node.id} fits"
        assert result.unplaceable[task_id].startswith("no suitable node")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([NodeStatus.READY, NodeStatus.READY, NodeStatus.DOWN]), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=4),
)
def test_successive_calls_keep_a_service_balanced(statuses: list[NodeStatus], batches: list[int]) -> None:
    """Without constraints, scheduling batch after batch keeps per-node counts of a service within one."""
    nodes = [make_node(number, status=status) for number, status in enumerate(statuses, start=1)]
    web, other = make_service("web"), make_service("other")
    placed: list[Task] = []
    slot = 0
    for size in batches:
        pending = pending_tasks(web, size, first_slot=slot + 1) + pending_tasks(other, 1, first_slot=slot + 1)
        slot += size
        result = schedule(pending, services_map(web, other), nodes, placed)
        for task in pending:
            if task.id in result.assignments:
                task.node_id, task.state = result.assignments[task.id], TaskState.RUNNING
                placed.append(task)
        counts = [sum(1 for t in placed if t.service_id == "web" and t.node_id == n.id) for n in nodes if n.schedulable]
        if counts:
            assert max(counts) - min(counts) <= 1
        else:
            assert len(result.unplaceable) == len(pending)


def reference_schedule(
    pending: Sequence[Task],
    services: dict[str, Service],
    nodes: Sequence[Node],
    placed: Sequence[Task],
    failures: dict[tuple[str, str], int],
) -> dict[str, str]:
    """The obvious O(tasks x nodes) scheduler: for each task, scan every node and take the best."""
    active: Counter[tuple[str, str]] = Counter()
    total: Counter[str] = Counter()
    used: dict[str, set[tuple[int, str]]] = {node.id: set() for node in nodes}
    for task in placed:
        if task.state.terminal or task.node_id not in used:
            continue
        if task.desired_state is TaskState.RUNNING:
            active[task.service_id, task.node_id] += 1
            total[task.node_id] += 1
        used[task.node_id] |= host_ports(services[task.service_id].spec)

    def fits(service: Service, node: Node) -> bool:
        limit = service.spec.max_replicas_per_node
        return (
            node.schedulable
            and node_matches(service.spec.constraints, node)
            and not used[node.id] & host_ports(service.spec)
            and not (limit and active[service.id, node.id] >= limit)
        )

    def land(service: Service, node: Node, task: Task) -> None:
        assignments[task.id] = node.id
        active[service.id, node.id] += 1
        total[node.id] += 1
        used[node.id] |= host_ports(service.spec)

    assignments: dict[str, str] = {}
    by_id = {node.id: node for node in nodes}
    for task in pending:
        if task.node_id and task.node_id in by_id and fits(services[task.service_id], by_id[task.node_id]):
            land(services[task.service_id], by_id[task.node_id], task)
    for task in pending:
        if task.node_id:
            continue
        service = services[task.service_id]
        candidates = [node for node in nodes if fits(service, node)]
        if candidates:
            best = min(
                candidates,
                key=lambda n: (
                    failures.get((service.id, n.id), 0) >= 5,
                    active[service.id, n.id],
                    total[n.id],
                    n.hostname,
                    n.id,
                ),
            )
            land(service, best, task)
    return assignments


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.data())
def test_matches_the_obvious_scheduler_without_preferences(
    cluster: tuple[list[Node], dict[str, Service], list[Task], list[Task]], data: st.DataObject
) -> None:
    nodes, services, placed, pending = cluster
    services = {
        service_id: dataclasses.replace(service, spec=dataclasses.replace(service.spec, placement_prefs=()))
        for service_id, service in services.items()
    }
    # Interleave the services' tasks: each service is still placed in one pass, in order of appearance.
    pending = sorted(pending, key=lambda task: task.service_id)
    failures = {}
    if nodes:
        for service_id in services:
            node = data.draw(st.sampled_from(nodes))
            failures[service_id, node.id] = data.draw(st.integers(min_value=3, max_value=6))
    expected = reference_schedule(pending, services, nodes, placed, failures)
    assert schedule(pending, services, nodes, placed, failures).assignments == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=9),
    st.lists(st.integers(min_value=1, max_value=15), min_size=1, max_size=3),
)
def test_preferences_keep_branches_and_nodes_within_a_branch_balanced(
    zones: list[str | None], batches: list[int]
) -> None:
    nodes = [make_node(i, labels={} if zone is None else {"zone": zone}) for i, zone in enumerate(zones, start=1)]
    zone_of = {node.id: node.labels.get("zone") for node in nodes}
    web = make_service(placement_prefs=("zone",))
    placed: list[Task] = []
    slot = 0
    for size in batches:
        pending = pending_tasks(web, size, first_slot=slot + 1)
        slot += size
        result = schedule(pending, services_map(web), nodes, placed)
        assert not result.unplaceable
        for task in pending:
            task.node_id, task.state = result.assignments[task.id], TaskState.RUNNING
            placed.append(task)
        per_zone = Counter(zone_of[task.node_id] for task in placed)
        counts = [per_zone.get(zone, 0) for zone in set(zones)]
        assert max(counts) - min(counts) <= 1, per_zone
        for zone in set(zones):
            in_zone = [sum(1 for t in placed if t.node_id == n.id) for n in nodes if zone_of[n.id] == zone]
            assert max(in_zone) - min(in_zone) <= 1
