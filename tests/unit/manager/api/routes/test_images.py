"""The images routes over real HTTP (ApiServer: uvicorn and TLS, in this process): `POST /images/load` takes a
streamed body of any size past the API's body cap, feeds it to the nodes as it comes in bounded memory, and
answers per node; it needs the client credential before a byte is read. `GET /images` lists the nodes'."""

from __future__ import annotations

import ssl
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.api.limits import MAX_BODY
from tests.unit.inprocess import ApiServer, Cluster

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("images") / "data")
    cluster.wait_converged()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[ApiServer]:
    with ApiServer(cluster.manager) as server:
        yield server


@pytest.fixture
def clean(cluster: Cluster) -> None:
    for engine in cluster.engines.values():
        engine.state.images.discard("busybox:latest")


def tls_context_for(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    return context


def client(server: ApiServer, cluster: Cluster, role: str = "client") -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {cluster.token(role)}"},
        verify=tls_context_for(server.ca_file),
        timeout=httpx.Timeout(30.0, read=120.0),
    )


def busybox_save(size: int) -> Iterator[bytes]:
    """A `docker save` stream of about size bytes, made as it is sent."""
    source = MemoryEngine("unix:///var/run/docker.sock")
    source.state.images.add("busybox:latest")
    source.image_store.piece_size = MiB
    source.image_store.filler = size // MiB
    return source.save(["busybox"])


def engine(cluster: Cluster, hostname: str) -> MemoryEngine:
    return next(e for e in cluster.engines.values() if e.hostname == hostname)


@pytest.mark.usefixtures("clean")
def test_a_body_over_the_cap_is_streamed_to_every_node_in_bounded_memory(cluster: Cluster, server: ApiServer) -> None:
    size = MAX_BODY + 24 * MiB
    with client(server, cluster) as http:
        tracemalloc.start()
        try:
            response = http.post("/images/load", content=busybox_save(size))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 200, response.text
    nodes = sorted(response.json()["nodes"], key=lambda n: n["node"])
    assert [(n["node"], n["ok"], n["loaded"], n["error"]) for n in nodes] == [
        (f"node-0{i}", True, ["busybox:latest"], "") for i in (1, 2, 3)
    ]
    assert peak < 12 * MiB, f"peak {peak / MiB:.0f} MiB for a {size / MiB:.0f} MiB upload"
    assert all(engine(cluster, f"node-0{i}").has_image("busybox") for i in (1, 2, 3))


@pytest.mark.usefixtures("clean")
def test_a_declared_length_over_the_cap_is_taken_too(cluster: Cluster, server: ApiServer) -> None:
    body = b"".join(busybox_save(MAX_BODY + MiB))
    with client(server, cluster) as http:
        response = http.post("/images/load", content=body, params={"node": "node-02"})
    assert response.status_code == 200, response.text
    assert [n["node"] for n in response.json()["nodes"]] == ["node-02"]
    assert engine(cluster, "node-02").has_image("busybox") and not engine(cluster, "node-01").has_image("busybox")


@pytest.mark.usefixtures("clean")
def test_a_failed_node_is_reported_and_the_others_load(cluster: Cluster, server: ApiServer) -> None:
    engine(cluster, "node-03").image_store.fail_loads = 1
    with client(server, cluster) as http:
        response = http.post("/images/load", content=busybox_save(4 * MiB))
    results = {n["node"]: n for n in response.json()["nodes"]}
    assert response.status_code == 200
    assert not results["node-03"]["ok"] and "no space left" in results["node-03"]["error"]
    assert results["node-01"]["ok"] and results["node-02"]["ok"]


def test_refusals(cluster: Cluster, server: ApiServer) -> None:
    with client(server, cluster, "worker") as http:
        assert http.post("/images/load", content=b"x").status_code == 403
        assert http.get("/images").status_code == 403
    with httpx.Client(base_url=server.url, verify=tls_context_for(server.ca_file)) as anonymous:
        assert anonymous.post("/images/load", content=b"x").status_code == 401
    with client(server, cluster) as http:
        response = http.post("/images/load", content=b"x", params={"node": "nosuch"})
        assert response.status_code == 404 and "nosuch" in response.json()["detail"]
        assert http.post("/images/load", content=b"x", params={"nodes": "node-01"}).status_code == 422


def test_what_the_nodes_hold(cluster: Cluster, server: ApiServer) -> None:
    with client(server, cluster) as http:
        listings = http.get("/images").json()
    assert sorted(listing["node"] for listing in listings) == ["node-01", "node-02", "node-03"]
    for listing in listings:
        assert listing["error"] == ""
        assert "nginx:latest" in [tag for image in listing["images"] for tag in image["tags"]]


def test_the_route_is_documented(cluster: Cluster, server: ApiServer, tmp_path: Path) -> None:
    with client(server, cluster) as http:
        schema = http.get("/openapi.json").json()
    body = schema["paths"]["/images/load"]["post"]["requestBody"]
    assert "application/octet-stream" in body["content"]
