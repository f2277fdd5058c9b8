"""The seam for commands on a node's host (not in containers): local subprocess or SSH, and the ingress
applier that programs a node's iptables through it.

Commands are always argv lists. Locally they go to subprocess without a shell; over SSH they are joined with
shlex.join, so an argument can never be read as shell syntax. Data (iptables-restore input) goes on stdin.

The pieces: errors (the HostError family), runner (CommandResult and the HostRunner protocol), local
(LocalHost), ssh (SshHost, the SSH connection), host_keys (known_hosts and fingerprint-pinned host-key trust),
choose (host_for_url: which runner reaches a node) and ingress_applier (IngressApplier).
"""

from pyswarm.drivers.host.choose import host_for_url
from pyswarm.drivers.host.errors import (
    HostCommandTimeout,
    HostError,
    HostKeyError,
    HostKeyMismatch,
    HostUnreachable,
    IngressApplyError,
)
from pyswarm.drivers.host.host_keys import PinnedHostKey, RejectUnknownHostKey, forget_host_key, trust_pinned_host_key
from pyswarm.drivers.host.ingress_applier import IngressApplier
from pyswarm.drivers.host.local import LocalHost
from pyswarm.drivers.host.runner import SUDO, CommandResult, HostRunner
from pyswarm.drivers.host.ssh import PARAMIKO_LOG, SshHost, build_remote_command

__all__ = [
    "PARAMIKO_LOG",
    "SUDO",
    "CommandResult",
    "HostCommandTimeout",
    "HostError",
    "HostKeyError",
    "HostKeyMismatch",
    "HostRunner",
    "HostUnreachable",
    "IngressApplier",
    "IngressApplyError",
    "LocalHost",
    "PinnedHostKey",
    "RejectUnknownHostKey",
    "SshHost",
    "build_remote_command",
    "forget_host_key",
    "host_for_url",
    "trust_pinned_host_key",
]
