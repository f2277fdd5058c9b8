"""The plan of a job (`--mode replicated-job` or `global-job`): tasks that run to completion. Pure.

`plan_job` has `plan_service`'s contract (planners.reconcile hands jobs to it): data in, a `ReconcilePlan`
out, no clock, no I/O, arguments left untouched; planning again on the applied result is a no-op until
something changes, or until `wake_at`. Modelled on swarmkit's jobs orchestrator
(manager/orchestrator/jobs/replicated and global) and its restart supervisor:

* Iterations. Every `service update` of a job runs it again from zero (swarm bumps the job's JobIteration
  on each update). Here the iteration is the service's version, which every update bumps: a task belongs
  to the current iteration when its spec_version is the service's version. Tasks of earlier iterations
  that still run are shut down; those that ended stay, as history.
* A replicated job wants `replicas` completions (swarm's TotalCompletions), with at most `max_concurrent`
  (0: replicas) in progress at once. As in swarmkit, each completion has a slot of its own, 1..replicas,
  and a failed task is restarted in its slot. A slot whose task completed is done for the iteration and
  never runs again. New tasks fill the lowest free slots while in progress < max_concurrent and
  done + in progress < replicas. In progress: a slot with a live task, or whose ended task waits for its
  restart (swarmkit counts those as running too).
* A global job runs one task to completion on every node that is ready, active and satisfies the
  constraints; a node that becomes eligible later gets one; a node whose task completed never runs it
  again in the iteration. Paused and not-ready nodes keep a live task; down, drained, gone and
  constraint-failing nodes lose it (and get a new one once eligible again, unless it had completed).
* Restarts follow the restart policy, except that a completed task is never run again, even with
  condition `any` (docker's default). A restart withheld (condition none, max attempts reached) leaves
  the failed task, still wanted running, as the slot's record: the slot is given up for the iteration, no
  longer counts toward max_concurrent, and the job never reaches its completions. (swarmkit's reconciler,
  as written, refills such a slot with a new task at once, whatever the policy; this follows the policy.)
* Node trouble is not task failure: a replicated job's live task on a node that is down, drained, gone or
  no longer satisfies the constraints is replaced at once in its slot, as is an ORPHANED task.
* No rolling update, and no scaling within an iteration: a new iteration replaces everything.
* History: per slot (per node for a global job) at most `history_limit` tasks, as for services
  (restart_policy.slot_history_limit), oldest first. The current iteration's completed tasks, and each
  slot's task still wanted running, are never forgotten: they are how the job knows it is done, and what
  `job_status` counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pyswarm.model import Node, Service, Task, TaskState
from pyswarm.planners.plan import REASON_DUPLICATE, REASON_SUPERSEDED, NodeCheck, ReconcilePlan, slot_task
from pyswarm.planners.restart_policy import SELF_ENDED, restart_time, slot_history_limit
from pyswarm.planners.task_digest import task_spec_digest

REASON_NEW_ITERATION = "the job runs again: service updated"
REASON_SLOT_DONE = "the job's slot already completed"
REASON_BEYOND = "beyond the job's completions"

# What a slot needs, in the current iteration.
_DONE = 0  # its task completed: never run again
_OK = 1  # a live task, on a fine node
_REPLACE = 2  # its task was lost to node trouble (or orphaned): replace now, no delay
_RESTART = 3  # its task failed and the restart is due: replace now
_WAITING = 4  # its task failed and the restart delay runs
_RETIRED = 5  # its task failed and will not be restarted: given up
_HELD = 6  # global: restart due but the node takes no new task now (paused, not ready)
_VACANT = 7  # nothing of this iteration wanted here

_IN_PROGRESS = frozenset({_OK, _REPLACE, _RESTART, _WAITING})


class _JobSlot:
    __slots__ = ("active", "created", "done", "ended", "key", "record", "status", "tasks")

    def __init__(self, key: int | str) -> None:
        self.key = key
        self.tasks: list[Task] = []  # every task of the slot, all iterations
        # The current iteration's tasks: completed; live and wanted; ended while wanted running.
        self.done: list[Task] = []
        self.active: list[Task] = []
        self.ended: list[Task] = []
        self.record: Task | None = None  # the ended task the restart policy decided on
        self.status = _VACANT
        self.created = False


class _JobPlanner:
    def __init__(self, service: Service, nodes: Mapping[str, Node], now: float, new_task_id: Callable[[], str]) -> None:
        self.service = service
        self.spec = service.spec
        self.nodes = nodes
        self.now = now
        self.new_task_id = new_task_id
        self.version = service.version
        self.digest = task_spec_digest(service.spec)
        self.is_global = service.spec.mode.is_global
        self.plan = ReconcilePlan()
        self.slots: dict[int | str, _JobSlot] = {}
        check = NodeCheck(nodes, service.spec.constraints)
        self.node_problem = check.problem
        self.takes_new_task = check.takes_new_task

    # --- actions --------------------------------------------------------------------------------

    def shut_down(self, task: Task, reason: str) -> None:
        self.plan.shutdown.setdefault(task.id, reason)

    def create(self, slot: _JobSlot) -> None:
        self.plan.create.append(
            slot_task(self.new_task_id(), self.service.id, slot.key, self.version, self.digest, self.now)
        )
        slot.created = True

    def restart(self, slot: _JobSlot) -> None:
        record = slot.record
        if record is not None:
            self.shut_down(record, f"task {record.state.value}; restarted")
        self.create(slot)

    def slot(self, key: int | str) -> _JobSlot:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = _JobSlot(key)
        return slot

    # --- slots ----------------------------------------------------------------------------------

    def group(self, tasks: Sequence[Task]) -> None:
        running, complete, version = TaskState.RUNNING, TaskState.COMPLETE, self.version
        for task in tasks:
            slot = self.slot(task.node_id if self.is_global else task.slot)
            slot.tasks.append(task)
            if task.spec_version != version:
                if task.desired_state is running and not task.state.terminal:
                    self.shut_down(task, REASON_NEW_ITERATION)
            elif task.state is complete:
                slot.done.append(task)
            elif task.desired_state is running:
                (slot.ended if task.state.terminal else slot.active).append(task)
        for slot in self.slots.values():
            self.classify(slot)

    def classify(self, slot: _JobSlot) -> None:
        if slot.done:
            for task in slot.active:
                self.shut_down(task, REASON_SLOT_DONE)
            slot.status = _DONE
        elif slot.active:
            slot.active.sort(key=lambda t: (t.state is TaskState.RUNNING, t.created_at, t.id), reverse=True)
            current = slot.active[0]
            for extra in slot.active[1:]:
                self.shut_down(extra, REASON_DUPLICATE)
            for stale in slot.ended:
                self.shut_down(stale, REASON_SUPERSEDED)
            problem = self.node_problem(current.node_id) if current.node_id or self.is_global else None
            if problem is None:
                slot.status = _OK
            else:
                self.shut_down(current, problem)
                # A replicated job's slot is run elsewhere at once; a global job's simply loses its node.
                slot.status = _VACANT if self.is_global else _REPLACE
        elif slot.ended:
            slot.ended.sort(key=lambda t: (t.created_at, t.id), reverse=True)
            for stale in slot.ended[1:]:
                self.shut_down(stale, REASON_SUPERSEDED)
            self.classify_ended(slot, slot.ended[0])

    def classify_ended(self, slot: _JobSlot, ended: Task) -> None:
        if self.is_global:
            problem = self.node_problem(ended.node_id)
            if problem is not None:
                self.shut_down(ended, problem)
                slot.status = _VACANT
                return
        slot.record = ended
        if ended.state is TaskState.ORPHANED:
            slot.status = _REPLACE  # the node lost it: not the task's fault, no delay, no policy
        else:
            attempts = [t for t in slot.tasks if t.spec_version == self.version]
            restart_at = restart_time(self.spec.restart_policy, ended, attempts, job=True)
            if restart_at is None:
                slot.status = _RETIRED
            elif restart_at > self.now:
                slot.status = _WAITING
                self.plan.wake(restart_at)
            else:
                slot.status = _RESTART
        if self.is_global and slot.status in (_REPLACE, _RESTART) and not self.takes_new_task(str(slot.key)):
            slot.status = _HELD  # paused or not ready: run when the node takes tasks again

    # --- the two modes --------------------------------------------------------------------------

    def run_replicated(self) -> None:
        total = max(0, self.spec.replicas)
        concurrency = self.spec.max_concurrent if self.spec.max_concurrent > 0 else total
        done = given_up = in_progress = 0
        for slot in self.slots.values():
            if not 1 <= int(slot.key) <= total:
                self.drop_beyond(slot)
            elif slot.status == _DONE:
                done += 1
            elif slot.status == _RETIRED:
                given_up += 1
            elif slot.status in _IN_PROGRESS:
                in_progress += 1
                if slot.status in (_REPLACE, _RESTART):
                    self.restart(slot)
        # Every slot in 1..total is done, given up, in progress or vacant: `wanted` vacant slots exist.
        wanted = min(concurrency - in_progress, total - done - given_up - in_progress)
        number = 0
        while wanted > 0:
            number += 1
            free = self.slots.get(number)
            if free is None or free.status == _VACANT:
                self.create(free or self.slot(number))
                wanted -= 1

    def drop_beyond(self, slot: _JobSlot) -> None:
        """A slot outside 1..replicas holds nothing of this iteration (replicas only change with the
        iteration); should one appear, its live or restarting task is shut down, and it counts for nothing."""
        if slot.status in _IN_PROGRESS:
            for task in slot.active:
                self.shut_down(task, REASON_BEYOND)
            if slot.record is not None:
                self.shut_down(slot.record, REASON_BEYOND)
        slot.status = _VACANT

    def run_global(self) -> None:
        for slot in self.slots.values():
            if slot.status in (_REPLACE, _RESTART):
                self.restart(slot)
        for node_id in self.nodes:
            free = self.slots.get(node_id)
            if (free is None or free.status == _VACANT) and self.takes_new_task(node_id):
                self.create(free or self.slot(node_id))

    # --- history --------------------------------------------------------------------------------

    def forget(self, history_limit: int) -> None:
        policy = self.spec.restart_policy
        limit = slot_history_limit(policy, history_limit)
        version = self.version
        for slot in self.slots.values():
            size = len(slot.tasks) + slot.created
            gone = self.is_global and slot.key not in self.nodes  # a node that left keeps no history
            if size <= limit and not gone:
                continue
            deletable = [t for t in slot.tasks if self.forgettable(t)]
            if not gone:
                # Oldest first; with max_attempts, this iteration's attempts go last (they must stay countable).
                deletable.sort(
                    key=lambda t: (
                        policy.max_attempts > 0 and t.spec_version == version and t.state in SELF_ENDED,
                        t.created_at,
                        t.id,
                    )
                )
                deletable = deletable[: size - limit]
            self.plan.delete.extend(t.id for t in deletable)

    def forgettable(self, task: Task) -> bool:
        if not task.state.terminal or task.id in self.plan.shutdown:
            return False  # still being stopped, or about to be
        if task.spec_version != self.version:
            return True  # an earlier iteration's: history only
        return task.desired_state is not TaskState.RUNNING and task.state is not TaskState.COMPLETE


def plan_job(
    service: Service,
    tasks: Sequence[Task],
    nodes: Mapping[str, Node],
    now: float,
    new_task_id: Callable[[], str],
    history_limit: int = 5,
) -> ReconcilePlan:
    """Decide what brings the job `service` (replicated-job or global-job) to completion.

    tasks: every task of the service in the store, in any state, history and earlier iterations included.
    nodes: every node of the cluster by id. A task whose node is missing is treated as on a gone node.
    now: the current time; only compared with task timestamps (restart delays).
    new_task_id: makes the id of each created task.
    """
    if not service.spec.mode.is_job:
        raise ValueError(f"service {service.spec.name} is not a job ({service.spec.mode.value})")
    planner = _JobPlanner(service, nodes, now, new_task_id)
    planner.group(tasks)
    if planner.is_global:
        planner.run_global()
    else:
        planner.run_replicated()
    planner.forget(history_limit)
    return planner.plan


@dataclass(frozen=True)
class JobStatus:
    """A job's progress in its current iteration, as swarm's ServiceStatus counts it for `service ls`.

    running: tasks running (on a Ready node). desired: for a replicated job, max_concurrent (replicas when
    0), as swarm reports it; for a global job, the tasks wanted that have not completed. completed: tasks
    that completed. total: the completions the iteration wants (replicated: replicas; global: desired +
    completed)."""

    running: int
    desired: int
    completed: int
    total: int

    def replicas_text(self) -> str:
        """docker's REPLICAS column for a job: `1/3 (2/3 completed)`."""
        return f"{self.running}/{self.desired} ({self.completed}/{self.total} completed)"


def job_status(service: Service, tasks: Iterable[Task], nodes: Mapping[str, Node]) -> JobStatus:
    """Count the current iteration's tasks of the job `service`."""
    running = completed = unfinished = 0
    version = service.version
    for task in tasks:
        if task.spec_version != version:
            continue
        if task.state is TaskState.COMPLETE:
            completed += 1
        elif task.desired_state is TaskState.RUNNING:
            unfinished += 1
            if task.state is TaskState.RUNNING and (node := nodes.get(task.node_id)) is not None and node.ready:
                running += 1
    spec = service.spec
    if spec.mode.is_global:
        return JobStatus(running, unfinished, completed, unfinished + completed)
    desired = spec.max_concurrent if spec.max_concurrent > 0 else spec.replicas
    return JobStatus(running, desired, completed, max(0, spec.replicas))
