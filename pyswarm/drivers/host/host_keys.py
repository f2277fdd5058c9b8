"""Trusting SSH host keys: no trust on first use. A key is trusted when known_hosts has it, or when it
matches the fingerprint the caller pinned (then it can be recorded in known_hosts for every other client)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import paramiko

from pyswarm.drivers.host.errors import HostKeyError, HostKeyMismatch, HostUnreachable


def _trust_hint(host: str, port: int, key: paramiko.PKey) -> str:
    target = host if port == 22 else f"-p {port} {host}"
    return (
        f"check that {key.fingerprint} is the host's {key.get_name()} key (on the host: "
        f"`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then trust it with "
        f"`ssh-keyscan -t {key.get_name()} {target} >> ~/.ssh/known_hosts`, "
        f"or pin it by passing host_key_fingerprint={key.fingerprint!r}"
    )


class RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """No trust on first use: an unknown host key is an error that says how to trust it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(f"unknown SSH host key for {hostname}: {_trust_hint(self.host, self.port, key)}")


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept exactly the key whose fingerprint the caller pinned (`SHA256:...`, as ssh-keygen -l prints)."""

    def __init__(self, fingerprint: str) -> None:
        if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}", fingerprint):
            raise ValueError(f"host key fingerprint must look like SHA256:<43 base64>, got {fingerprint!r}")
        self.fingerprint = fingerprint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if key.fingerprint != self.fingerprint:
            raise HostKeyMismatch(
                f"SSH host key of {hostname} is {key.fingerprint} ({key.get_name()}), "
                f"not the pinned {self.fingerprint}: refusing to connect"
            )


def _user_known_hosts() -> Path:
    """The known_hosts file that every SSH client of the manager reads (docker-py's and paramiko's)."""
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def trust_pinned_host_key(
    host: str, port: int, fingerprint: str, known_hosts: Path | None = None, timeout: float = 5.0
) -> str | None:
    """Fetch host's SSH key, check it is the pinned one, and record it in known_hosts, so that every SSH
    client of the manager (docker-py's RejectPolicy included) trusts exactly that key. Returns the line it
    appended, or None when the key was known already.

    Raises ValueError for a malformed fingerprint, HostUnreachable when no SSH handshake could be made, and
    HostKeyMismatch when the host's key is not the pinned one."""
    policy = PinnedHostKey(fingerprint)  # validates the fingerprint's form
    known_hosts = known_hosts or _user_known_hosts()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise HostUnreachable(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError) as exc:
        raise HostUnreachable(f"{host}:{port}: SSH handshake failed: {exc}") from None
    finally:
        transport.close()
    policy.missing_host_key(paramiko.SSHClient(), host, key)  # raises HostKeyMismatch
    entry = host if port == 22 else f"[{host}]:{port}"
    known = paramiko.HostKeys()
    if known_hosts.exists():
        known.load(str(known_hosts))
        if known.check(entry, key):
            return None
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{entry} {key.get_name()} {key.get_base64()}"
    # Appended, not HostKeys.save(): that would rewrite the file and drop its comments.
    with open(known_hosts, "a") as handle:
        handle.write(line + "\n")
    os.chmod(known_hosts, 0o600)
    return line


def forget_host_key(line: str, known_hosts: Path | None = None) -> None:
    """Take back a line trust_pinned_host_key appended (its last occurrence): a refused join leaves
    known_hosts as it found it. Every other line, comments included, stays as it is."""
    known_hosts = known_hosts or _user_known_hosts()
    if not known_hosts.exists():
        return
    lines = known_hosts.read_text().splitlines(keepends=True)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip("\n") == line:
            del lines[index]
            break
    else:
        return
    temporary = known_hosts.with_name(known_hosts.name + ".pyswarm-tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(lines)
    os.replace(temporary, known_hosts)
