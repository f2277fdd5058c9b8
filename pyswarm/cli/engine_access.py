"""How the CLI reaches engines: this machine's own engine (through the docker SDK), and the flags that say how
the manager may trust a remote one (`swarm join`, `node add`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyswarm.cli.client import fail

if TYPE_CHECKING:
    from pyswarm.drivers.engine import DockerEngine

# The docker SDK (drivers.engine) is imported inside the functions that use it: client commands only talk
# HTTP to the manager and should start fast.


def local_engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def local_engine(timeout: float) -> DockerEngine:
    """This machine's engine, through the docker SDK."""
    from pyswarm.drivers.engine import DockerEngine

    return DockerEngine(local_engine_url(), timeout=timeout)


def engine_access_options(func: Any) -> Any:
    """Flags that say how the manager may trust an engine: TLS files for tcp://, a host key for ssh://."""
    for option in reversed(
        [
            click.option(
                "--tlscacert", type=click.Path(dir_okay=False), help="CA that signed a tcp:// engine's certificate."
            ),
            click.option("--tlscert", type=click.Path(dir_okay=False), help="Client certificate for a tcp:// engine."),
            click.option("--tlskey", type=click.Path(dir_okay=False), help="Client key for a tcp:// engine."),
            click.option("--insecure-tcp", is_flag=True, help="Accept a tcp:// engine without TLS (prints a warning)."),
            click.option(
                "--ssh-fingerprint",
                default=None,
                help="Pin the engine host's SSH key (SHA256:..., as `ssh-keygen -lf` prints) instead of known_hosts.",
            ),
        ]
    ):
        func = option(func)
    return func


def engine_access(
    engine_url: str,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    insecure_tcp: bool,
    ssh_fingerprint: str | None,
) -> dict[str, Any]:
    """Validate the flags and turn them into the API's fields (PEM text travels, paths do not)."""
    from pyswarm.drivers.engine import validate_engine_url

    given = [f for f in (tlscacert, tlscert, tlskey) if f]
    if given and len(given) != 3:
        fail("TLS needs all three of --tlscacert, --tlscert and --tlskey")
    if given and not engine_url.startswith("tcp://"):
        fail("--tlscacert/--tlscert/--tlskey only apply to tcp:// engines")
    if ssh_fingerprint and not engine_url.startswith("ssh://"):
        fail("--ssh-fingerprint only applies to ssh:// engines")
    if ssh_fingerprint and not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", ssh_fingerprint):
        fail(f"invalid --ssh-fingerprint {ssh_fingerprint[:60]!r}: expected SHA256:<43 base64 characters>")
    try:
        validate_engine_url(engine_url, insecure_tcp=insecure_tcp or bool(given))
    except ValueError as exc:
        fail(str(exc))
    body: dict[str, Any] = {"insecure_tcp": insecure_tcp}
    if given:
        pems = []
        for path in (tlscacert, tlscert, tlskey):
            try:
                text = Path(str(path)).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"cannot read {path}: {exc}")
            if "-----BEGIN " not in text or len(text) > 65536:
                fail(f"{path} is not a PEM file")
            pems.append(text)
        body["tls"] = {"ca": pems[0], "cert": pems[1], "key": pems[2]}
    elif insecure_tcp and engine_url.startswith("tcp://"):
        click.echo("WARNING: the engine is reached over TCP without TLS: anyone on the network can drive it.", err=True)
    if ssh_fingerprint:
        body["ssh_fingerprint"] = ssh_fingerprint
    return body
