"""`info`: swarm-wide information."""

from __future__ import annotations

import click

from pyswarm.cli.client import Api, print_json
from pyswarm.cli.text import printable


@click.command("info")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def info_cmd(fmt: str) -> None:
    """Display swarm-wide information."""
    api = Api()
    info = api.get("/info")
    nodes = api.get("/nodes")
    if fmt == "json":
        print_json({"info": info, "nodes": nodes})
        return
    me = next((n for n in nodes if n["id"] == info["node_id"]), None)
    lines = [
        f"Server Version: pyswarm {info['version']}",
        f"Services: {info['services']}",
        f"Tasks: {info['tasks']} (running: {info['running_tasks']})",
        "Swarm: active",
        f" NodeID: {info['node_id']}",
        " Is Manager: true",
        f" ClusterID: {info['cluster_id']}",
        f" Managers: {info['managers']}",
        f" Nodes: {info['nodes']}",
        f" Heartbeat Period: {info['heartbeat']:g} seconds",
        " Manager Addresses:",
        f"  {printable(info['manager_addr'], one_line=True)}",
        f" Node Address: {printable(me['addr'], one_line=True) if me else ''}",
        f"Name: {printable(me['hostname'], one_line=True) if me else ''}",
        f"Engine Version: {printable(me['engine_version'], one_line=True) if me else ''}",
        "IsManager: Yes",
        "Ingress: iptables routing mesh (kube-proxy style)",
    ]
    click.echo("\n".join(lines))
