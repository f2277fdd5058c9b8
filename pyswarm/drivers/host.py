"""The seam for commands on a node's host (not in containers): local subprocess or SSH, and the ingress
applier that programs a node's iptables through it.

Commands are always argv lists. Locally they go to subprocess without a shell; over SSH they are joined with
shlex.join, so an argument can never be read as shell syntax. Data (iptables-restore input) goes on stdin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pyswarm.planners.ingress import JumpState, RuleSet, applied_jumps, parse_save, removal_text, restore_text


class HostError(Exception):
    """A host command could not be run, or failed."""


class HostUnreachable(HostError):
    """No SSH connection could be made to the host."""


class HostKeyError(HostError):
    """The SSH server's host key is unknown, or differs from the trusted one. Never retried."""


class HostCommandTimeout(HostError):
    """The command did not finish in time."""


class IngressApplyError(HostError):
    """iptables refused our rules, or the host's state could not be read."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class HostRunner(Protocol):
    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult: ...
    def close(self) -> None: ...


def _check_argv(argv: Sequence[str]) -> list[str]:
    # A bare string would be iterated character by character; refuse it rather than run nonsense.
    if isinstance(argv, str | bytes) or not argv:
        raise ValueError(f"argv must be a non-empty sequence of strings, got {argv!r}")
    words = list(argv)
    for word in words:
        if not isinstance(word, str) or "\0" in word:
            raise ValueError(f"argv items must be strings without NUL, got {word!r}")
    return words


SUDO = ("sudo", "-n")

# paramiko's transport thread logs every failed connection attempt with a traceback at ERROR level; the
# failure reaches the caller as HostUnreachable anyway. Quiet by default; lower this logger's level to debug.
PARAMIKO_LOG = "pyswarm.drivers.host.paramiko"
logging.getLogger(PARAMIKO_LOG).setLevel(logging.CRITICAL)  # -n: fail at once rather than hang waiting for a password


# ---------------------------------------------------------------------------------------------- local


_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # no leading "-" (an option) or "." (..)


class LocalHost:
    """Runs commands on this machine. netns: inside that network namespace (`ip netns exec`), as for lab
    nodes, which are namespaces on one machine. sudo: prefix `sudo -n`; by default when not root."""

    def __init__(self, *, sudo: bool | None = None, netns: str | None = None) -> None:
        if netns is not None and not _NETNS_NAME.fullmatch(netns):
            raise ValueError(f"invalid network namespace name {netns!r}")
        self.netns = netns
        self.sudo = (os.geteuid() != 0) if sudo is None else sudo

    def command(self, argv: Sequence[str]) -> list[str]:
        words = _check_argv(argv)
        if self.netns:
            words = ["ip", "netns", "exec", self.netns, *words]
        return [*SUDO, *words] if self.sudo else words

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult:
        command = self.command(argv)
        try:
            done = subprocess.run(
                command,
                input=stdin if stdin is not None else b"",  # never inherit our own stdin
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HostCommandTimeout(f"{shlex.join(command)}: no result after {timeout:g}s") from None
        except OSError as exc:  # not found, not executable: report it as a shell would
            return CommandResult(127, b"", f"{command[0]}: {exc.strerror or exc}".encode())
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalHost(netns={self.netns!r}, sudo={self.sudo})"


# ---------------------------------------------------------------------------------------------- ssh


def build_remote_command(argv: Sequence[str], sudo: bool) -> str:
    """The command line sent over SSH: every word shell-quoted, `sudo -n` in front when asked."""
    words = _check_argv(argv)
    return shlex.join([*SUDO, *words] if sudo else words)


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
            raise HostKeyError(
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
    appended, or None when the key was known already."""
    policy = PinnedHostKey(fingerprint)  # validates the fingerprint's form
    import socket

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
    policy.missing_host_key(paramiko.SSHClient(), host, key)  # raises HostKeyError on a mismatch
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


# ---------------------------------------------------------------------------------------------- choosing


def _parse_ssh_target(target: str) -> tuple[str, str | None, int | None]:
    parsed = urllib.parse.urlparse(target if "://" in target else f"ssh://{target}")
    if parsed.scheme != "ssh" or not parsed.hostname:
        raise ValueError(f"invalid SSH target {target!r}: expected [ssh://][user@]host[:port]")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"invalid SSH target {target!r}: bad port") from None
    return parsed.hostname, parsed.username, port


def host_for_url(
    engine_url: str, *, ssh_target: str | None = None, netns: str | None = None, **ssh_options: Any
) -> HostRunner:
    """How to run host commands on the node whose engine is at engine_url.

    ssh://user@host[:port] -> SshHost there; unix:// (or "local") -> this machine, inside netns if given (lab
    nodes). tcp:// says nothing about a shell on the host: pass ssh_target ([ssh://]user@host[:port]), which
    also overrides the others. ssh_options go to SshHost (known_hosts, host_key_fingerprint, ...)."""
    if ssh_target:
        host, user, port = _parse_ssh_target(ssh_target)
        return SshHost(host, user=user, port=port, **ssh_options)
    scheme = urllib.parse.urlparse(engine_url).scheme
    if scheme == "ssh":
        host, user, port = _parse_ssh_target(engine_url)
        return SshHost(host, user=user, port=port, **ssh_options)
    if scheme == "unix" or engine_url in ("", "local"):
        return LocalHost(netns=netns)
    if scheme == "tcp":
        raise ValueError(
            f"engine {engine_url} is reached over tcp://, which gives no way to run host commands "
            "(iptables for the ingress mesh): give the node an SSH target, e.g. ssh://root@HOST"
        )
    raise ValueError(f"unsupported engine URL {engine_url!r}: expected ssh://, unix:// or tcp://")


# ---------------------------------------------------------------------------------------------- ingress


class IngressApplier:
    """Keeps one node's ingress rules equal to the desired RuleSet, with one iptables-restore per change.

    The host's state is read once (iptables-save) and then tracked: each apply writes only the chains that
    changed since the last successful apply, and deletes stale ones in the same transaction. A failed apply
    forgets the state and re-reads it (once, at once); the state is also re-read after max_age seconds to
    repair drift (someone flushed our chains, Docker re-inserted its jumps ahead of ours).

    The first apply sets net.ipv4.ip_forward=1 and, with route_localnet, net.ipv4.conf.all.route_localnet=1,
    which lets 127.0.0.1:<published> be DNATed off the host (the rules drop martians it would let in).
    Thread safe; one applier per node."""

    def __init__(
        self,
        runner: HostRunner,
        *,
        route_localnet: bool = True,
        max_age: float | None = 300.0,
        timeout: float = 60.0,
        lock_wait: int = 10,
    ) -> None:
        self.runner = runner
        self.route_localnet = route_localnet
        self.max_age = max_age
        self.timeout = timeout
        self.lock_wait = lock_wait
        self._lock = threading.Lock()
        self._current: RuleSet | None = None
        self._jumps: JumpState | None = None
        self._read_at = 0.0
        self._sysctls_done = False

    @property
    def known(self) -> RuleSet | None:
        """Our chains as last read or applied; None when unknown."""
        return self._current

    def forget(self) -> None:
        """Make the next apply read the host's state again."""
        with self._lock:
            self._current = self._jumps = None

    def _run(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        return self.runner.run(argv, stdin=stdin, timeout=self.timeout)

    def _ensure_sysctls(self) -> None:
        if self._sysctls_done:
            return
        settings = ["net.ipv4.ip_forward=1"]
        if self.route_localnet:
            settings.append("net.ipv4.conf.all.route_localnet=1")
        result = self._run(["sysctl", "-w", *settings])
        if not result.ok:
            raise IngressApplyError(f"{self.runner!r}: sysctl -w {' '.join(settings)}: {result.err.strip()}")
        self._sysctls_done = True

    def _read(self) -> None:
        self._current = self._jumps = None
        texts = []
        for table in ("nat", "filter"):
            result = self._run(["iptables-save", "-t", table])
            if not result.ok:
                raise IngressApplyError(f"{self.runner!r}: iptables-save -t {table}: {result.err.strip()}")
            texts.append(result.out)
        self._current, self._jumps = parse_save("\n".join(texts))
        self._read_at = time.monotonic()

    def _restore(self, text: str) -> CommandResult:
        return self._run(["iptables-restore", "-w", str(self.lock_wait), "--noflush"], stdin=text.encode())

    def apply(self, desired: RuleSet) -> bool:
        """Make the node's rules equal desired. True if anything was written. Raises IngressApplyError (or
        HostError when the host cannot be reached); the state is then forgotten."""
        with self._lock:
            try:
                self._ensure_sysctls()
                stale = self.max_age is not None and time.monotonic() - self._read_at > self.max_age
                fresh = self._current is None or stale
                if fresh:
                    self._read()
                while True:
                    text = restore_text(desired, self._current, self._jumps)
                    if not text:
                        return False
                    result = self._restore(text)
                    if result.ok:
                        self._current, self._jumps = desired, applied_jumps()
                        return True
                    if fresh:
                        raise IngressApplyError(f"{self.runner!r}: iptables-restore: {result.err.strip()}")
                    # Our idea of the host was wrong (someone changed it): read it and try once more.
                    self._read()
                    fresh = True
            except BaseException:
                self._current = self._jumps = None
                raise

    def remove(self) -> bool:
        """Delete every chain and jump of ours from the node (it leaves the cluster). True if any existed."""
        with self._lock:
            try:
                self._read()
                assert self._current is not None and self._jumps is not None
                text = removal_text(self._current, self._jumps)
                if not text:
                    return False
                result = self._restore(text)
                if not result.ok:
                    raise IngressApplyError(f"{self.runner!r}: iptables-restore: {result.err.strip()}")
                return True
            finally:
                self._current = self._jumps = None
