"""Running the manager: settings on disk, the API server, and the node-local state file."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pyswarm.manager.files import read_json, write_private_json

if TYPE_CHECKING:
    from pyswarm.manager.settings import Settings

# The CLI imports this module for the paths and settings below; the manager itself (its rooms, the API,
# uvicorn, the docker SDK) is imported only where it is run or built, so client commands start fast.

DEFAULT_DATA_DIR = Path("/var/lib/pyswarm")
# Exit status for a manager that cannot start until an operator acts (systemd: RestartPreventExitStatus=78).
EXIT_CONFIG = 78
SETTINGS_FILE = "manager.json"
NODE_FILE = "node.json"
PID_FILE = "manager.pid"
LOG_FILE = "manager.log"


def data_dir() -> Path:
    return Path(os.environ.get("PYSWARM_DATA_DIR") or DEFAULT_DATA_DIR)


def save_settings(settings: Settings, listen_host: str) -> None:
    data = asdict(settings)
    data["data_dir"] = str(settings.data_dir)
    data["listen_host"] = listen_host
    write_private_json(settings.data_dir / SETTINGS_FILE, data)


def load_settings(directory: Path) -> tuple[Settings, str]:
    from pyswarm.manager.settings import Settings

    data = read_json(directory / SETTINGS_FILE)
    if data is None:
        raise RuntimeError(f"no manager here: {directory / SETTINGS_FILE} is missing (run `pyswarm swarm init`)")
    listen_host = data.pop("listen_host", "0.0.0.0")
    data["data_dir"] = Path(data["data_dir"])
    known = {k: v for k, v in data.items() if k in Settings.__dataclass_fields__}
    return Settings(**known), listen_host


def serve(directory: Path) -> None:
    """Run the manager in the foreground until SIGTERM/SIGINT (what `pyswarm manager` and systemd run)."""
    import uvicorn

    from pyswarm.manager.api import create_app
    from pyswarm.manager.api.limits import server_limits
    from pyswarm.manager.certificates import ensure_manager_certificate
    from pyswarm.manager.ingress import MeshSync
    from pyswarm.manager.manager import Manager
    from pyswarm.manager.store import STATE_FILE

    settings, listen_host = load_settings(directory)
    if not (directory / STATE_FILE).exists():
        # Starting empty would forget every service while their containers keep running.
        raise RuntimeError(
            f"the state file {directory / STATE_FILE} is missing: restore it from a backup, or remove "
            f"{directory / SETTINGS_FILE} and run `pyswarm swarm init` to start a new swarm"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    manager = Manager(settings)
    mesh = MeshSync(manager.read, manager.nodes)
    manager.attach_mesh(mesh)
    mesh.start()
    manager.start()
    (directory / PID_FILE).write_text(str(os.getpid()))
    # TLS always: a client that speaks plain HTTP gets no answer.
    addresses = [settings.advertise_addr, "127.0.0.1", *([listen_host] if listen_host != "0.0.0.0" else [])]
    cert, key = ensure_manager_certificate(directory, addresses)
    config = uvicorn.Config(
        create_app(manager),
        host=listen_host,
        port=settings.listen_port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        **server_limits(),
    )
    server = uvicorn.Server(config)
    stop = threading.Event()

    def _shutdown(*_: object) -> None:
        stop.set()
        server.should_exit = True

    signal.signal(signal.SIGTERM, _shutdown)
    try:
        server.run()
    finally:
        manager.close()
        (directory / PID_FILE).unlink(missing_ok=True)
