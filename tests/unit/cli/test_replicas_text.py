"""The REPLICAS column of `service ls`, as docker prints it for each mode."""

from __future__ import annotations

from typing import Any

import pytest

from pyswarm.cli.service_cmds import _replicas_text


def listed(
    mode: str, running: int, desired: int, replicas: int = 1, completed: int = 0, **extra: Any
) -> dict[str, Any]:
    spec = {"mode": mode, "replicas": replicas, "max_replicas_per_node": 0, **extra}
    return {"spec": spec, "running": running, "desired": desired, "completed": completed}


@pytest.mark.parametrize(
    ("service", "text"),
    [
        (listed("replicated", 2, 3, replicas=3), "2/3"),
        (listed("replicated", 2, 3, replicas=3, max_replicas_per_node=1), "2/3 (max 1 per node)"),
        (listed("global", 1, 3), "1/3"),
        # docker: running/MaxConcurrent (completed/TotalCompletions completed)
        (listed("replicated-job", 1, 2, replicas=3, completed=2), "1/2 (2/3 completed)"),
        (listed("replicated-job", 0, 3, replicas=3, completed=3, max_replicas_per_node=1), "0/3 (3/3 completed)"),
        # docker: a global job's total is the tasks still wanted plus those completed
        (listed("global-job", 0, 0, completed=3), "0/0 (3/3 completed)"),
        (listed("global-job", 1, 1, completed=2), "1/1 (2/3 completed)"),
    ],
)
def test_replicas_text(service: dict[str, Any], text: str) -> None:
    assert _replicas_text(service) == text


def test_a_job_listed_by_an_older_manager_counts_no_completions() -> None:
    service = listed("replicated-job", 0, 3, replicas=3)
    del service["completed"]
    assert _replicas_text(service) == "0/3 (0/3 completed)"
