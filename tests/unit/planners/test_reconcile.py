"""The orchestrator's plan: slots, scaling, restarts, node trouble, global services, rolling updates, history."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from pyswarm.model import (
    Availability,
    Constraint,
    ConstraintOp,
    Node,
    NodeStatus,
    PortConfig,
    PublishMode,
    RestartCondition,
    RestartPolicy,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
)
from pyswarm.planners.reconcile import ReconcilePlan, plan_service, scale_down_choice, task_spec_digest
from pyswarm.planners.scheduler import schedule

NOW = 1_000.0
RUNNING, SHUTDOWN = TaskState.RUNNING, TaskState.SHUTDOWN


def make_node(
    number: int,
    *,
    status: NodeStatus = NodeStatus.READY,
    availability: Availability = Availability.ACTIVE,
    labels: dict[str, str] | None = None,
) -> Node:
    return Node(
        id=f"n{number}",
        hostname=f"node-{number}",
        engine_url="",
        addr="",
        status=status,
        availability=availability,
        labels=labels or {},
    )


def node_map(*nodes: Node) -> dict[str, Node]:
    return {node.id: node for node in nodes}


def make_service(replicas: int = 3, version: int = 1, **spec: object) -> Service:
    return Service(id="web", spec=ServiceSpec(name="web", image="nginx:1", replicas=replicas, **spec), version=version)  # type: ignore[arg-type]


def ids(prefix: str = "new") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class Tasks:
    """Builds tasks of a service with increasing creation times."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.clock = itertools.count(1)
        self.serial = itertools.count(1)

    def make(
        self,
        slot: int,
        node: str = "n1",
        state: TaskState = RUNNING,
        desired: TaskState = RUNNING,
        digest: str | None = None,
        ended_at: float = 0.0,
    ) -> Task:
        created = float(next(self.clock))
        return Task(
            id=f"t{next(self.serial)}",
            service_id=self.service.id,
            slot=slot,
            node_id=node,
            desired_state=desired,
            state=state,
            spec_digest=task_spec_digest(self.service.spec) if digest is None else digest,
            created_at=created,
            updated_at=created,
            state_changed_at=ended_at or created,
        )


def plan(
    service: Service,
    tasks: list[Task],
    nodes: dict[str, Node],
    now: float = NOW,
    **kwargs: int,
) -> ReconcilePlan:
    return plan_service(service, tasks, nodes, now, ids(), **kwargs)


def created_slots(result: ReconcilePlan) -> list[int]:
    return sorted(task.slot for task in result.create)


NODES = node_map(make_node(1), make_node(2), make_node(3))


# --- spec digest ------------------------------------------------------------------------------------


def test_digest_is_stable_across_processes() -> None:
    # hashlib over a canonical encoding, not hash(): this value must never change between runs.
    assert task_spec_digest(ServiceSpec(name="web", image="nginx:1")) == "2d887f6902acd72a"
    spec = ServiceSpec(name="web", image="nginx:1", env=("A=1",), labels={"b": "2", "a": "1"})
    same = ServiceSpec(name="web", image="nginx:1", env=("A=1",), labels={"a": "1", "b": "2"})
    assert task_spec_digest(spec) == task_spec_digest(same)


def test_digest_follows_the_task_affecting_fields_only() -> None:
    base = ServiceSpec(name="web", image="nginx:1")
    digest = task_spec_digest(base)
    changes: tuple[dict[str, object], ...] = (
        {"image": "nginx:2"},
        {"command": ("sleep", "1")},
        {"env": ("A=1",)},
        {"labels": {"a": "1"}},
        {"ports": (PortConfig(8080, 80),)},
        {"ports": (PortConfig(8080, 80, mode=PublishMode.HOST),)},
        {"force_update": 1},
    )
    for change in changes:
        assert task_spec_digest(dataclasses.replace(base, **change)) != digest, change  # type: ignore[arg-type]
    kept: tuple[dict[str, object], ...] = (
        {"replicas": 7},
        {"constraints": (Constraint("node.role", ConstraintOp.EQ, "worker"),)},
        {"placement_prefs": ("zone",)},
        {"max_replicas_per_node": 2},
        {"restart_policy": RestartPolicy(condition=RestartCondition.NONE)},
        {"name": "other"},
    )
    for change in kept:
        assert task_spec_digest(dataclasses.replace(base, **change)) == digest, change  # type: ignore[arg-type]


# --- replicated: scaling ----------------------------------------------------------------------------


def test_new_service_creates_slots_one_to_n() -> None:
    service = make_service(replicas=3, version=4)
    result = plan(service, [], NODES)
    assert created_slots(result) == [1, 2, 3]
    for task in result.create:
        assert task.service_id == "web"
        assert task.node_id == ""
        assert task.state is TaskState.PENDING
        assert task.desired_state is RUNNING
        assert task.spec_version == 4
        assert task.spec_digest == task_spec_digest(service.spec)
        assert task.created_at == task.updated_at == task.state_changed_at == NOW
    assert len({task.id for task in result.create}) == 3
    assert result.shutdown == {} and result.delete == [] and result.wake_at is None


def test_steady_state_is_a_no_op() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n2"), make(3, "n3", state=TaskState.STARTING)]
    assert plan(service, tasks, NODES).empty


def test_scale_up_fills_the_lowest_missing_slots() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(2), make(5)]
    assert created_slots(plan(service, tasks, NODES)) == [1]
    assert created_slots(
        plan(dataclasses.replace(service, spec=dataclasses.replace(service.spec, replicas=5)), tasks, NODES)
    ) == [1, 3, 4]


def test_scale_up_reuses_a_slot_whose_task_was_shut_down() -> None:
    service = make_service(replicas=2)
    make = Tasks(service).make
    tasks = [make(1), make(2, state=SHUTDOWN, desired=SHUTDOWN)]
    assert created_slots(plan(service, tasks, NODES)) == [2]


def test_scale_down_removes_non_running_tasks_first() -> None:
    service = make_service(replicas=2)
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n2", state=TaskState.STARTING), make(3, "n3")]
    result = plan(service, tasks, NODES)
    assert result.shutdown == {tasks[1].id: "scale down"}
    assert result.create == []


def test_scale_down_takes_from_the_most_loaded_node_then_highest_slot() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n1"), make(3, "n2"), make(4, "n3"), make(5, "n2")]
    result = plan(service, tasks, NODES)
    # n1 and n2 hold two each: their second copies (slots 2 and 5) go, highest slot first.
    assert set(result.shutdown) == {tasks[1].id, tasks[4].id}
    assert set(result.shutdown.values()) == {"scale down"}


def test_scale_down_choice_order() -> None:
    service = make_service()
    make = Tasks(service).make
    unassigned = make(7, node="", state=TaskState.PENDING)
    starting = make(6, "n3", state=TaskState.STARTING)
    a1, a2, a3 = make(1, "n1"), make(2, "n1"), make(3, "n1")
    b4, c5 = make(4, "n2"), make(5, "n3")
    tasks = [a1, a2, a3, b4, c5, starting, unassigned]
    assert scale_down_choice(tasks, 7) == [unassigned, starting, a3, a2, c5, b4, a1]
    assert scale_down_choice(tasks, 3) == [unassigned, starting, a3]
    assert scale_down_choice(tasks, 0) == []


def test_scale_to_zero_shuts_everything_down() -> None:
    service = make_service(replicas=0)
    make = Tasks(service).make
    tasks = [make(1), make(2)]
    assert set(plan(service, tasks, NODES).shutdown) == {tasks[0].id, tasks[1].id}


def test_duplicate_active_tasks_in_a_slot_keep_the_running_one() -> None:
    service = make_service(replicas=1)
    make = Tasks(service).make
    running, starting = make(1, "n1"), make(1, "n2", state=TaskState.STARTING)
    result = plan(service, [running, starting], NODES)
    assert result.shutdown == {starting.id: "duplicate task for the slot"}
    assert result.create == []


# --- replicated: restart policy -----------------------------------------------------------------------


def failed(make: Callable[..., Task], slot: int, ended_at: float, state: TaskState = TaskState.FAILED) -> Task:
    return make(slot, state=state, ended_at=ended_at)


def test_restart_waits_for_the_delay_and_says_when() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=5.0))
    dead = failed(Tasks(service).make, 1, ended_at=NOW - 2)
    waiting = plan(service, [dead], NODES)
    assert waiting.empty
    assert waiting.wake_at == NOW + 3
    due = plan(service, [dead], NODES, now=NOW + 3)
    assert due.shutdown == {dead.id: "task failed; restarted"}
    assert created_slots(due) == [1]
    assert due.wake_at is None


def test_restart_without_delay_is_immediate() -> None:
    service = make_service(replicas=2, restart_policy=RestartPolicy(delay=0))
    make = Tasks(service).make
    tasks = [make(1), failed(make, 2, ended_at=NOW)]
    result = plan(service, tasks, NODES)
    assert created_slots(result) == [2]
    assert list(result.shutdown) == [tasks[1].id]


def test_condition_none_never_restarts_and_keeps_the_slot() -> None:
    service = make_service(replicas=2, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    make = Tasks(service).make
    tasks = [make(1), failed(make, 2, ended_at=NOW - 100, state=TaskState.COMPLETE)]
    result = plan(service, tasks, NODES)
    assert result.empty and result.wake_at is None
    # Much later: still withheld, the slot is not refilled.
    assert plan(service, tasks, NODES, now=NOW + 10_000).empty


def test_a_withheld_slot_does_not_block_scaling_other_slots() -> None:
    service = make_service(replicas=3, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    make = Tasks(service).make
    tasks = [failed(make, 1, ended_at=NOW, state=TaskState.COMPLETE), make(2)]
    assert created_slots(plan(service, tasks, NODES)) == [3]


def test_scale_down_drops_withheld_and_waiting_slots_first() -> None:
    service = make_service(replicas=2, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    make = Tasks(service).make
    done = failed(make, 1, ended_at=NOW, state=TaskState.COMPLETE)
    tasks = [done, make(2, "n1"), make(3, "n1")]
    result = plan(service, tasks, NODES)
    assert result.shutdown == {done.id: "scale down"}
    assert result.create == []


def test_on_failure_restarts_failures_but_not_clean_exits() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(condition=RestartCondition.ON_FAILURE, delay=0))
    make = Tasks(service).make
    assert plan(service, [failed(make, 1, NOW, state=TaskState.COMPLETE)], NODES).empty
    assert created_slots(plan(service, [failed(make, 1, NOW, state=TaskState.FAILED)], NODES)) == [1]
    assert created_slots(plan(service, [failed(make, 1, NOW, state=TaskState.REJECTED)], NODES)) == [1]


def test_condition_any_restarts_clean_exits_too() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=0))
    assert created_slots(plan(service, [failed(Tasks(service).make, 1, NOW, state=TaskState.COMPLETE)], NODES)) == [1]


def history_of_failures(make: Callable[..., Task], count: int, last_ended: float, spacing: float = 10.0) -> list[Task]:
    """`count` failed tasks in slot 1: all but the last already restarted (desired SHUTDOWN)."""
    tasks = [failed(make, 1, ended_at=last_ended - spacing * (count - 1 - i)) for i in range(count)]
    for task in tasks[:-1]:
        task.desired_state = SHUTDOWN
    return tasks


def test_max_attempts_stops_restarting() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=0, max_attempts=2))
    make = Tasks(service).make
    # Two failures so far: one restart done, one more allowed.
    assert created_slots(plan(service, history_of_failures(make, 2, NOW), NODES)) == [1]
    # Three failures: two restarts done, that is the limit.
    given_up = history_of_failures(make, 3, NOW)
    result = plan(service, given_up, NODES)
    assert result.empty and result.wake_at is None
    assert plan(service, given_up, NODES, now=NOW + 1e6).empty


def test_max_attempts_counts_within_the_window_only() -> None:
    policy = RestartPolicy(delay=0, max_attempts=2, window=15.0)
    service = make_service(replicas=1, restart_policy=policy)
    make = Tasks(service).make
    # Failures 10 s apart: only the one before the last is within 15 s of the last.
    assert created_slots(plan(service, history_of_failures(make, 3, NOW), NODES)) == [1]
    # 5 s apart: both earlier ones count.
    assert plan(service, history_of_failures(make, 3, NOW, spacing=5.0), NODES).empty


def test_attempts_of_an_older_spec_do_not_count() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=0, max_attempts=1))
    make = Tasks(service).make
    tasks = history_of_failures(make, 2, NOW)
    tasks[0].spec_digest = "old"
    assert created_slots(plan(service, tasks, NODES)) == [1]


def test_a_withheld_slot_restarts_when_the_spec_changes() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    done = failed(Tasks(service).make, 1, NOW, state=TaskState.COMPLETE)
    updated = dataclasses.replace(service, spec=dataclasses.replace(service.spec, image="nginx:2"))
    result = plan(updated, [done], NODES)
    assert created_slots(result) == [1]
    assert result.create[0].spec_digest == task_spec_digest(updated.spec)
    assert list(result.shutdown) == [done.id]


# --- replicated: node trouble -------------------------------------------------------------------------


def test_node_down_replaces_at_once_in_the_same_slot() -> None:
    service = make_service(replicas=2, restart_policy=RestartPolicy(delay=60))
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n2")]
    nodes = node_map(make_node(1), make_node(2, status=NodeStatus.DOWN))
    result = plan(service, tasks, nodes)
    assert result.shutdown == {tasks[1].id: "node is down"}
    assert created_slots(result) == [2]
    assert result.create[0].node_id == ""
    assert result.wake_at is None


def test_drained_node_loses_its_tasks() -> None:
    service = make_service(replicas=1)
    task = Tasks(service).make(1, "n1")
    result = plan(service, [task], node_map(make_node(1, availability=Availability.DRAIN), make_node(2)))
    assert result.shutdown == {task.id: "node is drained"}
    assert created_slots(result) == [1]


def test_gone_node_and_failed_constraints_also_replace() -> None:
    service = make_service(replicas=2, constraints=(Constraint("node.labels.tier", ConstraintOp.EQ, "front"),))
    make = Tasks(service).make
    tasks = [make(1, "n9"), make(2, "n1")]
    result = plan(service, tasks, node_map(make_node(1, labels={"tier": "back"})))
    assert result.shutdown == {tasks[0].id: "node is gone", tasks[1].id: "constraints not satisfied"}
    assert created_slots(result) == [1, 2]


def test_paused_and_unknown_nodes_keep_their_tasks() -> None:
    service = make_service(replicas=2)
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n2")]
    nodes = node_map(make_node(1, availability=Availability.PAUSE), make_node(2, status=NodeStatus.UNKNOWN))
    assert plan(service, tasks, nodes).empty


def test_orphaned_task_is_replaced_at_once() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(condition=RestartCondition.NONE, delay=60))
    orphan = Tasks(service).make(1, "n1", state=TaskState.ORPHANED)
    result = plan(service, [orphan], NODES)
    assert created_slots(result) == [1]
    assert list(result.shutdown) == [orphan.id]


def test_scale_down_prefers_slots_lost_with_their_node() -> None:
    service = make_service(replicas=1)
    make = Tasks(service).make
    tasks = [make(1, "n1"), make(2, "n2")]
    result = plan(service, tasks, node_map(make_node(1), make_node(2, status=NodeStatus.DOWN)))
    assert result.shutdown == {tasks[1].id: "node is down"}
    assert result.create == []


# --- global ---------------------------------------------------------------------------------------------


def global_service(**spec: object) -> Service:
    return make_service(1, 1, mode=ServiceMode.GLOBAL, **spec)


def test_global_runs_one_task_per_eligible_node() -> None:
    service = global_service(constraints=(Constraint("node.labels.gpu", ConstraintOp.NE, "no"),))
    nodes = node_map(
        make_node(1),
        make_node(2, availability=Availability.PAUSE),
        make_node(3, availability=Availability.DRAIN),
        make_node(4, status=NodeStatus.DOWN),
        make_node(5, labels={"gpu": "no"}),
        make_node(6, status=NodeStatus.UNKNOWN),
        make_node(7),
    )
    result = plan(service, [], nodes)
    assert sorted(task.node_id for task in result.create) == ["n1", "n7"]
    assert {task.slot for task in result.create} == {0}


def test_global_follows_nodes() -> None:
    service = global_service()
    make = Tasks(service).make
    tasks = [make(0, "n1"), make(0, "n2"), make(0, "n3"), make(0, "n4")]
    nodes = node_map(
        make_node(1),
        make_node(2, availability=Availability.PAUSE),
        make_node(3, availability=Availability.DRAIN),
        make_node(4, status=NodeStatus.DOWN),
        make_node(5),
    )
    result = plan(service, tasks, nodes)
    assert result.shutdown == {tasks[2].id: "node is drained", tasks[3].id: "node is down"}
    assert [task.node_id for task in result.create] == ["n5"]


def test_global_drops_nodes_that_no_longer_match() -> None:
    service = global_service(constraints=(Constraint("node.role", ConstraintOp.EQ, "manager"),))
    task = Tasks(service).make(0, "n1")
    assert plan(service, [task], NODES).shutdown == {task.id: "constraints not satisfied"}


def test_global_restart_policy_applies_per_node() -> None:
    service = global_service(restart_policy=RestartPolicy(delay=5.0))
    make = Tasks(service).make
    dead = make(0, "n1", state=TaskState.FAILED, ended_at=NOW - 1)
    nodes = node_map(make_node(1))
    waiting = plan(service, [dead], nodes)
    assert waiting.empty and waiting.wake_at == NOW + 4
    due = plan(service, [dead], nodes, now=NOW + 4)
    assert [(task.node_id, task.slot) for task in due.create] == [("n1", 0)]
    assert list(due.shutdown) == [dead.id]


def test_global_restart_waits_for_a_paused_node() -> None:
    service = global_service(restart_policy=RestartPolicy(delay=0))
    dead = Tasks(service).make(0, "n1", state=TaskState.FAILED, ended_at=NOW)
    assert plan(service, [dead], node_map(make_node(1, availability=Availability.PAUSE))).empty
    assert len(plan(service, [dead], node_map(make_node(1))).create) == 1


def test_global_ended_task_on_a_drained_node_is_shut_down() -> None:
    service = global_service(restart_policy=RestartPolicy(delay=0))
    dead = Tasks(service).make(0, "n1", state=TaskState.FAILED, ended_at=NOW)
    result = plan(service, [dead], node_map(make_node(1, availability=Availability.DRAIN)))
    assert result.shutdown == {dead.id: "node is drained"}
    assert result.create == []


# --- rolling update -------------------------------------------------------------------------------------


def test_rolling_update_one_at_a_time_stop_first() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(slot, f"n{slot}", digest="old") for slot in (1, 2, 3)]
    first = plan(service, tasks, NODES)
    assert first.shutdown == {tasks[0].id: "updating to the new spec"}
    assert created_slots(first) == [1]

    # Apply: the replacement is pending; nothing more until it runs.
    tasks[0].desired_state = SHUTDOWN
    replacement = first.create[0]
    tasks.append(replacement)
    assert plan(service, tasks, NODES).empty
    replacement.node_id, replacement.state = "n1", TaskState.STARTING
    assert plan(service, tasks, NODES).empty

    replacement.state = RUNNING
    second = plan(service, tasks, NODES)
    assert list(second.shutdown) == [tasks[1].id]
    assert created_slots(second) == [2]


def test_rolling_update_takes_non_running_tasks_first() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(1, digest="old"), make(2, digest="old"), make(3, digest="old", state=TaskState.STARTING)]
    assert list(plan(service, tasks, NODES).shutdown) == [tasks[2].id]


def test_rolling_update_parallelism() -> None:
    service = make_service(replicas=5)
    make = Tasks(service).make
    tasks = [make(slot, digest="old") for slot in range(1, 6)]
    assert created_slots(plan(service, tasks, NODES, update_parallelism=2)) == [1, 2]
    assert created_slots(plan(service, tasks, NODES, update_parallelism=0)) == [1, 2, 3, 4, 5]


def test_unplaced_outdated_tasks_are_replaced_at_once() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [
        make(1, node="", state=TaskState.PENDING, digest="old"),
        make(2, node="", state=TaskState.PENDING, digest="old"),
        make(3, digest="old"),
    ]
    result = plan(service, tasks, NODES)
    assert set(result.shutdown) == {tasks[0].id, tasks[1].id}
    assert created_slots(result) == [1, 2]


def test_a_failing_new_spec_pauses_the_update() -> None:
    service = make_service(replicas=3, restart_policy=RestartPolicy(delay=10))
    make = Tasks(service).make
    old1 = make(1, digest="old", desired=SHUTDOWN, state=SHUTDOWN)
    new1 = make(1, state=TaskState.FAILED, ended_at=NOW - 1)
    tasks = [old1, new1, make(2, digest="old"), make(3, digest="old")]
    result = plan(service, tasks, NODES)
    assert result.shutdown == {} and result.create == []
    assert result.wake_at == NOW + 9


def test_update_does_not_touch_tasks_when_only_replicas_change() -> None:
    service = make_service(replicas=3)
    make = Tasks(service).make
    tasks = [make(slot) for slot in (1, 2, 3)]
    scaled = dataclasses.replace(service, version=2, spec=dataclasses.replace(service.spec, replicas=4))
    result = plan(scaled, tasks, NODES)
    assert result.shutdown == {}
    assert created_slots(result) == [4]


def test_global_update_replaces_on_the_same_node_and_skips_paused_nodes() -> None:
    service = global_service()
    make = Tasks(service).make
    tasks = [make(0, "n1", digest="old"), make(0, "n2", digest="old")]
    nodes = node_map(make_node(1, availability=Availability.PAUSE), make_node(2))
    result = plan(service, tasks, nodes)
    assert list(result.shutdown) == [tasks[1].id]
    assert [task.node_id for task in result.create] == ["n2"]


# --- history ------------------------------------------------------------------------------------------


def test_history_limit_deletes_the_oldest_ended_tasks() -> None:
    service = make_service(replicas=1)
    make = Tasks(service).make
    old = [make(1, state=TaskState.FAILED, desired=SHUTDOWN) for _ in range(6)]
    current = make(1)
    result = plan(service, [*old, current], NODES)
    assert result.delete == [old[0].id, old[1].id]  # 7 tasks, 5 kept (the current one included)
    assert plan(service, [*old, current], NODES, history_limit=2).delete == [t.id for t in old[:5]]


def test_history_never_deletes_tasks_still_being_stopped() -> None:
    service = make_service(replicas=1)
    make = Tasks(service).make
    stopping = make(1, state=RUNNING, desired=SHUTDOWN)
    old = [make(1, state=SHUTDOWN, desired=SHUTDOWN) for _ in range(5)]
    result = plan(service, [stopping, *old, make(1)], NODES)
    assert stopping.id not in result.delete
    assert result.delete == [old[0].id, old[1].id]


def test_history_counts_the_replacement_being_created() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=0))
    make = Tasks(service).make
    old = [make(1, state=TaskState.COMPLETE, desired=SHUTDOWN) for _ in range(4)]
    dead = failed(make, 1, ended_at=NOW)
    result = plan(service, [*old, dead], NODES)
    assert created_slots(result) == [1]
    assert result.delete == [old[0].id]  # 4 old + the dead one + the new one = 6
    assert dead.id not in result.delete  # being shut down in this very plan


def test_history_is_per_node_for_global_services() -> None:
    service = global_service()
    make = Tasks(service).make
    tasks = [make(0, node, state=TaskState.FAILED, desired=SHUTDOWN) for node in ("n1", "n2") for _ in range(5)]
    tasks += [make(0, "n1"), make(0, "n2")]
    result = plan(service, tasks, node_map(make_node(1), make_node(2)))
    assert sorted(result.delete) == sorted([tasks[0].id, tasks[5].id])


def test_scaled_away_slots_and_removed_nodes_keep_no_history() -> None:
    service = make_service(replicas=1)
    make = Tasks(service).make
    gone = [make(2, state=SHUTDOWN, desired=SHUTDOWN), make(2, state=TaskState.FAILED, desired=SHUTDOWN)]
    assert sorted(plan(service, [make(1), *gone], NODES).delete) == sorted(t.id for t in gone)

    agent = global_service()
    make = Tasks(agent).make
    left = make(0, "n9", state=SHUTDOWN, desired=SHUTDOWN)
    assert plan(agent, [left, make(0, "n1")], node_map(make_node(1))).delete == [left.id]


def test_history_keeps_what_max_attempts_needs() -> None:
    service = make_service(replicas=1, restart_policy=RestartPolicy(delay=0, max_attempts=7))
    make = Tasks(service).make
    tasks = history_of_failures(make, 8, NOW)
    result = plan(service, tasks, NODES)
    assert result.empty  # 7 restarts done: give up, and keep all 8 to remember it


# --- purity ---------------------------------------------------------------------------------------------


def test_plan_does_not_mutate_its_inputs() -> None:
    service = make_service(replicas=2, restart_policy=RestartPolicy(delay=0))
    make = Tasks(service).make
    tasks = [make(1, "n2"), failed(make, 2, ended_at=NOW), make(3, digest="old")]
    nodes = node_map(make_node(1), make_node(2, status=NodeStatus.DOWN))
    before = copy.deepcopy((service, tasks, nodes))
    plan(service, tasks, nodes)
    assert (service, tasks, nodes) == before


# --- reconcile + schedule, as the manager runs them ------------------------------------------------------


class Cluster:
    """A tiny manager: applies plans and schedules as pyswarm's manager does, starting tasks at once."""

    def __init__(self, node_count: int, services: list[Service]) -> None:
        self.nodes = node_map(*(make_node(i) for i in range(1, node_count + 1)))
        self.services = {service.id: service for service in services}
        self.tasks: dict[str, Task] = {}
        self.now = NOW
        self.new_id = ids("task")

    def converge(self, update_parallelism: int = 1) -> None:
        for _ in range(200):
            changed = False
            for service in self.services.values():
                tasks = [t for t in self.tasks.values() if t.service_id == service.id]
                result = plan_service(
                    service, tasks, self.nodes, self.now, self.new_id, update_parallelism=update_parallelism
                )
                changed |= not result.empty
                for task_id in result.shutdown:
                    task = self.tasks[task_id]
                    task.desired_state = SHUTDOWN
                    if not task.state.terminal:
                        task.state = SHUTDOWN  # the container stops at once here
                for task in result.create:
                    self.tasks[task.id] = task
                for task_id in result.delete:
                    del self.tasks[task_id]
            pending = [t for t in self.tasks.values() if t.active and t.state is TaskState.PENDING]
            placed = [t for t in self.tasks.values() if t.node_id and t.active and t.state is not TaskState.PENDING]
            assignments = schedule(pending, self.services, list(self.nodes.values()), placed).assignments
            for task_id, node_id in assignments.items():
                task = self.tasks[task_id]
                task.node_id, task.state = node_id, RUNNING
            changed |= bool(assignments)
            self.now += 1
            if not changed:
                return
        raise AssertionError("did not converge")


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=6),
    st.lists(
        st.one_of(
            st.tuples(st.just("scale"), st.integers(min_value=0, max_value=1), st.integers(min_value=0, max_value=20)),
            st.tuples(st.just("drain"), st.integers(min_value=1, max_value=6), st.just(0)),
            st.tuples(st.just("down"), st.integers(min_value=1, max_value=6), st.just(0)),
            st.tuples(st.just("crash"), st.integers(min_value=0, max_value=1), st.integers(min_value=0, max_value=30)),
            st.tuples(st.just("update"), st.integers(min_value=0, max_value=1), st.integers(min_value=1, max_value=3)),
        ),
        max_size=12,
    ),
)
def test_reconcile_and_schedule_keep_slots_whole_and_services_balanced(
    node_count: int, operations: list[tuple[str, int, int]]
) -> None:
    services = [
        Service(
            id=f"s{i}", spec=ServiceSpec(name=f"s{i}", image="img", replicas=0, restart_policy=RestartPolicy(delay=0))
        )
        for i in range(2)
    ]
    cluster = Cluster(node_count, services)
    for operation, target, amount in operations:
        if operation == "scale":
            service = cluster.services[f"s{target}"]
            cluster.services[service.id] = dataclasses.replace(
                service, spec=dataclasses.replace(service.spec, replicas=amount)
            )
        elif operation == "update":
            service = cluster.services[f"s{target}"]
            spec = dataclasses.replace(service.spec, force_update=service.spec.force_update + 1)
            cluster.services[service.id] = dataclasses.replace(service, spec=spec, version=service.version + 1)
        elif operation in ("drain", "down"):
            node = cluster.nodes.get(f"n{target}")
            schedulable = [n for n in cluster.nodes.values() if n.schedulable]
            if node is None or not node.schedulable or len(schedulable) == 1:
                continue  # keep one node to run things on
            if operation == "drain":
                node.availability = Availability.DRAIN
            else:
                node.status = NodeStatus.DOWN
        else:  # crash one running task of the service; restart delay 0 brings it back
            running = sorted(
                (t for t in cluster.tasks.values() if t.service_id == f"s{target}" and t.active), key=lambda t: t.id
            )
            if running:
                victim = running[amount % len(running)]
                victim.state, victim.state_changed_at = TaskState.FAILED, cluster.now
        cluster.converge(update_parallelism=1 + amount % 2)

        eligible = [node.id for node in cluster.nodes.values() if node.schedulable]
        for service in cluster.services.values():
            active = [t for t in cluster.tasks.values() if t.service_id == service.id and t.active]
            slots = [t.slot for t in active]
            assert len(active) == service.spec.replicas
            assert len(set(slots)) == len(slots), f"two active tasks in one slot: {sorted(slots)}"
            assert all(t.state is RUNNING and t.node_id in eligible for t in active)
            assert all(t.spec_digest == task_spec_digest(service.spec) for t in active)
            per_node = Counter(t.node_id for t in active)
            counts = [per_node.get(node_id, 0) for node_id in eligible]
            assert max(counts) - min(counts) <= 1, f"{service.id} unbalanced: {per_node}"
            history = Counter(t.slot for t in cluster.tasks.values() if t.service_id == service.id)
            assert max(history.values(), default=0) <= 5
