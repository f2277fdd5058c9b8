"""Choosing how to run host commands on a node, from its engine URL (or an explicit SSH target)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from pyswarm.drivers.host.local import LocalHost
from pyswarm.drivers.host.runner import HostRunner
from pyswarm.drivers.host.ssh import SshHost


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
