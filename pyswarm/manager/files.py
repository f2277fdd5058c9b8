"""Small JSON files that hold tokens (client config, node.json, manager.json): read and written without
importing the manager, so the CLI's client commands stay fast to start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write a 0600 file atomically (its directory made 0700): these files hold tokens."""
    from pyswarm.manager.store import secure_dir  # only on a write: the store module imports sqlite3

    secure_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{path} is unreadable ({exc}); remove it to start over") from None
    return data if isinstance(data, dict) else None
