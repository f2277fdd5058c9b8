"""Small JSON files that hold tokens (client config, node.json, manager.json): read and written without
importing the manager, so the CLI's client commands stay fast to start."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a 0600 file atomically, in a private directory (see secure_dir): these files hold tokens."""
    secure_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


class UnsafeDirectory(RuntimeError):
    """A directory that would hold credentials can be written by other users; the message says what to do."""


def secure_dir(path: Path) -> Path:
    """A directory for files that hold credentials (each of them 0600).

    One that does not exist is created 0700 (its missing parents as `mkdir -p` makes them). The mode of one
    that exists is never changed: it may be a directory the user gave that is not ours alone (/tmp, mode
    1777, or a home directory), and what a chmod would take away from others is not ours to take. Instead:

    - one that belongs to another user (not root), or that users other than its owner can write to (group
      or others, sticky bit or not), is refused: they could replace our files, or make them first under the
      names we use (SQLite's state.db-wal, say, owned and readable by them), so no mode of our own files
      would keep the credentials private;
    - one that others can only read or list (0755, as `mkdir` makes it) is used as it is: every file we put
      in it is 0600 (SQLite gives its -wal and -shm files the database's mode), so others see names only.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # ours, new: exactly 0700, whatever the umask
        return path
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafeDirectory(
            f"{path} belongs to another user (uid {info.st_uid}), who could replace the files in it, and it would "
            "hold credentials: use a directory of your own (one that does not exist yet is created 0700)"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = "other users" if mode & 0o002 else "its group"
        raise UnsafeDirectory(
            f"{path} can be written by {who} (mode {mode:04o}), and it would hold credentials: "
            f"use a directory of your own (one that does not exist yet is created 0700), or remove their "
            f"write access (chmod go-w {path}) if it is yours alone"
        )
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{path} is unreadable ({exc}); remove it to start over") from None
    return data if isinstance(data, dict) else None
