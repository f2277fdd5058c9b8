"""MemoryEngine's images behave as tests/unit/drivers/test_images.py shows a real engine's do: a save loads
elsewhere as the same image, a cut stream loads nothing, a pull needs a registry, and only pulled images have
a repository digest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyswarm.drivers.engine import EngineError, EngineUnreachable, ImageNotFound
from pyswarm.drivers.errors import RegistryUnreachable
from pyswarm.drivers.memory_engine import MemoryEngine

DIGEST = "sha256:" + "b" * 64


def engines() -> tuple[MemoryEngine, MemoryEngine]:
    source, target = MemoryEngine("ssh://root@10.0.0.1"), MemoryEngine("ssh://root@10.0.0.2")
    target.state.images.clear()
    return source, target


def test_a_save_loads_elsewhere_as_the_same_image() -> None:
    source, target = engines()
    pieces = list(source.save(["nginx"]))
    assert len(pieces) > 3
    assert target.image("nginx") is None and not target.has_image("nginx:latest")
    assert target.load(iter(pieces)) == ["nginx:latest"]
    assert target.image("nginx") == source.image("nginx:latest")
    assert target.image_ref_digest("nginx") is None
    assert target.image_store.loads == [["nginx:latest"]]


def test_an_image_saved_by_id_loads_without_a_name() -> None:
    source, target = engines()
    info = source.image("nginx")
    assert info is not None
    assert target.load(source.save([info.id])) == [info.id]
    assert target.has_image(info.id) and not target.has_image("nginx")


def test_a_cut_stream_loads_nothing() -> None:
    source, target = engines()

    def cut() -> Iterator[bytes]:
        yield from list(source.save(["nginx"]))[:-1]

    with pytest.raises(EngineError, match="unexpected EOF"):
        target.load(cut())
    assert target.images() == []


def test_a_pull_needs_a_registry_that_has_the_image() -> None:
    engine = MemoryEngine("ssh://root@10.0.0.1")
    with pytest.raises(RegistryUnreachable, match="no such host"):
        list(engine.pull("redis"))
    with pytest.raises(RegistryUnreachable):
        engine.registry_digest("redis")
    engine.image_store.registry = {"redis:latest": DIGEST}
    with pytest.raises(ImageNotFound, match="pull access denied"):
        list(engine.pull("nosuch"))
    messages = list(engine.pull("redis"))
    assert messages[-1]["status"] == "Status: Downloaded newer image for redis"
    assert engine.has_image("redis") and engine.image_ref_digest("redis:latest") == f"redis@{DIGEST}"
    assert engine.has_image(f"redis:latest@{DIGEST}") and engine.registry_digest("redis") == DIGEST


def test_a_registry_that_wants_credentials() -> None:
    engine = MemoryEngine("ssh://root@10.0.0.1")
    engine.image_store.registry = {"private/app:1": DIGEST}
    engine.image_store.registry_auth = {"username": "u", "password": "p"}
    with pytest.raises(ImageNotFound, match="docker login"):
        list(engine.pull("private/app:1"))
    list(engine.pull("private/app:1", {"username": "u", "password": "p"}))
    assert engine.image_store.pulls == ["private/app:1"]


def test_pulls_by_digest() -> None:
    engine = MemoryEngine("ssh://root@10.0.0.1")
    engine.image_store.registry = {"redis:7": DIGEST}
    with pytest.raises(ImageNotFound, match="manifest unknown"):
        list(engine.pull("redis@sha256:" + "c" * 64))
    list(engine.pull(f"redis:7@{DIGEST}"))
    assert engine.has_image(f"redis@{DIGEST}")


def test_a_down_engine_answers_nothing() -> None:
    source, target = engines()
    source.state.down = True
    with pytest.raises(EngineUnreachable):
        source.image("nginx")
    with pytest.raises(EngineUnreachable):
        list(source.save(["nginx"]))
    target.image_store.fail_loads = 1
    source.state.down = False
    with pytest.raises(EngineError, match="no space left"):
        target.load(source.save(["nginx"]))
    assert target.load(source.save(["nginx"])) == ["nginx:latest"]
