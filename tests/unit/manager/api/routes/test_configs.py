"""/configs: as /secrets, but inspect shows the data (base64), as docker does, and the limit is bigger."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyswarm.manager.api import create_app
from tests.unit.inprocess import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "data", start=False)
    yield cluster
    cluster.close()


@pytest.fixture
def api(cluster: Cluster) -> TestClient:
    return TestClient(create_app(cluster.manager), headers={"Authorization": f"Bearer {cluster.token('client')}"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_create_inspect_shows_the_data_and_remove(api: TestClient, cluster: Cluster) -> None:
    created = api.post("/configs", json={"name": "site", "data": _b64(b"server {}\n"), "labels": {"a": ""}})
    assert created.status_code == 201
    object_id = created.json()["id"]
    shown = api.get("/configs/site").json()
    assert shown["id"] == object_id and shown["labels"] == {"a": ""}
    assert base64.b64decode(shown["data"]) == b"server {}\n"
    assert [c["name"] for c in api.get("/configs").json()] == ["site"]
    assert api.delete(f"/configs/{object_id}").status_code == 204
    assert api.get("/configs").json() == []
    assert cluster.manager.store.load().configs == {}


def test_a_config_may_be_bigger_than_a_secret(api: TestClient) -> None:
    assert api.post("/configs", json={"name": "big", "data": _b64(b"x" * 700_000)}).status_code == 201
    too_big = api.post("/configs", json={"name": "bigger", "data": _b64(b"x" * 1_024_000)})
    assert too_big.status_code == 422
    assert "config data must be larger than 0 and less than 1024000 bytes" in too_big.json()["detail"]


def test_unknown_and_ambiguous_references(api: TestClient) -> None:
    response = api.delete("/configs/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "config nope not found"})
    assert api.post("/configs", json={"name": "taken", "data": _b64(b"x")}).status_code == 201
    clash = api.post("/configs", json={"name": "taken", "data": _b64(b"y")})
    assert (clash.status_code, clash.json()) == (409, {"detail": "config taken already exists"})
