"""ImageDistributor on in-memory engines: a task's missing image is pulled, or streamed from a node that has
it when no registry answers, once per node; `resolve` pins tags as swarm does; what the nodes hold."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.engine import EngineUnreachable, ImageNotFound
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.manager.errors import Invalid
from pyswarm.manager.images import UNPINNED_WARNING, ImageDistributor
from pyswarm.model import ServiceSpec, TaskState
from tests.helpers import wait_until
from tests.unit.inprocess import WORKER_URLS, Cluster

DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "data")
    c.wait_converged()
    yield c
    c.close()


def engine(cluster: Cluster, hostname: str) -> MemoryEngine:
    return next(e for e in cluster.engines.values() if e.hostname == hostname)


def node_id(cluster: Cluster, hostname: str) -> str:
    return cluster.manager.state.find_node(hostname).id


def only_on(cluster: Cluster, ref: str, *hostnames: str) -> None:
    """The image is on these nodes' engines and no other."""
    for e in cluster.engines.values():
        (e.state.images.add if e.hostname in hostnames else e.state.images.discard)(ref)


def running(cluster: Cluster, name: str) -> list[str]:
    """The hostnames of the service's running tasks."""
    manager = cluster.manager
    service = manager.state.find_service(name)
    with manager.state.lock:
        tasks = list(manager.state.tasks_by_service[service.id].values())
        return sorted(manager.state.nodes[t.node_id].hostname for t in tasks if t.state is TaskState.RUNNING)


def test_a_missing_image_comes_from_the_node_that_has_it(cluster: Cluster) -> None:
    only_on(cluster, "busybox:latest", "node-01")
    cluster.manager.services.create(ServiceSpec(name="bb", image="busybox", replicas=6))
    wait_until(lambda: running(cluster, "bb") == ["node-01"] * 2 + ["node-02"] * 2 + ["node-03"] * 2)
    # Each node was fed once, though two of its tasks wanted the image.
    assert engine(cluster, "node-02").image_store.loads == [["busybox:latest"]]
    assert engine(cluster, "node-03").image_store.loads == [["busybox:latest"]]
    assert engine(cluster, "node-01").image_store.loads == []


def test_a_registry_that_answers_is_pulled_from(cluster: Cluster) -> None:
    registry = {"redis:7": DIGEST}
    for e in cluster.engines.values():
        e.image_store.registry = registry
    cluster.manager.services.create(ServiceSpec(name="cache", image="redis:7", replicas=3))
    wait_until(lambda: running(cluster, "cache") == ["node-01", "node-02", "node-03"])
    for hostname in ("node-01", "node-02", "node-03"):
        assert engine(cluster, hostname).image_store.pulls == ["redis:7"]
        assert engine(cluster, hostname).image_store.loads == []


def test_an_image_nowhere_is_rejected_with_why(cluster: Cluster) -> None:
    cluster.manager.services.create(ServiceSpec(name="ghost", image="nosuch/image:1", replicas=1))
    manager = cluster.manager
    wait_until(lambda: any(t.state is TaskState.REJECTED for t in manager.state.tasks.values()))
    error = next(t.error for t in manager.state.tasks.values() if t.state is TaskState.REJECTED)
    assert "No such image: nosuch/image:1" in error  # what `service create` looks for to stop waiting
    assert "no node has it" in error and "no such host" in error


def test_progress_is_reported_and_shared_by_waiters(cluster: Cluster) -> None:
    only_on(cluster, "busybox:latest", "node-01")
    target = engine(cluster, "node-02")
    target.image_store.piece_delay = 0.05  # a slow transfer: the other callers arrive while it runs
    images: ImageDistributor = cluster.manager.images
    node = node_id(cluster, "node-02")
    messages: list[list[str]] = [[] for _ in range(4)]
    results: list[str] = []

    def want(index: int) -> None:
        results.append(images.ensure(node, "busybox", progress=messages[index].append))

    threads = [threading.Thread(target=want, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["busybox"] * 4
    assert target.image_store.loads == [["busybox:latest"]]
    assert "receiving image busybox from node-01" in messages[0]
    assert all(any("busybox" in m for m in got) for got in messages)  # every waiter heard how it went
    assert images.ensure(node, "busybox") == "busybox"  # there now: no second load
    assert target.image_store.loads == [["busybox:latest"]]


def test_a_pinned_image_from_a_node_runs_by_its_id(cluster: Cluster) -> None:
    source = engine(cluster, "node-01")
    source.image_store.registry = {"redis:7": DIGEST}
    list(source.pull(f"redis:7@{DIGEST}"))
    source.image_store.registry = None  # the registry is gone since
    info = source.image(f"redis:7@{DIGEST}")
    assert info is not None
    images: ImageDistributor = cluster.manager.images
    node = node_id(cluster, "node-03")
    assert images.ensure(node, f"redis:7@{DIGEST}") == info.id  # a loaded image has no repository digest
    assert images.ensure(node, f"redis:7@{DIGEST}") == info.id
    assert engine(cluster, "node-03").image_store.loads == [[info.id]]
    cluster.manager.services.create(ServiceSpec(name="pinned", image=f"redis:7@{DIGEST}", replicas=3))
    wait_until(lambda: running(cluster, "pinned") == ["node-01", "node-02", "node-03"])


def test_a_source_that_fails_midway_is_replaced_by_another(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    only_on(cluster, "busybox:latest", "node-01", "node-03")
    flaky = engine(cluster, "node-01")
    whole = flaky.save

    def broken_save(refs: list[str]) -> Iterator[bytes]:
        yield next(iter(whole(refs)))
        raise EngineUnreachable(f"{flaky.url}: connection lost")

    monkeypatch.setattr(flaky, "save", broken_save)
    images: ImageDistributor = cluster.manager.images
    images._held("busybox", node_id(cluster, "node-01"))  # tried first
    assert images.ensure(node_id(cluster, "node-02"), "busybox") == "busybox"
    assert engine(cluster, "node-02").image_store.loads == [["busybox:latest"]]


def test_pulls_from_a_registry_that_did_not_answer_are_skipped_for_a_while(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_on(cluster, "busybox:latest", "node-01")
    only_on(cluster, "alpine:latest", "node-01")
    target = engine(cluster, "node-02")
    tried: list[str] = []
    pull = target.pull
    monkeypatch.setattr(target, "pull", lambda ref, *a: tried.append(ref) or pull(ref, *a))
    images: ImageDistributor = cluster.manager.images
    node = node_id(cluster, "node-02")
    images.ensure(node, "busybox")
    images.ensure(node, "alpine")
    assert tried == ["busybox"]  # docker.io did not answer: alpine went straight to the node that has it


def test_resolve_pins_to_the_registrys_digest(cluster: Cluster) -> None:
    for e in cluster.engines.values():
        e.image_store.registry = {"redis:7": DIGEST}
    images: ImageDistributor = cluster.manager.images
    assert images.resolve("redis:7") == (f"redis:7@{DIGEST}", None)
    assert images.resolve(f"redis:7@{DIGEST}") == (f"redis:7@{DIGEST}", None)
    assert images.resolve("sha256:" + "e" * 64) == ("sha256:" + "e" * 64, None)


def test_resolve_pins_to_a_digest_a_node_holds_when_the_registry_is_gone(cluster: Cluster) -> None:
    holder = engine(cluster, "node-03")
    holder.image_store.registry = {"redis:7": DIGEST}
    list(holder.pull("redis:7"))
    holder.image_store.registry = None
    images: ImageDistributor = cluster.manager.images
    assert images.resolve("redis:7") == (f"redis:7@{DIGEST}", None)


def test_resolve_without_any_digest_keeps_the_tag_with_dockers_warning(cluster: Cluster) -> None:
    images: ImageDistributor = cluster.manager.images
    ref, warning = images.resolve("nginx")
    assert ref == "nginx"
    assert warning == UNPINNED_WARNING.format(ref="nginx:latest")
    assert warning == (
        "image nginx:latest could not be accessed on a registry to record its digest. Each node will access "
        "nginx:latest independently, possibly leading to different nodes running different versions of the image."
    )
    with pytest.raises(Invalid):
        images.resolve("Not A Reference")


def test_what_the_nodes_hold(cluster: Cluster) -> None:
    only_on(cluster, "busybox:latest", "node-02")
    cluster.engines[WORKER_URLS[1]].set_down(True)
    wait_until(lambda: not cluster.manager.state.find_node("node-03").ready)
    listings = {listing.hostname: listing for listing in cluster.manager.images.node_images()}
    assert sorted(listings) == ["node-01", "node-02", "node-03"]
    assert [i.tags for i in listings["node-01"].images] == [("nginx:latest",)]
    assert sorted(i.tags for i in listings["node-02"].images) == [("busybox:latest",), ("nginx:latest",)]
    assert listings["node-03"].error == "the node is not ready"


def test_a_node_without_a_link_is_unreachable(cluster: Cluster) -> None:
    with pytest.raises(EngineUnreachable):
        cluster.manager.images.ensure("no-such-node", "busybox")
    with pytest.raises(ImageNotFound, match="No such image"):
        cluster.manager.images.ensure(node_id(cluster, "node-01"), "Bad Ref")


def test_a_task_shows_its_image_coming_meanwhile(cluster: Cluster) -> None:
    only_on(cluster, "busybox:latest", "node-01")
    engine(cluster, "node-02").image_store.piece_delay = 0.3  # a slow link: the transfer takes a while
    cluster.manager.services.create(ServiceSpec(name="bb", image="busybox", replicas=3))
    manager = cluster.manager

    def receiving() -> bool:
        with manager.state.lock:
            return any(
                t.state is TaskState.PREPARING and t.message.startswith("receiving image busybox from node-01")
                for t in manager.state.tasks.values()
            )

    wait_until(receiving, what="a task preparing, receiving its image")
    wait_until(lambda: running(cluster, "bb") == ["node-01", "node-02", "node-03"])
