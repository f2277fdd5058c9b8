"""`swarm` (init, join, join-token, leave) and `manager`: this machine's membership of a swarm."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from pyswarm.cli.client import (
    Api,
    config_path,
    fail,
    remove_client_config,
    save_client_config,
    tls_context,
    verified_ca,
)
from pyswarm.cli.engine_access import engine_access, engine_access_options, local_engine, local_engine_url
from pyswarm.manager.daemon import EXIT_CONFIG, LOG_FILE, NODE_FILE, PID_FILE, data_dir, save_settings, serve
from pyswarm.manager.files import read_json, write_private_json
from pyswarm.model import parse

# The docker SDK (drivers.engine) and the manager (core, store) are imported inside the commands that use
# them: client commands only talk HTTP to the manager and should start fast.

# --- swarm ---------------------------------------------------------------------------------------------


def _split_addr(text: str, default_port: int = 2377) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    try:
        socket.inet_aton(host) if host.count(".") == 3 else None
    except OSError:
        fail(f"invalid address {text!r}")
    if not host or not re.fullmatch(r"[A-Za-z0-9.\-]{1,253}", host):
        fail(f"invalid address {text[:80]!r}: expected HOST[:PORT]")
    try:
        return host, parse.port_number(port, "port") if port else default_port
    except parse.SpecError as exc:
        fail(f"invalid address {text[:80]!r}: {exc}")


def _primary_ip() -> str:
    """The address this host uses for its default route (no packet is sent by a UDP connect)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _source_addr_towards(host: str, port: int) -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, port))
        return str(probe.getsockname()[0])
    finally:
        probe.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _manager_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _start_daemon(directory: Path) -> subprocess.Popen[bytes]:
    log = open(directory / LOG_FILE, "ab")  # noqa: SIM115 - handed to the daemon process
    os.chmod(directory / LOG_FILE, 0o600)
    return subprocess.Popen(
        [sys.executable, "-m", "pyswarm.cli.main", "manager", "--data-dir", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
    )


def _wait_api(host: str, token: str, ca: str, process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    context = tls_context(ca)
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            fail(f"the manager exited at start (code {process.returncode}); see {data_dir() / LOG_FILE}")
        try:
            headers = {"Authorization": f"Bearer {token}"}
            response = httpx.get(f"{host}/info", headers=headers, timeout=2, verify=context)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # the daemon answers about 0.5 s after it starts: a coarser poll adds to every init
    fail(f"the manager did not answer at {host} within {timeout:.0f}s; see {data_dir() / LOG_FILE}")


@click.group()
def swarm() -> None:
    """Manage the swarm: init, join, join-token, leave."""


@swarm.command("init")
@click.option("--listen-addr", default="0.0.0.0:2377", show_default=True, help="Address the API listens on.")
@click.option(
    "--advertise-addr", default=None, help="Address other nodes and clients use (default: from --listen-addr)."
)
@click.option(
    "--availability",
    default="active",
    type=click.Choice(["active", "pause", "drain"]),
    help="Availability of this node (drain: manager only).",
)
@click.option(
    "--engine", "engine_url", default=None, help="This node's engine (default: DOCKER_HOST or the local socket)."
)
@click.option(
    "--heartbeat",
    default="500ms",
    show_default=True,
    help=(
        "Engine heartbeat period. A node is Down after 3 missed pings, or after 2 if its host also refuses TCP."
        " In a large swarm it stretches so that the manager sends at most 1,000 pings a second."
    ),
)
def swarm_init(
    listen_addr: str, advertise_addr: str | None, availability: str, engine_url: str | None, heartbeat: str
) -> None:
    """Initialise a swarm: this node becomes its manager (and, by default, a worker too)."""
    from pyswarm.drivers.engine import validate_engine_url
    from pyswarm.manager.certificates import read_ca
    from pyswarm.manager.errors import ManagerError
    from pyswarm.manager.manager import Manager
    from pyswarm.manager.settings import Settings
    from pyswarm.manager.store import StoreError

    directory = data_dir()
    if read_json(directory / NODE_FILE):
        fail(
            "This node is already part of a swarm. Use `pyswarm swarm leave` to leave this swarm and join another one."
        )
    listen_host, listen_port = _split_addr(listen_addr)
    if advertise_addr:
        advertise_host, _ = _split_addr(advertise_addr, listen_port)
    else:
        advertise_host = listen_host if listen_host != "0.0.0.0" else _primary_ip()
    engine_url = engine_url or local_engine_url()
    try:
        validate_engine_url(engine_url)
    except ValueError as exc:
        fail(str(exc))
    try:
        heartbeat_period = parse.duration(heartbeat)
    except parse.SpecError as exc:
        fail(f"--heartbeat: {exc}")
    if not 0.1 <= heartbeat_period <= 60:
        fail(f"--heartbeat {heartbeat}: must be from 100ms to 60s")
    settings = Settings(
        data_dir=directory, advertise_addr=advertise_host, listen_port=listen_port, heartbeat=heartbeat_period
    )
    try:
        manager = Manager(settings)
        node = manager.registration.initialise(engine_url, advertise_host, parse.availability(availability))
    except (ManagerError, StoreError) as exc:
        fail(str(exc))
    token_client = manager.credentials.client_token()
    token_worker = manager.credentials.join_token("worker", rotate=False)
    manager.store.close()
    save_settings(settings, listen_host)
    host = f"https://{advertise_host}:{listen_port}"
    ca = read_ca(directory) or ""
    process = _start_daemon(directory)
    _wait_api(host, token_client, ca, process)
    write_private_json(directory / NODE_FILE, {"role": "manager", "node_id": node.id, "manager": host, "ca": ca})
    save_client_config(host, token_client, ca)
    click.echo(f"Swarm initialized: current node ({node.id}) is now a manager.\n")
    click.echo("To add a worker to this swarm, run the following command:\n")
    click.echo(f"    pyswarm swarm join --token {token_worker} {advertise_host}:{listen_port}\n")
    click.echo("To add a manager to this swarm, run 'pyswarm swarm join-token manager' and follow the instructions.")


@swarm.command("join")
@click.option("--token", required=True, help="Join token (worker or manager).")
@click.option(
    "--advertise-engine",
    default=None,
    help="URL the manager uses to reach this node's engine: ssh://user@host or tcp://host:2376.",
)
@engine_access_options
@click.argument("remote_addr")
def swarm_join(
    token: str,
    advertise_engine: str | None,
    tlscacert: str | None,
    tlscert: str | None,
    tlskey: str | None,
    insecure_tcp: bool,
    ssh_fingerprint: str | None,
    remote_addr: str,
) -> None:
    """Join this node's engine to a swarm (or, with its node.json, take its place back in it once it is Down)."""
    from pyswarm.drivers.engine import EngineError

    directory = data_dir()
    joined = read_json(directory / NODE_FILE)
    host, port = _split_addr(remote_addr)
    if joined and not _same_manager(joined, host, port):
        fail(
            "This node is already part of a swarm. Use `pyswarm swarm leave` to leave this swarm and join another one."
        )
    try:
        source = _source_addr_towards(host, port)
    except OSError as exc:
        fail(f"cannot route to the manager at {host}:{port}: {exc.strerror or exc}")
    engine_url = advertise_engine or f"ssh://{_user()}@{source}"
    access = engine_access(engine_url, tlscacert, tlscert, tlskey, insecure_tcp, ssh_fingerprint)
    try:
        local = local_engine(timeout=10)
        engine_id = local.info().id
        local.close()
    except EngineError as exc:
        fail(f"cannot read this node's engine at {local_engine_url()}: {exc}")
    manager = f"https://{host}:{port}"
    ca = verified_ca(manager, token)  # before the token or anything else is sent
    body = {"engine_url": engine_url, "engine_id": engine_id, "addr": source, **access}
    body["advertise_engine"] = advertise_engine is not None
    if joined:  # only to the manager that gave it: the only way to take this node's place back once it is Down
        body["node_secret"] = joined["node_secret"]
    data = _request_join(manager, ca, token, body)
    node = {"role": data["role"], "node_id": data["node_id"], "manager": manager, "ca": ca}
    write_private_json(directory / NODE_FILE, {**node, "node_secret": data["node_secret"]})
    if data.get("client_token"):
        save_client_config(manager, data["client_token"], ca)
    click.echo(f"This node joined a swarm as a {data['role']}.")


def _same_manager(joined: dict[str, Any], host: str, port: int) -> bool:
    """This node's node.json is from joining the manager at host:port, and holds its node secret."""
    from urllib.parse import urlparse

    try:
        manager = urlparse(str(joined.get("manager", "")))
        return bool(joined.get("node_secret")) and (manager.hostname, manager.port) == (host, port)
    except ValueError:
        return False


def _request_join(manager: str, ca: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /swarm/join to the manager, trusting its CA only; its answer (role, node ID, secrets), or exit 1."""
    try:
        response = httpx.post(
            f"{manager}/swarm/join",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            verify=tls_context(ca),
        )
    except httpx.TransportError as exc:
        fail(f"cannot reach a manager at {manager}: {exc}")
    if response.status_code >= 400:
        detail = (
            response.json().get("detail")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        if response.status_code == 401:
            detail = "invalid join token"
        fail(f"join refused: {detail}")
    data: dict[str, Any] = response.json()
    return data


def _user() -> str:
    import getpass

    return getpass.getuser()


@swarm.command("join-token")
@click.option("-q", "--quiet", is_flag=True, help="Only display the token.")
@click.option("--rotate", is_flag=True, help="Rotate the join token (the old one stops working at once).")
@click.argument("role", type=click.Choice(["worker", "manager"]))
def swarm_join_token(quiet: bool, rotate: bool, role: str) -> None:
    """Show or rotate a join token."""
    api = Api()
    data = api.post(f"/swarm/join-token/{role}/rotate") if rotate else api.get(f"/swarm/join-token/{role}")
    info = api.get("/info")
    if quiet:
        click.echo(data["token"])
        return
    if rotate:
        click.echo(f"Successfully rotated {role} join token.\n")
    click.echo(f"To add a {role} to this swarm, run the following command:\n")
    click.echo(f"    pyswarm swarm join --token {data['token']} {info['manager_addr']}\n")


@swarm.command("leave")
@click.option("-f", "--force", is_flag=True, help="Leave even as the manager: stops it and removes the swarm.")
def swarm_leave(force: bool) -> None:
    """Leave the swarm (on the manager: stop it)."""
    directory = data_dir()
    state = read_json(directory / NODE_FILE)
    if not state:
        fail("This node is not part of a swarm.")
    if state.get("role") == "manager" and state.get("node_id") and (directory / "state.db").exists():
        if not force:
            fail(
                "You are attempting to leave the swarm on a node that is its manager. Removing the last "
                "manager erases all current state of the swarm. Use `--force` to ignore this message."
            )
        _stop_manager(directory)
        for name in ("state.db", "state.db-wal", "state.db-shm", "manager.json", NODE_FILE):
            (directory / name).unlink(missing_ok=True)
        shutil.rmtree(directory / "certificates", ignore_errors=True)  # a new swarm gets a new CA
        remove_client_config()
        click.echo("Node left the swarm.")
        return
    try:
        if not state.get("ca"):
            raise httpx.ConnectError("this node has no CA certificate of its swarm to check the manager with")
        response = httpx.post(
            f"{state['manager']}/swarm/leave",
            headers={"Authorization": f"Bearer {state.get('node_secret', '')}"},
            timeout=10,
            verify=tls_context(state["ca"]),
        )
        if response.status_code >= 400 and not force:
            fail(f"the manager refused: {response.text}; use --force to leave anyway")
    except httpx.TransportError as exc:
        if not force:
            fail(f"cannot reach the manager ({exc}); use --force to leave anyway")
    (directory / NODE_FILE).unlink(missing_ok=True)
    click.echo("Node left the swarm.")


def _stop_manager(directory: Path) -> None:
    config = read_json(directory / NODE_FILE) or {}
    host = config.get("manager", "")
    token = (read_json(config_path()) or {}).get("token", "")
    # Remove every service first, so no container and no mesh rule outlives the swarm.
    if host and token and config.get("ca"):
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(headers=headers, timeout=10, verify=tls_context(config["ca"])) as client:
                for service in client.get(f"{host}/services").json():
                    client.delete(f"{host}/services/{service['id']}")
                deadline = time.time() + 30
                while time.time() < deadline and client.get(f"{host}/tasks").json():
                    time.sleep(0.3)
        except (httpx.HTTPError, ValueError):
            pass
    pid = _manager_pid(directory)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while _pid_alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@click.command("manager")
@click.option(
    "--data-dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="State directory (default: PYSWARM_DATA_DIR or /var/lib/pyswarm).",
)
def manager_cmd(directory: Path | None) -> None:
    """Run the manager in the foreground (what `swarm init` starts in the background; use it under systemd)."""
    from pyswarm.manager.store import StoreError

    try:
        serve(directory or data_dir())
    except (RuntimeError, StoreError) as exc:
        fail(str(exc), code=EXIT_CONFIG)


# --- this machine's membership --------------------------------------------------------------------------


def current_node_id() -> str:
    """This machine's node ID in its swarm (from the node.json that `swarm init`/`join` wrote), or ""."""
    return str((read_json(data_dir() / NODE_FILE) or {}).get("node_id", ""))
