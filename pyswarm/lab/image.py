"""The lab's images, `nginx:latest` and `busybox:latest`, built from the host's own binaries: no registry needed.

The rootfs holds Debian's /usr/sbin/nginx (nginx-light) with the libraries ldd lists, a
minimal /etc, a static `udp-echo` (assets/udp-echo.c) and assets/nginx.conf, which answers
every request with `served-by <hostname>` and an `X-Served-By` header.

busybox.py builds the other one (Debian's busybox-static, FROM scratch). Both are packed in one
`docker save` archive with a fixed creation time, so `docker load` gives the same image IDs on every
node (as a registry pull would), and cached by content hash under the cache dir so a second `lab up`
only loads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pyswarm.lab import busybox
from pyswarm.lab.config import LabError

IMAGE_REF = "nginx:latest"
LAB_IMAGES = (IMAGE_REF, busybox.BUSYBOX_REF)  # what every node loads at `lab up`
NGINX = Path("/usr/sbin/nginx")
BUILD_VERSION = "4"  # bump to invalidate cached archives when the layout below changes
# A fixed timestamp keeps the archive (and so the image ID) reproducible.
EPOCH = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

USERS = """\
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
nogroup:x:65534:
"""
NSSWITCH = """\
passwd: files
group: files
hosts: files
"""

# (path, mode) of directories; /tmp is world-writable for nginx's pid and temp files.
DIRS: list[tuple[str, int]] = [
    ("etc", 0o755),
    ("etc/nginx", 0o755),
    ("lib", 0o755),
    ("lib64", 0o755),
    ("root", 0o700),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("tmp/nginx", 0o1777),
    ("usr", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/lib/nginx", 0o755),
    ("var/log", 0o755),
    ("var/log/nginx", 0o755),
]


def asset(name: str) -> bytes:
    return resources.files("pyswarm.lab").joinpath("assets", name).read_bytes()


def shared_libs(binary: Path) -> list[Path]:
    """Every library ldd lists for binary, including the dynamic loader."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"ldd {binary} failed: {e}") from e
    libs: list[Path] = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    if not libs:
        raise LabError(f"ldd found no libraries for {binary}: {out!r}")
    return libs


def _cache_key(libs: list[Path], busybox_path: Path, applets: list[str]) -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    h.update(busybox.cache_inputs(busybox_path))
    h.update("\n".join(applets).encode())
    h.update(asset("nginx.conf"))
    h.update(asset("udp-echo.c"))
    for p in [NGINX, *libs]:
        st = p.stat()  # follows symlinks: a library upgrade changes size/mtime
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _compile_udp_echo(workdir: Path) -> bytes:
    src = workdir / "udp-echo.c"
    src.write_bytes(asset("udp-echo.c"))
    out = workdir / "udp-echo"
    try:
        subprocess.run(
            ["gcc", "-static", "-O2", "-s", "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    except FileNotFoundError as e:
        raise LabError("gcc not found: install gcc and libc6-dev to build udp-echo") from e
    except subprocess.CalledProcessError as e:
        raise LabError(f"compiling udp-echo failed: {e.stderr.strip()}") from e
    return out.read_bytes()


def _add_dir(tar: tarfile.TarFile, path: str, mode: int) -> None:
    ti = tarfile.TarInfo(path)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = EPOCH
    tar.addfile(ti)


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes, mode: int) -> None:
    ti = tarfile.TarInfo(path)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = EPOCH
    tar.addfile(ti, io.BytesIO(data))


def build_layer(libs: list[Path], udp_echo: bytes) -> bytes:
    """The image's single layer: an uncompressed tar of the rootfs."""
    buf = io.BytesIO()
    # uid/gid default to 0 and uname/gname to empty: root-owned regardless of who builds it.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = dict(DIRS)
        for lib in libs:  # parent dirs of the libraries, e.g. lib/x86_64-linux-gnu
            parent = lib.parent.relative_to("/")
            for i in range(1, len(parent.parts) + 1):
                dirs.setdefault("/".join(parent.parts[:i]), 0o755)
        for d in sorted(dirs):
            _add_dir(tar, d, dirs[d])
        # Stored at the path ldd printed (content of the symlink target): the loader's default
        # search path finds them there, no ld.so.cache needed.
        for lib in libs:
            _add_bytes(tar, str(lib.relative_to("/")), lib.read_bytes(), 0o755)
        _add_bytes(tar, "usr/sbin/nginx", NGINX.read_bytes(), 0o755)
        _add_bytes(tar, "usr/local/bin/udp-echo", udp_echo, 0o755)
        _add_bytes(tar, "etc/nginx/nginx.conf", asset("nginx.conf"), 0o644)
        _add_bytes(tar, "etc/passwd", USERS.encode(), 0o644)
        _add_bytes(tar, "etc/group", GROUP.encode(), 0o644)
        _add_bytes(tar, "etc/nsswitch.conf", NSSWITCH.encode(), 0o644)
    return buf.getvalue()


def image_config(layer_digest: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": [PATH_ENV],
            "Cmd": ["/usr/sbin/nginx", "-g", "daemon off;"],
            "ExposedPorts": {"80/tcp": {}},
            # nginx's fast shutdown; udp-echo handles it too. Stops in well under a second.
            "StopSignal": "SIGTERM",
            "WorkingDir": "/",
            "Labels": {"org.pyswarm.lab.image": "nginx"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": CREATED, "created_by": "pyswarm lab: nginx-light + udp-echo"}],
    }


def build_archive(layer: bytes) -> tuple[bytes, str]:
    """A `docker save`-format archive of the nginx image; returns (archive, image id)."""
    archive, ids = pack_images([(IMAGE_REF, image_config, layer)])
    return archive, ids[0]


ConfigOf = Callable[[str], dict[str, Any]]  # an image's config, given its layer's digest


def pack_images(images: list[tuple[str, ConfigOf, bytes]]) -> tuple[bytes, list[str]]:
    """A `docker save`-format archive of single-layer images (reference, config, layer); (archive, image ids)."""
    manifest, ids = [], []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ref, config_of, layer in images:
            layer_digest = hashlib.sha256(layer).hexdigest()
            config = json.dumps(config_of(layer_digest), sort_keys=True, separators=(",", ":")).encode()
            image_id = hashlib.sha256(config).hexdigest()
            _add_dir(tar, layer_digest, 0o755)
            _add_bytes(tar, f"{layer_digest}/VERSION", b"1.0", 0o644)
            _add_bytes(tar, f"{layer_digest}/layer.tar", layer, 0o644)
            _add_bytes(tar, f"{image_id}.json", config, 0o644)
            manifest.append({"Config": f"{image_id}.json", "RepoTags": [ref], "Layers": [f"{layer_digest}/layer.tar"]})
            ids.append(f"sha256:{image_id}")
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode(), 0o644)
    return buf.getvalue(), ids


def ensure_image_archive(cache_dir: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """Path of the cached archive of the lab's images, building it first if the inputs changed."""
    if not NGINX.exists():
        raise LabError(f"{NGINX} not found: install Debian's nginx-light")
    libs = shared_libs(NGINX)
    busybox_path = busybox.find_busybox()
    applets = busybox.applets(busybox_path)
    path = cache_dir / f"nginx-{_cache_key(libs, busybox_path, applets)}.tar"
    if path.exists():
        log(f"image: using cached {path.name}")
        return path
    log("image: building the nginx and busybox rootfs")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyswarm-lab-img-") as tmp:
        udp_echo = _compile_udp_echo(Path(tmp))
        archive, _ids = pack_images(
            [
                (IMAGE_REF, image_config, build_layer(libs, udp_echo)),
                (busybox.BUSYBOX_REF, busybox.image_config, busybox.build_layer(busybox_path.read_bytes(), applets)),
            ]
        )
    # Atomic: a concurrent or interrupted build never leaves a half-written archive in the cache.
    fd, tmpname = tempfile.mkstemp(dir=cache_dir, prefix=".nginx-", suffix=".tar")
    with os.fdopen(fd, "wb") as f:
        f.write(archive)
    os.replace(tmpname, path)
    for old in cache_dir.glob("nginx-*.tar"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def clear_cache(cache_dir: Path) -> None:
    shutil.rmtree(cache_dir, ignore_errors=True)
