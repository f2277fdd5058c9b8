"""Small JSON files that hold tokens (client config, node.json, manager.json): read and written without
importing the manager, so the CLI's client commands stay fast to start."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a 0600 file atomically (its directory made 0700): these files hold tokens."""
    secure_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def secure_dir(path: Path) -> Path:
    """Create a 0700 directory, or make one that others can read or write private."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o700)
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
