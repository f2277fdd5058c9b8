"""What every benchmark shares: figures with goals, one fresh process per scenario, the table and the JSON.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path("bench-results")
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
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
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
        "loadavg": os.getloadavg(),  # wall times mean little on a machine others keep busy
    }


def write_json(kind: str, runs: list[dict[str, Any]], path: Path | None) -> Path:
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    document = {"kind": kind, "created_at": time.time(), "environment": environment(), "runs": runs}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def render_table(
    title: str, runs: list[dict[str, Any]], figures: Callable[[dict[str, Any]], list[Figure]], console: Console
) -> bool:
    """Print scenario / figure / value / goal / met; returns whether every goal was met."""
    table = Table(title=title)
    for column in ("scenario", "figure", "value", "goal", "met?"):
        table.add_column(column, justify="right" if column == "value" else "left")
    all_met = True
    for run in runs:
        name = str(run.get("scenario", run.get("kind", "?")))
        if "error" in run:
            table.add_row(name, "[red]failed[/]", str(run["error"])[:60], "", "[red]no[/]")
            console.print(f"[red]{name}: {run['error']}[/]")
            all_met = False
        for figure in figures(run):
            value = run.get(figure.key)
            if value is None:
                continue
            met = ""
            if figure.goal is not None:
                ok = figure.goal.met(float(value))
                all_met = all_met and ok
                met = "[green]yes[/]" if ok else "[red]no[/]"
            goal = figure.goal.text(figure.unit) if figure.goal else ""
            shown = value if isinstance(value, str) else format_value(float(value), figure.unit)
            table.add_row(name, figure.label, shown, goal, met)
            name = ""
        table.add_section()
    console.print(table)
    return all_met
