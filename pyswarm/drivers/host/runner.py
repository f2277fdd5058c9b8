"""What every host runner shares: the HostRunner protocol, its CommandResult and argv checking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SUDO = ("sudo", "-n")  # -n: fail at once rather than hang waiting for a password


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


def check_argv(argv: Sequence[str]) -> list[str]:
    """argv as a list, or ValueError unless it is a non-empty sequence of strings without NUL."""
    # A bare string would be iterated character by character; refuse it rather than run nonsense.
    if isinstance(argv, str | bytes) or not argv:
        raise ValueError(f"argv must be a non-empty sequence of strings, got {argv!r}")
    words = list(argv)
    for word in words:
        if not isinstance(word, str) or "\0" in word:
            raise ValueError(f"argv items must be strings without NUL, got {word!r}")
    return words
