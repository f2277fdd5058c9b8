"""The `pyswarm` command: docker-like verbs plus the lab."""

from __future__ import annotations

import click

from pyswarm import __version__
from pyswarm.cli.lab_cmds import lab
from pyswarm.cli.service_cmds import service
from pyswarm.cli.swarm_cmds import info_cmd, manager_cmd, network, node, swarm


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyswarm")
def cli() -> None:
    """Docker swarm mode, rebuilt in Python, on real Docker Engines."""


for command in (swarm, node, service, info_cmd, network, manager_cmd, lab):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
