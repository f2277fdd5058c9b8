"""Node addresses. PURE: text in, canonical IPv4 text (or None) out; resolving host names is I/O and belongs to
the manager (pyswarm.manager.registration).

A node's address is where other nodes forward its published ports (the routing mesh DNATs to it), so it must
be one IPv4 address of a host: not 0.0.0.0, a multicast or the broadcast address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=4096)  # the same few node addresses recur across thousands of endpoints
def canonical_ipv4(value: str) -> str | None:
    """value as a canonical dotted-quad IPv4 address, or None when it is not one (a host name, IPv6, ...)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def node_ipv4(value: str) -> str | None:
    """value as a node address (canonical IPv4 that can be a host's), or None."""
    canonical = canonical_ipv4(value)
    if canonical is None:
        return None
    address = ipaddress.IPv4Address(canonical)
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return canonical


def source_ipv4(host: str) -> str | None:
    """The IPv4 address a connection came from, as an ASGI server reports its peer: an IPv4 address, or an
    IPv4-mapped IPv6 one (::ffff:a.b.c.d, from a dual-stack socket). None for anything else."""
    direct = canonical_ipv4(host)
    if direct is not None:
        return direct
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return None
    return str(mapped) if mapped is not None else None
