"""/secrets: create, list, inspect, remove; a secret's data goes in and never comes out."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyswarm.manager.api import create_app
from pyswarm.model import FileReference, Service, ServiceSpec
from tests.unit.inprocess import Cluster

DATA = b"s3cr3t-value\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "data", start=False)
    yield cluster
    cluster.close()


@pytest.fixture
def api(cluster: Cluster) -> TestClient:
    return TestClient(create_app(cluster.manager), headers={"Authorization": f"Bearer {cluster.token('client')}"})


def _body(name: str = "pw", data: bytes = DATA, **extra: object) -> dict[str, object]:
    return {"name": name, "data": base64.b64encode(data).decode(), **extra}


def test_create_list_inspect_remove(api: TestClient, cluster: Cluster) -> None:
    created = api.post("/secrets", json=_body(labels={"env": "prod"}))
    assert created.status_code == 201
    object_id = created.json()["id"]
    assert cluster.manager.state.secrets[object_id].data == DATA
    listed = api.get("/secrets").json()
    assert [(s["id"], s["name"], s["labels"], s["driver"]) for s in listed] == [(object_id, "pw", {"env": "prod"}, "")]
    assert api.get(f"/secrets/{object_id[:6]}").json()["name"] == "pw"
    assert api.delete("/secrets/pw").status_code == 204
    missing = api.get("/secrets/pw")
    assert (missing.status_code, missing.json()) == (404, {"detail": "secret pw not found"})


def test_no_response_carries_the_data(api: TestClient) -> None:
    object_id = api.post("/secrets", json=_body()).json()["id"]
    encoded = base64.b64encode(DATA).decode()
    for response in (api.get("/secrets"), api.get(f"/secrets/{object_id}"), api.get("/secrets/pw")):
        assert response.status_code == 200
        assert "data" not in response.text and encoded not in response.text and "s3cr3t" not in response.text
    clash = api.post("/secrets", json=_body())
    assert clash.status_code == 409 and "s3cr3t" not in clash.text and encoded not in clash.text


def test_the_largest_secret_fits_the_body_cap(api: TestClient, cluster: Cluster) -> None:
    object_id = api.post("/secrets", json=_body(data=b"x" * 511_999)).json()["id"]
    assert len(cluster.manager.state.secrets[object_id].data) == 511_999


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "pw", "data": "not base64!"}, 422, "data must be base64"),
        ({"name": "pw", "data": "eA"}, 422, "data must be base64"),
        ({"name": "pw", "data": ""}, 422, "data:"),
        (_body(data=b"x" * 512_000), 422, "secret data must be larger than 0 and less than 512000 bytes"),
        (_body(name="my pw"), 422, "invalid name, only 64"),
        (_body(name="x" * 65), 422, "name:"),
        (_body(labels={"a=b": "c"}), 422, "invalid label key"),
        ({**_body(), "driver": "vault"}, 422, "driver"),
        ({"data": "eA=="}, 422, "name"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    api: TestClient, cluster: Cluster, body: dict[str, object], status: int, message: str
) -> None:
    response = api.post("/secrets", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert cluster.manager.state.secrets == {} and cluster.manager.store.load().secrets == {}


def test_a_name_in_use_is_a_conflict(api: TestClient) -> None:
    api.post("/secrets", json=_body())
    response = api.post("/secrets", json=_body(data=b"other"))
    assert (response.status_code, response.json()) == (409, {"detail": "secret pw already exists"})


def test_a_secret_in_use_is_not_removed(api: TestClient, cluster: Cluster) -> None:
    object_id = api.post("/secrets", json=_body()).json()["id"]
    spec = ServiceSpec(name="web", image="nginx", secrets=(FileReference(name="pw", target="pw", id=object_id),))
    cluster.manager.state.services["v1"] = Service(id="v1", spec=spec)
    response = api.delete("/secrets/pw")
    assert (response.status_code, response.json()["detail"]) == (
        409,
        "secret 'pw' is in use by the following service: web",
    )
    assert object_id in cluster.manager.store.load().secrets
