"""--with-registry-auth: the docker client's credentials, found as docker's CLI finds them."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from pyswarm.cli.registry_auth import DOCKER_HUB, registry_auth_header, registry_credentials
from pyswarm.model.images import registry_auth_from_header
from pyswarm.model.parse import SpecError


def docker_config(tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(tmp_path), "PATH": str(tmp_path)}


def test_auths_entries_by_registry(tmp_path: Path) -> None:
    hub = base64.b64encode(b"me:hub-pass").decode()
    env = docker_config(
        tmp_path,
        {"auths": {DOCKER_HUB: {"auth": hub}, "registry.lab:5000": {"username": "ci", "password": "pw"}}},
    )
    assert registry_credentials("nginx:latest", env) == {
        "username": "me", "password": "hub-pass", "serveraddress": DOCKER_HUB,
    }  # fmt: skip
    assert registry_credentials("registry.lab:5000/team/app:1", env) == {
        "username": "ci", "password": "pw", "serveraddress": "registry.lab:5000",
    }  # fmt: skip
    assert registry_credentials("other.example/app", env) is None
    header = registry_auth_header("registry.lab:5000/app", env)
    assert header is not None and registry_auth_from_header(header)["password"] == "pw"


def test_no_config_means_no_credentials(tmp_path: Path) -> None:
    assert registry_credentials("nginx", {"DOCKER_CONFIG": str(tmp_path / "nowhere")}) is None


def test_a_credential_helper_is_asked_on_its_stdin(tmp_path: Path) -> None:
    helper = tmp_path / "docker-credential-lab"
    helper.write_text(
        '#!/bin/sh\nread server\n[ "$1" = get ] && [ "$server" = registry.lab ] || exit 1\n'
        'echo \'{"ServerURL":"registry.lab","Username":"robot","Secret":"tok"}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    env = docker_config(tmp_path, {"credHelpers": {"registry.lab": "lab"}})
    assert registry_credentials("registry.lab/app", env) == {
        "username": "robot", "password": "tok", "serveraddress": "registry.lab",
    }  # fmt: skip
    env = docker_config(tmp_path, {"credsStore": "missing"})
    with pytest.raises(SpecError, match="docker-credential-missing could not run") as raised:
        registry_credentials("registry.lab/app", env)
    assert "tok" not in str(raised.value)


@pytest.mark.parametrize(
    "header",
    ["not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b'{"password": 1}').decode(),
     base64.b64encode(b'{"token": "x"}').decode()],
)  # fmt: skip
def test_malformed_headers_are_refused_without_their_value(header: str) -> None:
    with pytest.raises(ValueError) as raised:
        registry_auth_from_header(header)
    assert header not in str(raised.value)
