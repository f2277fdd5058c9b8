"""The lab's `busybox:latest` image: Debian's static busybox (busybox-static) FROM scratch, no registry needed.

The rootfs is /bin/busybox and a symlink for every applet it has (`busybox --list-full`: bin/sh, usr/bin/wget,
bin/nc, usr/bin/nslookup, ...), a minimal /etc and a world-writable /tmp. A static binary needs no libraries:
nothing else goes in. image.py packs it with the nginx image into the archive every node loads.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from pyswarm.lab.config import LabError

BUSYBOX_REF = "busybox:latest"
# busybox-static installs /bin/busybox; on a merged-/usr system that is /usr/bin/busybox as well.
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
# What a test or a debugging session reaches for; every one must be in the image (checked when it is built).
REQUIRED_APPLETS = ("sh", "ls", "cat", "sleep", "echo", "wget", "nc", "nslookup", "ping", "ps", "hostname", "ip")
EPOCH = 1_700_000_000  # the nginx image's: a fixed time keeps the image ID the same on every build
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DIRS: dict[str, int] = {
    "bin": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "root": 0o700,
    "sbin": 0o755,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
}
ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}


def find_busybox() -> Path:
    """The host's static busybox; LabError with what to install when there is none, or only a dynamic one."""
    for path in BUSYBOX_PATHS:
        if path.exists():
            break
    else:
        raise LabError("busybox not found: install Debian's busybox-static (apt-get install busybox-static)")
    try:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"ldd {path} failed: {e}") from e
    text = out.stdout + out.stderr
    if "not a dynamic executable" not in text and "statically linked" not in text:
        raise LabError(f"{path} is not a static binary: install busybox-static (not busybox) for the lab's image")
    return path


def applets(busybox: Path) -> list[str]:
    """Where each applet goes (`bin/sh`, `usr/bin/wget`), as the binary itself lists them."""
    try:
        out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"{busybox} --list-full failed: {e}") from e
    paths = sorted({line.strip().lstrip("/") for line in out.stdout.splitlines() if line.strip()})
    missing = [name for name in REQUIRED_APPLETS if not any(p.rsplit("/", 1)[-1] == name for p in paths)]
    if missing:
        raise LabError(f"{busybox} lacks applets the lab needs: {', '.join(missing)}")
    return [p for p in paths if p != "bin/busybox" and ".." not in p.split("/")]


def build_layer(binary: bytes, applet_paths: list[str]) -> bytes:
    """The image's single layer: an uncompressed tar of the rootfs, root-owned, with fixed times."""
    dirs = dict(DIRS)
    for path in applet_paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:i]), 0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            _add(tar, name, tarfile.DIRTYPE, dirs[name])
        _add(tar, "bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for path in applet_paths:
            _add(tar, path, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        for name, text in sorted(ETC.items()):
            _add(tar, name, tarfile.REGTYPE, 0o644, text.encode())
    return buf.getvalue()


def image_config(layer_digest: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": [PATH_ENV],
            "Cmd": ["sh"],
            "WorkingDir": "/",
            "Labels": {"org.pyswarm.lab.image": "busybox"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": CREATED, "created_by": "pyswarm lab: Debian busybox-static"}],
    }


def cache_inputs(busybox: Path) -> bytes:
    """What the built image depends on, for the archive's cache key: the binary (an upgrade changes it)."""
    st = busybox.stat()
    return f"{busybox}:{st.st_size}:{st.st_mtime_ns}".encode()


def _add(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = EPOCH
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
