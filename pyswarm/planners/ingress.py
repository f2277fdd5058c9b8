"""The ingress routing mesh as iptables rules, modelled on kube-proxy's iptables mode.

PURE: data in, data out. Nothing here runs a command or reads the host; `pyswarm.drivers.host` applies the
text this module produces with one `iptables-restore --noflush` per sync.

Every node gets the same service rules, whether or not it runs a task: a new connection to
`<any local address>:<published>` is DNATed to one of the service's endpoints, chosen evenly at random.

nat table::

    PREROUTING, OUTPUT (position 1) -> PYSWARM-INGRESS
        -> PYSW-SVC-<hash>   one per (service, protocol, published port) that has endpoints
            -> PYSW-SEP-<hash>   one per endpoint: DNAT (+ masquerade mark where replies need it)
    POSTROUTING (position 1) -> PYSWARM-POSTROUTING: MASQUERADE what PYSWARM-MARK-MASQ marked

filter table::

    FORWARD (position 1) -> PYSWARM-FORWARD: accept marked and established traffic (Docker's policy: DROP)
    INPUT, OUTPUT -> PYSWARM-REJECT (new connections only): refuse published ports with no endpoints
    INPUT -> PYSWARM-FIREWALL: drop martian packets to 127.0.0.0/8 (route_localnet=1 would accept them)

Rules are rendered exactly as `iptables-save` (1.8.9, nf_tables backend) prints them, so that the rules read
back from a host compare equal to freshly rendered ones and a resync after a restart rewrites nothing. The
canonical form was checked on a real host; `tests/unit/planners/test_ingress_render.py` round-trips it as root.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pyswarm.model import Endpoint, Protocol, Service
from pyswarm.model.addresses import canonical_ipv4

TABLES = ("nat", "filter")  # nat first: if its COMMIT fails, iptables-restore stops before filter

INGRESS_CHAIN = "PYSWARM-INGRESS"
MARK_MASQ_CHAIN = "PYSWARM-MARK-MASQ"
POSTROUTING_CHAIN = "PYSWARM-POSTROUTING"
FORWARD_CHAIN = "PYSWARM-FORWARD"
REJECT_CHAIN = "PYSWARM-REJECT"
FIREWALL_CHAIN = "PYSWARM-FIREWALL"
SVC_PREFIX = "PYSW-SVC-"
SEP_PREFIX = "PYSW-SEP-"
# Every chain whose name starts with one of these is ours: parse_save collects them, stale ones are deleted.
OWNED_PREFIXES = ("PYSW-", "PYSWARM-")

MASQ_MARK = "0x4000/0x4000"  # the same bit kube-proxy uses
MAX_CHAIN_NAME = 28  # iptables' limit (XT_EXTENSION_MAXNAMELEN - 1)
_HASH_CHARS = 16  # base32 chars: 80 bits, collisions are not a concern

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})

ChainKey = tuple[str, str]  # (table, chain)


class Jump(NamedTuple):
    """A jump from a built-in chain to one of ours. `spec` is the rule without `-A CHAIN`."""

    table: str
    chain: str
    spec: str


# In the order they must head their built-in chain (position 1, 2, ... per chain).
BASE_JUMPS: tuple[Jump, ...] = (
    Jump("nat", "PREROUTING", f"-j {INGRESS_CHAIN}"),
    Jump("nat", "OUTPUT", f"-j {INGRESS_CHAIN}"),
    Jump("nat", "POSTROUTING", f"-j {POSTROUTING_CHAIN}"),
    Jump("filter", "INPUT", f"-j {FIREWALL_CHAIN}"),
    Jump("filter", "INPUT", f"-m conntrack --ctstate NEW -j {REJECT_CHAIN}"),
    Jump("filter", "FORWARD", f"-j {FORWARD_CHAIN}"),
    Jump("filter", "OUTPUT", f"-m conntrack --ctstate NEW -j {REJECT_CHAIN}"),
)

# (table, built-in chain) -> (1-based position, spec) of every rule there that jumps to one of our chains.
JumpState = Mapping[ChainKey, tuple[tuple[int, str], ...]]


@dataclass(frozen=True)
class IngressPort:
    """One published ingress port of one service, with the endpoints it forwards to (may be none)."""

    service_id: str
    service_name: str
    published: int
    protocol: Protocol
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class RuleSet:
    """Our chains only: (table, chain) -> full rule lines (`-A CHAIN ...`), in a deterministic order.

    An empty tuple is an existing, empty chain."""

    chains: Mapping[ChainKey, tuple[str, ...]]


# ---------------------------------------------------------------------------------------------- validation


def _port(value: object, what: str) -> int:
    # bool is an int subclass; True is not a port.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{what} must be an integer in 1..65535, got {value!r}")
    return value


def _ipv4(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an IPv4 address string, got {value!r}")
    canonical = canonical_ipv4(value)
    if canonical is None:
        raise ValueError(f"{what} must be an IPv4 address, got {value[:80]!r}")
    return canonical


def endpoint_problem(endpoint: Endpoint) -> str:
    """Why the mesh cannot forward to this endpoint ("" when it can). render_node_rules skips such an endpoint
    on every node, so that one bad address (a node stored with a host name) never stops the others' rules."""
    try:
        _ipv4(endpoint.node_addr, "endpoint node address")
        _port(endpoint.host_port, "endpoint host port")
        if endpoint.container_addr:
            _ipv4(endpoint.container_addr, "container address")
            _port(endpoint.target_port, "endpoint target port")
    except ValueError as exc:
        return str(exc)
    return ""


def skipped_endpoints(ports: Sequence[IngressPort]) -> tuple[tuple[IngressPort, Endpoint, str], ...]:
    """Every endpoint render_node_rules skips, with its port and the reason (endpoint_problem)."""
    return tuple(
        (port, endpoint, problem)
        for port in ports
        for endpoint in port.endpoints
        if (problem := endpoint_problem(endpoint))
    )


def _protocol(value: object) -> str:
    try:
        return Protocol(value).value
    except ValueError:
        raise ValueError(f"protocol must be tcp or udp, got {value!r}") from None


_UNSAFE_COMMENT = re.compile(r"[^A-Za-z0-9._:/-]")
_SAVE_UNQUOTED = re.compile(r"[A-Za-z0-9_-]+")


def _comment(text: str) -> str:
    """A comment argument, sanitised, and quoted exactly when iptables-save quotes it."""
    # "_" is kept as well: stack services are named stack_service.
    cleaned = _UNSAFE_COMMENT.sub(lambda m: m.group() if m.group() == "_" else "-", text)[:200] or "-"
    return cleaned if _SAVE_UNQUOTED.fullmatch(cleaned) else f'"{cleaned}"'


# ---------------------------------------------------------------------------------------------- rendering


def _chain_name(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    name = prefix + base64.b32encode(digest).decode()[:_HASH_CHARS]
    assert len(name) <= MAX_CHAIN_NAME
    return name


@lru_cache(maxsize=1024)
def probability(remaining: int) -> str:
    """1/remaining as iptables-save prints it.

    The statistic match stores the probability as round(p * 2^31) and prints it back with 11 decimals, so
    1/3 reads back as 0.33333333349. Printing that value directly makes the rule survive a save round trip."""
    fixed = (2**32 + remaining) // (2 * remaining)  # round(2^31 / remaining), in integers
    return f"{fixed / 2**31:.11f}"


def _endpoint_chain(
    port: IngressPort, proto: str, published: int, endpoint: Endpoint, node_ip: str
) -> tuple[str, tuple[str, ...]]:
    """(chain name, rules) for one endpoint as seen from node_ip."""
    ep_node = _ipv4(endpoint.node_addr, "endpoint node address")
    host_port = _port(endpoint.host_port, "endpoint host port")
    container = _ipv4(endpoint.container_addr, "container address") if endpoint.container_addr else ""
    sid = port.service_id
    if ep_node == node_ip and container:
        # On the task's own node: our DNAT in PREROUTING ends nat traversal, so Docker's own DNAT for the
        # host port would never run. Go straight to the container. Masquerade only what would not
        # otherwise return through us: the container reaching itself (hairpin), and 127.0.0.1 sources.
        target = _port(endpoint.target_port, "endpoint target port")
        name = _chain_name(SEP_PREFIX, sid, proto, str(published), ep_node, "c", container, str(target))
        rules: tuple[str, ...] = (
            f"-A {name} -s {container}/32 -j {MARK_MASQ_CHAIN}",
            f"-A {name} -s 127.0.0.0/8 -j {MARK_MASQ_CHAIN}",
            f"-A {name} -p {proto} -j DNAT --to-destination {container}:{target}",
        )
    else:
        # Another node (or ours without a known container address, where docker-proxy listens on the host
        # port): masquerade so that replies come back through this node and conntrack can undo the DNAT.
        name = _chain_name(SEP_PREFIX, sid, proto, str(published), ep_node, "h", str(host_port))
        rules = (
            f"-A {name} -j {MARK_MASQ_CHAIN}",
            f"-A {name} -p {proto} -j DNAT --to-destination {ep_node}:{host_port}",
        )
    return name, rules


def _static_chains(random_fully: bool) -> dict[ChainKey, tuple[str, ...]]:
    masquerade = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    return {
        ("nat", MARK_MASQ_CHAIN): (f"-A {MARK_MASQ_CHAIN} -j MARK --set-xmark {MASQ_MARK}",),
        ("nat", POSTROUTING_CHAIN): (
            f"-A {POSTROUTING_CHAIN} -m mark ! --mark {MASQ_MARK} -j RETURN",
            # Clear our bit so a packet that loops through again is not masqueraded twice. This is
            # `--xor-mark 0x4000` (as kube-proxy writes it) in iptables-save's spelling; xor clears the bit
            # because the RETURN above guarantees it is set here.
            f"-A {POSTROUTING_CHAIN} -j MARK --set-xmark 0x4000/0x0",
            f"-A {POSTROUTING_CHAIN} {masquerade}",
        ),
        ("filter", FORWARD_CHAIN): (
            # The first packet of a connection to another node carries the mark; the rest are ESTABLISHED.
            # Accepting ESTABLISHED opens nothing: a connection only gets there if its first packet passed.
            f"-A {FORWARD_CHAIN} -m mark --mark {MASQ_MARK} -j ACCEPT",
            f"-A {FORWARD_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ),
        ("filter", FIREWALL_CHAIN): (
            # route_localnet=1 (needed to DNAT 127.0.0.1:published) would also accept packets from the network
            # addressed to 127.0.0.1, exposing services bound to localhost (CVE-2020-8558). Drop those.
            f"-A {FIREWALL_CHAIN} ! -s 127.0.0.0/8 -d 127.0.0.0/8 ! -i lo "
            f"-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        ),
    }


def _validated_ports(ports: Sequence[IngressPort]) -> list[tuple[int, str, IngressPort]]:
    """(published, protocol, port) for each port, in a stable order. Raises ValueError on a bad port, protocol
    or service id, or on two services publishing the same port."""
    seen: dict[tuple[str, int], str] = {}
    validated = []
    for port in ports:
        proto = _protocol(port.protocol)
        published = _port(port.published, "published port")
        if not isinstance(port.service_id, str) or not port.service_id:
            raise ValueError(f"service id must be a non-empty string, got {port.service_id!r}")
        other = seen.setdefault((proto, published), port.service_id)
        if other != port.service_id:
            raise ValueError(f"port {published}/{proto} is published by both {other} and {port.service_id}")
        validated.append((published, proto, port))
    # Sorted so that the input order never shows up as a diff.
    validated.sort(key=lambda item: (item[0], item[1], item[2].service_id))
    return validated


def render_node_rules(ports: Sequence[IngressPort], node_addr: str, *, random_fully: bool = True) -> RuleSet:
    """The complete desired set of our chains on the node reachable at node_addr.

    An endpoint is local when its node_addr equals node_addr; the same IngressPorts can be rendered for every
    node. An endpoint that cannot be forwarded to (endpoint_problem: an address that is not IPv4, a bad port)
    is skipped, as if its task were not running: a port left with no endpoint is refused. Raises ValueError on
    a bad node_addr (this node's own: only its rules), and on a bad published port, protocol or service id,
    or two services on one published port.
    random_fully: `MASQUERADE --random-fully` (needs iptables >= 1.6.2; the nf_tables backend has it)."""
    node_ip = _ipv4(node_addr, "node address")
    static = _static_chains(random_fully)
    chains: dict[ChainKey, tuple[str, ...]] = {}
    ingress: list[str] = []
    reject: list[str] = []
    svc_chains: list[tuple[str, tuple[str, ...]]] = []
    sep_chains: dict[str, tuple[str, ...]] = {}

    for published, proto, port in _validated_ports(ports):
        comment = _comment(f"{port.service_name}:{published}/{proto}")
        endpoints = dict(
            _endpoint_chain(port, proto, published, endpoint, node_ip)
            for endpoint in port.endpoints
            if not endpoint_problem(endpoint)
        )  # keyed by chain name: the same endpoint twice is one endpoint
        if not endpoints:
            reject_with = "tcp-reset" if proto == "tcp" else "icmp-port-unreachable"
            reject.append(
                f"-A {REJECT_CHAIN} -p {proto} -m addrtype --dst-type LOCAL -m {proto} --dport {published} "
                f"-m comment --comment {comment} -j REJECT --reject-with {reject_with}"
            )
            continue
        svc = _chain_name(SVC_PREFIX, port.service_id, proto, str(published))
        ingress.append(
            f"-A {INGRESS_CHAIN} -p {proto} -m addrtype --dst-type LOCAL -m {proto} --dport {published} "
            f"-m comment --comment {comment} -j {svc}"
        )
        names = sorted(endpoints)
        n = len(names)
        svc_rules = [
            f"-A {svc} -m statistic --mode random --probability {probability(n - i)} -j {name}"
            for i, name in enumerate(names[:-1])
        ]
        svc_rules.append(f"-A {svc} -j {names[-1]}")  # the last endpoint takes whatever is left
        svc_chains.append((svc, tuple(svc_rules)))
        sep_chains.update(endpoints)

    chains[("nat", INGRESS_CHAIN)] = tuple(ingress)
    chains.update((key, rules) for key, rules in static.items() if key[0] == "nat")
    chains.update((("nat", name), rules) for name, rules in svc_chains)
    chains.update((("nat", name), sep_chains[name]) for name in sorted(sep_chains))
    chains.update((key, rules) for key, rules in static.items() if key[0] == "filter")
    chains[("filter", REJECT_CHAIN)] = tuple(reject)
    return RuleSet(chains)


def ingress_ports_for(
    service: Service, endpoints: Mapping[tuple[int, str], Sequence[Endpoint]]
) -> tuple[IngressPort, ...]:
    """A service's ingress ports, given (published, protocol value) -> endpoints (as planners.containers
    computes them). Ports missing from `endpoints` have none, so they are refused."""
    return tuple(
        IngressPort(
            service_id=service.id,
            service_name=service.spec.name,
            published=p.published,
            protocol=p.protocol,
            endpoints=tuple(endpoints.get((p.published, p.protocol.value), ())),
        )
        for p in service.spec.ingress_ports()
    )


# ---------------------------------------------------------------------------------------------- diffing


def _expected_jumps() -> dict[ChainKey, tuple[str, ...]]:
    expected: dict[ChainKey, tuple[str, ...]] = {}
    for jump in BASE_JUMPS:
        key = (jump.table, jump.chain)
        expected[key] = (*expected.get(key, ()), jump.spec)
    return expected


_EXPECTED_JUMPS = _expected_jumps()


def applied_jumps() -> dict[ChainKey, tuple[tuple[int, str], ...]]:
    """The JumpState after a successful restore_text: our jumps head their built-in chains, in order."""
    return {key: tuple(enumerate(specs, start=1)) for key, specs in _EXPECTED_JUMPS.items()}


def _jump_fixes(table: str, jumps: JumpState | None) -> list[str]:
    lines: list[str] = []
    jumps = jumps or {}
    # Also built-in chains we no longer jump from (left by an older version): their jumps go, or the -X of
    # the chain they point at would fail.
    chains = dict.fromkeys([*_EXPECTED_JUMPS, *jumps])
    for jtable, chain in chains:
        if jtable != table:
            continue
        specs = _EXPECTED_JUMPS.get((table, chain), ())
        present = tuple(jumps.get((table, chain), ()))
        if present == tuple(enumerate(specs, start=1)):
            continue
        # Missing, moved (e.g. Docker restarted and inserted its own jumps first) or duplicated: delete
        # every jump of ours in this chain by its exact spec and insert afresh. One transaction, so no
        # packet sees the gap. By spec, not by number: numbers shift if someone else edits meanwhile.
        lines.extend(f"-D {chain} {spec}" for _, spec in present)
        lines.extend(f"-I {chain} {position} {spec}" for position, spec in enumerate(specs, start=1))
    return lines


def _by_table(chains: Mapping[ChainKey, tuple[str, ...]], table: str) -> dict[str, tuple[str, ...]]:
    return {chain: rules for (t, chain), rules in chains.items() if t == table}


def restore_text(desired: RuleSet, current: RuleSet | None, jumps: JumpState | None = None) -> str:
    """`iptables-restore --noflush` input that turns `current` into `desired`; "" when nothing changed.

    Only changed or new chains are written (declaring a chain flushes it); stale chains of ours are
    flushed, then deleted with -X at the end of their table's transaction, after everything that referenced
    them has been rewritten. Jumps from built-in chains are fixed only when not already at the head.
    current=None means unknown: every chain of ours is rewritten (stale ones cannot be known).
    jumps: as parse_save returns it; None means none present (a fresh node)."""
    out: list[str] = []
    for table in TABLES:
        want = _by_table(desired.chains, table)
        have = None if current is None else _by_table(current.chains, table)
        changed = [chain for chain, rules in want.items() if have is None or have.get(chain) != rules]
        stale = [] if have is None else [chain for chain in have if chain not in want]
        fixes = _jump_fixes(table, jumps)
        if not (changed or stale or fixes):
            continue
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in (*changed, *stale))
        for chain in changed:
            out.extend(want[chain])
        out.extend(fixes)
        out.extend(f"-X {chain}" for chain in stale)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def removal_text(current: RuleSet, jumps: JumpState) -> str:
    """`iptables-restore --noflush` input that removes every chain and jump of ours (node leave/teardown)."""
    out: list[str] = []
    for table in TABLES:
        chains = list(_by_table(current.chains, table))
        deletes = [f"-D {chain} {spec}" for (t, chain), present in jumps.items() if t == table for _, spec in present]
        if not (chains or deletes):
            continue
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in chains)
        out.extend(deletes)
        out.extend(f"-X {chain}" for chain in chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


# ---------------------------------------------------------------------------------------------- parsing


def _owned(chain: str) -> bool:
    return chain.startswith(OWNED_PREFIXES)


def _jump_target(spec: str) -> str:
    try:
        words = shlex.split(spec)  # a comment could hide " -j X"; only built-in chains' rules get here
    except ValueError:
        return ""
    for flag, value in itertools.pairwise(words):
        if flag in ("-j", "--jump", "-g", "--goto"):
            return value
    return ""


def parse_save(text: str) -> tuple[RuleSet, dict[ChainKey, tuple[tuple[int, str], ...]]]:
    """Our chains and our jumps from built-in chains, from `iptables-save` output (any tables; only nat and
    filter are read). Feed both to restore_text to resync with a minimal diff."""
    chains: dict[ChainKey, list[str]] = {}
    jumps: dict[ChainKey, list[tuple[int, str]]] = {}
    counts: dict[ChainKey, int] = {}
    table = ""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if line[0] == "*":
            table = line[1:].strip()
        elif table not in TABLES:
            continue
        elif line[0] == ":":
            name = line[1:].split(" ", 1)[0]
            if _owned(name):
                chains.setdefault((table, name), [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            if _owned(chain):
                chains.setdefault((table, chain), []).append(line)
            elif chain in BUILTIN_CHAINS:
                key = (table, chain)
                counts[key] = position = counts.get(key, 0) + 1
                spec = rest[0] if rest else ""
                if _owned(_jump_target(spec)):
                    jumps.setdefault(key, []).append((position, spec))
    return (
        RuleSet({key: tuple(rules) for key, rules in chains.items()}),
        {key: tuple(found) for key, found in jumps.items()},
    )
