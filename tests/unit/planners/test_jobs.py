"""Jobs: replicated-job (completions, max_concurrent, slots) and global-job (once per node), iterations,
restarts, node trouble, history, and the counts `service ls` shows."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyswarm.model import (
    Availability,
    Constraint,
    ConstraintOp,
    Node,
    NodeStatus,
    RestartCondition,
    RestartPolicy,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
)
from pyswarm.planners.jobs import REASON_NEW_ITERATION, REASON_SLOT_DONE, JobStatus, job_status, plan_job
from pyswarm.planners.plan import REASON_NODE_DOWN, REASON_NODE_DRAINED, ReconcilePlan
from pyswarm.planners.reconcile import plan_service
from pyswarm.planners.restart_policy import restart_time
from pyswarm.planners.scheduler import schedule
from pyswarm.planners.task_digest import task_spec_digest

NOW = 1_000.0
RUNNING, SHUTDOWN = TaskState.RUNNING, TaskState.SHUTDOWN
COMPLETE, FAILED = TaskState.COMPLETE, TaskState.FAILED
PENDING, ORPHANED = TaskState.PENDING, TaskState.ORPHANED
NO_DELAY = RestartPolicy(delay=0)


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


NODES = node_map(make_node(1), make_node(2), make_node(3))


def job(
    replicas: int = 3,
    max_concurrent: int = 0,
    version: int = 1,
    mode: ServiceMode = ServiceMode.REPLICATED_JOB,
    **spec: object,
) -> Service:
    return Service(
        id="job",
        spec=ServiceSpec(
            name="job", image="busybox", mode=mode, replicas=replicas, max_concurrent=max_concurrent, **spec
        ),  # type: ignore[arg-type]
        version=version,
    )


def global_job(version: int = 1, **spec: object) -> Service:
    return job(replicas=1, version=version, mode=ServiceMode.GLOBAL_JOB, **spec)


def next_iteration(service: Service, **changes: object) -> Service:
    """`service update`: a new spec (maybe the same) and the next version, i.e. the job's next iteration."""
    return dataclasses.replace(service, spec=dataclasses.replace(service.spec, **changes), version=service.version + 1)  # type: ignore[arg-type]


def ids(prefix: str = "new") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class Tasks:
    """Builds tasks of a job with increasing creation times, of the service's version unless told."""

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
        version: int | None = None,
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
            spec_version=self.service.version if version is None else version,
            spec_digest=task_spec_digest(self.service.spec),
            created_at=created,
            updated_at=created,
            state_changed_at=ended_at or created,
        )


def plan(
    service: Service, tasks: list[Task], nodes: dict[str, Node] = NODES, now: float = NOW, **kwargs: int
) -> ReconcilePlan:
    return plan_job(service, tasks, nodes, now, ids(), **kwargs)


def created_slots(result: ReconcilePlan) -> list[int]:
    return sorted(task.slot for task in result.create)


def created_nodes(result: ReconcilePlan) -> list[str]:
    return sorted(task.node_id for task in result.create)


# --- replicated jobs: completions and concurrency -------------------------------------------------------


def test_a_new_replicated_job_runs_max_concurrent_tasks_in_the_lowest_slots() -> None:
    service = job(replicas=5, max_concurrent=2, version=3)
    result = plan(service, [])
    assert created_slots(result) == [1, 2]
    for task in result.create:
        assert (task.state, task.desired_state, task.node_id) == (PENDING, RUNNING, "")
        assert task.spec_version == 3
        assert task.spec_digest == task_spec_digest(service.spec)
    assert result.shutdown == {} and result.delete == [] and result.wake_at is None


def test_max_concurrent_defaults_to_replicas_and_never_exceeds_them() -> None:
    assert created_slots(plan(job(replicas=3), [])) == [1, 2, 3]
    assert created_slots(plan(job(replicas=2, max_concurrent=10), [])) == [1, 2]
    assert plan(job(replicas=0), []).empty


def test_a_completed_slot_is_never_run_again_and_the_next_free_slot_is() -> None:
    service = job(replicas=4, max_concurrent=2)
    make = Tasks(service).make
    tasks = [make(1, state=COMPLETE), make(2)]
    result = plan(service, tasks)
    assert created_slots(result) == [3]
    assert result.shutdown == {}


def test_in_progress_tasks_count_toward_max_concurrent_even_unplaced() -> None:
    service = job(replicas=4, max_concurrent=2)
    make = Tasks(service).make
    tasks = [make(1, node="", state=PENDING), make(2, state=TaskState.STARTING)]
    assert plan(service, tasks).empty


def test_a_finished_job_stays_finished() -> None:
    service = job(replicas=3, max_concurrent=1)
    make = Tasks(service).make
    tasks = [make(slot, state=COMPLETE) for slot in (1, 2, 3)]
    result = plan(service, tasks, now=NOW + 10_000)
    assert result.empty and result.wake_at is None


def test_a_failure_is_restarted_in_its_slot_after_the_delay() -> None:
    service = job(replicas=2, max_concurrent=1, restart_policy=RestartPolicy(delay=5))
    make = Tasks(service).make
    failed = make(1, state=FAILED, ended_at=NOW - 1)
    waiting = plan(service, [failed])
    assert waiting.empty and waiting.wake_at == NOW + 4  # slot 1 still holds the only place: no slot 2
    due = plan(service, [failed], now=NOW + 4)
    assert created_slots(due) == [1]
    assert due.shutdown == {failed.id: "task failed; restarted"}


def test_a_jobs_completed_task_is_never_restarted_whatever_the_condition() -> None:
    service = job(replicas=1)
    make = Tasks(service).make
    done, failed, shut = make(1, state=COMPLETE), make(1, state=FAILED), make(1, state=SHUTDOWN)
    for condition in RestartCondition:
        assert restart_time(RestartPolicy(condition=condition, delay=0), done, [done], job=True) is None
    policy = RestartPolicy(condition=RestartCondition.ANY, delay=0)
    assert restart_time(policy, done, [done]) == done.state_changed_at  # a service's task restarts
    assert restart_time(policy, failed, [failed], job=True) == failed.state_changed_at
    assert restart_time(policy, shut, [shut], job=True) == shut.state_changed_at  # anything but complete
    on_failure = RestartPolicy(condition=RestartCondition.ON_FAILURE, delay=0)
    assert restart_time(on_failure, shut, [shut], job=True) is None


def test_condition_none_gives_the_slot_up_and_frees_its_concurrency() -> None:
    service = job(replicas=3, max_concurrent=1, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    make = Tasks(service).make
    failed = make(1, state=FAILED)
    result = plan(service, [failed])
    assert created_slots(result) == [2]
    assert failed.id not in result.shutdown  # the failure stays wanted: the slot's record


def test_max_attempts_counts_this_iteration_only() -> None:
    policy = RestartPolicy(delay=0, max_attempts=1)
    old = job(replicas=1, restart_policy=policy)
    service = next_iteration(old)  # the same digest: only the version tells the iterations apart
    make = Tasks(service).make
    earlier = make(1, state=FAILED, desired=SHUTDOWN, version=old.version)
    first = make(1, state=FAILED)
    assert created_slots(plan(service, [earlier, first])) == [1]
    retried = make(1, state=FAILED)
    first_shut = dataclasses.replace(first, desired_state=SHUTDOWN)
    assert plan(service, [earlier, first_shut, retried]).empty  # one restart was allowed, and made


def test_an_orphaned_task_and_node_trouble_replace_at_once_in_the_slot() -> None:
    service = job(replicas=3, max_concurrent=3, restart_policy=RestartPolicy(delay=60))
    make = Tasks(service).make
    nodes = node_map(make_node(1, status=NodeStatus.DOWN), make_node(2, availability=Availability.DRAIN), make_node(3))
    lost, drained, orphan = make(1, "n1"), make(2, "n2"), make(3, "n3", state=ORPHANED)
    result = plan(service, [lost, drained, orphan], nodes)
    assert created_slots(result) == [1, 2, 3]
    assert result.shutdown == {
        lost.id: REASON_NODE_DOWN,
        drained.id: REASON_NODE_DRAINED,
        orphan.id: "task orphaned; restarted",
    }
    assert result.wake_at is None


def test_a_task_lost_with_its_node_keeps_its_slot() -> None:
    service = job(replicas=3, max_concurrent=1)
    make = Tasks(service).make
    lost = make(2, "n1")
    result = plan(service, [lost], node_map(make_node(1, status=NodeStatus.DOWN), make_node(2)))
    assert created_slots(result) == [2]  # not slot 1, free as it is: slot 2 is the one in progress
    assert result.shutdown == {lost.id: REASON_NODE_DOWN}


def test_duplicates_and_tasks_of_a_completed_slot_are_shut_down() -> None:
    service = job(replicas=2)
    make = Tasks(service).make
    done, late = make(1, state=COMPLETE), make(1, state=TaskState.STARTING)
    older, newer = make(2, state=TaskState.STARTING), make(2)
    result = plan(service, [done, late, older, newer])
    assert result.shutdown == {late.id: REASON_SLOT_DONE, older.id: "duplicate task for the slot"}
    assert result.create == []


def test_plan_service_hands_jobs_to_the_job_planner() -> None:
    service = job(replicas=4, max_concurrent=2)
    make = Tasks(service).make
    tasks = [make(1, state=COMPLETE)]
    via_reconcile = plan_service(service, tasks, NODES, NOW, ids(), update_parallelism=0)
    assert via_reconcile == plan(service, tasks)
    assert created_slots(via_reconcile) == [2, 3]
    with pytest.raises(ValueError):
        plan_job(
            dataclasses.replace(service, spec=dataclasses.replace(service.spec, mode=ServiceMode.REPLICATED)),
            [],
            NODES,
            NOW,
            ids(),
        )


# --- iterations -----------------------------------------------------------------------------------------


def test_an_update_runs_the_job_again_from_zero() -> None:
    old = job(replicas=3, max_concurrent=2)
    make = Tasks(old).make
    done1, done2, running3 = make(1, state=COMPLETE), make(2, state=COMPLETE), make(3)
    service = next_iteration(old)  # even with nothing changed, as docker's JobIteration
    result = plan(service, [done1, done2, running3])
    assert result.shutdown == {running3.id: REASON_NEW_ITERATION}
    assert created_slots(result) == [1, 2]
    assert all(task.spec_version == service.version for task in result.create)
    assert result.delete == []  # the earlier iteration's completions stay, as history


def test_an_update_of_a_global_job_runs_it_again_on_every_node() -> None:
    old = global_job()
    make = Tasks(old).make
    tasks = [make(0, "n1", state=COMPLETE), make(0, "n2"), make(0, "n3", state=COMPLETE)]
    service = next_iteration(old, image="busybox:2")
    result = plan(service, tasks)
    assert result.shutdown == {tasks[1].id: REASON_NEW_ITERATION}
    assert created_nodes(result) == ["n1", "n2", "n3"]


# --- global jobs ----------------------------------------------------------------------------------------


def test_a_global_job_runs_once_on_each_eligible_node() -> None:
    nodes = node_map(
        make_node(1),
        make_node(2, availability=Availability.PAUSE),
        make_node(3, availability=Availability.DRAIN),
        make_node(4, status=NodeStatus.DOWN),
        make_node(5, status=NodeStatus.UNKNOWN),
        make_node(6, labels={"zone": "b"}),
        make_node(7, labels={"zone": "a"}),
    )
    service = global_job(constraints=(Constraint("node.labels.zone", ConstraintOp.NE, "b"),))
    result = plan(service, [], nodes)
    assert created_nodes(result) == ["n1", "n7"]
    assert all(task.slot == 0 for task in result.create)


def test_a_global_job_never_reruns_a_completed_node_and_gives_new_nodes_one() -> None:
    service = global_job()
    make = Tasks(service).make
    tasks = [make(0, "n1", state=COMPLETE), make(0, "n2", state=COMPLETE)]
    assert created_nodes(plan(service, tasks, node_map(make_node(1), make_node(2)))) == []
    assert created_nodes(plan(service, tasks, NODES)) == ["n3"]  # n3 joined


def test_a_global_job_follows_its_nodes() -> None:
    service = global_job(restart_policy=NO_DELAY)
    make = Tasks(service).make
    paused_running = make(0, "n1")
    paused_failed = make(0, "n2", state=FAILED)
    drained = make(0, "n3")
    nodes = node_map(
        make_node(1, availability=Availability.PAUSE),
        make_node(2, availability=Availability.PAUSE),
        make_node(3, availability=Availability.DRAIN),
    )
    result = plan(service, [paused_running, paused_failed, drained], nodes)
    # Paused: the live task stays, the failed one waits for the node; drained: its task goes, none comes.
    assert result.shutdown == {drained.id: REASON_NODE_DRAINED}
    assert result.create == []
    active = node_map(make_node(1), make_node(2), make_node(3))
    stopped = dataclasses.replace(drained, state=SHUTDOWN, desired_state=SHUTDOWN)
    again = plan(service, [paused_running, paused_failed, stopped], active)
    assert created_nodes(again) == ["n2", "n3"]
    assert again.shutdown == {paused_failed.id: "task failed; restarted"}


# --- history --------------------------------------------------------------------------------------------


def test_history_never_forgets_this_iterations_completions() -> None:
    service = job(replicas=3, max_concurrent=3, version=4)
    make = Tasks(service).make
    # Slot 1: three earlier iterations' completions, then this one's after two failed attempts.
    earlier = [make(1, state=COMPLETE, version=v) for v in (1, 2, 3)]
    attempts = [make(1, state=FAILED, desired=SHUTDOWN) for _ in range(2)]
    done = make(1, state=COMPLETE)
    tasks = [*earlier, *attempts, done, make(2, state=COMPLETE), make(3, state=COMPLETE)]
    result = plan(service, tasks, history_limit=1)
    assert sorted(result.delete) == sorted(t.id for t in [*earlier, *attempts])
    assert result.create == [] and result.shutdown == {}
    kept = [t for t in tasks if t.id not in result.delete]
    assert job_status(service, kept, NODES) == JobStatus(running=0, desired=3, completed=3, total=3)
    assert plan(service, kept, history_limit=1).empty


def test_history_keeps_a_given_up_slot_and_the_tasks_still_stopping() -> None:
    service = job(replicas=1, restart_policy=RestartPolicy(condition=RestartCondition.NONE))
    make = Tasks(service).make
    stopping = make(1, state=RUNNING, desired=SHUTDOWN, version=0)
    given_up = make(1, state=FAILED)
    assert plan(service, [stopping, given_up], history_limit=1).empty


def test_history_of_a_global_job_on_a_node_that_left_keeps_its_completion_only() -> None:
    old = global_job()
    service = next_iteration(old)
    make = Tasks(service).make
    gone = [make(0, "n9", state=COMPLETE, version=old.version), make(0, "n9", state=FAILED, desired=SHUTDOWN)]
    done = make(0, "n9", state=COMPLETE)
    result = plan(service, [*gone, done], node_map(make_node(1)))
    assert sorted(result.delete) == sorted(t.id for t in gone)
    assert created_nodes(result) == ["n1"]


def test_max_attempts_keeps_enough_history_to_count() -> None:
    service = job(replicas=1, restart_policy=RestartPolicy(delay=0, max_attempts=3))
    make = Tasks(service).make
    tasks = [make(1, state=FAILED, desired=SHUTDOWN) for _ in range(3)] + [make(1, state=FAILED)]
    result = plan(service, tasks, history_limit=1)
    assert result.delete == [] and result.create == []  # three restarts made: given up


# --- the counts of `service ls` -------------------------------------------------------------------------


def test_job_status_counts_the_current_iteration_as_docker() -> None:
    old = job(replicas=3, max_concurrent=2)
    service = next_iteration(old)
    make = Tasks(service).make
    nodes = node_map(make_node(1), make_node(2, status=NodeStatus.DOWN))
    tasks = [
        make(1, state=COMPLETE, version=old.version),
        make(1, state=COMPLETE),
        make(2, "n1"),
        make(3, "n2"),  # running on a node that is down: not counted as running
        make(3, state=FAILED, desired=SHUTDOWN),
    ]
    status = job_status(service, tasks, nodes)
    assert status == JobStatus(running=1, desired=2, completed=1, total=3)
    assert status.replicas_text() == "1/2 (1/3 completed)"


def test_job_status_of_a_global_job() -> None:
    service = global_job()
    make = Tasks(service).make
    tasks = [make(0, "n1", state=COMPLETE), make(0, "n2"), make(0, "n3", state=COMPLETE)]
    status = job_status(service, tasks, NODES)
    assert status.replicas_text() == "1/1 (2/3 completed)"
    done = [make(0, "n2", state=COMPLETE)]
    assert job_status(service, [tasks[0], tasks[2], *done], NODES).replicas_text() == "0/0 (3/3 completed)"


def test_plan_does_not_mutate_its_inputs() -> None:
    service = job(replicas=3, max_concurrent=2, version=2)
    make = Tasks(service).make
    tasks = [make(1, state=COMPLETE), make(2, state=FAILED, ended_at=NOW), make(3, version=1)]
    nodes = node_map(make_node(1), make_node(2, status=NodeStatus.DOWN))
    before = copy.deepcopy((service, tasks, nodes))
    plan(service, tasks, nodes, history_limit=1)
    assert (service, tasks, nodes) == before


# --- simulation: plan, schedule, run, as the manager does ----------------------------------------------


class Cluster:
    """Applies job plans and schedules as the manager does; tasks start at once and run until told."""

    def __init__(self, node_count: int, services: list[Service]) -> None:
        self.nodes = node_map(*(make_node(i) for i in range(1, node_count + 1)))
        self.services = {service.id: service for service in services}
        self.tasks: dict[str, Task] = {}
        self.now = NOW
        self.new_id = ids("task")
        # (service id, iteration, slot or node) of every completion seen: never run again.
        self.completed: set[tuple[str, int, int | str]] = set()

    def of(self, service: Service, current: bool = True) -> list[Task]:
        tasks = [t for t in self.tasks.values() if t.service_id == service.id]
        return [t for t in tasks if t.spec_version == service.version] if current else tasks

    def key(self, task: Task) -> tuple[str, int, int | str]:
        return (task.service_id, task.spec_version, task.slot or task.node_id)

    def apply(self, service: Service, result: ReconcilePlan) -> None:
        for task_id in result.shutdown:
            task = self.tasks[task_id]
            task.desired_state = SHUTDOWN
            if not task.state.terminal:
                task.state = SHUTDOWN
        for task in result.create:
            assert self.key(task) not in self.completed, f"re-ran a completed slot: {self.key(task)}"
            self.tasks[task.id] = task
        for task_id in result.delete:
            doomed = self.tasks.pop(task_id)
            assert doomed.state is not COMPLETE or doomed.spec_version != service.version, "forgot a completion"

    def check(self) -> None:
        for service in self.services.values():
            current = self.of(service)
            active = [t for t in current if t.active]
            done = [t for t in current if t.state is COMPLETE]
            if service.spec.mode is ServiceMode.REPLICATED_JOB:
                concurrency = service.spec.max_concurrent or service.spec.replicas
                assert len(active) <= concurrency, f"{len(active)} running, max_concurrent {concurrency}"
                assert len(done) <= service.spec.replicas
                assert len(active) + len(done) <= service.spec.replicas
            keys = [self.key(t) for t in [*active, *done]]
            assert len(set(keys)) == len(keys), f"a slot runs twice, or runs again after completing: {keys}"
            assert job_status(service, self.of(service, current=False), self.nodes).completed == len(done)

    def converge(self) -> None:
        for _ in range(100):
            changed = False
            for service in self.services.values():
                result = plan_job(
                    service, self.of(service, current=False), self.nodes, self.now, self.new_id, history_limit=2
                )
                again = plan_job(
                    service, self.of(service, current=False), self.nodes, self.now, ids("task"), history_limit=2
                )
                assert (result.shutdown, result.delete, len(result.create)) == (
                    again.shutdown,
                    again.delete,
                    len(again.create),
                )
                changed |= not result.empty
                self.apply(service, result)
                self.check()
            pending = [t for t in self.tasks.values() if t.active and t.state is PENDING]
            placed = [t for t in self.tasks.values() if t.node_id and t.active and t.state is not PENDING]
            assignments = schedule(pending, self.services, list(self.nodes.values()), placed).assignments
            for task_id, node_id in assignments.items():
                task = self.tasks[task_id]
                task.node_id, task.state = node_id, RUNNING
            changed |= bool(assignments)
            self.now += 1
            if not changed:
                return
        raise AssertionError("did not converge")

    def end(self, target: str, pick: int, state: TaskState) -> None:
        running = sorted((t for t in self.tasks.values() if t.service_id == target and t.active), key=lambda t: t.id)
        if running:
            task = running[pick % len(running)]
            task.state, task.state_changed_at = state, self.now
            if state is COMPLETE:
                self.completed.add(self.key(task))


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("complete"), st.sampled_from(["rj", "gj"]), st.integers(0, 20)),
        st.tuples(st.just("fail"), st.sampled_from(["rj", "gj"]), st.integers(0, 20)),
        st.tuples(st.just("update"), st.sampled_from(["rj", "gj"]), st.integers(0, 6)),
        st.tuples(st.just("drain"), st.just(""), st.integers(1, 5)),
        st.tuples(st.just("down"), st.just(""), st.integers(1, 5)),
        st.tuples(st.just("activate"), st.just(""), st.integers(1, 5)),
        st.tuples(st.just("join"), st.just(""), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=4),
    st.sampled_from([RestartCondition.ANY, RestartCondition.ON_FAILURE, RestartCondition.NONE]),
    OPERATIONS,
)
def test_jobs_keep_their_invariants_and_finish(
    node_count: int,
    replicas: int,
    max_concurrent: int,
    condition: RestartCondition,
    operations: list[tuple[str, str, int]],
) -> None:
    policy = RestartPolicy(condition=condition, delay=0)
    rj = Service(
        id="rj",
        spec=ServiceSpec(
            name="rj",
            image="i",
            mode=ServiceMode.REPLICATED_JOB,
            replicas=replicas,
            max_concurrent=max_concurrent,
            restart_policy=policy,
        ),
    )
    gj = Service(id="gj", spec=ServiceSpec(name="gj", image="i", mode=ServiceMode.GLOBAL_JOB, restart_policy=policy))
    cluster = Cluster(node_count, [rj, gj])
    cluster.converge()
    for operation, target, amount in operations:
        if operation in ("complete", "fail"):
            cluster.end(target, amount, COMPLETE if operation == "complete" else FAILED)
        elif operation == "update":
            service = cluster.services[target]
            changes: dict[str, object] = {"replicas": amount, "max_concurrent": amount % 3} if target == "rj" else {}
            cluster.services[target] = next_iteration(service, **changes)
        elif operation == "join":
            number = len(cluster.nodes) + 1
            cluster.nodes[f"n{number}"] = make_node(number)
        else:
            node = cluster.nodes.get(f"n{amount}")
            if node is None:
                continue
            node.status = NodeStatus.DOWN if operation == "down" else NodeStatus.READY
            node.availability = Availability.DRAIN if operation == "drain" else Availability.ACTIVE
        cluster.converge()

    # Run every task to completion: each job ends with every slot (every eligible node) completed or given up.
    for _ in range(50):
        if not any(t.active for t in cluster.tasks.values()):
            break
        for task in [t for t in cluster.tasks.values() if t.active]:
            task.state, task.state_changed_at = COMPLETE, cluster.now
            cluster.completed.add(cluster.key(task))
        cluster.converge()
    eligible = {node.id for node in cluster.nodes.values() if node.schedulable}
    for service in cluster.services.values():
        current = cluster.of(service)
        assert not any(t.active for t in current)
        finished = {t.slot or t.node_id for t in current if t.state is COMPLETE}
        given_up = {t.slot or t.node_id for t in current if t.desired_state is RUNNING and t.state is FAILED}
        assert not finished & given_up
        if condition is not RestartCondition.NONE:
            assert not given_up
        if service.spec.mode is ServiceMode.REPLICATED_JOB:
            assert finished | given_up == set(range(1, service.spec.replicas + 1))
            status = job_status(service, cluster.of(service, current=False), cluster.nodes)
            assert (status.completed, status.total) == (len(finished), service.spec.replicas)
        else:
            assert eligible <= finished | given_up
        result = plan_job(
            service, cluster.of(service, current=False), cluster.nodes, cluster.now + 1000, ids(), history_limit=2
        )
        assert result.empty and result.wake_at is None
