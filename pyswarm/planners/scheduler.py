"""Spread scheduler: which node each pending task goes to, modelled on swarmkit's scheduler.

Pure: `schedule` takes tasks, services and nodes and returns a `ScheduleResult`; it reads no clock, does no
I/O, uses no randomness and does not mutate its arguments. Ties are broken by node hostname, then id, so
the same input always gives the same placement.

Filters, in swarm's order: the node is schedulable (ready and active: paused, drained and down nodes get
nothing new), it has the CPUs and memory the service reserves left (its engine's totals minus what its
active tasks reserve), the service's constraints hold, no host-mode published port of the service is already bound
on the node, and the node is below the service's `max_replicas_per_node`.

Ranking among the nodes that pass: nodes where the service failed 5 or more times recently come last; then
fewest active tasks of this service; then fewest active tasks in total; then hostname/id.

Tasks are grouped per service and each service is placed in one pass, services in order of first
appearance in `pending`, tasks in their order there. A service never looks at every node: nodes where it
has no task yet come from a heap of (total tasks, tiebreak) shared by every service with the same
constraints, whose entries are refreshed lazily (totals only grow during a call); nodes already holding
the service, or penalised for it, sit in a small per-service heap. A call costs
O((tasks + nodes) log nodes), not O(tasks x nodes).

Placement preferences build swarmkit's decision tree over the label values (nodes without the label form
their own branch; nested preferences are nested levels) and fill it evenly: at every level the next task
goes to the branch with the fewest tasks of the service (existing ones included) that still has room.
Each leaf picks nodes as above, with its own shared heap. That adds O(branches) per service: cheap for
zones and racks, O(nodes) for a label that differs on every node.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pyswarm.model import Constraint, Node, PublishMode, Resources, Service, ServiceSpec, Task, TaskState
from pyswarm.planners.constraints import node_matches

# swarmkit: nodes where a service failed this many times in the recent window are tried last.
FAILURE_THRESHOLD = 5

# Filter names, in swarm's order; also the order of the parts of an explanation with equal counts.
_NOT_READY = "ready"
_RESOURCES = "resources"
_CONSTRAINTS = "constraints"
_HOST_PORT = "host-port"
_MAX_REPLICAS = "max-replicas"
_FILTER_ORDER = (_NOT_READY, _RESOURCES, _CONSTRAINTS, _HOST_PORT, _MAX_REPLICAS)

HostPort = tuple[int, str]  # (published port, protocol)


@dataclass(frozen=True)
class ScheduleResult:
    assignments: dict[str, str] = field(default_factory=dict)  # task id -> node id
    unplaceable: dict[str, str] = field(default_factory=dict)  # task id -> why, in swarm's words


def schedule(
    pending: Sequence[Task],
    services: Mapping[str, Service],
    nodes: Sequence[Node],
    placed: Sequence[Task],
    recent_failures: Mapping[tuple[str, str], int] | None = None,
) -> ScheduleResult:
    """Place `pending` tasks on `nodes`.

    pending: tasks that want to run and have no node yet (node_id ""), or global tasks whose node is preset;
        a preset task is kept on its node if that node passes the filters, else it is unplaceable.
        Tasks whose desired state is not RUNNING are ignored.
    placed: tasks already on nodes. Active ones (desired RUNNING, not ended) count toward the per-service
        and total counts and max-per-node; any not-yet-ended one holds its host-mode ports.
    recent_failures: (service id, node id) -> recent failure count, for the failure penalty.
    Tasks placed during this call count for the tasks placed after them.
    """
    state = _ClusterState(nodes, services, placed, recent_failures or {})
    result = ScheduleResult()

    by_service: dict[str, list[Task]] = {}
    preset: list[Task] = []
    for task in pending:
        if task.desired_state is not TaskState.RUNNING:
            continue
        if task.service_id not in services:
            result.unplaceable[task.id] = "service not found"
        elif task.node_id:
            preset.append(task)
        else:
            by_service.setdefault(task.service_id, []).append(task)

    # Preset tasks first: their node is fixed, and the free choices should see them.
    for task in preset:
        state.place_preset(task, services[task.service_id], result)
    for service_id, tasks in by_service.items():
        service = services[service_id]
        if service.spec.placement_prefs:
            leftover = state.place_with_preferences(service, tasks, result.assignments)
        else:
            leftover = state.place_spread(service, tasks, result.assignments)
        if leftover:
            reason = state.explain(service)
            for task in leftover:
                result.unplaceable[task.id] = reason
    return result


def host_ports(spec: ServiceSpec) -> frozenset[HostPort]:
    """The (published, protocol) pairs a task of `spec` binds on its node."""
    return frozenset((p.published, p.protocol.value) for p in spec.ports if p.mode is PublishMode.HOST)


class _ClusterState:
    """The working copy of the cluster for one `schedule` call: counts grow as tasks land."""

    def __init__(
        self,
        nodes: Sequence[Node],
        services: Mapping[str, Service],
        placed: Sequence[Task],
        recent_failures: Mapping[tuple[str, str], int],
    ) -> None:
        # A node's position in hostname order is its tiebreak, and its handle everywhere below.
        self.nodes = sorted(nodes, key=lambda n: (n.hostname, n.id))
        self.index = {node.id: idx for idx, node in enumerate(self.nodes)}
        self.schedulable = [node.schedulable for node in self.nodes]
        self.schedulable_count = sum(self.schedulable)
        self.total = [0] * len(self.nodes)
        self.service_counts: dict[str, dict[int, int]] = {}  # service id -> node -> active tasks
        self.used_ports: dict[int, set[HostPort]] = {}
        self._host_ports: dict[str, frozenset[HostPort]] = {}
        self._eligible: dict[frozenset[Constraint], list[int]] = {}
        self._fresh_heaps: dict[frozenset[Constraint], list[tuple[int, int]]] = {}
        self._trees: dict[tuple[frozenset[Constraint], tuple[str, ...]], _Tree] = {}
        # CPUs and memory left per node, for services that reserve some (None while none does).
        self.free: list[list[int]] | None = None
        if any(_reserves(s.spec.resources) for s in services.values()):
            self.free = self._free_resources(services, placed)

        self.penalised: dict[str, set[int]] = {}
        for (service_id, node_id), failures in recent_failures.items():
            idx = self.index.get(node_id)
            if idx is not None and failures >= FAILURE_THRESHOLD:
                self.penalised.setdefault(service_id, set()).add(idx)

        # The one loop over every placed task (a pass over the cluster): kept tight, with locals.
        index, total, service_counts, running = self.index, self.total, self.service_counts, TaskState.RUNNING
        ports_by_service = {sid: ports for sid, service in services.items() if (ports := self.ports_of(service))}
        for task in placed:
            idx = index.get(task.node_id)
            if idx is None or task.state._terminal:  # .terminal, without a property call per task
                continue
            if task.desired_state is running:
                total[idx] += 1
                counts = service_counts.get(task.service_id)
                if counts is None:
                    counts = service_counts[task.service_id] = {}
                counts[idx] = counts.get(idx, 0) + 1
            # A task being stopped still binds its ports until its container is gone.
            if ports_by_service and (bound := ports_by_service.get(task.service_id)):
                self.used_ports.setdefault(idx, set()).update(bound)

    def _free_resources(self, services: Mapping[str, Service], placed: Sequence[Task]) -> list[list[int]]:
        """[free nano CPUs, free memory] per node: the engine's totals minus the reservations of the node's
        tasks that are not ended (a task being stopped still holds what it reserved)."""
        free = [[node.nano_cpus, node.memory_bytes] for node in self.nodes]
        reserving = {sid: s.spec.resources for sid, s in services.items() if _reserves(s.spec.resources)}
        for task in placed:
            res = reserving.get(task.service_id)
            idx = self.index.get(task.node_id)
            if res is not None and idx is not None and not task.state.terminal:
                free[idx][0] -= res.reserve_nano_cpus
                free[idx][1] -= res.reserve_memory
        return free

    def fits(self, service: Service, idx: int) -> bool:
        """Whether node `idx` has what a task of `service` reserves left."""
        res = service.spec.resources
        node = self.nodes[idx]
        if self.free is None or not _reserves(res) or not (node.nano_cpus or node.memory_bytes):
            return True  # a node whose totals are unknown (it joined before they were recorded) is not filtered
        cpus, memory = self.free[idx]
        return res.reserve_nano_cpus <= cpus and res.reserve_memory <= memory

    # --- filters --------------------------------------------------------------------------------

    def ports_of(self, service: Service) -> frozenset[HostPort]:
        ports = self._host_ports.get(service.id)
        if ports is None:
            ports = self._host_ports[service.id] = host_ports(service.spec)
        return ports

    def eligible(self, spec: ServiceSpec) -> list[int]:
        """Schedulable nodes satisfying `spec`'s constraints, in tiebreak order; cached per constraint set."""
        key = frozenset(spec.constraints)
        nodes = self._eligible.get(key)
        if nodes is None:
            constraints = spec.constraints
            nodes = [
                idx
                for idx, node in enumerate(self.nodes)
                if self.schedulable[idx] and (not constraints or node_matches(constraints, node))
            ]
            self._eligible[key] = nodes
        return nodes

    def capacity_failure(self, service: Service, idx: int) -> str | None:
        """The first of the per-service filters (resources, host ports, max replicas) that `idx` fails, or None."""
        if not self.fits(service, idx):
            return _RESOURCES
        ports = self.ports_of(service)
        if ports and (used := self.used_ports.get(idx)) and not used.isdisjoint(ports):
            return _HOST_PORT
        limit = service.spec.max_replicas_per_node
        if limit and self.service_counts.get(service.id, {}).get(idx, 0) >= limit:
            return _MAX_REPLICAS
        return None

    def first_failure(self, service: Service, idx: int) -> str | None:
        if not self.schedulable[idx]:
            return _NOT_READY
        constraints = service.spec.constraints
        if constraints and not node_matches(constraints, self.nodes[idx]):
            return _CONSTRAINTS
        return self.capacity_failure(service, idx)

    def explain(self, service: Service, only: Iterable[int] | None = None) -> str:
        """swarm's message: "no suitable node (<filter failures, most frequent first>)"."""
        failures: Counter[str] = Counter()
        if only is not None:
            for idx in only:
                if (failure := self.first_failure(service, idx)) is not None:
                    failures[failure] += 1
        else:
            # Avoid re-testing constraints on every node: the eligible list already holds the answer.
            eligible = self.eligible(service.spec)
            failures[_NOT_READY] = len(self.nodes) - self.schedulable_count
            failures[_CONSTRAINTS] = self.schedulable_count - len(eligible)
            for idx in eligible:
                if (failure := self.capacity_failure(service, idx)) is not None:
                    failures[failure] += 1
        parts = sorted(
            ((count, name) for name, count in failures.items() if count),
            key=lambda item: (-item[0], _FILTER_ORDER.index(item[1])),
        )
        if not parts:
            return "no suitable node"
        return "no suitable node (" + "; ".join(_describe(name, count) for count, name in parts) + ")"

    # --- placement ------------------------------------------------------------------------------

    def assign(self, task: Task, service: Service, idx: int, assignments: dict[str, str]) -> int:
        """Record `task` on node `idx`; returns the service's new count there."""
        assignments[task.id] = self.nodes[idx].id
        self.total[idx] += 1
        counts = self.service_counts.setdefault(service.id, {})
        count = counts[idx] = counts.get(idx, 0) + 1
        if ports := self.ports_of(service):
            self.used_ports.setdefault(idx, set()).update(ports)
        if self.free is not None and _reserves(res := service.spec.resources):
            self.free[idx][0] -= res.reserve_nano_cpus
            self.free[idx][1] -= res.reserve_memory
        return count

    def place_preset(self, task: Task, service: Service, result: ScheduleResult) -> None:
        idx = self.index.get(task.node_id)
        if idx is None:
            result.unplaceable[task.id] = f"node {task.node_id} not found"
        elif self.first_failure(service, idx) is None:
            self.assign(task, service, idx, result.assignments)
        else:
            result.unplaceable[task.id] = self.explain(service, only=(idx,))

    def can_take_more(self, service: Service, count: int, idx: int) -> bool:
        """After placing a task, may the same node take another task of `service`?"""
        if self.ports_of(service):
            return False  # the service's own host ports are now bound there
        if not self.fits(service, idx):
            return False
        limit = service.spec.max_replicas_per_node
        return not limit or count < limit

    def touched_nodes(self, service: Service) -> set[int]:
        """Nodes that already hold the service or are penalised for it: they rank after every fresh node."""
        return set(self.service_counts.get(service.id, ())) | self.penalised.get(service.id, set())

    def place_spread(self, service: Service, tasks: list[Task], assignments: dict[str, str]) -> list[Task]:
        """Place a service's tasks without placement preferences; returns the tasks left over."""
        touched = self.touched_nodes(service)
        picker = _Picker(self, service, self._fresh_heap(service.spec), touched, touched)
        try:
            for position, task in enumerate(tasks):
                if not picker.take(task, assignments):
                    return tasks[position:]
            return []
        finally:
            picker.close()

    def _fresh_heap(self, spec: ServiceSpec) -> list[tuple[int, int]]:
        key = frozenset(spec.constraints)
        heap = self._fresh_heaps.get(key)
        if heap is None:
            heap = [(self.total[idx], idx) for idx in self.eligible(spec)]
            heapq.heapify(heap)
            self._fresh_heaps[key] = heap
        return heap

    def _tree(self, spec: ServiceSpec) -> _Tree:
        key = (frozenset(spec.constraints), spec.placement_prefs)
        tree = self._trees.get(key)
        if tree is None:
            tree = self._trees[key] = _Tree(self, self.eligible(spec), spec.placement_prefs)
        return tree

    def place_with_preferences(self, service: Service, tasks: list[Task], assignments: dict[str, str]) -> list[Task]:
        """Place a service's tasks over swarmkit's decision tree of placement-preference label values: at
        every level the next task goes to the branch holding the fewest tasks of the service that still has
        room (so branches even out, counting tasks already there); within a leaf, as without preferences."""
        tree = self._tree(service.spec)
        counts = self.service_counts.setdefault(service.id, {})
        branch_count = [0] * len(tree.children)
        for idx, count in counts.items():
            branch = tree.leaf_of.get(idx, -1)
            while branch != -1:
                branch_count[branch] += count
                branch = tree.parent[branch]
        touched = self.touched_nodes(service)
        touched_by_leaf: dict[int, list[int]] = {}
        for idx in touched:
            if (leaf := tree.leaf_of.get(idx)) is not None:
                touched_by_leaf.setdefault(leaf, []).append(idx)
        queues: dict[int, list[tuple[int, int, int]]] = {}  # inner branch -> (count, order, child)
        pickers: dict[int, _Picker] = {}

        def place(branch: int, task: Task) -> bool:
            children = tree.children[branch]
            if not children:
                picker = pickers.get(branch)
                if picker is None:
                    picker = pickers[branch] = _Picker(
                        self, service, tree.fresh[branch], touched, touched_by_leaf.get(branch, ())
                    )
                return picker.take(task, assignments)
            queue = queues.get(branch)
            if queue is None:
                queue = queues[branch] = [(branch_count[child], order, child) for order, child in enumerate(children)]
                heapq.heapify(queue)
            while queue:
                count, order, child = queue[0]
                if place(child, task):
                    heapq.heapreplace(queue, (count + 1, order, child))
                    return True
                heapq.heappop(queue)  # no room anywhere below: the other branches share the rest
            return False

        try:
            for position, task in enumerate(tasks):
                if not place(0, task):
                    return tasks[position:]
            return []
        finally:
            for picker in pickers.values():
                picker.close()


class _Picker:
    """Hands out, one task at a time, the best node for one service among a set of nodes.

    Best means smallest (penalty, tasks of the service, tasks in total, tiebreak). Fresh nodes (no task of
    the service, no penalty) come from `fresh`, a heap of (total, tiebreak) shared with every other service
    that sees the same node set; the few `touched` ones sit in a heap of their own. Entries of the shared
    heap may be stale (totals only grow): a stale one is refreshed when it surfaces. Nodes popped from the
    shared heap are held back until `close`, so each node has exactly one entry there between services.
    """

    def __init__(
        self,
        state: _ClusterState,
        service: Service,
        fresh: list[tuple[int, int]],
        touched: set[int],
        own_touched: Iterable[int],
    ) -> None:
        self.state = state
        self.service = service
        self.fresh = fresh
        self.touched = touched
        self.ports = state.ports_of(service)
        counts = state.service_counts.get(service.id, {})
        penalised = state.penalised.get(service.id, set())
        self.ranked = [
            (1 if idx in penalised else 0, counts.get(idx, 0), state.total[idx], idx)
            for idx in own_touched
            if state.first_failure(service, idx) is None
        ]
        heapq.heapify(self.ranked)
        self.taken: list[int] = []

    def take(self, task: Task, assignments: dict[str, str]) -> bool:
        """Place `task` on the best node; False if no node of the set can take it."""
        state, service, fresh, total = self.state, self.service, self.fresh, self.state.total
        while fresh:
            stored_total, idx = heapq.heappop(fresh)
            if stored_total != total[idx]:
                heapq.heappush(fresh, (total[idx], idx))  # stale: another service landed there
                continue
            self.taken.append(idx)
            if idx in self.touched:
                continue
            if self.ports and (used := state.used_ports.get(idx)) and not used.isdisjoint(self.ports):
                continue
            if not state.fits(service, idx):
                continue
            count = state.assign(task, service, idx, assignments)
            if state.can_take_more(service, count, idx):
                heapq.heappush(self.ranked, (0, count, total[idx], idx))
            return True
        if not self.ranked:
            return False
        penalty, _, _, idx = heapq.heappop(self.ranked)
        count = state.assign(task, service, idx, assignments)
        if state.can_take_more(service, count, idx):
            heapq.heappush(self.ranked, (penalty, count, total[idx], idx))
        return True

    def close(self) -> None:
        total = self.state.total
        for idx in self.taken:
            heapq.heappush(self.fresh, (total[idx], idx))
        self.taken = []


class _Tree:
    """swarmkit's decision tree for one (constraints, preferences) pair: branches by label value, level by
    level (nodes without the label form their own branch); each leaf keeps a shared fresh-node heap."""

    def __init__(self, state: _ClusterState, eligible: Sequence[int], prefs: tuple[str, ...]) -> None:
        # Branches are numbered; 0 is the root. Children are ordered by label value, the missing one last.
        self.children: list[list[int]] = [[]]
        self.parent: list[int] = [-1]
        self.fresh: list[list[tuple[int, int]]] = [[]]
        self.leaf_of: dict[int, int] = {}
        child_by_value: dict[tuple[int, str | None], int] = {}
        for idx in eligible:
            labels = state.nodes[idx].labels
            branch = 0
            for label in prefs:
                value = labels.get(label)
                child = child_by_value.get((branch, value))
                if child is None:
                    child = child_by_value[branch, value] = len(self.children)
                    self.children.append([])
                    self.parent.append(branch)
                    self.fresh.append([])
                    self.children[branch].append(child)
                branch = child
            self.leaf_of[idx] = branch
            self.fresh[branch].append((state.total[idx], idx))
        values = {child: value for (_, value), child in child_by_value.items()}
        for children in self.children:
            children.sort(key=lambda child: (values[child] is None, values[child] or ""))
        for heap in self.fresh:
            heapq.heapify(heap)


def _describe(name: str, count: int) -> str:
    nodes = "1 node" if count == 1 else f"{count} nodes"
    if name == _NOT_READY:
        return f"{nodes} not available for new tasks"
    if name == _RESOURCES:
        return f"insufficient resources on {nodes}"
    if name == _CONSTRAINTS:
        return f"scheduling constraints not satisfied on {nodes}"
    if name == _HOST_PORT:
        return f"host-mode port already in use on {nodes}"
    return "max replicas per node limit exceed"


def _reserves(res: Resources) -> bool:
    return bool(res.reserve_nano_cpus or res.reserve_memory)
