"""The HTTP API: tokens, refusals with 4xx and unchanged state, and the walkthrough's calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyswarm.drivers.engine import Engine
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.api import create_app
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.model import Availability

URL = "ssh://root@10.0.0.1"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    engines = {URL: MemoryEngine(URL, hostname="node-01"), "ssh://root@10.0.0.2": MemoryEngine("x", "node-02")}

    def factory(url: str, timeout: float) -> Engine:
        return engines[url]

    m = Manager(Settings(data_dir=tmp_path / "d", heartbeat=0.05), engine_factory=factory)
    m.registration.initialise(URL, "10.0.0.1", Availability.ACTIVE)
    m.start()
    yield m
    m.close()


def client(manager: Manager, role: str = "client") -> TestClient:
    token = manager.state.meta[f"token_{role}"]
    # Joins must come from the node's own address: this client is node 10.0.0.2.
    return TestClient(create_app(manager), headers={"Authorization": f"Bearer {token}"}, client=("10.0.0.2", 50000))


SPEC = {"name": "web", "image": "nginx", "replicas": 1, "ports": [{"published": 80, "target": 80}]}


def test_every_call_needs_a_valid_token(manager: Manager) -> None:
    anonymous = TestClient(create_app(manager))
    for path in ("/info", "/nodes", "/services", "/tasks", "/networks"):
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers={"Authorization": "Bearer PSWTKN-1-c-nope"}).status_code == 401
    assert anonymous.post("/services", json=SPEC).status_code == 401
    assert not manager.state.services


def test_worker_token_can_only_join(manager: Manager) -> None:
    worker = client(manager, "worker")
    assert worker.get("/nodes").status_code == 403
    assert worker.post("/services", json=SPEC).status_code == 403
    join = worker.post(
        "/swarm/join", json={"engine_url": "ssh://root@10.0.0.2", "engine_id": "wrong", "addr": "10.0.0.2"}
    )
    assert join.status_code == 403
    assert "not the engine that asked to join" in join.json()["detail"]
    assert len(manager.state.nodes) == 1


def test_rotation_invalidates_the_old_token_at_once(manager: Manager) -> None:
    old = manager.state.meta["token_worker"]
    new = client(manager).post("/swarm/join-token/worker/rotate").json()["token"]
    assert new != old
    stale = TestClient(create_app(manager), headers={"Authorization": f"Bearer {old}"})
    assert stale.post("/swarm/join", json={"engine_url": URL, "engine_id": "x", "addr": "x"}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {**SPEC, "name": "my web"},
        {**SPEC, "name": "x" * 10_000},
        {**SPEC, "name": "a;rm -rf /"},
        {**SPEC, "replicas": -1},
        {**SPEC, "replicas": "three"},
        {**SPEC, "replicas": 1e9},
        {**SPEC, "ports": [{"published": 0, "target": 80}]},
        {**SPEC, "ports": [{"published": 65536, "target": 80}]},
        {**SPEC, "ports": [{"published": 80, "target": 80}, {"published": 80, "target": 81}]},
        {**SPEC, "ports": [{"published": 22, "target": 80}]},
        {**SPEC, "constraints": ["node.hostname~=x"]},
        {**SPEC, "image": "nginx; reboot"},
        {**SPEC, "surprise": 1},
        {"name": "web"},
    ],
)
def test_bad_service_specs_get_4xx_and_change_nothing(manager: Manager, body: dict[str, object]) -> None:
    response = client(manager).post("/services", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert not manager.state.services


def test_create_update_and_stale_version(manager: Manager) -> None:
    api = client(manager)
    created = api.post("/services", json=SPEC)
    assert created.status_code == 201
    service = api.get("/services/web").json()
    assert service["spec"]["replicas"] == 1
    update = {"version": service["version"], "spec": {**SPEC, "replicas": 2}}
    assert api.post("/services/web/update", json=update).status_code == 200
    stale = api.post("/services/web/update", json={**update, "spec": {**SPEC, "replicas": 5}})
    assert stale.status_code == 409
    assert manager.state.find_service("web").spec.replicas == 2
    assert api.post("/services", json=SPEC).status_code == 409
    assert api.get("/services/nope").status_code == 404
    assert api.delete("/services/nope").status_code == 404
    assert api.get("/nodes/nope").status_code == 404


def test_registry_auth_is_kept_sealed_and_reaches_the_nodes_pulls(manager: Manager) -> None:
    import base64
    import json as json_module

    api = client(manager)
    secret = "hunter2-registry"
    header = base64.urlsafe_b64encode(
        json_module.dumps({"username": "me", "password": secret, "serveraddress": "registry.lab"}).encode()
    ).decode()
    spec = {"name": "app", "image": "registry.lab/app:1", "replicas": 0}
    created = api.post("/services", json=spec, headers={"X-Registry-Auth": header}, params={"resolve_image": False})
    assert created.status_code == 201, created.text
    service = manager.state.services[created.json()["id"]]
    assert secret not in service.registry_auth  # sealed, in the state as in the store
    assert secret not in api.get(f"/services/{service.id}").text
    assert manager.images.registry_auth(service) == {
        "username": "me", "password": secret, "serveraddress": "registry.lab",
    }  # fmt: skip
    stored = b"".join(p.read_bytes() for p in manager.settings.data_dir.rglob("state.db*"))
    assert secret.encode() not in stored
    # An update without credentials keeps them; a malformed header is refused without being echoed.
    current = api.get(f"/services/{service.id}").json()
    updated = api.post(f"/services/{service.id}/update", json={"version": current["version"], "spec": current["spec"]})
    assert updated.status_code == 200, updated.text
    assert manager.images.registry_auth(manager.state.services[service.id]) is not None
    refused = api.post("/services", json={**spec, "name": "bad"}, headers={"X-Registry-Auth": "%%"})
    assert refused.status_code == 400 and "%%" not in refused.text
    assert [s.spec.name for s in manager.state.services.values()] == ["app"]
