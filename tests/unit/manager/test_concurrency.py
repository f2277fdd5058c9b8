"""20 clients at once against one manager: optimistic concurrency loses no update, and at the end the
store, the manager and the engines agree."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyswarm.drivers.engine import Engine
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.api import create_app
from pyswarm.manager.manager import Manager
from pyswarm.manager.settings import Settings
from pyswarm.manager.store import SqliteStore
from pyswarm.model import Availability, TaskState

URLS = [f"ssh://root@10.0.0.{i}" for i in (1, 2, 3)]
CLIENTS = 20
SHARED_NAMES = ["alpha", "beta", "gamma", "delta"]


@pytest.mark.reliability("20 concurrent clients (optimistic concurrency)")
def test_twenty_clients_lose_no_update_and_end_consistent(tmp_path: Path) -> None:
    engines = {url: MemoryEngine(url, hostname=f"node-{i}") for i, url in enumerate(URLS)}

    def factory(url: str, timeout: float) -> Engine:
        return engines[url]

    manager = Manager(Settings(data_dir=tmp_path / "d", heartbeat=0.05, resync_interval=0.5), engine_factory=factory)
    manager.registration.initialise(URLS[0], "10.0.0.1", Availability.ACTIVE)
    for url in URLS[1:]:
        manager.registration.add_node(url, url.rsplit("@", 1)[1], None)
    manager.start()
    app = create_app(manager)
    headers = {"Authorization": f"Bearer {manager.state.meta['token_client']}"}
    setup = TestClient(app, headers=headers)
    assert setup.post("/services", json={"name": "counter", "image": "nginx", "replicas": 0}).status_code == 201

    increments = Counter[str]()
    conflicts = Counter[str]()
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        api = TestClient(app, headers=headers)
        for _ in range(10):
            choice = rng.random()
            if choice < 0.5:  # read-modify-write with the version: retried on conflict, never lost
                while True:
                    current = api.get("/services/counter").json()
                    spec = {**current["spec"], "replicas": current["spec"]["replicas"] + 1}
                    response = api.post("/services/counter/update", json={"version": current["version"], "spec": spec})
                    if response.status_code == 200:
                        with lock:
                            increments["counter"] += 1
                        break
                    if response.status_code != 409:
                        errors.append(f"update: {response.status_code} {response.text}")
                        return
                    with lock:
                        conflicts["counter"] += 1
            elif choice < 0.75:
                name = rng.choice(SHARED_NAMES)
                response = api.post("/services", json={"name": name, "image": "nginx", "replicas": rng.randint(0, 3)})
                if response.status_code not in (201, 409):
                    errors.append(f"create: {response.status_code} {response.text}")
            else:
                name = rng.choice(SHARED_NAMES)
                response = api.delete(f"/services/{name}")
                if response.status_code not in (200, 404):
                    errors.append(f"rm: {response.status_code} {response.text}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:5]
    assert conflicts["counter"] > 0, "the clients did race on the same service"
    counter = manager.state.find_service("counter")
    assert counter.spec.replicas == increments["counter"], "every accepted increment is in the final spec"
    assert counter.version == increments["counter"] + 1

    def converged() -> bool:
        containers = Counter(
            c.labels["com.pyswarm.service.name"]
            for engine in engines.values()
            for c in engine.containers(manager.cluster_id)
        )
        wanted = {s.spec.name: s.spec.replicas for s in manager.state.services.values() if s.spec.replicas}
        with manager.state.lock:  # and the manager has recorded them running: the store is checked below
            running = Counter(
                manager.state.services[t.service_id].spec.name
                for t in manager.state.tasks.values()
                if t.state is TaskState.RUNNING
                and t.desired_state is TaskState.RUNNING
                and t.service_id in manager.state.services
            )
        return dict(containers) == wanted == dict(running)

    deadline = time.time() + 30
    while not converged() and time.time() < deadline:
        time.sleep(0.05)
    assert converged(), "the engines run exactly the wanted containers of the services that exist"
    manager.close()

    stored = SqliteStore(tmp_path / "d").load()
    assert {s.spec.name: s.spec for s in stored.services.values()} == {
        s.spec.name: s.spec for s in manager.state.services.values()
    }
    running = [
        t for t in stored.tasks.values() if t.state is TaskState.RUNNING and t.desired_state is TaskState.RUNNING
    ]
    assert Counter(t.service_id for t in running) == Counter(
        {s.id: s.spec.replicas for s in manager.state.services.values() if s.spec.replicas}
    )
