"""`network`: the swarm's ingress routing mesh and this node's local networks."""

from __future__ import annotations

import os

import click

from pyswarm.cli.client import Api, fail, print_json
from pyswarm.cli.engine_access import local_engine
from pyswarm.cli.render import short, table


@click.group()
def network() -> None:
    """Networks: the swarm's ingress routing mesh and each node's local networks."""


@network.command("ls")
def network_ls() -> None:
    """List networks: the swarm's ingress, then this node's local networks (as docker shows them)."""
    networks = Api().get("/networks")
    rows = [[short(n["id"]), n["name"], n["driver"], n["scope"]] for n in networks]
    if os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock"):
        from pyswarm.drivers.engine import EngineError

        try:
            local = local_engine(timeout=5)
            rows += [[item["Id"][:12], item["Name"], item["Driver"], item["Scope"]] for item in local.api.networks()]
            local.close()
        except EngineError as exc:
            click.echo(f"(local networks not shown: {exc})", err=True)
    table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], sorted(rows, key=lambda r: r[1]))


@network.command("inspect")
@click.argument("name")
def network_inspect(name: str) -> None:
    """Show the ingress network: per published port, its endpoints and which nodes have synced rules."""
    networks = {n["name"]: n for n in Api().get("/networks")}
    if name not in networks:
        fail(f"network {name[:80]!r} not found")
    print_json(networks[name])
