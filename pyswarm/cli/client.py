"""The CLI's side of the API: where the manager is, the credential, and error reporting."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from pyswarm.manager.files import read_json, write_private_json


def config_path() -> Path:
    if os.environ.get("PYSWARM_CONFIG"):
        return Path(os.environ["PYSWARM_CONFIG"])
    return Path(os.path.expanduser("~")) / ".config" / "pyswarm" / "config.json"


def save_client_config(host: str, token: str) -> None:
    write_private_json(config_path(), {"host": host, "token": token})


def remove_client_config() -> None:
    config_path().unlink(missing_ok=True)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def ref_path(ref: str, what: str = "reference") -> str:
    """A node or service reference as one URL path segment: bounded, and quoted so it stays one segment."""
    from urllib.parse import quote

    if not ref or len(ref) > 256:
        fail(f"invalid {what} {ref[:40]!r}")
    return quote(ref, safe="")


def normalise_host(host: str) -> str:
    host = host.strip()
    if "://" not in host:
        host = "http://" + host
    if host.count(":") == 1:  # no port given
        host += ":2377"
    return host.rstrip("/")


class Api:
    def __init__(self, host: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        config = read_json(config_path()) or {}
        host = host or os.environ.get("PYSWARM_HOST") or config.get("host")
        token = token or os.environ.get("PYSWARM_TOKEN") or config.get("token")
        if not host or not token:
            fail(
                "this node is not a swarm manager and no manager is configured. Use `pyswarm swarm init` "
                "or `pyswarm swarm join` with a manager token, or set --host/PYSWARM_HOST and PYSWARM_TOKEN."
            )
        self.host = normalise_host(host)
        self.http = httpx.Client(base_url=self.host, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot connect to the pyswarm manager at {self.host} ({exc}). Is the manager running?")
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            if isinstance(detail, list):
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            fail(f"{detail}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def stream(self, path: str, params: dict[str, Any]) -> None:
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode(response)
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
        except httpx.TransportError as exc:
            fail(f"lost the connection to the manager at {self.host}: {exc}")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))
