"""What the benchmarks print and keep: the figures table (scenario / figure / value / goal / met) and the JSON
file of raw figures (default bench-results/<kind>-<time>.json)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import Figure, environment, format_value

RESULTS_DIR = Path("bench-results")

Figures = Callable[[dict[str, Any]], list[Figure]]  # a benchmark's rows for one run's raw result


def met_cell(ok: bool | None) -> str:
    """The `met?` column: blank without a goal."""
    return "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")


def write_document(document: dict[str, Any], path: Path | None, kind: str) -> Path:
    """Write the JSON file (the given path, or a new one in bench-results/); returns where it went."""
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def write_json(kind: str, runs: list[dict[str, Any]], path: Path | None) -> Path:
    """The file of a benchmark of separate runs (sim, idle): the runs, and the machine they ran on."""
    document = {"kind": kind, "created_at": time.time(), "environment": environment(), "runs": runs}
    return write_document(document, path, kind)


def render_table(title: str, runs: list[dict[str, Any]], figures: Figures, console: Console) -> bool:
    """Print scenario / figure / value / goal / met; returns whether every goal was met."""
    table = Table(title=title)
    for column in ("scenario", "figure", "value", "goal", "met?"):
        table.add_column(column, justify="right" if column == "value" else "left")
    all_met = True
    for run in runs:
        name = str(run.get("scenario", run.get("kind", "?")))
        if "error" in run:
            table.add_row(name, "[red]failed[/]", str(run["error"])[:60], "", met_cell(False))
            console.print(f"[red]{name}: {run['error']}[/]")
            all_met = False
        for figure in figures(run):
            value = run.get(figure.key)
            if value is None:
                continue
            ok = figure.goal.met(float(value)) if figure.goal is not None else None
            all_met = all_met and ok is not False
            goal = figure.goal.text(figure.unit) if figure.goal else ""
            shown = value if isinstance(value, str) else format_value(float(value), figure.unit)
            table.add_row(name, figure.label, shown, goal, met_cell(ok))
            name = ""
        table.add_section()
    console.print(table)
    return all_met


def report(
    kind: str, title: str, runs: list[dict[str, Any]], figures: Figures, path: Path | None, console: Console
) -> int:
    """Print the table, write the file and say where; the exit status: 1 if a run failed."""
    render_table(title, runs, figures, console)
    written = write_json(kind, runs, path)
    console.print(f"raw figures: {written}")
    return 1 if any("error" in run for run in runs) else 0
