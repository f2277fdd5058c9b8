"""The lab's busybox image (pyswarm/lab/busybox.py) and the archive that carries it beside nginx (image.py):
what the rootfs holds, its config, and that it is the same bytes on every build. No root, no dockerd."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from pyswarm.lab import busybox
from pyswarm.lab import image as lab_image
from pyswarm.lab.config import LabError

APPLETS = ["bin/sh", "bin/ls", "bin/cat", "bin/sleep", "usr/bin/wget", "usr/bin/nc", "usr/bin/nslookup", "usr/bin/["]


def rootfs(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_rootfs_is_busybox_and_its_applets() -> None:
    members = rootfs(busybox.build_layer(b"\x7fELF static busybox", APPLETS))
    binary = members["bin/busybox"]
    assert binary.isfile() and binary.mode == 0o755 and binary.size == len(b"\x7fELF static busybox")
    for path in APPLETS:
        assert members[path].issym() and members[path].linkname == "/bin/busybox", path
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["root"].mode == 0o700
    assert {"etc/passwd", "etc/group", "usr/bin", "sbin"} <= set(members)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == busybox.EPOCH for m in members.values())
    assert "root:x:0:0:root:/root:/bin/sh" in _read(busybox.build_layer(b"x", APPLETS), "etc/passwd")


def test_the_config_runs_a_shell() -> None:
    config = busybox.image_config("0" * 64)
    assert config["config"]["Cmd"] == ["sh"]
    assert config["config"]["Env"] == [busybox.PATH_ENV]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64]


def test_the_archive_holds_both_images_and_is_reproducible() -> None:
    def both() -> tuple[bytes, list[str]]:
        return lab_image.pack_images(
            [
                (lab_image.IMAGE_REF, lab_image.image_config, b"nginx layer"),
                (busybox.BUSYBOX_REF, busybox.image_config, busybox.build_layer(b"binary", APPLETS)),
            ]
        )

    (one, ids), (two, _) = both(), both()
    assert one == two and len(set(ids)) == 2
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert [entry["RepoTags"] for entry in manifest] == [["nginx:latest"], ["busybox:latest"]]
    assert lab_image.LAB_IMAGES == ("nginx:latest", "busybox:latest")


def test_the_hosts_busybox_is_found_and_listed() -> None:
    try:
        path = busybox.find_busybox()
    except LabError as exc:
        pytest.skip(f"no static busybox here: {exc}")
    paths = busybox.applets(path)
    names = {p.rsplit("/", 1)[-1] for p in paths}
    assert set(busybox.REQUIRED_APPLETS) <= names
    assert "bin/busybox" not in paths and all(not p.startswith("/") for p in paths)


def test_a_dynamic_or_missing_busybox_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(busybox, "BUSYBOX_PATHS", (tmp_path / "nosuch",))
    with pytest.raises(LabError, match="apt-get install busybox-static"):
        busybox.find_busybox()
    monkeypatch.setattr(busybox, "BUSYBOX_PATHS", (Path("/bin/true"),))  # dynamically linked on Debian
    with pytest.raises(LabError, match="not a static binary"):
        busybox.find_busybox()


def _read(layer: bytes, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return tar.extractfile(name).read().decode()  # type: ignore[union-attr]
