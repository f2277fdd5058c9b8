"""The CLI starts fast: importing it, and running the client commands (which only talk HTTP to the manager),
loads none of the manager's, the engine driver's or the lab's heavy dependencies. Checked in a fresh
interpreter, since this test process has them all loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.inprocess import ApiServer, Cluster

HEAVY = ("docker", "paramiko", "requests", "fastapi", "uvicorn", "pydantic", "pyswarm.manager.manager", "pyswarm.lab")

# Runs `setup` (which sets `result`) in a fresh interpreter, then reports `result` and the heavy modules loaded.
PROBE = """
import json, sys
{setup}
print(json.dumps({{"heavy": sorted(m for m in {heavy!r} if m in sys.modules), "result": result}}))
"""


def probe(setup: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code = PROBE.format(setup=setup, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert probe("import pyswarm.cli.main\nresult = None")["heavy"] == []


@pytest.fixture(scope="module")
def manager_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The API's URL, a client token, and the swarm's CA file."""
    cluster = Cluster(tmp_path_factory.mktemp("cli-imports") / "data")
    cluster.populate()
    with ApiServer(cluster.manager) as server:
        yield server.url, cluster.token("client"), server.ca_file
    cluster.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["service", "ls"], "web", id="service ls"),
        pytest.param(["service", "ps", "web"], "web.1", id="service ps"),
        pytest.param(["service", "update", "-d", "--force", "api"], "api", id="service update"),
        pytest.param(["node", "ls"], "node-01", id="node ls"),
        pytest.param(["node", "ps", "node-01"], "Running", id="node ps"),
        pytest.param(["info"], "Swarm: active", id="info"),
    ],
)
def test_client_commands_load_no_heavy_module(
    manager_api: tuple[str, str, str], tmp_path: Path, args: list[str], expected: str
) -> None:
    url, token, ca_file = manager_api
    env = {
        **os.environ,
        "PYSWARM_HOST": url,
        "PYSWARM_CA": ca_file,
        "PYSWARM_TOKEN": token,
        "PYSWARM_CONFIG": str(tmp_path / "config.json"),
        "PYSWARM_DATA_DIR": str(tmp_path / "state"),
    }
    setup = (
        "from click.testing import CliRunner\n"
        "from pyswarm.cli.main import cli\n"
        f"run = CliRunner().invoke(cli, {args!r})\n"
        "result = [run.exit_code, run.output]"
    )
    found = probe(setup, env)
    code, output = found["result"]
    assert code == 0, output
    assert expected in output
    assert found["heavy"] == []
