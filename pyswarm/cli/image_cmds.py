"""`image`: ship images from the local engine to the swarm's nodes without a registry, and list what they hold."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from pyswarm.cli.client import Api, fail, print_json
from pyswarm.cli.render import console, table
from pyswarm.cli.text import printable
from pyswarm.drivers.errors import EngineError

if TYPE_CHECKING:
    from pyswarm.drivers.engine import DockerEngine

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@click.group()
def image() -> None:
    """Manage images on the swarm's nodes (no registry needed)."""


@image.command("push")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="NODE",
    help="Only to this node (ID or hostname; repeatable). Default: every ready node.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.argument("images", nargs=-1, required=True)
def image_push(images: tuple[str, ...], nodes: tuple[str, ...], quiet: bool) -> None:
    """Ship IMAGES from the local engine (DOCKER_HOST) to the swarm's nodes, without a registry.

    The images are read once (`docker save`) and streamed through the manager to every node's `docker load`
    at once. Exits 1 if any node did not load them."""
    api = Api()
    local = local_engine()
    total = 0
    for ref in images:
        try:
            info = local.image(ref)
        except EngineError as exc:
            fail(f"the local engine ({local.url}) did not answer: {exc}")
        if info is None:
            fail(f"No such image on the local engine ({local.url}): {ref}")
        total += info.size
    params = {"node": list(nodes)} if nodes else None
    try:
        with _progress(quiet) as progress:
            body = _counted(local.save(list(images)), progress, total)
            answer = api.request(
                "POST",
                "/images/load",
                content=body,
                params=params,
                headers={"Content-Type": "application/x-tar"},
                timeout=httpx.Timeout(60.0, read=None),  # the answer comes when every node has loaded
            )
    except EngineError as exc:
        fail(f"reading the images from the local engine ({local.url}) failed: {exc}")
    finally:
        local.close()
    _print_results(answer["nodes"])
    if any(not result["ok"] for result in answer["nodes"]):
        sys.exit(1)


@image.command("ls")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def image_ls(fmt: str) -> None:
    """List the images on the swarm's nodes, and which nodes hold each."""
    listings = Api().get("/images")
    if fmt == "json":
        print_json(listings)
        return
    answered = [listing for listing in listings if not listing["error"]]
    by_id: dict[str, dict[str, Any]] = {}
    for listing in answered:
        for item in listing["images"]:
            row = by_id.setdefault(item["id"], {"tags": set(), "size": item["size"], "nodes": []})
            row["tags"].update(item["tags"])
            row["nodes"].append(listing["node"])
    rows = []
    for image_id, row in sorted(by_id.items(), key=lambda kv: (sorted(kv[1]["tags"]) or ["~"], kv[0])):
        held = "all" if len(row["nodes"]) == len(answered) else ", ".join(sorted(row["nodes"]))
        names = ", ".join(sorted(row["tags"])) or "<none>"
        rows.append([names, image_id.removeprefix("sha256:")[:12], human_size(row["size"]), held])
    table(["IMAGE", "IMAGE ID", "SIZE", "NODES"], rows)
    for listing in listings:
        if listing["error"]:
            click.echo(f"{printable(listing['node'], one_line=True)}: {printable(listing['error'])}", err=True)


def local_engine() -> DockerEngine:
    """The engine `docker` itself would use: DOCKER_HOST (default, the local socket), with DOCKER_TLS_VERIFY
    and DOCKER_CERT_PATH for a tcp:// one."""
    from pyswarm.drivers.engine import DockerEngine, TlsFiles  # docker-py: only for the commands that need it

    url = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    tls = None
    if url.startswith("tcp://") and os.environ.get("DOCKER_TLS_VERIFY"):
        certs = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
        tls = TlsFiles(ca=str(certs / "ca.pem"), cert=str(certs / "cert.pem"), key=str(certs / "key.pem"))
    try:
        return DockerEngine(url, tls=tls)
    except EngineError as exc:
        fail(f"cannot reach the local engine at {url} (set DOCKER_HOST): {exc}")


def human_size(size: float) -> str:
    """docker's sizes: decimal units, three significant digits (126MB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


class _Quiet:
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(quiet: bool) -> Any:
    if quiet:
        return _Quiet()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _counted(pieces: Iterator[bytes], progress: Any, total: int) -> Iterator[bytes]:
    """The save stream, counted into the progress display as it is sent."""
    task = progress.add_task("sending", total=total or None) if isinstance(progress, Progress) else None
    sent = 0
    for piece in pieces:
        sent += len(piece)
        if task is not None:
            progress.update(task, completed=sent, total=max(total, sent))
        yield piece
    if task is not None:
        progress.update(task, description="the nodes are loading", completed=sent, total=sent)


def _print_results(results: Sequence[dict[str, Any]]) -> None:
    rows = []
    for result in sorted(results, key=lambda r: r["node"]):
        outcome = f"loaded {', '.join(result['loaded'])}" if result["ok"] else f"failed: {result['error']}"
        rows.append([result["node"], outcome, f"{result['seconds']:.1f}s"])
    table(["NODE", "RESULT", "TIME"], rows)
