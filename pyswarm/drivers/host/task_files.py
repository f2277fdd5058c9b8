"""A task's secret and config files on its node: written into a tmpfs through a HostRunner, and removed.

Layout: `<base>/<task_id>/<name>`, base a tmpfs (mounted 0700, nodev, nosuid, noexec, when it is not a mount
point yet), each task's directory 0700 root; each file has the owner and mode its reference asks for. The
caller bind-mounts each file read-only at its target in the container: the container reaches it through the
mount, so the 0700 directories above it keep it from anyone else on the host.

The files go to the node as a tar archive on the standard input of `tar -x` (made here, with the exact
owners and modes): one command per task over SSH, and the data never in an argv, which `ps` shows to every
user of the node. Task IDs and file names are checked, so that no path leaves the task's directory.
"""

from __future__ import annotations

import io
import re
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyswarm.drivers.host.errors import HostError
from pyswarm.drivers.host.runner import CommandResult, HostRunner
from pyswarm.model import FileReference

DEFAULT_BASE = "/run/pyswarm-secrets"
TMPFS_OPTIONS = "nodev,nosuid,noexec,mode=0700"

# A task ID (ours are 25 lowercase alphanumerics) and a file name: one path component, never `.` or `..`.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BASE = re.compile(r"(/[A-Za-z0-9_.-]+)+")

# Two tasks starting on one node at once must not both find the base unmounted and mount a tmpfs each (the
# second would hide the first one's files): one lock per host and base, for this process. A runner's repr
# names its host (SshHost(root@10.0.0.2:22), LocalHost(netns=...)), so two runners to one host share it.
_mount_locks: dict[tuple[str, str], threading.Lock] = {}
_mount_locks_guard = threading.Lock()


class TaskFilesError(HostError):
    """The node refused to make, fill or remove a task's files directory."""


@dataclass(frozen=True)
class TaskFile:
    name: str  # the file's name in the task's directory
    data: bytes = field(repr=False)  # a secret's: never in a repr, a log or an error
    uid: int = 0
    gid: int = 0
    mode: int = 0o444


def task_files(items: Sequence[tuple[FileReference, bytes]]) -> tuple[TaskFile, ...]:
    """One file per reference, named by its position ("0", "1", ...), with the reference's owner and mode."""
    return tuple(
        TaskFile(name=str(n), data=data, uid=int(ref.uid), gid=int(ref.gid), mode=ref.mode)
        for n, (ref, data) in enumerate(items)
    )


def task_dir(task_id: str, base: str = DEFAULT_BASE) -> str:
    return f"{_checked_base(base)}/{_checked(task_id, _TASK_ID, 'task ID')}"


def write_task_files(
    runner: HostRunner,
    task_id: str,
    files: Sequence[TaskFile],
    base: str = DEFAULT_BASE,
    *,
    mount: bool = True,
    timeout: float = 30,
) -> tuple[str, ...]:
    """Write the task's files (replacing any of the same names) and return their host paths, in order.
    mount=False leaves out the tmpfs mount (for tests that cannot mount: the base is then a plain directory)."""
    directory = task_dir(task_id, base)
    names = [_checked(f.name, _FILE_NAME, "file name") for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"task {task_id}'s file names are not unique")
    for item in files:
        if not (0 <= item.uid < 2**32 and 0 <= item.gid < 2**32 and 0 <= item.mode <= 0o777):
            raise ValueError(f"task {task_id}'s file {item.name}: uid, gid or mode out of range")
    ensure_base(runner, base, mount=mount, timeout=timeout)
    archive = _archive(task_id, files)
    _run(runner, ["tar", "-x", "-p", "--numeric-owner", "-C", _checked_base(base), "-f", "-"], archive, timeout)
    return tuple(f"{directory}/{name}" for name in names)


def remove_task_files(runner: HostRunner, task_id: str, base: str = DEFAULT_BASE, *, timeout: float = 30) -> None:
    """Remove the task's directory and its files; a task that has none is fine."""
    _run(runner, ["rm", "-rf", "--", task_dir(task_id, base)], None, timeout)


def ensure_base(runner: HostRunner, base: str = DEFAULT_BASE, *, mount: bool = True, timeout: float = 30) -> None:
    """The base directory exists, and with mount, it is a mount point (a tmpfs, mounted now when not)."""
    base = _checked_base(base)
    key = (repr(runner), base)
    with _mount_locks_guard:
        lock = _mount_locks.setdefault(key, threading.Lock())
    with lock:
        if mount and runner.run(["mountpoint", "-q", "--", base], timeout=timeout).ok:
            return  # the usual case: one command
        _run(runner, ["mkdir", "-p", "-m", "0700", "--", base], None, timeout)
        if mount:
            _run(runner, ["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", base], None, timeout)


def _archive(task_id: str, files: Sequence[TaskFile]) -> bytes:
    """The task's directory (0700, root's) and its files, as tar -x makes them when run as root (as a user,
    it keeps the modes and makes the files that user's)."""
    now = time.time()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directory = tarfile.TarInfo(task_id)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o700, int(now)
        archive.addfile(directory)
        for item in files:
            info = tarfile.TarInfo(f"{task_id}/{item.name}")
            info.size, info.mode, info.uid, info.gid = len(item.data), item.mode, item.uid, item.gid
            info.mtime = int(now)
            archive.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def _run(runner: HostRunner, argv: list[str], stdin: bytes | None, timeout: float) -> CommandResult:
    result = runner.run(argv, stdin=stdin, timeout=timeout)
    if not result.ok:
        # argv holds paths only; stdin (the data) is never shown.
        raise TaskFilesError(f"{runner!r}: {' '.join(argv)}: exit {result.exit_code}: {result.err.strip()[:500]}")
    return result


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value[:80]!r}")
    return value


def _checked_base(base: str) -> str:
    """An absolute path without `.`, `..` or empty parts (and not /): rm -rf works under it."""
    if not _BASE.fullmatch(base) or any(part in (".", "..") for part in base.split("/")):
        raise ValueError(f"invalid base directory {base[:80]!r}: an absolute path without '.' or '..' parts")
    return base
