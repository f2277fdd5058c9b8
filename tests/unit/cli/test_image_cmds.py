"""`pyswarm image push` and `image ls` against the real API (ApiServer) on in-memory engines; the local engine
(DOCKER_HOST) is an in-memory engine too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pyswarm.cli import image_cmds
from pyswarm.cli.main import cli
from pyswarm.drivers.engine import EngineUnreachable
from pyswarm.drivers.memory_engine import MemoryEngine
from tests.unit.inprocess import ApiServer, Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("images") / "manager")
    cluster.wait_converged()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[ApiServer]:
    with ApiServer(cluster.manager) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(cluster: Cluster) -> None:
    for engine in cluster.engines.values():
        engine.state.images.difference_update({"busybox:latest", "app:1"})


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> MemoryEngine:
    engine = MemoryEngine("unix:///var/run/docker.sock")
    engine.state.images.update({"busybox:latest", "app:1"})
    engine.image_store.filler = 50
    monkeypatch.setattr(image_cmds, "local_engine", lambda: engine)
    return engine


def run(cluster: Cluster, server: ApiServer, tmp_path: Path, *args: str) -> Result:
    env = {
        "PYSWARM_CONFIG": str(tmp_path / "config.json"),
        "PYSWARM_HOST": server.url,
        "PYSWARM_CA": server.ca_file,
        "PYSWARM_TOKEN": cluster.token("client"),
        "COLUMNS": "200",
    }
    return CliRunner().invoke(cli, list(args), env=env)


def engine(cluster: Cluster, hostname: str) -> MemoryEngine:
    return next(e for e in cluster.engines.values() if e.hostname == hostname)


def test_push_ships_images_to_every_node(
    cluster: Cluster, server: ApiServer, local: MemoryEngine, tmp_path: Path
) -> None:
    result = run(cluster, server, tmp_path, "image", "push", "busybox", "app:1")
    assert result.exit_code == 0, result.output
    for hostname in ("node-01", "node-02", "node-03"):
        assert f"{hostname}   loaded busybox:latest, app:1" in result.output
        assert engine(cluster, hostname).has_image("busybox") and engine(cluster, hostname).has_image("app:1")
    listed = run(cluster, server, tmp_path, "image", "ls")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["IMAGE", "IMAGE", "ID", "SIZE", "NODES"]
    assert any(line.startswith("busybox:latest") and line.rstrip().endswith("all") for line in lines)


def test_push_to_some_nodes_and_a_failure_exits_1(
    cluster: Cluster, server: ApiServer, local: MemoryEngine, tmp_path: Path
) -> None:
    engine(cluster, "node-03").image_store.fail_loads = 1
    some = run(cluster, server, tmp_path, "image", "push", "-q", "--node", "node-02", "busybox")
    assert some.exit_code == 0, some.output
    assert engine(cluster, "node-02").has_image("busybox") and not engine(cluster, "node-01").has_image("busybox")
    failed = run(cluster, server, tmp_path, "image", "push", "-q", "busybox")
    assert failed.exit_code == 1
    assert "node-03   failed:" in failed.output and "no space left on device" in failed.output
    assert "node-01   loaded busybox:latest" in failed.output


def test_push_refusals(cluster: Cluster, server: ApiServer, local: MemoryEngine, tmp_path: Path) -> None:
    missing = run(cluster, server, tmp_path, "image", "push", "nosuch:1")
    assert missing.exit_code == 1 and "No such image on the local engine" in missing.output
    unknown = run(cluster, server, tmp_path, "image", "push", "--node", "nosuch", "busybox")
    assert unknown.exit_code == 1 and "not found" in unknown.output
    local.state.down = True
    down = run(cluster, server, tmp_path, "image", "push", "busybox")
    assert down.exit_code == 1 and "did not answer" in down.output


def test_a_local_engine_that_fails_midway_loads_nothing(
    cluster: Cluster, server: ApiServer, local: MemoryEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = local.save

    def breaks(refs: list[str]) -> Iterator[bytes]:
        pieces = iter(whole(refs))
        yield next(pieces)
        yield next(pieces)
        raise EngineUnreachable("unix:///var/run/docker.sock: connection reset")

    monkeypatch.setattr(local, "save", breaks)
    result = run(cluster, server, tmp_path, "image", "push", "-q", "busybox")
    assert result.exit_code == 1
    assert "reading the images from the local engine" in result.output and "connection reset" in result.output
    assert not any(e.has_image("busybox") for e in cluster.engines.values())


def test_sizes_read_as_dockers() -> None:
    assert [image_cmds.human_size(s) for s in (0, 999, 1_990_000, 125_829_120, 3.2e9)] == [
        "0B",
        "999B",
        "1.99MB",
        "126MB",
        "3.2GB",
    ]
