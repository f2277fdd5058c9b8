"""Host commands over SSH (paramiko): one shared connection per host, a channel per command."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pyswarm.drivers.host.errors import HostCommandTimeout, HostError, HostKeyError, HostUnreachable
from pyswarm.drivers.host.host_keys import PinnedHostKey, RejectUnknownHostKey
from pyswarm.drivers.host.runner import SUDO, CommandResult, check_argv

# paramiko's transport thread logs every failed connection attempt with a traceback at ERROR level; the
# failure reaches the caller as HostUnreachable anyway. Quiet by default; lower this logger's level to debug.
PARAMIKO_LOG = "pyswarm.drivers.host.paramiko"
logging.getLogger(PARAMIKO_LOG).setLevel(logging.CRITICAL)


def build_remote_command(argv: Sequence[str], sudo: bool) -> str:
    """The command line sent over SSH: every word shell-quoted, `sudo -n` in front when asked."""
    words = check_argv(argv)
    return shlex.join([*SUDO, *words] if sudo else words)


def _permanent(exc: BaseException) -> bool:
    return isinstance(exc, HostKeyError | paramiko.AuthenticationException | paramiko.BadHostKeyException)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError | EOFError | paramiko.SSHException) and not _permanent(exc)


class SshHost:
    """Runs commands on a host over SSH (paramiko). One connection, shared by all threads (a new channel per
    command), reconnected with a few backed-off retries when it breaks.

    Host keys: ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts, UserKnownHostsFile from ~/.ssh/config and
    `known_hosts`; an unknown key is refused, never trusted on first use (HostKeyError says how to trust it).
    Or pin one: host_key_fingerprint="SHA256:..." (then only that key is accepted; known_hosts are not read).
    Auth: IdentityFile from ~/.ssh/config (IdentitiesOnly honoured), the agent, default keys.
    sudo (`sudo -n`): by default when the user is not root."""

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        known_hosts: str | Path | None = None,
        host_key_fingerprint: str | None = None,
        key_filename: str | Path | None = None,
        ssh_config: str | Path | None = "~/.ssh/config",
        connect_timeout: float = 10.0,
        sudo: bool | None = None,
        attempts: int = 3,
    ) -> None:
        config: dict[str, Any] = {}
        config_path = Path(ssh_config).expanduser() if ssh_config else None
        if config_path and config_path.is_file():
            config = dict(paramiko.SSHConfig.from_path(str(config_path)).lookup(host))
        self.alias = host
        self.hostname: str = config.get("hostname", host)
        self.user: str = user or config.get("user") or os.environ.get("USER") or "root"
        self.port: int = int(port or config.get("port") or 22)
        self.proxy_command: str | None = config.get("proxycommand")
        identities = [str(key_filename)] if key_filename else list(config.get("identityfile", []))
        # paramiko raises on a missing key file instead of skipping it, as ssh does.
        self.key_filenames = [p for p in (os.path.expanduser(i) for i in identities) if os.path.isfile(p)]
        # IdentitiesOnly: only the configured keys, as ssh does (no agent, no default key files).
        self.identities_only = str(config.get("identitiesonly", "no")).lower() == "yes"
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else None
        if self.known_hosts and not self.known_hosts.is_file():
            raise ValueError(f"known_hosts file {self.known_hosts} does not exist")
        self.known_hosts_files = [
            path
            for path in (
                Path("~/.ssh/known_hosts").expanduser(),
                Path("/etc/ssh/ssh_known_hosts"),
                *(Path(f).expanduser() for f in str(config.get("userknownhostsfile", "")).split()),
                self.known_hosts,
            )
            if path is not None
        ]
        self.policy: paramiko.MissingHostKeyPolicy = (
            PinnedHostKey(host_key_fingerprint)
            if host_key_fingerprint
            else RejectUnknownHostKey(self.hostname, self.port)
        )
        self.connect_timeout = connect_timeout
        self.sudo = self.user != "root" if sudo is None else sudo
        self.attempts = max(1, attempts)
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SshHost({self.user}@{self.hostname}:{self.port})"

    def command(self, argv: Sequence[str]) -> str:
        return build_remote_command(argv, self.sudo)

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_log_channel(PARAMIKO_LOG)
        if not isinstance(self.policy, PinnedHostKey):
            # As "system" keys: paramiko never writes those back.
            for path in self.known_hosts_files:
                if path.is_file():
                    client.load_system_host_keys(str(path))
        client.set_missing_host_key_policy(self.policy)
        sock = paramiko.ProxyCommand(self.proxy_command) if self.proxy_command else None
        try:
            client.connect(
                self.hostname,
                port=self.port,
                username=self.user,
                # A list is fine (paramiko tries each); the stubs say str.
                key_filename=self.key_filenames or None,  # type: ignore[arg-type]
                allow_agent=not self.identities_only,
                look_for_keys=not self.identities_only,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                sock=sock,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"SSH host key of {self.hostname} changed: it offers {exc.key.fingerprint}, known_hosts has "
                f"{exc.expected_key.fingerprint}. If that is expected (host reinstalled), "
                f"`ssh-keygen -R {self.hostname}` and trust the new key; otherwise someone may be in between"
            ) from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)  # notice dead peers, keep NAT state alive
        return client

    def _drop(self, client: paramiko.SSHClient) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        client.close()

    def _open_channel(self) -> paramiko.Channel:
        """A session channel on the shared connection, (re)connecting as needed. Safe to retry: no command
        has been started yet."""
        with self._lock:
            client = self._client
            transport = client.get_transport() if client else None
            if client is None or transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                self._client = client = self._connect()
                transport = client.get_transport()
        assert transport is not None
        try:
            return transport.open_session(timeout=self.connect_timeout)
        except BaseException:
            self._drop(client)
            raise

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult:
        command = self.command(argv)
        try:
            channel = Retrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception(_transient),
                reraise=True,
            )(self._open_channel)
        except HostKeyError:
            raise
        except paramiko.AuthenticationException as exc:
            raise HostUnreachable(f"{self!r}: authentication failed: {exc}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"{self!r}: cannot connect: {exc or type(exc).__name__}") from None
        with contextlib.closing(channel):
            return self._exchange(channel, command, stdin, timeout)

    def _exchange(self, channel: paramiko.Channel, command: str, stdin: bytes | None, timeout: float) -> CommandResult:
        deadline = time.monotonic() + timeout
        channel.settimeout(timeout)
        try:
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostError(f"{self!r}: could not start {command}: {exc}") from None
        errors: list[bytes] = []

        def feed() -> None:
            # In its own thread: a command that writes a lot before reading all its input must not deadlock
            # against us writing before reading.
            with contextlib.suppress(OSError, EOFError):
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()

        def drain_stderr() -> None:
            with contextlib.suppress(OSError, EOFError):
                while chunk := channel.recv_stderr(65536):
                    errors.append(chunk)

        threads = [threading.Thread(target=work, daemon=True) for work in (feed, drain_stderr)]
        for thread in threads:
            thread.start()
        output: list[bytes] = []

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            return left

        try:
            while True:
                channel.settimeout(remaining())  # bounds the whole command, not each read
                chunk = channel.recv(65536)
                if not chunk:
                    break
                output.append(chunk)
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError
        except TimeoutError:  # socket.timeout is TimeoutError
            channel.close()
            raise HostCommandTimeout(f"{self!r}: {command}: no result after {timeout:g}s") from None
        except (OSError, EOFError) as exc:
            raise HostError(f"{self!r}: {command}: connection lost: {exc}") from None
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        transport = channel.get_transport()
        if channel.exit_status == -1 and (transport is None or not transport.is_active()):
            # The channel closed without an exit status because the connection died: the command may or may
            # not have run. The next command reconnects.
            raise HostError(f"{self!r}: {command}: connection lost")
        return CommandResult(channel.exit_status, b"".join(output), b"".join(errors))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
