"""`pyswarm secret` and `pyswarm config` end to end, against a real API server on an in-process manager:
docker's commands, columns and messages; bad input refused before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pyswarm.cli.main import cli
from pyswarm.model import FileReference, Service, ServiceSpec
from tests.unit.inprocess import ApiServer, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("secret-cli") / "data", start=False)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[ApiServer]:
    with ApiServer(cluster.manager) as server:
        yield server


@pytest.fixture
def pyswarm(server: ApiServer, cluster: Cluster, tmp_path: Path) -> Any:
    env = {
        "PYSWARM_HOST": server.url,
        "PYSWARM_CA": server.ca_file,
        "PYSWARM_TOKEN": cluster.token("client"),
        "PYSWARM_CONFIG": str(tmp_path / "config.json"),
        "COLUMNS": "200",
    }

    def run(*args: str, code: int = 0, stdin: bytes | None = None) -> Result:
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin)
        assert result.exit_code == code, result.output
        return result

    return run


def _names(cluster: Cluster, kind: str) -> set[str]:
    objects = cluster.manager.state.secrets if kind == "secret" else cluster.manager.state.configs
    return {o.name for o in objects.values()}


def test_create_from_a_file_and_from_stdin(pyswarm: Any, cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_bytes(b"from a file")
    object_id = pyswarm("secret", "create", "--label", "env=prod", "-l", "tier", "file-pw", str(tmp_path / "pw.txt"))
    object_id = object_id.stdout.strip()
    secret = cluster.manager.state.secrets[object_id]
    assert (secret.data, secret.labels) == (b"from a file", {"env": "prod", "tier": ""})
    stdin_id = pyswarm("secret", "create", "stdin-pw", "-", stdin=b"\x00binary\xff").stdout.strip()
    assert cluster.manager.state.secrets[stdin_id].data == b"\x00binary\xff"


def test_ls_has_dockers_columns_and_never_the_data(pyswarm: Any, cluster: Cluster) -> None:
    object_id = pyswarm("secret", "create", "ls-pw", "-", stdin=b"ls-data-here").stdout.strip()
    lines = pyswarm("secret", "ls").stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    row = next(line for line in lines if "ls-pw" in line)
    assert row.split()[:2] == [object_id, "ls-pw"] and "ago" in row
    assert object_id in pyswarm("secret", "ls", "-q").stdout.split()
    listed = json.loads(pyswarm("secret", "ls", "--format", "json").stdout)
    assert "ls-pw" in [item["name"] for item in listed]
    for args in (("secret", "ls"), ("secret", "ls", "--format", "json"), ("secret", "inspect", "ls-pw")):
        assert "ls-data-here" not in pyswarm(*args).stdout
    assert "bHMtZGF0YS1oZXJl" not in pyswarm("secret", "inspect", "ls-pw").stdout  # nor its base64


def test_inspect_json_and_pretty(pyswarm: Any) -> None:
    object_id = pyswarm("secret", "create", "-l", "a=b", "pretty-pw", "-", stdin=b"x").stdout.strip()
    [item] = json.loads(pyswarm("secret", "inspect", object_id[:10]).stdout)
    assert (item["id"], item["name"], item["labels"]) == (object_id, "pretty-pw", {"a": "b"})
    pretty = pyswarm("secret", "inspect", "--pretty", "pretty-pw").stdout.splitlines()
    assert pretty[:5] == [
        f"ID:              {object_id}",
        "Name:              pretty-pw",
        "Labels:",
        " - a=b",
        "Driver:            ",
    ]
    assert pretty[5].startswith("Created at:        20") and pretty[5].endswith(" +0000 UTC")


def test_config_has_no_driver_column_and_pretty_shows_the_data(pyswarm: Any) -> None:
    pyswarm("config", "create", "site", "-", stdin=b"server {}\n\x1b[31mred\n")
    assert pyswarm("config", "ls").stdout.splitlines()[0].split() == ["ID", "NAME", "CREATED", "UPDATED"]
    pretty = pyswarm("config", "inspect", "--pretty", "site").stdout
    assert "Data:\nserver {}\nred\n" in pretty  # the escape sequence is not passed to the terminal
    assert "\x1b" not in pretty


def test_rm_goes_on_past_a_refusal_and_exits_1(pyswarm: Any, cluster: Cluster) -> None:
    used = pyswarm("secret", "create", "rm-used", "-", stdin=b"x").stdout.strip()
    pyswarm("secret", "create", "rm-free", "-", stdin=b"x")
    ref = FileReference(name="rm-used", target="rm-used", id=used)
    cluster.manager.state.services["rm-svc"] = Service(
        id="rm-svc", spec=ServiceSpec(name="rm-web", image="nginx", secrets=(ref,))
    )
    try:
        result = pyswarm("secret", "rm", "rm-used", "rm-nope", "rm-free", code=1)
    finally:
        del cluster.manager.state.services["rm-svc"]
    assert result.stdout == "rm-free\n"
    assert "Error: secret 'rm-used' is in use by the following service: rm-web" in result.stderr
    assert "Error: secret rm-nope not found" in result.stderr
    assert "rm-used" in _names(cluster, "secret") and "rm-free" not in _names(cluster, "secret")
    assert pyswarm("secret", "rm", "rm-used").stdout == "rm-used\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("secret", "create", "bad-missing", "/nonexistent/file"), None, "cannot read /nonexistent/file"),
        (("secret", "create", "bad-empty", "-"), b"", "secret data must be larger than 0"),
        (("secret", "create", "bad-big", "-"), b"x" * 600_000, "less than 512000 bytes"),
        (("config", "create", "bad-big", "-"), b"x" * 1_100_000, "less than 1024000 bytes"),
        (("secret", "create", "bad name", "-"), b"x", "invalid name, only 64"),
        (("secret", "create", "-l", "a b=c", "bad-label", "-"), b"x", "invalid label key"),
        (("config", "create", "bad-dir", "/"), None, "cannot read /"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_made(
    pyswarm: Any, cluster: Cluster, args: tuple[str, ...], stdin: bytes | None, message: str
) -> None:
    before = (_names(cluster, "secret"), _names(cluster, "config"))
    result = pyswarm(*args, code=1, stdin=stdin)
    assert message in result.stderr
    assert (_names(cluster, "secret"), _names(cluster, "config")) == before


def test_a_taken_name_is_reported_as_docker_does(pyswarm: Any) -> None:
    pyswarm("config", "create", "taken", "-", stdin=b"x")
    assert "Error: config taken already exists" in pyswarm("config", "create", "taken", "-", stdin=b"y", code=1).stderr
