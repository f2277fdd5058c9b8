"""Standalone dockerds (and an sshd in front of one) for the driver's real-engine tests, without the lab.

Each dockerd runs in this host's network namespace with no bridge and no iptables rules of its own (so it
touches nothing of the host's or the lab's), its data and exec roots in directories of its own, removed
afterwards. The sshd listens on 127.0.0.1, lets a key of the test's own log in as root, and sets
DOCKER_HOST for the session, so that docker-py's ssh:// (paramiko, then `docker system dial-stdio`) reaches
that dockerd, as the manager reaches a node's. Needs root, dockerd and (for ssh) sshd and the docker CLI:
`skip_reason()` says what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
SSHD = "/usr/sbin/sshd"


def skip_reason(ssh: bool = False) -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a standalone dockerd"
    if not os.access(DOCKERD, os.X_OK):
        return "dockerd is not installed"
    if ssh and not (os.access(SSHD, os.X_OK) and shutil.which("docker") and shutil.which("ssh-keygen")):
        return "ssh:// needs sshd, ssh-keygen and the docker CLI (for `docker system dial-stdio`)"
    return None


@dataclass
class Dockerd:
    url: str
    process: subprocess.Popen[bytes]
    root: Path
    exec_root: Path

    def api(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version="auto", timeout=60)


@contextlib.contextmanager
def dockerd(name: str) -> Iterator[Dockerd]:
    """A dockerd of its own; stopped and its directories removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"pyswarm-dockerd-{name}-", dir="/var/tmp"))
    # containerd's socket paths must stay short: the exec root goes under /run.
    exec_root = Path(tempfile.mkdtemp(prefix=f"psd-{name}-", dir="/run"))
    config = root / "daemon.json"
    config.write_text(json.dumps({"deprecated-key-path": str(root / "key.json")}))
    url = f"unix://{exec_root}/docker.sock"
    argv = [
        DOCKERD, "--config-file", str(config), "--data-root", str(root / "data"), "--exec-root", str(exec_root),
        "-H", url, "--pidfile", str(exec_root / "dockerd.pid"), "--bridge=none", "--iptables=false",
        "--ip-masq=false", "--shutdown-timeout", "5",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine = Dockerd(url, process, root, exec_root)
    try:
        _wait_for_ping(engine)
        yield engine
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(exec_root, ignore_errors=True)


@dataclass
class SshEngine:
    url: str  # ssh://root@127.0.0.1:PORT
    home: Path  # HOME for the client: its key and known_hosts


@contextlib.contextmanager
def sshd_for(engine: Dockerd) -> Iterator[SshEngine]:
    """An sshd on 127.0.0.1 whose root sessions reach engine; a HOME with the client key and known_hosts."""
    work = Path(tempfile.mkdtemp(prefix="pyswarm-sshd-"))
    home = work / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    quiet = {"capture_output": True, "check": True}
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh/id_ed25519")], **quiet)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], **quiet)
    (work / "authorized_keys").write_text((home / ".ssh/id_ed25519.pub").read_text())
    port = _free_port()
    host_key = (work / "host_key.pub").read_text().split()
    (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (work / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nPidFile {work}/sshd.pid\nHostKey {work}/host_key\n"
        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nAuthorizedKeysFile {work}/authorized_keys\nStrictModes no\nMaxSessions 100\nUseDNS no\n"
        f"SetEnv DOCKER_HOST={engine.url}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen([SSHD, "-D", "-f", str(work / "sshd_config"), "-E", str(work / "sshd.log")])
    try:
        deadline = time.monotonic() + 10
        while not _port_open(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"sshd did not start: {(work / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield SshEngine(f"ssh://root@127.0.0.1:{port}", home)
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_ping(engine: Dockerd) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(Exception):
            api = docker.APIClient(base_url=engine.url, version="1.41", timeout=2)
            api.ping()
            api.close()
            return
        if engine.process.poll() is not None or time.monotonic() > deadline:
            log = (engine.root / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"standalone dockerd did not answer: {log}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
