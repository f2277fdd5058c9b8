"""Session-wide: collect the outcome of every test marked `reliability` into a JSON file, from which
scripts/reliability-report writes the README's Reliability section (so it is never written by hand)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

RESULTS = Path(os.environ.get("PYSWARM_RELIABILITY_JSON", "bench-results/reliability.json"))
_outcomes: dict[str, dict[str, Any]] = defaultdict(lambda: {"cases": 0, "passed": 0, "failed": 0, "skipped": 0})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability(kind, cases=1): a fault or bad-input class for the README's Reliability section; "
        "cases counts what one test item checks (e.g. seeded trials)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return report
    kind, cases = marker.args[0], int(marker.kwargs.get("cases", 1))
    entry = _outcomes[kind]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        entry["cases"] += cases
        outcome = "passed" if report.passed else "skipped" if report.skipped else "failed"
        entry[outcome] += cases
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _outcomes:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous.update(_outcomes)  # a partial run updates only the classes it ran
    RESULTS.write_text(json.dumps(previous, indent=2, sort_keys=True))
