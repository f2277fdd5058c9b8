"""What every benchmark shares: figures with goals, one fresh process per scenario, the machine it ran on.
bench/report.py turns the results into the table and the JSON file.

A scenario runs in a child process (`python -m bench _run KIND ARGS-JSON`) so that its peak memory
(ru_maxrss) is its own and no thread or cache of one scenario slows the next one down. The child prints one
JSON object on its last line of stdout; the parent collects them, prints the table and writes the file.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu import load_average

ROOT = Path(__file__).resolve().parent.parent  # the checkout bench/ belongs to
RESULT_MARK = "BENCH-RESULT "


@dataclass(frozen=True)
class Goal:
    """A figure's goal: `value <= limit` (at_most) or `value >= limit`."""

    limit: float
    at_most: bool

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self, unit: str) -> str:
        return f"{'≤' if self.at_most else '≥'} {format_value(self.limit, unit)}"


@dataclass(frozen=True)
class Figure:
    """One row of the table: where in a scenario's raw result to find the value, its unit, and its goal."""

    label: str
    key: str
    unit: str
    goal: Goal | None = None


def format_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "/s":
        return f"{value:,.0f} /s"
    return f"{value:,.0f}{(' ' + unit) if unit else ''}"


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter; returns its result (with `error` set if it failed)."""
    command = [sys.executable, "-m", "bench", "_run", kind, json.dumps(args)]
    # The child finds bench/ wherever it is run from, and keeps its files in a directory removed even if
    # it has to be killed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyswarm-bench-") as tmp:
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False, env={**env, "TMPDIR": tmp}
            )
        except subprocess.TimeoutExpired:
            return {**args, "kind": kind, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            result.setdefault("wall_s", time.monotonic() - began)
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {**args, "kind": kind, "error": f"exit {proc.returncode}: " + "\n".join(tail)}


def emit_result(result: dict[str, Any]) -> None:
    """The child's side of run_child."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg": load_average(),  # wall times mean little on a machine others keep busy
    }
