"""`pyswarm service update` end to end, against a real API server on a manager with in-memory engines: the
flags reach `updated_spec` (click's parameters become UpdateFlags), the merged spec is posted, the command
prints the service's name, and without -d it waits for convergence. The refusals are in
tests/unit/cli/test_bad_input_cli.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyswarm.cli.main import cli
from tests.unit.inprocess import ApiServer, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("update-cli") / "data")
    cluster.populate()
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
        "PYSWARM_DATA_DIR": str(tmp_path / "state"),
        "COLUMNS": "200",
    }

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    return run


def inspect(pyswarm: Any, name: str) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(pyswarm("service", "inspect", name))[0]
    return item


def test_update_posts_the_merged_spec_and_prints_the_name(pyswarm: Any) -> None:
    before = inspect(pyswarm, "api")
    output = pyswarm(
        "service",
        "update",
        "-d",
        "--env-add",
        "A=1",
        "-e",
        "B=2",
        "--label-add",
        "tier=back",
        "--publish-rm",
        "8080",
        "--publish-add",
        "8081:80/udp",
        "--constraint-add",
        "node.role == worker",
        "--restart-delay",
        "2s",
        "--force",
        "api",
    )
    assert output == "api\n"
    after = inspect(pyswarm, "api")
    assert after["version"] > before["version"]
    expected = {
        **before["spec"],
        "env": ["B=2", "A=1"],  # -e/--env before --env-add, whatever the order on the line
        "labels": {**before["spec"]["labels"], "tier": "back"},
        "ports": [{"published": 8081, "target": 80, "protocol": "udp", "mode": "ingress"}],
        "constraints": ["node.role==worker"],
        "restart_policy": {**before["spec"]["restart_policy"], "delay": 2.0},
        "force_update": before["spec"]["force_update"] + 1,
    }
    assert after["spec"] == expected


def test_update_without_detach_waits_for_convergence(pyswarm: Any) -> None:
    assert pyswarm("service", "update", "-q", "--replicas", "3", "web") == "web\n"
    after = inspect(pyswarm, "web")
    assert after["spec"]["replicas"] == 3
    assert after["running"] == 3


def test_update_with_a_bad_value_exits_1_with_the_message_and_changes_nothing(pyswarm: Any) -> None:
    before = inspect(pyswarm, "web")
    output = pyswarm("service", "update", "-d", "--env-add", "A=1", "--publish-rm", "9999", "web", code=1)
    assert output == "Error: no published port 9999 on service web\n"
    assert inspect(pyswarm, "web") == before
