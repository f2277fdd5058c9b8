"""The `pyswarm` command: docker-like verbs plus the lab."""

from __future__ import annotations

import click

from pyswarm import __version__
from pyswarm.cli.client import fail
from pyswarm.cli.image_cmds import image
from pyswarm.cli.info_cmd import info_cmd
from pyswarm.cli.network_cmds import network
from pyswarm.cli.node_cmds import node
from pyswarm.cli.secret_cmds import config, secret
from pyswarm.cli.service_cmds import service
from pyswarm.cli.swarm_cmds import manager_cmd, swarm
from pyswarm.manager.files import UnsafeDirectory


class _Cli(click.Group):
    """`lab` is loaded only when it is named (or listed, by --help): the lab package takes a while to import
    and no other command needs it. A directory that would hold credentials and that others can write to
    stops any command with the reason, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UnsafeDirectory as exc:
            fail(str(exc))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "lab"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "lab":
            from pyswarm.cli.lab_cmds import lab

            return lab
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyswarm")
def cli() -> None:
    """Docker swarm mode, rebuilt in Python, on real Docker Engines."""


for command in (swarm, node, service, secret, config, info_cmd, network, manager_cmd):
    cli.add_command(command)
cli.add_command(image)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
