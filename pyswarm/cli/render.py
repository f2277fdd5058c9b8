"""Tables, times and task lists the way the docker CLI shows them, drawn with rich."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pyswarm.cli.text import cell, printable

# Like docker, tables are never truncated: when piped, rich would otherwise assume 80 columns. No emoji
# codes: a hostname `db:fire:` is shown as it is.
console = Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Every cell is shown as text (text.cell), never read as markup: the values come from engines and API
    clients."""
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for column in columns:
        grid.add_column(column, no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(cell(value) for value in row))
    console.print(grid)


def ago(timestamp: float, now: float | None = None) -> str:
    """Docker's humanised durations: "8 seconds ago", "About a minute ago", "3 hours ago"."""
    seconds = max(0.0, (now or time.time()) - timestamp)
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 60:
        return f"{int(seconds)} second{'s' if int(seconds) != 1 else ''} ago"
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute ago"
    if minutes < 60:
        return f"{int(minutes)} minutes ago"
    hours = minutes / 60
    if hours < 2:
        return "About an hour ago"
    if hours < 48:
        return f"{int(hours)} hours ago"
    return f"{int(hours / 24)} days ago"


def short(identifier: str) -> str:
    return identifier[:12]


def _state_text(task: dict[str, Any], now: float) -> str:
    return f"{task['state'].capitalize()} {ago(task['state_changed_at'], now)}"


def print_tasks(tasks: list[dict[str, Any]], no_trunc: bool, quiet: bool = False) -> None:
    """The task table of `service ps` and `node ps` (or only the IDs, with quiet)."""
    if quiet:
        for task in tasks:
            click.echo(task["id"])
        return
    now = time.time()
    # Newest task of a slot first, older ones under it as `\_ web.1`, like docker.
    tasks = sorted(
        tasks, key=lambda t: (t["service_id"], t["slot"], t["node_id"] if not t["slot"] else "", -t["created_at"])
    )
    rows = []
    previous = None
    for task in tasks:
        key = (task["service_id"], task["slot"], task["node_id"] if not task["slot"] else "")
        name = task["name"] if key != previous else f" \\_ {task['name']}"
        previous = key
        error = printable(task["error"], one_line=True)  # before it is cut: no escape sequence cut in two
        error = error if no_trunc else (error[:60] + ("…" if len(error) > 60 else ""))
        rows.append(
            [
                task["id"] if no_trunc else short(task["id"]),
                name,
                task.get("image", ""),
                task["node"],
                task["desired_state"].capitalize(),
                _state_text(task, now),
                f'"{error}"' if error else "",
                ", ".join(task["ports"]),
            ]
        )
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], rows)
