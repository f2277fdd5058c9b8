"""What goes wrong on a host, as the HostError family. Callers decide by class, never by message."""

from __future__ import annotations


class HostError(Exception):
    """A host command could not be run, or failed."""


class HostUnreachable(HostError):
    """No SSH connection could be made to the host."""


class HostKeyError(HostError):
    """The SSH server's host key is unknown, or differs from the trusted one. Never retried."""


class HostKeyMismatch(HostKeyError):
    """The SSH server's host key is not the one whose fingerprint the caller pinned: refused (someone may be
    in between, or the fingerprint is wrong). Raised only for that; unknown or changed known_hosts keys are
    plain HostKeyError."""


class HostCommandTimeout(HostError):
    """The command did not finish in time."""


class IngressApplyError(HostError):
    """iptables refused our rules, or the host's state could not be read."""
