"""The `pyswarm` command: docker-like verbs plus the lab."""

from __future__ import annotations

import click

from pyswarm import __version__
from pyswarm.cli.lab_cmds import lab


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyswarm")
def cli() -> None:
    """Docker swarm mode, rebuilt in Python, on real Docker Engines."""


cli.add_command(lab)


def main() -> None:
    cli()
