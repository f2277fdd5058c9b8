"""Placement constraints: does a node satisfy `key==value` / `key!=value` expressions?

Pure: data in, data out. No I/O, no clock, no randomness.

Matching follows swarmkit's `constraint.NodeMatches`:

- keys: `node.id`, `node.hostname`, `node.role` (manager|worker), `node.ip` (an address or a CIDR),
  `node.platform.os`, `node.platform.arch`, `node.labels.<name>`, `engine.labels.<name>`;
  the key prefixes are case-insensitive, label names are case-sensitive;
- values compare case-insensitively (swarm uses strings.EqualFold);
- an attribute the node lacks (a missing label, the platform, engine labels, which we do not collect)
  reads as the empty string, so `==` fails and `!=` passes;
- an unknown key never matches, as in swarm.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pyswarm.model import Constraint, ConstraintOp, Node

NODE_LABEL_PREFIX = "node.labels."
ENGINE_LABEL_PREFIX = "engine.labels."
_NODE_ATTRIBUTES = (
    "node.id",
    "node.hostname",
    "node.role",
    "node.ip",
    "node.platform.os",
    "node.platform.arch",
)


def is_supported_key(key: str) -> bool:
    """Whether `key` names something a constraint can test (for validating user input)."""
    lowered = key.lower()
    if lowered in _NODE_ATTRIBUTES:
        return True
    prefixes = (NODE_LABEL_PREFIX, ENGINE_LABEL_PREFIX)
    return any(lowered.startswith(prefix) and len(key) > len(prefix) for prefix in prefixes)


def constraint_matches(constraint: Constraint, node: Node) -> bool:
    key = constraint.key.lower()
    if key == "node.ip":
        return _ip_matches(constraint, node.addr)
    if key == "node.id":
        actual = node.id
    elif key == "node.hostname":
        actual = node.hostname
    elif key == "node.role":
        actual = node.role.value
    elif key in ("node.platform.os", "node.platform.arch"):
        actual = ""  # not collected: reads as absent, like a node without a description in swarm
    elif key.startswith(NODE_LABEL_PREFIX) and len(key) > len(NODE_LABEL_PREFIX):
        actual = node.labels.get(constraint.key[len(NODE_LABEL_PREFIX) :], "")
    elif key.startswith(ENGINE_LABEL_PREFIX) and len(key) > len(ENGINE_LABEL_PREFIX):
        actual = ""  # engine labels are not collected
    else:
        return False
    equal = actual.casefold() == constraint.value.casefold()
    return equal if constraint.op is ConstraintOp.EQ else not equal


def node_matches(constraints: Sequence[Constraint], node: Node) -> bool:
    """True when `node` satisfies every constraint (they are ANDed)."""
    return all(constraint_matches(constraint, node) for constraint in constraints)


def unsatisfied(constraints: Sequence[Constraint], node: Node) -> list[Constraint]:
    """The constraints `node` fails, for messages."""
    return [constraint for constraint in constraints if not constraint_matches(constraint, node)]


def _ip_matches(constraint: Constraint, addr: str) -> bool:
    node_ip = _parse_ip(addr)
    try:
        network = ipaddress.ip_network(constraint.value.strip(), strict=False)
    except ValueError:
        return False  # swarm rejects a malformed address or network outright, whatever the operator
    inside = node_ip is not None and node_ip in network
    return inside if constraint.op is ConstraintOp.EQ else not inside


def _parse_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    candidates = [addr]
    if ":" in addr:  # host:port or [v6]:port
        candidates.append(addr.rsplit(":", 1)[0].strip("[]"))
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None
