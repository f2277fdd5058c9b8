"""Host commands on this machine: a subprocess without a shell, optionally in a network namespace."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence

from pyswarm.drivers.host.errors import HostCommandTimeout
from pyswarm.drivers.host.runner import SUDO, CommandResult, check_argv

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
        words = check_argv(argv)
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
