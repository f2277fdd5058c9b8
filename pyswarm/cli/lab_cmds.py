"""`pyswarm lab ...`: bring up, inspect, break and remove the multi-host lab (needs root)."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import click
from rich.console import Console
from rich.table import Table

from pyswarm.cli.text import cell, escaped
from pyswarm.lab import Lab, LabConfig, LabError, LabNodeStatus, LabNotFound
from pyswarm.lab.config import DEFAULT_NODES, DEFAULT_SUBNET, MAX_NODES
from pyswarm.lab.lab import require_root

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _log(msg: str) -> None:
    err.print(f"[dim]{escaped(msg, one_line=False)}[/dim]", highlight=False)


def _handle_errors(fn: F) -> F:
    """Root check up front; LabError becomes a red message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            require_root()
            return fn(*args, **kwargs)
        except LabError as e:
            err.print(f"[bold red]error:[/bold red] {escaped(e, one_line=False)}", highlight=False, markup=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red]")
            sys.exit(130)

    return cast(F, wrapper)


def _load() -> Lab:
    return Lab.load(log=_log)


def status_table(statuses: Sequence[LabNodeStatus]) -> Table:
    table = Table(title="pyswarm lab")
    for col in ("NODE", "ADDRESS", "ENGINE URL", "ENGINE VERSION", "STATE"):
        table.add_column(col)
    colours = {"running": "green", "stopped": "yellow", "cut": "magenta"}
    for s in statuses:
        colour = colours.get(s.state, "red")
        table.add_row(
            cell(s.node.name),
            cell(s.node.addr),
            cell(s.node.engine_url),
            cell(s.engine_version or "-"),
            f"[{colour}]{s.state}[/{colour}]",
        )
    return table


@click.group()
def lab() -> None:
    """A multi-host lab of real Docker Engines on this machine (needs root).

    Each node is a network + UTS namespace with its own dockerd and sshd on the pyswarm0
    bridge, reachable as ssh://root@192.168.39.N. State lives in $PYSWARM_LAB_DIR
    (default /var/lib/pyswarm-lab).
    """


@lab.command()
@click.option("--nodes", "-n", type=click.IntRange(1, MAX_NODES), default=DEFAULT_NODES, show_default=True)
@click.option("--subnet", default=DEFAULT_SUBNET, show_default=True, help="IPv4 subnet of the lab bridge.")
@_handle_errors
def up(nodes: int, subnet: str) -> None:
    """Bring up a fresh lab, replacing any existing one."""
    t0 = time.monotonic()
    lab_ = Lab(LabConfig(subnet=subnet, nodes=nodes), log=_log)
    statuses = lab_.up()
    out.print(status_table(statuses))
    out.print(f"lab up: {len(statuses)} nodes in {time.monotonic() - t0:.1f} s")


@lab.command()
@_handle_errors
def ls() -> None:
    """Show the lab's nodes and their state."""
    try:
        lab_ = _load()
    except LabNotFound as e:
        err.print(escaped(e, one_line=False))
        return
    out.print(status_table(lab_.ls()))


@lab.command()
@_handle_errors
def down() -> None:
    """Remove the lab: engines, containers, namespaces, bridge, SSH trust, lab dir."""
    try:
        lab_ = _load()
    except LabError:
        lab_ = Lab(LabConfig(), log=_log)  # no or broken state: still clean up what is there
    t0 = time.monotonic()
    if lab_.down():
        out.print(f"lab down in {time.monotonic() - t0:.1f} s")
    else:
        out.print("no lab: nothing to do")


@lab.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("node")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@_handle_errors
def exec_(node: str, cmd: tuple[str, ...]) -> None:
    """Run CMD inside NODE (its network and UTS namespaces, DOCKER_HOST set to its engine).

    Example: pyswarm lab exec node-01 -- docker info
    """
    lab_ = _load()
    # With allow_interspersed_args off, click hands us the `--` separator as part of CMD.
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise click.UsageError("no command given")
    argv = lab_.exec_argv(node, cmd)
    env = lab_.exec_env(node)
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process: stdin/stdout/stderr, signals and the exit status pass straight through.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvpe(argv[0], argv, env)  # noqa: S606


@lab.command()
@click.argument("node")
@_handle_errors
def kill(node: str) -> None:
    """Stop NODE's dockerd (its containers stop with it)."""
    if _load().kill(node):
        out.print(f"{node}: dockerd stopped")
    else:
        out.print(f"{node}: dockerd was not running")


@lab.command()
@click.argument("node")
@_handle_errors
def start(node: str) -> None:
    """Start NODE's dockerd again and wait until it answers."""
    if _load().start(node):
        out.print(f"{node}: dockerd running")
    else:
        out.print(f"{node}: dockerd was already running")


@lab.command()
@click.argument("node")
@_handle_errors
def cut(node: str) -> None:
    """Disconnect NODE from the lab network."""
    _load().cut(node)
    out.print(f"{node}: cut off the network")


@lab.command()
@click.argument("node")
@_handle_errors
def heal(node: str) -> None:
    """Reconnect NODE to the lab network."""
    _load().heal(node)
    out.print(f"{node}: back on the network")


@lab.command()
@_handle_errors
def inventory() -> None:
    """Print an Ansible INI inventory of the nodes."""
    click.echo(_load().inventory(), nl=False)
