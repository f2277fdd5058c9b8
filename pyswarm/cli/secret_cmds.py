"""`secret` and `config`: create, ls, inspect, rm, as `docker secret` and `docker config` do.

A secret's data is sent once, at create, and never shown again; a config's is shown by `inspect --pretty`.
"""

from __future__ import annotations

import base64
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
import httpx

from pyswarm.cli.client import Api, fail, print_json, ref_path
from pyswarm.cli.render import ago, table
from pyswarm.cli.text import printable
from pyswarm.model import parse
from pyswarm.model.secret import MAX_SIZE, Kind, object_data, object_name


def _checked_create(kind: Kind, labels: tuple[str, ...], name: str, file: str) -> dict[str, Any]:
    """The create request's body, or a clear error before anything is sent."""
    try:
        object_name(name)
        label_map = dict(parse.label(text) for text in labels)
    except parse.SpecError as exc:
        fail(str(exc))
    data = _read(file, MAX_SIZE[kind])
    try:
        object_data(data, kind)
    except parse.SpecError as exc:
        fail(f"{file if file != '-' else 'standard input'}: {exc}")
    return {"name": name, "data": base64.b64encode(data).decode("ascii"), "labels": label_map}


def _read(file: str, limit: int) -> bytes:
    """At most `limit` bytes (one more than may be sent): a huge file is not read whole to be refused."""
    try:
        if file == "-":
            return sys.stdin.buffer.read(limit)
        with open(file, "rb") as handle:
            return handle.read(limit)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")


def _create(kind: Kind, labels: tuple[str, ...], name: str, file: str) -> None:
    body = _checked_create(kind, labels, name, file)
    click.echo(Api().post(f"/{kind}s", body)["id"])


def _ls(kind: Kind, quiet: bool, fmt: str) -> None:
    items = Api().get(f"/{kind}s")
    if fmt == "json":
        print_json(items)
        return
    if quiet:
        for item in items:
            click.echo(item["id"])
        return
    now = time.time()
    rows = []
    for item in items:
        driver = [item["driver"]] if kind == "secret" else []
        rows.append([item["id"], item["name"], *driver, ago(item["created_at"], now), ago(item["updated_at"], now)])
    columns = ["ID", "NAME", *(["DRIVER"] if kind == "secret" else []), "CREATED", "UPDATED"]
    table(columns, rows)


def _inspect(kind: Kind, pretty: bool, refs: tuple[str, ...]) -> None:
    api = Api()
    items = [api.get(f"/{kind}s/{ref_path(ref, f'{kind} reference')}") for ref in refs]
    if not pretty:
        print_json(items)
        return
    for item in items:
        click.echo(_pretty(kind, item))


def _pretty(kind: Kind, item: dict[str, Any]) -> str:
    """Docker's --pretty template for the kind."""
    lines = [f"ID:              {item['id']}", f"Name:              {printable(item['name'], one_line=True)}"]
    if item["labels"]:
        lines.append("Labels:")
        for key, value in item["labels"].items():
            lines.append(printable(f" - {key}" + (f"={value}" if value else ""), one_line=True))
    if kind == "secret":
        lines += [
            f"Driver:            {item['driver']}",
            f"Created at:        {_timestamp(item['created_at'])}",
            f"Updated at:        {_timestamp(item['updated_at'])}",
        ]
    else:
        data = base64.b64decode(item["data"]).decode(errors="replace")
        lines += [
            f"Created at:          {_timestamp(item['created_at'])}",
            f"Updated at:          {_timestamp(item['updated_at'])}",
            "Data:",
            printable(data),  # anyone's text: no escape sequences reach the terminal
        ]
    return "\n".join(lines)


def _timestamp(seconds: float) -> str:
    """As Go prints a time.Time: 2017-03-28 18:48:45.7013573 +0000 UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def _rm(kind: Kind, refs: tuple[str, ...]) -> None:
    """Each in turn, as docker does: those that can go go, each refusal is reported, and any makes it exit 1."""
    api = Api()
    failed = False
    for ref in refs:
        error = _delete(api, f"/{kind}s/{ref_path(ref, f'{kind} reference')}")
        if error is None:
            click.echo(ref)
        else:
            failed = True
            click.echo(f"Error: {printable(error)}", err=True)
    if failed:
        raise SystemExit(1)


def _delete(api: Api, path: str) -> str | None:
    """None once deleted, or why not."""
    try:
        response = api.http.delete(path)
    except httpx.TransportError as exc:
        fail(f"cannot connect to the pyswarm manager at {api.host} ({exc}). Is the manager running?")
    if response.status_code < 400:
        return None
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return str(detail)


def _group(kind: Kind, about: str) -> click.Group:
    group = click.Group(kind, help=f"Manage swarm {about}.")
    plural = f"{kind}s"

    @group.command("create", help=f"Create a {kind} from a file or STDIN as content.")
    @click.option("-l", "--label", "labels", multiple=True, help=f"{kind.capitalize()} labels (key=value).")
    @click.argument("name", metavar=kind.upper())
    @click.argument("file", metavar="FILE|-")
    def create(labels: tuple[str, ...], name: str, file: str) -> None:
        _create(kind, labels, name, file)

    @group.command("ls", help=f"List {plural}.")
    @click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
    @click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
    def ls(quiet: bool, fmt: str) -> None:
        _ls(kind, quiet, fmt)

    @group.command("inspect", help=f"Display detailed information on one or more {plural}.")
    @click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
    @click.argument("refs", nargs=-1, required=True, metavar=f"{kind.upper()}...")
    def inspect(pretty: bool, refs: tuple[str, ...]) -> None:
        _inspect(kind, pretty, refs)

    @group.command("rm", help=f"Remove one or more {plural}.")
    @click.argument("refs", nargs=-1, required=True, metavar=f"{kind.upper()}...")
    def rm(refs: tuple[str, ...]) -> None:
        _rm(kind, refs)

    return group


secret = _group("secret", "secrets")
config = _group("config", "configs")
