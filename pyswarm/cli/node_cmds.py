"""`node`: list, inspect, update, remove and add the swarm's nodes, and list a node's tasks."""

from __future__ import annotations

from typing import Any

import click

from pyswarm.cli.client import Api, fail, print_json, ref_path
from pyswarm.cli.engine_access import engine_access, engine_access_options
from pyswarm.cli.render import print_tasks, table
from pyswarm.cli.swarm_cmds import current_node_id
from pyswarm.cli.text import printable
from pyswarm.model import parse


def _node_status(node: dict[str, Any]) -> str:
    return {"ready": "Ready", "down": "Down"}.get(node["status"], "Unknown")


@click.group()
def node() -> None:
    """Manage swarm nodes."""


@node.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def node_ls(quiet: bool, fmt: str) -> None:
    """List nodes in the swarm."""
    nodes = Api().get("/nodes")
    if fmt == "json":
        print_json(nodes)
        return
    if quiet:
        for item in nodes:
            click.echo(item["id"])
        return
    me = current_node_id()
    rows = []
    for item in nodes:
        ident = item["id"][:25] + (" *" if item["id"] == me else "")
        ingress = "" if item["ingress_synced"] is not False else "  (no ingress)"
        rows.append(
            [
                ident,
                item["hostname"],
                _node_status(item),
                item["availability"].capitalize(),
                "Leader" if item["leader"] else ("Reachable" if item["role"] == "manager" else ""),
                item["engine_version"] + ingress,
            ]
        )
    table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"], rows)


@node.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.argument("refs", nargs=-1, required=True)
def node_inspect(pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes."""
    api = Api()
    items = [api.get(f"/nodes/{_path(ref)}") for ref in refs]
    if not pretty:
        print_json(items)
        return
    for item in items:
        click.echo(
            f"ID:\t\t\t{item['id']}\nHostname:\t\t{_shown(item['hostname'])}\nStatus:\n State:\t\t\t"
            f"{_node_status(item)}\n Message:\t\t{_shown(item['status_message'])}\n Availability:\t\t"
            f"{item['availability'].capitalize()}\n Address:\t\t{_shown(item['addr'])}\nManager Status:\t\t"
            f"{'Leader' if item['leader'] else item['role']}\nEngine:\n URL:\t\t\t{_shown(item['engine_url'])}\n"
            f" Version:\t\t{_shown(item['engine_version'])}\nLabels:\t\t\t{_shown(item['labels'])}\nIngress:\t\t"
            f"{_shown(_ingress_text(item))}\n"
        )


def _shown(value: object) -> str:
    return printable(value, one_line=True)  # an engine's or a client's text: no escape codes, one line


def _ingress_text(item: dict[str, Any]) -> str:
    if item["ingress_synced"] is None:
        return "not synced yet"
    return "synced" if item["ingress_synced"] else f"NO INGRESS: {item['ingress_error']}"


def _path(ref: str) -> str:
    return ref_path(ref)


@node.command("update")
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]), default=None)
@click.option("--label-add", multiple=True, help="Add or update a node label (key=value).")
@click.option("--label-rm", multiple=True, help="Remove a node label if exists.")
@click.option("--role", type=click.Choice(["worker", "manager"]), default=None)
@click.argument("ref")
def node_update(
    availability: str | None, label_add: tuple[str, ...], label_rm: tuple[str, ...], role: str | None, ref: str
) -> None:
    """Update a node."""
    try:
        labels = dict(parse.label(text) for text in label_add)
        removed = [parse.removable_label_key(key) for key in label_rm]
    except parse.SpecError as exc:
        fail(str(exc))
    result = Api().post(
        f"/nodes/{_path(ref)}/update",
        {"availability": availability, "label_add": labels, "label_rm": removed, "role": role},
    )
    click.echo(result["id"])


@node.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force-remove a node from the swarm.")
@click.argument("refs", nargs=-1, required=True)
def node_rm(force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm."""
    api = Api()
    for ref in refs:
        api.delete(f"/nodes/{_path(ref)}", params={"force": force})
        click.echo(ref)


@node.command("add")
@engine_access_options
@click.argument("engine_url")
def node_add(
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    insecure_tcp: bool,
    ssh_fingerprint: str | None,
    engine_url: str,
) -> None:
    """Add an engine from the manager side, with nothing run on the worker."""
    access = engine_access(engine_url, tlscacert, tlscert, tlskey, insecure_tcp, ssh_fingerprint)
    result = Api(timeout=60).post("/nodes", {"engine_url": engine_url, **access})
    click.echo(result["id"])


@node.command("ps")
@click.argument("ref", default="self")
def node_ps(ref: str) -> None:
    """List tasks running on a node (default: this one)."""
    if ref == "self":
        ref = current_node_id() or fail("this node is not in a swarm: name a node")
    print_tasks(Api().get(f"/nodes/{_path(ref)}/tasks"), no_trunc=False)
