"""The orchestrator's decision for one service: which tasks to create, shut down and forget.

Pure: `plan_service` takes the service, its tasks, the nodes and the time `now`, and returns a
`ReconcilePlan`. It reads no clock, does no I/O and does not mutate its arguments; new task ids come from
the caller's `new_task_id`. The manager executes the plan (see `ReconcilePlan`), then the scheduler places
the new tasks. Calling it again on the applied result is a no-op until something changes, or until
`wake_at`.

Modelled on swarmkit's replicated and global orchestrators, restart supervisor, updater and task reaper:

* A replicated service has slots 1..N; a global service has one "slot" per node (keyed by node id, task
  slot 0). A slot's *current* task is its active one (desired RUNNING and not ended); if a slot somehow
  has several, the most useful is kept and the others are shut down.
* Scaling: scale-up fills the lowest free slot numbers (slots may be non-contiguous after a scale-down);
  scale-down first drops slots without a live task (restart pending or withheld, task lost with its
  node), highest slot first, then live tasks in `scale_down_choice` order.
* A task that ended by itself (state COMPLETE/FAILED/REJECTED, or SHUTDOWN, while desired RUNNING) is left
  exactly as it is while the restart policy decides: it keeps the slot occupied.
  - restart due now: the ended task is shut down (its desired state becomes SHUTDOWN) and a replacement is
    created in the same slot;
  - restart delayed: nothing changes, `wake_at` says when to plan again;
  - restart withheld (condition none, on-failure after a clean exit, max attempts reached): nothing
    changes, ever. The ended task keeps desired RUNNING: that is the durable record that the slot gave up,
    so it is not refilled. Only a scale-down (which shuts that task down and frees the slot) or a change
    of the task spec (digest) releases it.
  The decision depends on the slot's history only, never on `now` (the max-attempts window is measured
  back from the moment the task ended), so a withheld slot stays withheld.
* Node trouble is not task failure: an active task on a node that is down, drained, gone, or no longer
  satisfies the constraints is shut down and replaced at once, without the restart delay (replicated).
  An ORPHANED task whose desired state is still RUNNING is treated the same way.
* Rolling updates are stop-first, `update_parallelism` tasks per batch (0 or less: all at once). A batch
  starts only when every slot already moved to the new spec runs it: a replacement still starting holds
  the next batch, and one that ended on its own pauses the update (swarm's default failure action) until
  the spec changes again. Outdated tasks that were never placed are replaced at once.
* Global services: one task per node that is ready, active and satisfies the constraints. Paused (and
  not-yet-ready) nodes keep their task but get no new one; down, drained, gone and constraint-failing
  nodes lose theirs. The restart policy applies per node as per slot.
* History: at most `history_limit` tasks per slot (per node), the current one included; the oldest ended
  tasks that are no longer wanted go first. Tasks still being stopped are never deleted. Slots dropped by
  a scale-down and global nodes that left the cluster keep no history. With `max_attempts` set, a slot
  keeps at least max_attempts + 1 tasks (attempts first) so that the attempts stay countable.

Jobs (replicated-job, global-job) run to completion instead: `plan_service` hands them to planners.jobs.

The parts with no slot bookkeeping live in their own modules, re-exported here where they were public:
plan (ReconcilePlan, the reasons, the node checks), restart_policy (restart_time, slot_history_limit),
scale_down (scale_down_choice) and task_digest (task_spec_digest).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyswarm.model import Node, Service, ServiceMode, Task, TaskState
from pyswarm.planners.jobs import plan_job
from pyswarm.planners.plan import (
    REASON_CONSTRAINTS,
    REASON_DUPLICATE,
    REASON_NODE_DOWN,
    REASON_NODE_DRAINED,
    REASON_NODE_GONE,
    REASON_SCALE_DOWN,
    REASON_SUPERSEDED,
    REASON_UPDATE,
    NodeCheck,
    ReconcilePlan,
    slot_task,
)
from pyswarm.planners.restart_policy import SELF_ENDED, restart_time, slot_history_limit
from pyswarm.planners.scale_down import scale_down_choice
from pyswarm.planners.task_digest import task_spec_digest

__all__ = [
    "REASON_CONSTRAINTS",
    "REASON_DUPLICATE",
    "REASON_NODE_DOWN",
    "REASON_NODE_DRAINED",
    "REASON_NODE_GONE",
    "REASON_SCALE_DOWN",
    "REASON_SUPERSEDED",
    "REASON_UPDATE",
    "ReconcilePlan",
    "plan_service",
    "restart_time",
    "scale_down_choice",
    "slot_history_limit",
    "task_spec_digest",
]


# --- planning ---------------------------------------------------------------------------------------

# What a slot needs, after looking at its tasks.
_OK = 0  # a current task, on a fine node
_REPLACE = 1  # its task was lost to node trouble: replace now, no delay
_RESTART = 2  # its task ended and the restart is due: replace now
_WAITING = 3  # its task ended and the restart delay runs
_RETIRED = 4  # its task ended and will not be restarted
_HELD = 5  # global: restart due but the node takes no new task now (paused, not ready)
_VACANT = 6  # no wanted task


class _Slot:
    __slots__ = ("created", "current", "ended", "key", "lost", "status", "tasks")

    def __init__(self, key: int | str) -> None:
        self.key = key
        self.tasks: list[Task] = []
        self.current: Task | None = None
        self.ended: Task | None = None  # the latest task that ended while wanted running
        self.lost: Task | None = None  # the current task, shut down here because of its node
        self.status = _VACANT
        self.created = False


class _Planner:
    def __init__(
        self,
        service: Service,
        nodes: Mapping[str, Node],
        now: float,
        new_task_id: Callable[[], str],
    ) -> None:
        self.service = service
        self.spec = service.spec
        self.nodes = nodes
        self.now = now
        self.new_task_id = new_task_id
        self.digest = task_spec_digest(service.spec)
        self.is_global = service.spec.mode is ServiceMode.GLOBAL
        self.plan = ReconcilePlan()
        self.settled: dict[int | str, Task] = {}  # slot key -> its only task, running the current spec
        self.slots: dict[int | str, _Slot] = {}  # every other slot
        check = NodeCheck(nodes, service.spec.constraints)
        self.node_problem = check.problem
        self.takes_new_task = check.takes_new_task
        # Set when this plan already replaces an outdated task: the update's next batch waits for it.
        self.update_in_flight = False

    # --- actions --------------------------------------------------------------------------------

    def shut_down(self, task: Task, reason: str) -> None:
        self.plan.shutdown.setdefault(task.id, reason)

    def create(self, slot: _Slot) -> None:
        self.plan.create.append(
            slot_task(self.new_task_id(), self.service.id, slot.key, self.service.version, self.digest, self.now)
        )
        slot.created = True

    # --- slots ----------------------------------------------------------------------------------

    def group(self, tasks: Sequence[Task]) -> None:
        """Sort tasks into slots. A slot whose only task runs the current spec is "settled" and gets no
        object of its own: in a steady state that is nearly every slot, and allocating nothing for them
        is what keeps a pass over 150k tasks fast."""
        settled = self.settled
        slots = self.slots
        by_node = self.is_global
        digest = self.digest
        running = TaskState.RUNNING
        for task in tasks:
            key: int | str = task.node_id if by_node else task.slot
            slot = slots.get(key)
            if slot is not None:
                slot.tasks.append(task)
                continue
            first = settled.pop(key, None)
            if first is None and task.desired_state is running and task.state is running and task.spec_digest == digest:
                settled[key] = task
                continue
            slot = slots[key] = _Slot(key)
            if first is not None:
                slot.tasks.append(first)
            slot.tasks.append(task)
        # A settled task on a node it may not stay on needs the full treatment.
        node_problem = self.node_problem
        troubled = [key for key, task in settled.items() if node_problem(task.node_id) is not None]
        for key in troubled:
            slot = slots[key] = _Slot(key)
            slot.tasks.append(settled.pop(key))
        for slot in slots.values():
            self.classify(slot)

    def slot(self, key: int | str) -> _Slot:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = _Slot(key)
        return slot

    def occupied(self, key: int | str) -> bool:
        if key in self.settled:
            return True
        slot = self.slots.get(key)
        return slot is not None and (slot.status != _VACANT or slot.created)

    def classify(self, slot: _Slot) -> None:
        """Find the slot's current (or ended) task, shut down the strays, decide what the slot needs."""
        running = TaskState.RUNNING
        if len(slot.tasks) == 1:  # the common case, kept cheap
            task = slot.tasks[0]
            if task.desired_state is running:
                if task.state.terminal:
                    slot.ended = task
                else:
                    slot.current = task
        else:
            active = [t for t in slot.tasks if t.desired_state is running and not t.state.terminal]
            ended = [t for t in slot.tasks if t.desired_state is running and t.state.terminal]
            if active:
                # Keep the most useful one: running, up to date, newest.
                active.sort(
                    key=lambda t: (t.state is running, t.spec_digest == self.digest, t.created_at, t.id),
                    reverse=True,
                )
                slot.current = active[0]
                for extra in active[1:]:
                    self.shut_down(extra, REASON_DUPLICATE)
                for stale in ended:
                    self.shut_down(stale, REASON_SUPERSEDED)
            elif ended:
                ended.sort(key=lambda t: (t.created_at, t.id), reverse=True)
                slot.ended = ended[0]
                for stale in ended[1:]:
                    self.shut_down(stale, REASON_SUPERSEDED)

        current = slot.current
        if current is not None:
            if self.is_global or current.node_id:
                problem = self.node_problem(current.node_id)
                if problem is not None:
                    self.shut_down(current, problem)
                    slot.current = None
                    slot.lost = current
                    # A replicated slot is refilled elsewhere at once; a global one simply loses its node.
                    slot.status = _VACANT if self.is_global else _REPLACE
                    return
            slot.status = _OK
            return
        if slot.ended is not None:
            self.classify_ended(slot, slot.ended)

    def classify_ended(self, slot: _Slot, ended: Task) -> None:
        if self.is_global:
            problem = self.node_problem(ended.node_id)
            if problem is not None:
                self.shut_down(ended, problem)
                slot.status = _VACANT
                return
        if ended.state is TaskState.ORPHANED:
            slot.status = _REPLACE  # the node lost it: not the task's fault, no delay, no policy
        elif ended.spec_digest != self.digest:
            slot.status = _RESTART  # the spec changed since: run the new one, whatever the policy said
        else:
            restart_at = restart_time(self.spec.restart_policy, ended, slot.tasks)
            if restart_at is None:
                slot.status = _RETIRED
            elif restart_at > self.now:
                slot.status = _WAITING
                self.plan.wake(restart_at)
            else:
                slot.status = _RESTART
        if self.is_global and slot.status in (_REPLACE, _RESTART) and not self.takes_new_task(str(slot.key)):
            slot.status = _HELD  # paused or not ready: replaced when the node takes tasks again

    def restart(self, slot: _Slot) -> None:
        ended = slot.ended
        if ended is not None:
            self.shut_down(ended, f"task {ended.state.value}; restarted")
        replaced = ended or slot.lost
        if replaced is not None and replaced.spec_digest != self.digest:
            self.update_in_flight = True
        self.create(slot)

    # --- the two orchestrators ------------------------------------------------------------------

    def scale_replicated(self) -> None:
        slots, settled = self.slots, self.settled
        occupied = len(settled) + sum(1 for slot in slots.values() if slot.status != _VACANT)
        excess = occupied - max(0, self.spec.replicas)
        if excess > 0:
            # Slots without a live task go first: dropping them stops nothing that works.
            idle = sorted(
                (s for s in slots.values() if s.status not in (_OK, _VACANT)),
                key=lambda s: int(s.key),
                reverse=True,
            )
            for slot in idle[:excess]:
                if slot.ended is not None:
                    self.shut_down(slot.ended, REASON_SCALE_DOWN)
                slot.status = _VACANT
            excess -= min(excess, len(idle))
            if excess > 0:
                live = [s.current for s in slots.values() if s.status == _OK and s.current is not None]
                live.extend(settled.values())
                for task in scale_down_choice(live, excess):
                    self.shut_down(task, REASON_SCALE_DOWN)
                    if settled.pop(task.slot, None) is None:
                        slots[task.slot].status = _VACANT
        elif excess < 0:
            missing = -excess
            number = 0
            while missing:
                number += 1
                if self.occupied(number):
                    continue
                self.create(self.slot(number))
                missing -= 1

    def fill_global(self) -> None:
        for node_id in self.nodes:
            if not self.occupied(node_id) and self.takes_new_task(node_id):
                self.create(self.slot(node_id))

    def roll_update(self, parallelism: int) -> None:
        # Settled slots run the current spec: only the others can be outdated or held back by the update.
        outdated: list[tuple[_Slot, Task]] = []
        in_progress = self.update_in_flight
        for slot in self.slots.values():
            task = slot.current
            if slot.status == _OK and task is not None:
                if task.spec_digest != self.digest:
                    outdated.append((slot, task))
                elif task.state is not TaskState.RUNNING and self.was_updated(slot):
                    in_progress = True  # the last batch's replacement is still starting
            elif slot.ended is not None and slot.ended.spec_digest == self.digest and self.was_updated(slot):
                in_progress = True  # the new spec ended on its own there: pause, as swarm does on failure
        if not outdated:
            return
        batch: list[tuple[_Slot, Task]] = []
        for slot, task in outdated:
            if not task.node_id and task.state <= TaskState.PENDING:
                # Never placed: nothing runs, so nothing to stop first. Replace at once.
                self.replace_outdated(slot, task)
                in_progress = True
            elif not self.is_global or self.takes_new_task(task.node_id):
                batch.append((slot, task))
        if in_progress or not batch:
            return
        batch.sort(key=lambda item: (item[1].state is TaskState.RUNNING, _slot_order(item[0].key)))
        for slot, task in batch if parallelism <= 0 else batch[:parallelism]:
            self.replace_outdated(slot, task)

    def was_updated(self, slot: _Slot) -> bool:
        """Did the slot run another spec before? (Then its current-spec task came from an update.)"""
        return any(t.spec_digest != self.digest for t in slot.tasks)

    def replace_outdated(self, slot: _Slot, task: Task) -> None:
        self.shut_down(task, REASON_UPDATE)
        slot.current = None
        self.create(slot)

    # --- history --------------------------------------------------------------------------------

    def forget(self, history_limit: int) -> None:
        # Settled slots hold a single task: never above the limit.
        policy = self.spec.restart_policy
        limit = slot_history_limit(policy, history_limit)
        shutdown = self.plan.shutdown
        for slot in self.slots.values():
            size = len(slot.tasks) + slot.created
            # Replicated slots given up by a scale-down, and nodes that left, keep no history.
            abandoned = (slot.status == _VACANT and not slot.created and not self.is_global) or (
                self.is_global and slot.key not in self.nodes
            )
            if size <= limit and not abandoned:
                continue
            deletable = [
                t
                for t in slot.tasks
                if t.desired_state is not TaskState.RUNNING and t.state.terminal and t.id not in shutdown
            ]
            if not abandoned:
                # Oldest first; when attempts are counted, tasks that are not attempts go before those that are.
                deletable.sort(key=lambda t: (policy.max_attempts > 0 and t.state in SELF_ENDED, t.created_at, t.id))
                deletable = deletable[: size - limit]
            self.plan.delete.extend(t.id for t in deletable)


def _slot_order(key: int | str) -> tuple[int, str]:
    return (key, "") if isinstance(key, int) else (0, key)


def plan_service(
    service: Service,
    tasks: Sequence[Task],
    nodes: Mapping[str, Node],
    now: float,
    new_task_id: Callable[[], str],
    history_limit: int = 5,
    update_parallelism: int = 1,
) -> ReconcilePlan:
    """Decide what brings `service` to its spec.

    tasks: every task of the service in the store, in any state, history included.
    nodes: every node of the cluster by id. A task whose node is missing is treated as on a gone node.
    now: the current time; only compared with task timestamps (restart delays).
    new_task_id: makes the id of each created task.
    Jobs (replicated-job, global-job) are planned by `planners.jobs.plan_job`; update_parallelism does not
    apply to them.
    """
    if service.spec.mode.is_job:
        return plan_job(service, tasks, nodes, now, new_task_id, history_limit=history_limit)
    planner = _Planner(service, nodes, now, new_task_id)
    planner.group(tasks)
    if planner.is_global:
        planner.fill_global()
    else:
        planner.scale_replicated()
    for slot in list(planner.slots.values()):
        if slot.status in (_REPLACE, _RESTART):
            planner.restart(slot)
    planner.roll_update(update_parallelism)
    planner.forget(history_limit)
    return planner.plan
