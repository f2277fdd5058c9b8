"""Which tasks a scale-down removes first. Pure."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from pyswarm.model import Task, TaskState


def scale_down_choice(tasks: Sequence[Task], count: int) -> list[Task]:
    """The `count` tasks to remove when scaling down, in removal order (swarmkit's preference):
    tasks not yet running first (unassigned ones before assigned ones), then tasks on the nodes holding
    the most of these tasks, then the highest slot.

    "Most loaded node" is re-evaluated after every removal: each task is ranked by its ordinal on its
    node (running and low slots get the low ordinals), and the highest ordinals go first, which keeps the
    remaining tasks as balanced across nodes as they were.
    """
    if count <= 0:
        return []
    by_node: dict[str, list[Task]] = {}
    for task in tasks:
        by_node.setdefault(task.node_id, []).append(task)
    ranked: list[tuple[bool, bool, int, int, str, Task]] = []
    for node_tasks in by_node.values():
        node_tasks.sort(key=lambda t: (t.state is not TaskState.RUNNING, t.slot, t.id))
        for ordinal, task in enumerate(node_tasks, start=1):
            running = task.state is TaskState.RUNNING
            ranked.append((running, bool(task.node_id), -ordinal, -task.slot, task.id, task))
    return [entry[-1] for entry in heapq.nsmallest(count, ranked, key=lambda entry: entry[:5])]
