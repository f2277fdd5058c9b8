"""The host command driver (local and SSH) and the ingress applier.

Pure tests first. Then, as root: a real sshd on 127.0.0.1 (in a private mount namespace, so nothing on the
host changes), and a real traffic test of the routing mesh between throwaway network namespaces. Everything
started is stopped and every namespace deleted, pass or fail."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from pyswarm.drivers.host import (
    CommandResult,
    HostCommandTimeout,
    HostError,
    HostKeyError,
    HostKeyMismatch,
    HostUnreachable,
    IngressApplier,
    IngressApplyError,
    LocalHost,
    PinnedHostKey,
    RejectUnknownHostKey,
    SshHost,
    build_remote_command,
    host_for_url,
    trust_pinned_host_key,
)
from pyswarm.model import Endpoint, Protocol
from pyswarm.planners.ingress import IngressPort, RuleSet, render_node_rules

IS_ROOT = os.geteuid() == 0

# ---------------------------------------------------------------------------------------------- local


def test_local_runs_argv_and_passes_stdin() -> None:
    host = LocalHost(sudo=False)
    result = host.run(["cat"], stdin=b"hello\x00world")
    assert result == CommandResult(0, b"hello\x00world", b"")
    assert result.ok


def test_local_arguments_are_never_shell_syntax() -> None:
    args = ["a b", "$(touch /tmp/pwned)", "'", '"', ";", "*", "\n"]
    result = LocalHost(sudo=False).run(["printf", "%s|", *args])
    assert result.stdout == ("|".join(args) + "|").encode()


def test_local_exit_code_stderr_missing_binary_and_timeout() -> None:
    host = LocalHost(sudo=False)
    failed = host.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.exit_code, failed.err, failed.ok) == (3, "oops\n", False)
    missing = host.run(["/nonexistent/binary"])
    assert missing.exit_code == 127 and "binary" in missing.err
    start = time.monotonic()
    with pytest.raises(HostCommandTimeout):
        host.run(["sleep", "5"], timeout=0.3)
    assert time.monotonic() - start < 3


def test_local_command_prefixes() -> None:
    assert LocalHost(sudo=False).command(["iptables-save"]) == ["iptables-save"]
    assert LocalHost(sudo=True).command(["iptables-save"]) == ["sudo", "-n", "iptables-save"]
    assert LocalHost(sudo=True, netns="node-01").command(["iptables-save", "-t", "nat"]) == [
        "sudo",
        "-n",
        "ip",
        "netns",
        "exec",
        "node-01",
        "iptables-save",
        "-t",
        "nat",
    ]
    assert LocalHost().sudo is (os.geteuid() != 0)


@pytest.mark.parametrize("name", ["", "../x", "a b", "x;y", "-n", ".hidden", "a" * 65])
def test_local_bad_netns_name(name: str) -> None:
    with pytest.raises(ValueError):
        LocalHost(netns=name)


@pytest.mark.parametrize("argv", ["iptables-save", [], ["ok", 3], ["a\0b"], b"ls"])
def test_bad_argv(argv: object) -> None:
    with pytest.raises(ValueError):
        LocalHost(sudo=False).command(argv)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_remote_command(argv, False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- ssh, pure


def test_remote_command_quotes_every_argument() -> None:
    assert build_remote_command(["iptables-restore", "-w", "10", "--noflush"], False) == (
        "iptables-restore -w 10 --noflush"
    )
    nasty = ["echo", "a b", "$(reboot)", "`id`", "x;y", "'", '"', "*", "--", "-n", ""]
    command = build_remote_command(nasty, False)
    assert shlex.split(command) == nasty
    assert "$(reboot)" not in command.replace("'$(reboot)'", "")


def test_remote_command_sudo() -> None:
    assert build_remote_command(["iptables-save", "-t", "nat"], True) == "sudo -n iptables-save -t nat"
    assert shlex.split(build_remote_command(["a b"], True)) == ["sudo", "-n", "a b"]


def test_ssh_sudo_only_for_non_root_users() -> None:
    assert SshHost("h", user="deploy", ssh_config=None).sudo is True
    assert SshHost("h", user="root", ssh_config=None).sudo is False
    assert SshHost("h", user="deploy", sudo=False, ssh_config=None).sudo is False
    assert SshHost("h", user="deploy", ssh_config=None).command(["iptables-save"]) == "sudo -n iptables-save"


def test_ssh_reads_ssh_config(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("not really a key")
    config = tmp_path / "config"
    config.write_text(
        textwrap.dedent(
            f"""\
            Host node1
                HostName 192.0.2.10
                User admin
                Port 2222
                IdentityFile {key}
                IdentityFile {tmp_path}/missing_key
                IdentitiesOnly yes
                UserKnownHostsFile {tmp_path}/lab_known_hosts
            """
        )
    )
    host = SshHost("node1", ssh_config=config)
    assert (host.hostname, host.user, host.port, host.sudo) == ("192.0.2.10", "admin", 2222, True)
    assert host.key_filenames == [str(key)]  # missing files are skipped, as ssh does
    assert host.identities_only
    assert tmp_path / "lab_known_hosts" in host.known_hosts_files
    # Explicit arguments win over the config.
    assert SshHost("node1", user="root", port=22, ssh_config=config).port == 22


def test_ssh_known_hosts_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        SshHost("h", known_hosts=tmp_path / "nope", ssh_config=None)


def _key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)


def test_unknown_host_key_is_refused_with_instructions() -> None:
    key = _key()
    policy = RejectUnknownHostKey("192.0.2.10", 2222)
    with pytest.raises(HostKeyError) as caught:
        policy.missing_host_key(paramiko.SSHClient(), "[192.0.2.10]:2222", key)
    assert not isinstance(caught.value, HostKeyMismatch)  # unknown is not a pin mismatch
    message = str(caught.value)
    assert key.fingerprint in message
    assert "ssh-keyscan -t ssh-rsa -p 2222 192.0.2.10 >> ~/.ssh/known_hosts" in message


def test_pinned_host_key() -> None:
    key, other = _key(), _key()
    policy = PinnedHostKey(key.fingerprint)
    policy.missing_host_key(paramiko.SSHClient(), "h", key)  # accepted
    with pytest.raises(HostKeyMismatch, match="not the pinned") as caught:
        policy.missing_host_key(paramiko.SSHClient(), "h", other)
    assert isinstance(caught.value, HostKeyError) and isinstance(caught.value, HostError)
    with pytest.raises(ValueError):
        PinnedHostKey("MD5:aa:bb")
    assert isinstance(SshHost("h", host_key_fingerprint=key.fingerprint, ssh_config=None).policy, PinnedHostKey)
    assert isinstance(SshHost("h", ssh_config=None).policy, RejectUnknownHostKey)


def test_unreachable_host_raises_after_bounded_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    host = SshHost("127.0.0.1", user="root", port=port, ssh_config=None, attempts=2, connect_timeout=2)
    start = time.monotonic()
    with pytest.raises(HostUnreachable, match="cannot connect"):
        host.run(["true"])
    assert time.monotonic() - start < 5


def test_host_for_url() -> None:
    ssh = host_for_url("ssh://deploy@192.0.2.10:2222", ssh_config=None)
    assert isinstance(ssh, SshHost)
    assert (ssh.hostname, ssh.user, ssh.port, ssh.sudo) == ("192.0.2.10", "deploy", 2222, True)
    assert isinstance(host_for_url("unix:///var/run/docker.sock"), LocalHost)
    assert isinstance(host_for_url("local"), LocalHost)
    lab = host_for_url("unix:///run/pyswarm-lab/node-01/docker.sock", netns="node-01")
    assert isinstance(lab, LocalHost) and lab.netns == "node-01"
    with pytest.raises(ValueError, match="SSH target"):
        host_for_url("tcp://192.0.2.10:2376")
    via = host_for_url("tcp://192.0.2.10:2376", ssh_target="root@192.0.2.10", ssh_config=None)
    assert isinstance(via, SshHost) and (via.hostname, via.user, via.port) == ("192.0.2.10", "root", 22)
    with pytest.raises(ValueError):
        host_for_url("http://x")
    with pytest.raises(ValueError):
        host_for_url("tcp://x:1", ssh_target="root@host:notaport")


# ---------------------------------------------------------------------------------------------- pinned key, served

Handler = Callable[[socket.socket], None]


@contextlib.contextmanager
def serving(handle: Handler) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that hands each connection to handle (in its own thread); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            worker = threading.Thread(target=handle, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for worker in workers:
            worker.join(5)


def key_exchange_only(key: paramiko.PKey) -> Handler:
    """An SSH server (paramiko, in process: no root, no sshd) that offers key and stops after the key exchange:
    all that trust_pinned_host_key and a host-key check need."""

    def handle(conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(key)
        try:
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=paramiko.ServerInterface())
                transport.join(5)  # until the client hangs up
        finally:
            transport.close()

    return handle


def not_ssh(conn: socket.socket) -> None:
    with conn:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_trust_pinned_host_key_records_the_pinned_key(tmp_path: Path) -> None:
    key = _key()
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with serving(key_exchange_only(key)) as port:
        line = trust_pinned_host_key("127.0.0.1", port, key.fingerprint, known_hosts=known_hosts, timeout=5)
        assert line == f"[127.0.0.1]:{port} ssh-rsa {key.get_base64()}"
        assert known_hosts.read_text() == f"{line}\n"
        assert trust_pinned_host_key("127.0.0.1", port, key.fingerprint, known_hosts=known_hosts) is None


def test_trust_pinned_host_key_raises_host_key_mismatch_for_another_key(tmp_path: Path) -> None:
    key, pinned = _key(), _key()
    known_hosts = tmp_path / "known_hosts"
    with serving(key_exchange_only(key)) as port, pytest.raises(HostKeyMismatch, match="not the pinned") as caught:
        trust_pinned_host_key("127.0.0.1", port, pinned.fingerprint, known_hosts=known_hosts, timeout=5)
    assert isinstance(caught.value, HostKeyError) and isinstance(caught.value, HostError)
    assert key.fingerprint in str(caught.value) and pinned.fingerprint in str(caught.value)
    assert not known_hosts.exists()  # nothing recorded


def test_trust_pinned_host_key_other_failures_are_no_mismatch(tmp_path: Path) -> None:
    fingerprint = _key().fingerprint
    known_hosts = tmp_path / "known_hosts"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(HostUnreachable, match="cannot reach") as unreachable:
        trust_pinned_host_key("127.0.0.1", closed, fingerprint, known_hosts=known_hosts, timeout=2)
    with serving(not_ssh) as port, pytest.raises(HostUnreachable, match="handshake failed") as not_a_server:
        trust_pinned_host_key("127.0.0.1", port, fingerprint, known_hosts=known_hosts, timeout=2)
    for caught in (unreachable, not_a_server):
        assert not isinstance(caught.value, HostKeyMismatch | HostKeyError)
    with pytest.raises(ValueError, match="fingerprint"):
        trust_pinned_host_key("127.0.0.1", closed, "MD5:aa:bb", known_hosts=known_hosts)
    assert not known_hosts.exists()


def test_ssh_host_pinned_to_another_key_raises_host_key_mismatch() -> None:
    key, pinned = _key(), _key()
    with serving(key_exchange_only(key)) as port:
        host = SshHost("127.0.0.1", user="root", port=port, host_key_fingerprint=pinned.fingerprint, ssh_config=None)
        with pytest.raises(HostKeyMismatch, match="not the pinned"):
            host.run(["true"])
        # Unknown to known_hosts (no pin): refused too, but that is no mismatch.
        empty = SshHost("127.0.0.1", user="root", port=port, ssh_config=None)
        empty.known_hosts_files = []
        with pytest.raises(HostKeyError, match="unknown SSH host key") as caught:
            empty.run(["true"])
        assert not isinstance(caught.value, HostKeyMismatch)


# ---------------------------------------------------------------------------------------------- applier


class FakeHost:
    """Answers iptables-save from canned text and records every command."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.saved = {"nat": "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", "filter": "*filter\nCOMMIT\n"}
        self.restore_results: list[CommandResult] = []
        self.sysctl_result = CommandResult(0, b"", b"")

    def run(self, argv: Sequence[str], stdin: bytes | None = None, timeout: float = 30) -> CommandResult:
        self.calls.append((list(argv), stdin))
        if argv[0] == "iptables-save":
            return CommandResult(0, self.saved[argv[2]].encode(), b"")
        if argv[0] == "iptables-restore":
            assert list(argv[1:]) == ["-w", "10", "--noflush"]
            return self.restore_results.pop(0) if self.restore_results else CommandResult(0, b"", b"")
        if argv[0] == "sysctl":
            return self.sysctl_result
        raise AssertionError(argv)

    def close(self) -> None:
        pass

    def names(self) -> list[str]:
        return [" ".join(argv[:3]) for argv, _ in self.calls]


def desired(*endpoints: Endpoint) -> RuleSet:
    return render_node_rules([IngressPort("s1", "web", 80, Protocol.TCP, endpoints)], "10.0.0.1")


def test_applier_reads_once_then_writes_only_changes() -> None:
    host = FakeHost()
    applier = IngressApplier(host)
    first = desired(Endpoint("10.0.0.2", 30001, "t1"))
    assert applier.apply(first) is True
    assert host.names() == [
        "sysctl -w net.ipv4.ip_forward=1",
        "iptables-save -t nat",
        "iptables-save -t filter",
        "iptables-restore -w 10",
    ]
    assert host.calls[0][0] == ["sysctl", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.route_localnet=1"]
    assert applier.known == first

    host.calls.clear()
    assert applier.apply(first) is False  # nothing changed: no command at all
    assert host.calls == []

    second = desired(Endpoint("10.0.0.2", 30001, "t1"), Endpoint("10.0.0.3", 30002, "t2"))
    assert applier.apply(second) is True
    ((argv, stdin),) = host.calls
    assert argv[0] == "iptables-restore" and stdin is not None
    text = stdin.decode()
    assert "PYSWARM-INGRESS" not in text and "*filter" not in text  # only the service's chain and a new SEP
    assert text.count(":PYSW-") == 2


def test_applier_rereads_and_retries_once_when_the_host_changed_under_it() -> None:
    host = FakeHost()
    applier = IngressApplier(host)
    applier.apply(desired())
    host.calls.clear()
    host.restore_results = [CommandResult(4, b"", b"line 3: CHAIN_USER_DEL failed")]
    assert applier.apply(desired(Endpoint("10.0.0.2", 30001, "t1"))) is True
    assert host.names() == [
        "iptables-restore -w 10",
        "iptables-save -t nat",
        "iptables-save -t filter",
        "iptables-restore -w 10",
    ]


def test_applier_forgets_state_on_failure() -> None:
    host = FakeHost()
    applier = IngressApplier(host)
    host.restore_results = [CommandResult(1, b"", b"iptables-restore: line 2 failed")]
    with pytest.raises(IngressApplyError, match="line 2 failed"):
        applier.apply(desired())
    assert applier.known is None
    host.calls.clear()
    assert applier.apply(desired()) is True
    assert host.names()[:2] == ["iptables-save -t nat", "iptables-save -t filter"]  # read again


def test_applier_sysctl_failure_and_max_age() -> None:
    host = FakeHost()
    host.sysctl_result = CommandResult(255, b"", b"permission denied")
    with pytest.raises(IngressApplyError, match="permission denied"):
        IngressApplier(host).apply(desired())
    host = FakeHost()
    applier = IngressApplier(host, max_age=0, route_localnet=False)
    applier.apply(desired())
    assert host.calls[0][0] == ["sysctl", "-w", "net.ipv4.ip_forward=1"]
    host.calls.clear()
    host.saved["nat"] = "".join(f"{line}\n" for line in ["*nat", *applier_text_lines(applier), "COMMIT"])
    applier.apply(desired())  # re-read because of max_age=0
    assert host.names()[:2] == ["iptables-save -t nat", "iptables-save -t filter"]


def applier_text_lines(applier: IngressApplier) -> list[str]:
    assert applier.known is not None
    return [line for (table, _), rules in applier.known.chains.items() if table == "nat" for line in rules]


def test_applier_remove() -> None:
    host = FakeHost()
    host.saved["nat"] = "*nat\n:PYSWARM-INGRESS - [0:0]\n-A PREROUTING -j PYSWARM-INGRESS\nCOMMIT\n"
    applier = IngressApplier(host)
    assert applier.remove() is True
    argv, stdin = host.calls[-1]
    assert argv[0] == "iptables-restore" and stdin is not None
    assert stdin.decode().splitlines() == [
        "*nat",
        ":PYSWARM-INGRESS - [0:0]",
        "-D PREROUTING -j PYSWARM-INGRESS",
        "-X PYSWARM-INGRESS",
        "COMMIT",
    ]
    host.saved["nat"] = "*nat\nCOMMIT\n"
    assert applier.remove() is False


# ---------------------------------------------------------------------------------------------- real sshd


@dataclass
class Sshd:
    port: int
    host_key: paramiko.PKey
    client_key: Path
    known_hosts: Path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    tools = ("sshd", "ssh-keygen", "unshare")
    if not IS_ROOT or not all(shutil.which(t) or Path(f"/usr/sbin/{t}").exists() for t in tools):
        pytest.skip("needs root, sshd, ssh-keygen and unshare")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (d / "sshd_config").write_text(
        textwrap.dedent(
            f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {d}/host_key
            AuthorizedKeysFile {d}/authorized_keys
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            StrictModes no
            UsePAM no
            PidFile none
            """
        )
    )
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    # sshd wants /run/sshd; give it one in a private mount namespace instead of creating it on the host.
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    script = f"mount -t tmpfs none /run && mkdir -m 755 /run/sshd && exec {sshd_bin} -D -e -f {d}/sshd_config"
    log = (d / "log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"sshd did not start: {(d / 'log').read_text()}")
                time.sleep(0.05)
        yield Sshd(port, paramiko.Ed25519Key(filename=str(d / "host_key")), d / "client_key", d / "known_hosts")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def ssh_host(sshd: Sshd, **options: object) -> SshHost:
    options.setdefault("known_hosts", sshd.known_hosts)
    return SshHost(
        "127.0.0.1",
        user="root",
        port=sshd.port,
        key_filename=sshd.client_key,
        ssh_config=None,
        **options,  # type: ignore[arg-type]
    )


def test_ssh_runs_commands_with_stdin_and_quoting(sshd: Sshd) -> None:
    host = ssh_host(sshd)
    try:
        assert host.run(["cat"], stdin=b"rules\n") == CommandResult(0, b"rules\n", b"")
        args = ["a b", "$(touch /tmp/psw-pwned)", "'", '"', ";", "*"]
        assert host.run(["printf", "%s|", *args]).stdout == ("|".join(args) + "|").encode()
        assert not Path("/tmp/psw-pwned").exists()
        failed = host.run(["sh", "-c", "echo err >&2; exit 7"])
        assert (failed.exit_code, failed.stderr) == (7, b"err\n")
        # Big stdin and big stdout/stderr at once must not deadlock on SSH flow control.
        blob = os.urandom(3_000_000)
        assert host.run(["cat"], stdin=blob).stdout == blob
        noisy = host.run(["sh", "-c", "head -c 2000000 /dev/zero >&2; head -c 2000000 /dev/zero"])
        assert (len(noisy.stdout), len(noisy.stderr)) == (2_000_000, 2_000_000)
        with pytest.raises(HostCommandTimeout):
            host.run(["sleep", "5"], timeout=0.5)
    finally:
        host.close()


def test_ssh_is_thread_safe_and_reconnects(sshd: Sshd) -> None:
    host = ssh_host(sshd)
    try:
        results: dict[int, bytes] = {}

        def work(i: int) -> None:
            for _ in range(3):
                results[i] = host.run(["echo", str(i)]).stdout

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {i: f"{i}\n".encode() for i in range(8)}
        # The connection drops (sshd restarted, network blip): the next command reconnects.
        client = host._client
        assert client is not None
        transport = client.get_transport()
        assert transport is not None
        transport.close()
        assert host.run(["echo", "again"]).stdout == b"again\n"
        assert host._client is not client
        # The connection dies while a command runs: an error (it may or may not have run), then a reconnect.
        with pytest.raises(HostError, match="connection lost"):
            host.run(["sh", "-c", "kill -9 $PPID; sleep 1"], timeout=10)
        assert host.run(["echo", "back"]).stdout == b"back\n"
    finally:
        host.close()


def test_ssh_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = ssh_host(sshd, known_hosts=empty)
    with pytest.raises(HostKeyError) as caught:
        host.run(["true"])
    assert not isinstance(caught.value, HostKeyMismatch)
    assert sshd.host_key.fingerprint in str(caught.value)
    assert f"ssh-keyscan -t ssh-ed25519 -p {sshd.port} 127.0.0.1" in str(caught.value)


def test_ssh_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = paramiko.Ed25519Key(filename=str(sshd.client_key))  # any other ed25519 key
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 {other.get_base64()}\n")
    with pytest.raises(HostKeyError, match="changed") as caught:
        ssh_host(sshd, known_hosts=wrong).run(["true"])
    assert not isinstance(caught.value, HostKeyMismatch)  # known_hosts disagrees: no pin involved


def test_ssh_pinned_fingerprint(sshd: Sshd, tmp_path: Path) -> None:
    host = ssh_host(sshd, known_hosts=None, host_key_fingerprint=sshd.host_key.fingerprint)
    try:
        assert host.run(["echo", "pinned"]).stdout == b"pinned\n"
    finally:
        host.close()
    other = paramiko.Ed25519Key(filename=str(sshd.client_key))
    with pytest.raises(HostKeyMismatch, match="not the pinned"):
        ssh_host(sshd, known_hosts=None, host_key_fingerprint=other.fingerprint).run(["true"])


# ---------------------------------------------------------------------------------------------- real traffic

SERVER = """
import socket, sys, threading
name, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", tcp_port)); tcp.listen(64)
if udp_port:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", udp_port))
    def echo():
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(f"{name} {peer[0]}".encode(), peer)
    threading.Thread(target=echo, daemon=True).start()
print("ready", flush=True)
while True:
    conn, peer = tcp.accept()
    conn.sendall(f"{name} {peer[0]}".encode()); conn.close()
"""

CLIENT = """
import json, socket, sys
host, port, count, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = []
for _ in range(count):
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"hi", (host, port)); out.append(s.recv(100).decode())
        else:
            s = socket.create_connection((host, port), timeout=2); out.append(s.recv(100).decode())
        s.close()
    except ConnectionRefusedError:
        out.append("refused")
    except OSError as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def mesh_lab(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Node A (entry, 10.231.0.1) and node B (10.231.0.2) on a link; container C (172.31.99.2) on A's
    "bridge". A's filter policies are DROP, as on a Docker host. Servers: B:18080 (what Docker's DNAT for the
    task's host port would reach), C:8000 (the local task), B:18053/udp."""
    if not IS_ROOT or not shutil.which("ip") or not shutil.which("iptables-restore"):
        pytest.skip("needs root, ip and iptables")
    tag = uuid.uuid4().hex[:6]
    ns = {"a": f"psw-a-{tag}", "b": f"psw-b-{tag}", "c": f"psw-c-{tag}"}
    procs: list[subprocess.Popen[bytes]] = []
    made: list[str] = []
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"pa{tag}", "netns", ns["a"], "type", "veth", "peer", f"pb{tag}", "netns", ns["b"])
        sh("ip", "link", "add", f"qa{tag}", "netns", ns["a"], "type", "veth", "peer", f"qc{tag}", "netns", ns["c"])
        for name, dev, addr in (
            (ns["a"], f"pa{tag}", "10.231.0.1/24"),
            (ns["b"], f"pb{tag}", "10.231.0.2/24"),
            (ns["a"], f"qa{tag}", "172.31.99.1/24"),
            (ns["c"], f"qc{tag}", "172.31.99.2/24"),
        ):
            sh("ip", "-n", name, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", name, "link", "set", dev, "up")
        sh("ip", "-n", ns["c"], "route", "add", "default", "via", "172.31.99.1")
        docker_like = textwrap.dedent(
            """\
            *filter
            :INPUT DROP [0:0]
            :FORWARD DROP [0:0]
            -A INPUT -i lo -j ACCEPT
            -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
            -A FORWARD -d 172.31.99.2/32 -p tcp -m tcp --dport 8000 -j ACCEPT
            COMMIT
            """
        )
        subprocess.run(["ip", "netns", "exec", ns["a"], "iptables-restore"], input=docker_like.encode(), check=True)
        server = tmp_path / "server.py"
        server.write_text(SERVER)
        (tmp_path / "client.py").write_text(CLIENT)
        for where, name, tcp, udp in (("b", "B", "18080", "18053"), ("c", "C", "8000", "0")):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns[where], sys.executable, str(server), name, tcp, udp],
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield {**ns, "client": str(tmp_path / "client.py")}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def connect(lab: dict[str, str], where: str, host: str, port: int, count: int = 1, proto: str = "tcp") -> list[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", lab[where], sys.executable, lab["client"], host, str(port), str(count), proto],
        capture_output=True,
        check=True,
        timeout=120,
    )
    result: list[str] = json.loads(done.stdout)
    return result


def test_mesh_traffic_between_namespaces(mesh_lab: dict[str, str]) -> None:
    lab = mesh_lab
    applier = IngressApplier(LocalHost(netns=lab["a"]))
    ports = [
        IngressPort(
            "s1",
            "web",
            80,
            Protocol.TCP,
            (Endpoint("10.231.0.2", 18080, "t1"), Endpoint("10.231.0.1", 32768, "t2", "172.31.99.2", 8000)),
        ),
        IngressPort("s2", "dns", 53, Protocol.UDP, (Endpoint("10.231.0.2", 18053, "t3"),)),
        IngressPort("s3", "idle", 81, Protocol.TCP, ()),
    ]
    assert applier.apply(render_node_rules(ports, "10.231.0.1")) is True
    assert applier.apply(render_node_rules(ports, "10.231.0.1")) is False

    # From another machine: spread over both endpoints. The remote endpoint sees the entry node (masquerade),
    # the local container sees the real client.
    seen = set(connect(lab, "b", "10.231.0.1", 80, count=40))
    assert seen == {"B 10.231.0.1", "C 10.231.0.2"}
    # From the node itself, on its own address and on 127.0.0.1 (route_localnet), and hairpin from the task.
    assert {s.split()[0] for s in connect(lab, "a", "10.231.0.1", 80, count=40)} == {"B", "C"}
    assert {s.split()[0] for s in connect(lab, "a", "127.0.0.1", 80, count=40)} == {"B", "C"}
    assert {s.split()[0] for s in connect(lab, "c", "10.231.0.1", 80, count=40)} == {"B", "C"}
    # UDP, and a port without endpoints is refused at once rather than left to the DROP policy.
    assert connect(lab, "b", "10.231.0.1", 53, proto="udp") == ["B 10.231.0.1"]
    start = time.monotonic()
    assert connect(lab, "b", "10.231.0.1", 81) == ["refused"]
    assert time.monotonic() - start < 1.9

    # The local task goes away: everything goes to B, with a minimal rewrite.
    ports[0] = IngressPort("s1", "web", 80, Protocol.TCP, (Endpoint("10.231.0.2", 18080, "t1"),))
    assert applier.apply(render_node_rules(ports, "10.231.0.1")) is True
    assert set(connect(lab, "b", "10.231.0.1", 80, count=10)) == {"B 10.231.0.1"}

    # A restarted manager resyncs with a fresh applier and finds nothing to do.
    assert IngressApplier(LocalHost(netns=lab["a"])).apply(render_node_rules(ports, "10.231.0.1")) is False

    assert applier.remove() is True
    saved = subprocess.run(
        ["ip", "netns", "exec", lab["a"], "iptables-save"], capture_output=True, text=True, check=True
    ).stdout
    assert "PYSW" not in saved
    assert connect(lab, "b", "10.231.0.1", 80) != ["B 10.231.0.1"]
