"""One image stream fed to several nodes at once (ImageDistributor.fan_out, image_feeds.py): every ready node
loads it, a node that fails or stalls does not hold up or spoil the others, memory stays bounded, and an
upload that ends early loads nothing anywhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager import image_feeds
from pyswarm.manager.errors import Invalid, NotFound
from pyswarm.manager.images import ImageDistributor
from tests.helpers import wait_until
from tests.unit.inprocess import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    c.wait_converged()
    for e in c.engines.values():
        e.state.images.discard("busybox:latest")
    yield c
    c.close()


def engine(cluster: Cluster, hostname: str) -> MemoryEngine:
    return next(e for e in cluster.engines.values() if e.hostname == hostname)


def upload(pieces: int = 40) -> list[bytes]:
    """A `docker save` of busybox, as a stream of many pieces (padding between the header and the end)."""
    source = MemoryEngine("unix:///var/run/docker.sock")
    source.state.images.add("busybox:latest")
    source.image_store.filler = pieces
    return list(source.save(["busybox"]))


def test_every_ready_node_loads_the_stream(cluster: Cluster) -> None:
    images: ImageDistributor = cluster.manager.images
    results = images.fan_out(iter(upload()), images.targets(None))
    assert sorted((r.hostname, r.error, r.loaded) for r in results) == [
        (f"node-0{i}", "", ["busybox:latest"]) for i in (1, 2, 3)
    ]
    assert all(engine(cluster, f"node-0{i}").has_image("busybox") for i in (1, 2, 3))
    assert not cluster.spare.has_image("busybox")  # not in the swarm


def test_named_nodes_only(cluster: Cluster) -> None:
    images: ImageDistributor = cluster.manager.images
    targets = images.targets(["node-02", "node-02"])
    assert targets == [cluster.manager.state.find_node("node-02").id]
    [result] = images.fan_out(iter(upload()), targets)
    assert result.hostname == "node-02" and not result.error
    assert not engine(cluster, "node-01").has_image("busybox")
    with pytest.raises(NotFound):
        images.targets(["nosuch"])


def test_a_failing_node_does_not_spoil_the_others(cluster: Cluster) -> None:
    engine(cluster, "node-02").image_store.fail_loads = 1
    images: ImageDistributor = cluster.manager.images
    results = {r.hostname: r for r in images.fan_out(iter(upload()), images.targets(None))}
    assert "no space left on device" in results["node-02"].error and results["node-02"].loaded == []
    assert not results["node-01"].error and not results["node-03"].error
    assert engine(cluster, "node-01").has_image("busybox") and not engine(cluster, "node-02").has_image("busybox")


def test_a_stalled_node_is_cut_off_and_the_others_finish(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_feeds, "FEED_STALL_TIMEOUT", 0.3)
    stuck = threading.Event()
    slow = engine(cluster, "node-03")
    load = slow.load

    def stalls(chunks: Iterator[bytes]) -> list[str]:
        def first_then_wait() -> Iterator[bytes]:
            for number, chunk in enumerate(chunks):
                if number == 1:
                    stuck.wait(5)  # takes no more data for a long while
                yield chunk

        return load(first_then_wait())

    monkeypatch.setattr(slow, "load", stalls)
    images: ImageDistributor = cluster.manager.images
    try:
        results = {r.hostname: r for r in images.fan_out(iter(upload(200)), images.targets(None))}
    finally:
        stuck.set()
    assert "took no data" in results["node-03"].error
    assert not results["node-01"].error and not results["node-02"].error
    assert not slow.has_image("busybox")


def test_memory_stays_bounded_by_the_slowest_node(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = engine(cluster, "node-02")
    slow.image_store.piece_delay = 0.002
    taken = [0]
    load = slow.load

    def counting(chunks: Iterator[bytes]) -> list[str]:
        def count() -> Iterator[bytes]:
            for chunk in chunks:
                taken[0] += 1
                yield chunk

        return load(count())

    monkeypatch.setattr(slow, "load", counting)
    ahead: list[int] = []

    def watched() -> Iterator[bytes]:
        for produced, piece in enumerate(upload(300), start=1):
            ahead.append(produced - taken[0])  # read from the client but not yet sent to the slowest node
            yield piece

    images: ImageDistributor = cluster.manager.images
    results = images.fan_out(watched(), images.targets(None))
    assert all(not r.error for r in results)
    assert max(ahead) <= image_feeds.FEED_QUEUE_PIECES + 2  # its queue, and a piece in each hand


def test_an_upload_that_ends_early_loads_nothing_anywhere(cluster: Cluster) -> None:
    pieces = upload()

    def broken() -> Iterator[bytes]:
        yield from pieces[:10]
        raise ConnectionResetError("client went away")

    images: ImageDistributor = cluster.manager.images
    with pytest.raises(ConnectionResetError):
        images.fan_out(broken(), images.targets(None))
    for i in (1, 2, 3):
        assert not engine(cluster, f"node-0{i}").has_image("busybox")


def test_a_node_that_is_down_is_reported_not_waited_for(cluster: Cluster) -> None:
    images: ImageDistributor = cluster.manager.images
    targets = images.targets(None)
    engine(cluster, "node-03").set_down(True)
    wait_until(lambda: not cluster.manager.state.find_node("node-03").ready)
    results = {r.hostname: r for r in images.fan_out(iter(upload()), targets)}
    assert results["node-03"].error == "the node is not ready (down or left)"
    assert not results["node-01"].error
    for other in ("node-01", "node-02"):
        engine(cluster, other).set_down(True)
    wait_until(lambda: not any(node.ready for node in cluster.manager.state.nodes.values()))
    with pytest.raises(Invalid, match="no node is ready"):
        images.targets(None)
