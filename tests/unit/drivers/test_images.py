"""DockerImages (DockerEngine's images) against real, standalone dockerds: what an engine holds, pulls that fail
fast without a registry, and save/load streamed between engines over unix:// and ssh:// without holding an
image in memory. Skipped without root and dockerd (tests/unit/standalone_dockerd.py)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.drivers.engine import DockerEngine, EngineError, ImageNotFound
from pyswarm.drivers.errors import RegistryUnreachable
from pyswarm.lab.image import pack_images
from tests.unit import standalone_dockerd
from tests.unit.standalone_dockerd import Dockerd

pytestmark = pytest.mark.skipif(bool(standalone_dockerd.skip_reason()), reason=str(standalone_dockerd.skip_reason()))

REF = "pyswarm-test/blob:1"
SIZE = 24 * 2**20  # big enough that holding it whole would show, small enough for a 2-core box


def blob_image(ref: str, size: int) -> bytes:
    """A `docker save` archive of one image whose layer is one file of random bytes."""
    data = os.urandom(size)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(data))

    def config(digest: str) -> dict[str, object]:
        return {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/blob"]},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]}}  # fmt: skip

    return pack_images([(ref, config, layer.getvalue())])[0]


@pytest.fixture(scope="module")
def source() -> Iterator[DockerEngine]:
    with standalone_dockerd.dockerd("src") as engine:
        api = engine.api()
        for _ in api.load_image(blob_image(REF, SIZE)):
            pass
        api.close()
        client = DockerEngine(engine.url)
        yield client
        client.close()


@pytest.fixture(scope="module")
def target_dockerd() -> Iterator[Dockerd]:
    with standalone_dockerd.dockerd("dst") as engine:
        yield engine


@pytest.fixture
def target(target_dockerd: Dockerd) -> Iterator[DockerEngine]:
    client = DockerEngine(target_dockerd.url)
    yield client
    api = target_dockerd.api()
    for image in api.images():
        api.remove_image(image["Id"], force=True)
    api.close()
    client.close()


def test_what_an_engine_holds(source: DockerEngine, target: DockerEngine) -> None:
    info = source.image(REF)
    assert info is not None and info.id.startswith("sha256:") and info.tags == (REF,) and info.size >= SIZE
    assert source.has_image(REF) and source.has_image(info.id)
    assert source.image_ref_digest(REF) is None  # loaded, not pulled: no repository digest
    assert [i.tags for i in source.images()] == [(REF,)]
    assert target.image(REF) is None and not target.has_image(REF) and target.image_ref_digest(REF) is None


def test_save_streams_into_load_in_bounded_memory(source: DockerEngine, target: DockerEngine) -> None:
    tracemalloc.start()
    try:
        pieces = 0

        def counted() -> Iterator[bytes]:
            nonlocal pieces
            for piece in source.save([REF]):
                pieces += 1
                yield piece

        assert target.load(counted()) == [REF]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pieces > 20  # a stream of pieces, not one body
    assert peak < SIZE / 3, f"peak {peak / 2**20:.1f} MiB for a {SIZE / 2**20:.0f} MiB image"
    assert target.image(REF) == source.image(REF)  # same image ID


def test_a_stream_cut_midway_leaves_nothing_on_the_target(source: DockerEngine, target: DockerEngine) -> None:
    def cut() -> Iterator[bytes]:
        for number, piece in enumerate(source.save([REF])):
            if number == 10:
                raise EngineError("the source went away")
            yield piece

    with pytest.raises(EngineError, match="the source went away"):
        target.load(cut())
    assert target.image(REF) is None
    target.ping()  # the engine is fine
    assert target.load(source.save([REF])) == [REF]  # and takes a whole one


def test_refusals_carry_dockers_message(source: DockerEngine, target: DockerEngine) -> None:
    with pytest.raises(ImageNotFound):
        list(source.save(["pyswarm-test/nosuch:1"]))
    with pytest.raises(EngineError, match="loading the image failed"):
        target.load(iter([b"not a tar archive" * 1000]))


def test_a_pull_without_a_registry_fails_fast(source: DockerEngine) -> None:
    began = time.monotonic()
    with pytest.raises(RegistryUnreachable):  # refused, or no DNS: at once
        list(source.pull("127.0.0.1:9/pyswarm-test/nosuch:1"))
    with pytest.raises(RegistryUnreachable):
        source.registry_digest("127.0.0.1:9/pyswarm-test/nosuch:1")
    assert time.monotonic() - began < 10


def test_a_registry_that_never_answers_is_given_up_on_after_the_timeout(source: DockerEngine) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does) and never says a word
    ref = f"localhost:{silent.getsockname()[1]}/pyswarm-test/nosuch:1"
    try:
        began = time.monotonic()
        with pytest.raises(RegistryUnreachable, match="no answer"):
            list(source.pull(ref, timeout=2))
        assert time.monotonic() - began < 6
        with pytest.raises(RegistryUnreachable, match="no answer"):
            source.registry_digest(ref, timeout=1)
    finally:
        silent.close()


@pytest.mark.skipif(bool(standalone_dockerd.skip_reason(ssh=True)), reason=str(standalone_dockerd.skip_reason(True)))
def test_streams_over_ssh_as_over_unix(
    source: DockerEngine, target_dockerd: Dockerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager reaches nodes as ssh://root@ADDR with paramiko: a load's body and a save's answer are
    streamed through the SSH channel too (docker-py's ssh adapter buffers neither)."""
    with standalone_dockerd.sshd_for(target_dockerd) as sshd:
        monkeypatch.setenv("HOME", str(sshd.home))  # paramiko's key and known_hosts
        remote = DockerEngine(sshd.url)
        try:
            assert remote.image(REF) is None
            tracemalloc.start()
            try:
                assert remote.load(source.save([REF])) == [REF]
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < SIZE / 3
            saved = hashlib.sha256()
            for piece in remote.save([REF]):
                saved.update(piece)
            assert remote.image(REF) == source.image(REF)
        finally:
            remote.close()
    api = target_dockerd.api()
    api.remove_image(REF, force=True)
    api.close()


def test_loads_of_several_engines_at_once(source: DockerEngine, target: DockerEngine, tmp_path: Path) -> None:
    """Two loads from two saves at the same time, on one client each: no connection is shared by accident."""
    errors: list[BaseException] = []
    other_image = "pyswarm-test/blob:2"
    api = source.api
    for _ in api.load_image(blob_image(other_image, 2**20)):
        pass

    def ship(ref: str) -> None:
        try:
            target.load(source.save([ref]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ship, args=(ref,)) for ref in (REF, other_image)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.has_image(REF) and target.has_image(other_image)
