"""Thin wrappers over Linux plumbing: commands, /proc, mounts, links, iptables, cgroups."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pyswarm.lab.config import LabError

MNT_DETACH = 2
IFF_UP = 0x1


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; on failure raise LabError carrying its stderr."""
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: not found") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g} s") from e
    if check and cp.returncode != 0:
        msg = (cp.stderr or cp.stdout).strip()
        raise LabError(f"{' '.join(argv)} failed ({cp.returncode}): {msg}")
    return cp


def tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return f"(no {path})"
    text = "\n".join(data.decode(errors="replace").splitlines()[-lines:])
    return text or f"({path} is empty)"


# ---------------------------------------------------------------- processes

# Daemons we started from this process (dockerd): polled so they never linger as zombies.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    """True if pid runs; zombies count as dead (and are reaped if they are our children)."""
    child = CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state field follows the parenthesised command name, which may itself contain ") ".
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def ns_inode(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pid_netns(pid: int) -> int | None:
    return ns_inode(f"/proc/{pid}/ns/net")


def pid_exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def own_lineage() -> set[int]:
    """Our pid and our ancestors: never kill those, even if they sit in a lab namespace."""
    pids: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def pids_in_netns(inode: int) -> list[int]:
    return [p for p in all_pids() if pid_netns(p) == inode]


def terminate(pids: Iterable[int], timeout: float, sig: int = signal.SIGTERM) -> list[int]:
    """Send sig, wait up to timeout for all to exit, SIGKILL the rest. Returns the pids that were hit."""
    protected = own_lineage()
    targets = [p for p in pids if p not in protected and pid_alive(p)]
    for p in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in targets):
        time.sleep(0.05)
    left = [p for p in targets if pid_alive(p)]
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p) for p in left):
        time.sleep(0.05)
    return targets


# ---------------------------------------------------------------- mounts


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[str]:
    """Mount points, in mount order."""
    points = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 4:
            points.append(_unescape_mountinfo(parts[4]))
    return points


def is_under(path: str, prefixes: Iterable[Path | str]) -> bool:
    for pre in prefixes:
        pre_s = str(pre).rstrip("/")
        if path == pre_s or path.startswith(pre_s + "/"):
            return True
    return False


def mounts_under(prefixes: Sequence[Path | str]) -> list[str]:
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    return [m for m in parse_mountinfo(text) if is_under(m, prefixes)]


_libc: ctypes.CDLL | None = None


def _umount2(path: str, flags: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.umount2(path.encode(), flags) == 0:
        return 0
    return ctypes.get_errno()


def unmount_under(prefixes: Sequence[Path | str]) -> list[str]:
    """Unmount everything mounted under the prefixes, deepest (and latest) first, lazily if busy."""
    done: list[str] = []
    for _ in range(20):  # stacked mounts on one point need several passes
        points = mounts_under(prefixes)
        if not points:
            break
        # Latest mount first within the same depth so stacked mounts peel off in order.
        order = sorted(enumerate(points), key=lambda ip: (ip[1].count("/"), ip[0]), reverse=True)
        for _i, p in order:
            err = _umount2(p, 0)
            if err not in (0, errno.EINVAL, errno.ENOENT):
                err = _umount2(p, MNT_DETACH)
            if err == 0:
                done.append(p)
    return done


# ---------------------------------------------------------------- links, iptables, cgroups


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def link_is_up(name: str) -> bool:
    try:
        flags = int(Path("/sys/class/net", name, "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & IFF_UP)


def iptables_has(rule: Sequence[str]) -> bool:
    return run(["iptables", "-w", "-C", *rule], check=False).returncode == 0


def iptables_ensure(rule: Sequence[str]) -> None:
    """Insert rule (chain first in `rule`) unless it is already there."""
    if not iptables_has(rule):
        run(["iptables", "-w", "-I", *rule])


def iptables_remove(rule: Sequence[str]) -> bool:
    removed = False
    for _ in range(10):  # it may have been inserted more than once by hand
        if not iptables_has(rule):
            break
        run(["iptables", "-w", "-D", *rule], check=False)
        removed = True
    return removed


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(rel: str) -> list[Path]:
    """The directories of cgroup `rel` (e.g. /pyswarm-lab/node-01) in every mounted hierarchy."""
    rel = rel.strip("/")
    dirs = []
    if (CGROUP_ROOT / "cgroup.procs").exists():  # pure cgroup v2
        dirs.append(CGROUP_ROOT / rel)
    with contextlib.suppress(OSError):
        for h in CGROUP_ROOT.iterdir():
            if h.is_dir() and not h.is_symlink():
                dirs.append(h / rel)
    return [d for d in dirs if d.is_dir()]


def cgroup_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(rel):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def cgroup_remove(rel: str) -> None:
    for top in cgroup_dirs(rel):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


# ---------------------------------------------------------------- engine / tcp probes


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def engine_request(
    sock: Path,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    """One HTTP request to a Docker Engine's unix socket: (status, body). Raises OSError."""
    conn = _UnixHTTPConnection(str(sock), timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as e:
        raise OSError(f"{method} {path}: {e}") from e
    finally:
        conn.close()


def engine_json(sock: Path, path: str, timeout: float = 10) -> Any:
    status, data = engine_request(sock, "GET", path, timeout=timeout)
    if status != 200:
        raise OSError(f"GET {path}: HTTP {status}: {data[:200]!r}")
    return json.loads(data)


def docker_ping(sock: Path, timeout: float = 2.0) -> bool:
    """GET /_ping on a Docker unix socket; cheaper than building an SDK client."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = s.recv(256)
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and data.split(b" ", 2)[1:2] == [b"200"]


def tcp_open(addr: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False
