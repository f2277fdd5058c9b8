"""The ingress applier: keeps a node's iptables equal to the rules pyswarm.planners.ingress renders."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from pyswarm.drivers.host.errors import IngressApplyError
from pyswarm.drivers.host.runner import CommandResult, HostRunner
from pyswarm.planners.ingress import JumpState, RuleSet, applied_jumps, parse_save, removal_text, restore_text


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
