"""`--with-registry-auth`: the docker client's credentials for an image's registry, as docker's CLI finds them
(`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: a credential helper, the credsStore, or `auths`),
encoded for the `X-Registry-Auth` header. They are never printed; a helper's errors are reported without
what it wrote.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyswarm.model.images import DEFAULT_DOMAIN, parse_image_ref
from pyswarm.model.parse import SpecError

DOCKER_HUB = "https://index.docker.io/v1/"  # the key docker's CLI uses for Docker Hub


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", "~")).expanduser() / ".docker")
    return Path(base) / "config.json"


def registry_credentials(image: str, environ: Mapping[str, str]) -> dict[str, str] | None:
    """{username, password, serveraddress} for the image's registry, or None when the client has none."""
    try:
        domain = parse_image_ref(image).domain
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    server = DOCKER_HUB if domain in (DEFAULT_DOMAIN, "") else domain
    path = config_path(environ)
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read the docker client's config {path}: {exc}") from None
    helper = (config.get("credHelpers") or {}).get(domain) or config.get("credsStore")
    if helper:
        return _from_helper(str(helper), server, environ.get("PATH"))
    for key in (server, f"https://{server}", f"http://{server}"):
        entry = (config.get("auths") or {}).get(key)
        if entry:
            return _from_auths(entry, server, path)
    return None


def registry_auth_header(image: str, environ: Mapping[str, str]) -> str | None:
    """The X-Registry-Auth header's value (URL-safe base64 of the JSON, as docker sends it), or None."""
    credentials = registry_credentials(image, environ)
    if credentials is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(credentials).encode()).decode()


def _from_auths(entry: Mapping[str, Any], server: str, path: Path) -> dict[str, str]:
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise SpecError(f"the docker client's config {path} holds a malformed auth for {server}") from None
    else:
        username, password = str(entry.get("username", "")), str(entry.get("password", ""))
    return {"username": username, "password": password, "serveraddress": server}


def _from_helper(helper: str, server: str, search_path: str | None) -> dict[str, str] | None:
    program = f"docker-credential-{helper}"
    found = shutil.which(program, path=search_path)
    if found is None:
        raise SpecError(f"the docker credential helper {program} could not run: not found on PATH")
    try:
        done = subprocess.run([found, "get"], input=server, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecError(f"the docker credential helper {program} could not run: {type(exc).__name__}") from None
    if done.returncode != 0:
        if "credentials not found" in done.stdout + done.stderr:
            return None
        raise SpecError(f"the docker credential helper {program} failed (exit {done.returncode})")
    try:
        answer = json.loads(done.stdout)
        return {"username": str(answer["Username"]), "password": str(answer["Secret"]), "serveraddress": server}
    except (ValueError, KeyError, TypeError):
        raise SpecError(f"the docker credential helper {program} answered something else than credentials") from None
