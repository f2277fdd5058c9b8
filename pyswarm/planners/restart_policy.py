"""The restart policy: whether, and when, a task that ended on its own may be replaced. Pure.

The verdict depends on the slot's history only, never on the current time (the max-attempts window is
measured back from the moment the task ended), so a slot that was given up stays given up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pyswarm.model import RestartCondition, RestartPolicy, Task, TaskState

# States of a task that stopped on its own while wanted running: these count as restart attempts.
SELF_ENDED = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED})
FAILURES = frozenset({TaskState.FAILED, TaskState.REJECTED})


def restart_time(policy: RestartPolicy, ended: Task, history: Iterable[Task], *, job: bool = False) -> float | None:
    """When `policy` lets `ended` (a task that ended while wanted running) be replaced, or None if it never
    does. history: the tasks of its slot, `ended` among them, for counting max_attempts.

    job: the task belongs to a job (replicated-job, global-job). A job's task that completed is never run
    again, whatever the condition: swarmkit's restart supervisor reads `any` as "anything but complete" for
    jobs."""
    if policy.condition is RestartCondition.NONE or (job and ended.state is TaskState.COMPLETE):
        return None
    if policy.condition is RestartCondition.ON_FAILURE and ended.state not in FAILURES:
        return None
    if policy.max_attempts > 0:
        # Each earlier self-ended task of the same spec was followed by a restart. Counting back from
        # when `ended` ended (not from now) keeps the verdict stable.
        since = ended.state_changed_at - policy.window if policy.window > 0 else -math.inf
        restarts = sum(
            1
            for t in history
            if t is not ended
            and t.state in SELF_ENDED
            and t.spec_digest == ended.spec_digest
            and t.created_at <= ended.created_at
            and t.state_changed_at >= since
        )
        if restarts >= policy.max_attempts:
            return None
    return ended.state_changed_at + max(0.0, policy.delay)


def slot_history_limit(policy: RestartPolicy, history_limit: int) -> int:
    """How many tasks a slot keeps, the current one included: history_limit, at least one, and with
    max_attempts set enough to keep the attempts countable."""
    limit = max(1, history_limit)
    if policy.max_attempts > 0:
        limit = max(limit, policy.max_attempts + 1)  # the attempts must stay countable
    return limit
