"""The CLI's side of the API: where the manager is, the credential, and error reporting."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from pyswarm.cli.text import printable
from pyswarm.manager.files import read_json, write_private_json
from pyswarm.manager.ids import token_ca_digest


def config_path() -> Path:
    if os.environ.get("PYSWARM_CONFIG"):
        return Path(os.environ["PYSWARM_CONFIG"])
    return Path(os.path.expanduser("~")) / ".config" / "pyswarm" / "config.json"


def save_client_config(host: str, token: str, ca: str) -> None:
    """Where the manager is, the client credential, and the cluster CA that the manager's certificate must
    chain to (0600: the credential gives full access)."""
    write_private_json(config_path(), {"host": host, "token": token, "ca": ca})


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """Trust the cluster's CA and nothing else. As in swarm, a manager is whoever holds a certificate from
    that CA, whatever address it is reached at, so host names are not checked."""
    try:
        context = ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        fail(f"the swarm's CA certificate is unusable: {exc}")
    context.check_hostname = False
    return context


def verified_ca(base_url: str, token: str) -> str:
    """The manager's CA certificate, fetched before anything is sent and checked against the digest in the
    join token: a manager that cannot show the token's CA is refused."""
    where = base_url.split("://", 1)[-1]
    expected = token_ca_digest(token)
    if expected is None:
        fail("join refused: invalid join token (expected PSWTKN-1-<CA digest>-<kind>-<secret>: see `swarm join-token`)")
    try:
        # Not verified yet: what the manager presents is checked against the token below.
        response = httpx.get(f"{base_url}/swarm/ca", verify=False, timeout=10)  # noqa: S501
    except httpx.TransportError as exc:
        fail(f"cannot reach a manager at {where}: {exc}")
    if response.status_code != 200:
        fail(f"the manager at {where} did not give its CA certificate ({response.status_code})")
    try:
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(response.text)).hexdigest()
    except ValueError:
        fail(f"the manager at {where} gave a CA certificate that is not PEM")
    if not hmac.compare_digest(digest, expected):
        fail(
            f"the manager at {where} is not the swarm of this join token: its CA digest is {digest[:16]}…, "
            f"the token names {expected[:16]}…. Check the address, or get the token again"
        )
    return response.text


def remove_client_config() -> None:
    config_path().unlink(missing_ok=True)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {printable(message)}", err=True)  # it may quote an engine's or a client's text
    sys.exit(code)


def ref_path(ref: str, what: str = "reference") -> str:
    """A node or service reference as one URL path segment: bounded, and quoted so it stays one segment."""
    from urllib.parse import quote

    if not ref or len(ref) > 256:
        fail(f"invalid {what} {ref[:40]!r}")
    return quote(ref, safe="")


def normalise_host(host: str) -> str:
    host = host.strip()
    if host.startswith("http://"):
        fail(f"{host}: the manager speaks only HTTPS (TLS with the cluster's CA); use https:// or no scheme")
    if "://" not in host:
        host = "https://" + host
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
                "or `pyswarm swarm join` with a manager token, or set PYSWARM_HOST, PYSWARM_TOKEN and PYSWARM_CA."
            )
        self.host = normalise_host(host)
        ca = _read_ca(os.environ.get("PYSWARM_CA")) or config.get("ca")
        if not ca:
            fail(
                f"no CA certificate for the manager at {self.host}: set PYSWARM_CA to the swarm's CA file "
                "(on the manager: /var/lib/pyswarm/certificates/ca.pem), or join with a manager token"
            )
        self.http = httpx.Client(
            base_url=self.host,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=tls_context(ca),
        )

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


def _read_ca(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read the CA certificate {path}: {exc.strerror}")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))
