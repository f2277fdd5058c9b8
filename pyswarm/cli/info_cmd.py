"""`info`: swarm-wide information."""

from __future__ import annotations

import click

from pyswarm.cli.client import Api, print_json


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
        f"  {info['manager_addr']}",
        f" Node Address: {me['addr'] if me else ''}",
        f"Name: {me['hostname'] if me else ''}",
        f"Engine Version: {me['engine_version'] if me else ''}",
        "IsManager: Yes",
        "Ingress: iptables routing mesh (kube-proxy style)",
    ]
    click.echo("\n".join(lines))
