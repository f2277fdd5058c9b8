"""The ingress rule renderer, differ and iptables-save parser.

Pure tests first; then, when root with iptables available, a round trip through a real iptables-restore /
iptables-save inside a throwaway network namespace (always deleted)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyswarm.model import Endpoint, PortConfig, Protocol, Service, ServiceSpec
from pyswarm.planners.ingress import (
    FIREWALL_CHAIN,
    FORWARD_CHAIN,
    INGRESS_CHAIN,
    MARK_MASQ_CHAIN,
    MAX_CHAIN_NAME,
    POSTROUTING_CHAIN,
    REJECT_CHAIN,
    IngressPort,
    RuleSet,
    applied_jumps,
    endpoint_problem,
    ingress_ports_for,
    parse_save,
    probability,
    removal_text,
    render_node_rules,
    restore_text,
    skipped_endpoints,
)

NODE = "10.0.0.1"


def ep(node: str, host_port: int, container: str = "", target: int = 0, task: str = "") -> Endpoint:
    return Endpoint(node, host_port, task or f"t-{node}-{host_port}", container, target)


def port(sid: str, published: int, *endpoints: Endpoint, proto: Protocol = Protocol.TCP, name: str = "") -> IngressPort:
    return IngressPort(sid, name or sid, published, proto, tuple(endpoints))


def rules(rs: RuleSet, table: str, chain: str) -> tuple[str, ...]:
    return rs.chains[(table, chain)]


def svc_chain(rs: RuleSet, published: int) -> str:
    for line in rules(rs, "nat", INGRESS_CHAIN):
        if f"--dport {published} " in line:
            return line.rsplit("-j ", 1)[1]
    raise AssertionError(f"no ingress rule for {published}")


def sep_chains(rs: RuleSet, svc: str) -> list[str]:
    return [line.rsplit("-j ", 1)[1] for line in rules(rs, "nat", svc)]


# ---------------------------------------------------------------------------------------------- render


def test_probabilities_are_one_over_remaining_and_last_rule_unconditional() -> None:
    eps = [ep(f"10.0.0.{i}", 30000 + i) for i in range(2, 6)]  # 4 remote endpoints
    rs = render_node_rules([port("s1", 80, *eps)], NODE)
    svc = rules(rs, "nat", svc_chain(rs, 80))
    assert len(svc) == 4
    found = [re.search(r"--probability (\S+)", line) for line in svc]
    assert [m.group(1) if m else None for m in found] == [
        "0.25000000000",
        "0.33333333349",
        "0.50000000000",
        None,
    ]
    assert re.fullmatch(r"-A PYSW-SVC-\w+ -j PYSW-SEP-\w+", svc[-1])
    # Each endpoint ends up with 1/n of new connections.
    left, shares = 1.0, []
    for m in found[:-1]:
        assert m is not None
        shares.append(left * float(m.group(1)))
        left -= shares[-1]
    shares.append(left)
    assert all(abs(share - 0.25) < 1e-8 for share in shares)


def test_probability_is_printed_as_iptables_save_prints_it() -> None:
    assert probability(2) == "0.50000000000"
    assert probability(3) == "0.33333333349"  # kube-proxy's familiar value
    assert probability(10) == "0.10000000009"
    assert probability(1000) == "0.00100000016"


def test_chain_names_are_stable_short_and_independent_of_input_order() -> None:
    a = [
        port("s1", 80, ep("10.0.0.2", 30001), ep("10.0.0.3", 30002), ep(NODE, 30003, "172.17.0.2", 80)),
        port("s2", 53, ep("10.0.0.2", 30004), proto=Protocol.UDP),
        port("s3", 8080),
    ]
    first = render_node_rules(a, NODE)
    reordered = [a[2], a[1], IngressPort("s1", "s1", 80, Protocol.TCP, tuple(reversed(a[0].endpoints)))]
    assert render_node_rules(reordered, NODE) == first
    names = [chain for _, chain in first.chains]
    assert len(set(names)) == len(names)
    assert all(len(name) <= MAX_CHAIN_NAME for name in names)
    assert all(re.fullmatch(r"PYSW-(SVC|SEP)-[A-Z2-7]{16}|PYSWARM-[A-Z-]+", name) for name in names)


def test_same_port_on_two_protocols_gets_two_chains() -> None:
    rs = render_node_rules(
        [port("s1", 53, ep("10.0.0.2", 30001)), port("s1", 53, ep("10.0.0.2", 30002), proto=Protocol.UDP)],
        NODE,
    )
    ingress = rules(rs, "nat", INGRESS_CHAIN)
    assert len(ingress) == 2
    assert len({line.rsplit(" ", 1)[1] for line in ingress}) == 2


def test_no_endpoints_rejects_in_filter_and_has_no_nat_chain() -> None:
    rs = render_node_rules([port("s1", 80, name="web"), port("s2", 53, proto=Protocol.UDP, name="dns")], NODE)
    assert rules(rs, "nat", INGRESS_CHAIN) == ()
    assert not [chain for _, chain in rs.chains if chain.startswith("PYSW-")]
    assert rules(rs, "filter", REJECT_CHAIN) == (
        f"-A {REJECT_CHAIN} -p udp -m addrtype --dst-type LOCAL -m udp --dport 53 "
        '-m comment --comment "dns:53/udp" -j REJECT --reject-with icmp-port-unreachable',
        f"-A {REJECT_CHAIN} -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 80 "
        '-m comment --comment "web:80/tcp" -j REJECT --reject-with tcp-reset',
    )


def test_ingress_rule_form() -> None:
    rs = render_node_rules([port("s1", 80, ep("10.0.0.2", 30001), name="web")], NODE)
    (line,) = rules(rs, "nat", INGRESS_CHAIN)
    assert re.fullmatch(
        r"-A PYSWARM-INGRESS -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 80 "
        r'-m comment --comment "web:80/tcp" -j PYSW-SVC-[A-Z2-7]{16}',
        line,
    )


def test_local_endpoint_dnats_straight_to_the_container() -> None:
    rs = render_node_rules([port("s1", 80, ep(NODE, 30001, "172.17.0.5", 8000))], NODE)
    (sep,) = sep_chains(rs, svc_chain(rs, 80))
    assert rules(rs, "nat", sep) == (
        f"-A {sep} -s 172.17.0.5/32 -j {MARK_MASQ_CHAIN}",  # hairpin only
        f"-A {sep} -s 127.0.0.0/8 -j {MARK_MASQ_CHAIN}",  # 127.0.0.1:80 from the node itself
        f"-A {sep} -p tcp -j DNAT --to-destination 172.17.0.5:8000",
    )


def test_local_endpoint_without_container_address_goes_to_the_host_port() -> None:
    rs = render_node_rules([port("s1", 80, ep(NODE, 30001))], NODE)
    (sep,) = sep_chains(rs, svc_chain(rs, 80))
    assert rules(rs, "nat", sep) == (
        f"-A {sep} -j {MARK_MASQ_CHAIN}",
        f"-A {sep} -p tcp -j DNAT --to-destination {NODE}:30001",
    )


def test_remote_endpoint_is_marked_and_dnated_to_its_node_host_port() -> None:
    # container_addr is ignored off the task's node: it is only reachable there.
    rs = render_node_rules([port("s1", 80, ep("10.0.0.9", 32768, "172.17.0.5", 80))], NODE)
    (sep,) = sep_chains(rs, svc_chain(rs, 80))
    assert rules(rs, "nat", sep) == (
        f"-A {sep} -j {MARK_MASQ_CHAIN}",
        f"-A {sep} -p tcp -j DNAT --to-destination 10.0.0.9:32768",
    )


def test_same_endpoints_render_differently_per_node() -> None:
    eps = (ep("10.0.0.1", 30001, "172.17.0.2", 80), ep("10.0.0.2", 30002, "172.17.0.2", 80))
    one = render_node_rules([port("s1", 80, *eps)], "10.0.0.1")
    two = render_node_rules([port("s1", 80, *eps)], "10.0.0.2")
    dnat = {
        node: sorted(
            line.split("--to-destination ")[1] for r in rs.chains.values() for line in r if "--to-destination" in line
        )
        for node, rs in (("one", one), ("two", two))
    }
    assert dnat == {"one": ["10.0.0.2:30002", "172.17.0.2:80"], "two": ["10.0.0.1:30001", "172.17.0.2:80"]}


def test_udp() -> None:
    rs = render_node_rules([port("s1", 53, ep("10.0.0.2", 30001), proto=Protocol.UDP, name="dns")], NODE)
    (line,) = rules(rs, "nat", INGRESS_CHAIN)
    assert " -p udp -m addrtype --dst-type LOCAL -m udp --dport 53 " in line
    (sep,) = sep_chains(rs, svc_chain(rs, 53))
    assert rules(rs, "nat", sep)[-1] == f"-A {sep} -p udp -j DNAT --to-destination 10.0.0.2:30001"


def test_static_chains() -> None:
    rs = render_node_rules([], NODE)
    assert rules(rs, "nat", MARK_MASQ_CHAIN) == (f"-A {MARK_MASQ_CHAIN} -j MARK --set-xmark 0x4000/0x4000",)
    assert rules(rs, "nat", POSTROUTING_CHAIN) == (
        f"-A {POSTROUTING_CHAIN} -m mark ! --mark 0x4000/0x4000 -j RETURN",
        f"-A {POSTROUTING_CHAIN} -j MARK --set-xmark 0x4000/0x0",
        f"-A {POSTROUTING_CHAIN} -j MASQUERADE --random-fully",
    )
    assert rules(render_node_rules([], NODE, random_fully=False), "nat", POSTROUTING_CHAIN)[-1].endswith(
        "-j MASQUERADE"
    )
    assert rules(rs, "filter", FORWARD_CHAIN)[0] == f"-A {FORWARD_CHAIN} -m mark --mark 0x4000/0x4000 -j ACCEPT"
    assert "-d 127.0.0.0/8" in rules(rs, "filter", FIREWALL_CHAIN)[0]


def test_duplicate_endpoints_collapse() -> None:
    rs = render_node_rules([port("s1", 80, ep("10.0.0.2", 30001, task="a"), ep("10.0.0.2", 30001, task="b"))], NODE)
    assert len(rules(rs, "nat", svc_chain(rs, 80))) == 1


@pytest.mark.parametrize(
    "bad",
    [
        port("s1", 0),
        port("s1", 70000),
        port("s1", -1),
        IngressPort("s1", "s1", True, Protocol.TCP, ()),  # bool is an int, but not a port
        IngressPort("s1", "s1", "80", Protocol.TCP, ()),  # type: ignore[arg-type]
        IngressPort("s1", "s1", 80, "sctp", ()),  # type: ignore[arg-type]
        IngressPort("", "s1", 80, Protocol.TCP, ()),
    ],
)
def test_bad_input_raises_value_error(bad: IngressPort) -> None:
    with pytest.raises(ValueError):
        render_node_rules([bad], NODE)


BAD_ENDPOINTS = {
    "host port 0": ep("10.0.0.2", 0),
    "host port 65536": ep("10.0.0.2", 65536),
    "node address 10.0.0.300": ep("10.0.0.300", 30001),
    "node address with a shell command": ep("10.0.0.2; rm -rf /", 30001),
    "IPv6 node address": ep("fe80::1", 30001),  # iptables is IPv4 only
    "host name as node address": ep("host.example", 30001),  # `node add ssh://root@host.example` stored that
    "container address not an IP": ep("10.0.0.2", 30001, "not-an-ip", 80),
    "local, without a target port": ep(NODE, 30001, "172.17.0.2", 0),
}


@pytest.mark.parametrize("bad", list(BAD_ENDPOINTS.values()), ids=list(BAD_ENDPOINTS))
def test_a_bad_endpoint_is_skipped_on_every_node_and_the_rest_is_rendered(bad: Endpoint) -> None:
    """One bad endpoint (before: a ValueError for every node, so no node's rules were updated) is skipped
    like a task that is not running; the good endpoints of the same port, and other ports, are rendered."""
    good = ep("10.0.0.3", 30002)
    ports = [port("s1", 80, bad, good), port("s2", 81, bad), port("s3", 82, ep("10.0.0.2", 30003))]
    assert endpoint_problem(bad)
    assert skipped_endpoints(ports) == ((ports[0], bad, endpoint_problem(bad)), (ports[1], bad, endpoint_problem(bad)))
    for node in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        rendered = render_node_rules(ports, node)
        assert rendered == render_node_rules([port("s1", 80, good), port("s2", 81), ports[2]], node)
        assert len(rules(rendered, "nat", svc_chain(rendered, 80))) == 1  # only the good endpoint
        (reject,) = rules(rendered, "filter", REJECT_CHAIN)  # s2 has no usable endpoint left: refused
        assert "--dport 81 " in reject


def test_the_endpoint_problem_names_the_bad_address() -> None:
    assert endpoint_problem(ep("host.example", 30001)) == (
        "endpoint node address must be an IPv4 address, got 'host.example'"
    )
    assert endpoint_problem(ep("10.0.0.2", 30001, "172.17.0.2", 80)) == ""
    assert skipped_endpoints([port("s1", 80, ep("10.0.0.2", 30001))]) == ()


@pytest.mark.parametrize("node", ["", "10.0.0", "10.0.0.1/24", "::1", "host.example"])
def test_bad_node_address_raises_value_error(node: str) -> None:
    with pytest.raises(ValueError):
        render_node_rules([], node)


def test_two_services_on_one_port_raise() -> None:
    with pytest.raises(ValueError, match="both"):
        render_node_rules([port("s1", 80), port("s2", 80)], NODE)


def test_comment_is_sanitised() -> None:
    rs = render_node_rules([port("s1", 80, name='we b"$(rm -rf /)`\n')], NODE)
    (line,) = rules(rs, "filter", REJECT_CHAIN)
    comment = re.search(r'--comment "([^"]*)"', line)
    assert comment is not None
    assert re.fullmatch(r"[A-Za-z0-9._:/_-]+", comment.group(1))
    assert comment.group(1).endswith(":80/tcp")
    assert shlex.split(line)[-4:] == ["-j", "REJECT", "--reject-with", "tcp-reset"]


def test_ingress_ports_for_service() -> None:
    spec = ServiceSpec(
        "web",
        "nginx",
        ports=(
            PortConfig(80, 8000),
            PortConfig(53, 53, Protocol.UDP),
            PortConfig(9000, 9000, mode=__import__("pyswarm.model").model.PublishMode.HOST),
        ),
    )
    service = Service("sid", spec)
    eps = {(80, "tcp"): (ep("10.0.0.2", 30001),)}
    assert ingress_ports_for(service, eps) == (
        IngressPort("sid", "web", 80, Protocol.TCP, (ep("10.0.0.2", 30001),)),
        IngressPort("sid", "web", 53, Protocol.UDP, ()),
    )


# ---------------------------------------------------------------------------------------------- diff


def two_sets() -> tuple[RuleSet, RuleSet, list[IngressPort]]:
    ports = [
        port("s1", 80, ep("10.0.0.2", 30001), ep("10.0.0.3", 30002)),
        port("s2", 81, ep("10.0.0.2", 30003), ep("10.0.0.3", 30004)),
        port("s3", 82),
    ]
    before = render_node_rules(ports, NODE)
    changed = [ports[0], port("s2", 81, ep("10.0.0.2", 30003), ep("10.0.0.4", 30005)), ports[2]]
    return before, render_node_rules(changed, NODE), ports


def declared(text: str) -> set[str]:
    return {line[1:].split(" ")[0] for line in text.splitlines() if line.startswith(":")}


def test_diff_rewrites_only_the_changed_chain_and_deletes_stale_ones_in_the_same_text() -> None:
    before, after, _ = two_sets()
    text = restore_text(after, before, applied_jumps())
    svc = svc_chain(after, 81)
    new_sep = (set(sep_chains(after, svc)) - set(sep_chains(before, svc))).pop()
    old_sep = (set(sep_chains(before, svc)) - set(sep_chains(after, svc))).pop()
    assert declared(text) == {svc, new_sep, old_sep}  # the stale one is declared (flushed) ...
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT" and lines.count("COMMIT") == 1  # filter untouched
    assert f"-X {old_sep}" in lines
    # ... and deleted only after every chain that referenced it was rewritten.
    assert lines.index(f"-X {old_sep}") > max(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert not any(line.startswith(("-I", "-D")) for line in lines)


def test_removing_a_service_deletes_its_chains_and_its_jump() -> None:
    before, _, ports = two_sets()
    after = render_node_rules([ports[0], ports[2]], NODE)
    text = restore_text(after, before, applied_jumps())
    svc = svc_chain(before, 81)
    gone = {svc, *sep_chains(before, svc)}
    assert {line[3:] for line in text.splitlines() if line.startswith("-X ")} == gone
    assert declared(text) == gone | {INGRESS_CHAIN}


def test_no_change_is_empty() -> None:
    before, _, ports = two_sets()
    assert restore_text(before, before, applied_jumps()) == ""
    assert restore_text(render_node_rules(list(reversed(ports)), NODE), before, applied_jumps()) == ""


def test_unknown_current_rewrites_everything_without_deleting() -> None:
    before, _, _ = two_sets()
    text = restore_text(before, None, applied_jumps())
    assert declared(text) == {chain for _, chain in before.chains}
    assert "-X" not in text


def test_jumps_inserted_when_missing_and_moved_when_not_first() -> None:
    rs = render_node_rules([], NODE)
    fresh = restore_text(rs, rs, None)
    assert fresh.splitlines() == [
        "*nat",
        "-I PREROUTING 1 -j PYSWARM-INGRESS",
        "-I OUTPUT 1 -j PYSWARM-INGRESS",
        "-I POSTROUTING 1 -j PYSWARM-POSTROUTING",
        "COMMIT",
        "*filter",
        "-I INPUT 1 -j PYSWARM-FIREWALL",
        "-I INPUT 2 -m conntrack --ctstate NEW -j PYSWARM-REJECT",
        "-I FORWARD 1 -j PYSWARM-FORWARD",
        "-I OUTPUT 1 -m conntrack --ctstate NEW -j PYSWARM-REJECT",
        "COMMIT",
    ]
    jumps = dict(applied_jumps())
    jumps[("nat", "PREROUTING")] = ((2, "-j PYSWARM-INGRESS"),)  # Docker inserted its jump ahead of ours
    jumps[("filter", "FORWARD")] = ((1, "-j PYSWARM-FORWARD"), (5, "-j PYSWARM-FORWARD"))  # duplicated
    assert restore_text(rs, rs, jumps).splitlines() == [
        "*nat",
        "-D PREROUTING -j PYSWARM-INGRESS",
        "-I PREROUTING 1 -j PYSWARM-INGRESS",
        "COMMIT",
        "*filter",
        "-D FORWARD -j PYSWARM-FORWARD",
        "-D FORWARD -j PYSWARM-FORWARD",
        "-I FORWARD 1 -j PYSWARM-FORWARD",
        "COMMIT",
    ]


SAVED = """# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 30 01:00:31 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:PYSWARM-FORWARD - [0:0]
:PYSWARM-REJECT - [0:0]
-A INPUT -j PYSWARM-REJECT
-A FORWARD -j DOCKER-USER
-A FORWARD -j PYSWARM-FORWARD
-A FORWARD -m comment --comment "x -j PYSWARM-FORWARD" -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW -j PYSWARM-REJECT
-A DOCKER -j PYSWARM-REJECT
-A PYSWARM-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
# Completed on Mon Nov 30 01:00:31 2026
*mangle
:PYSWARM-INGRESS - [0:0]
-A PREROUTING -j PYSWARM-INGRESS
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:PYSW-SVC-AAAAAAAAAAAAAAAA - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -j PYSWARM-INGRESS
-A PYSW-SVC-AAAAAAAAAAAAAAAA -j PYSW-SEP-BBBBBBBBBBBBBBBB
COMMIT
"""


def test_parse_save_reads_our_chains_and_jumps_only() -> None:
    current, jumps = parse_save(SAVED)
    assert current.chains == {
        ("filter", "PYSWARM-FORWARD"): ("-A PYSWARM-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",),
        ("filter", "PYSWARM-REJECT"): (),
        ("nat", "PYSW-SVC-AAAAAAAAAAAAAAAA"): ("-A PYSW-SVC-AAAAAAAAAAAAAAAA -j PYSW-SEP-BBBBBBBBBBBBBBBB",),
    }
    assert jumps == {
        ("filter", "INPUT"): ((1, "-j PYSWARM-REJECT"),),
        ("filter", "FORWARD"): ((2, "-j PYSWARM-FORWARD"),),
        ("filter", "OUTPUT"): ((1, "-m conntrack --ctstate NEW -j PYSWARM-REJECT"),),
        ("nat", "PREROUTING"): ((2, "-j PYSWARM-INGRESS"),),
    }


def test_removal_text() -> None:
    current, jumps = parse_save(SAVED)
    assert removal_text(current, jumps).splitlines() == [
        "*nat",
        ":PYSW-SVC-AAAAAAAAAAAAAAAA - [0:0]",
        "-D PREROUTING -j PYSWARM-INGRESS",
        "-X PYSW-SVC-AAAAAAAAAAAAAAAA",
        "COMMIT",
        "*filter",
        ":PYSWARM-FORWARD - [0:0]",
        ":PYSWARM-REJECT - [0:0]",
        "-D INPUT -j PYSWARM-REJECT",
        "-D FORWARD -j PYSWARM-FORWARD",
        "-D OUTPUT -m conntrack --ctstate NEW -j PYSWARM-REJECT",
        "-X PYSWARM-FORWARD",
        "-X PYSWARM-REJECT",
        "COMMIT",
    ]
    assert removal_text(RuleSet({}), {}) == ""


# A small model of `iptables-restore --noflush`, strict where the kernel is: -X of a missing or referenced
# chain fails, -A to a missing chain fails, -D of a missing rule fails.


def simulate(state: dict[tuple[str, str], list[str]], text: str) -> None:
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            state[(table, line[1:].split(" ")[0])] = []
        elif line.startswith("-A "):
            chain = line.split(" ")[1]
            assert (table, chain) in state, line
            state[(table, chain)].append(line)
        elif line.startswith("-I "):
            _, chain, pos, spec = line.split(" ", 3)
            state.setdefault((table, chain), []).insert(int(pos) - 1, f"-A {chain} {spec}")
        elif line.startswith("-D "):
            _, chain, spec = line.split(" ", 2)
            state[(table, chain)].remove(f"-A {chain} {spec}")
        elif line.startswith("-X "):
            chain = line[3:]
            assert (table, chain) in state, line
            assert not state[(table, chain)], f"{line}: not empty"
            referrers = [r for (t, _), rs in state.items() if t == table for r in rs if r.endswith(f"-j {chain}")]
            assert not referrers, f"{line}: still referenced by {referrers}"
            del state[(table, chain)]
        else:
            assert line == "COMMIT", line


def as_save(state: dict[tuple[str, str], list[str]]) -> str:
    out = []
    for table in ("nat", "filter"):
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for t, c in state if t == table)
        out.extend(r for (t, _), rs in state.items() if t == table for r in rs)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


endpoint_st = st.builds(
    ep,
    st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    st.integers(30000, 30010),
    st.sampled_from(["", "172.17.0.2", "172.17.0.3"]),
    st.just(80),
)
ports_st = st.dictionaries(
    st.tuples(st.sampled_from(["s1", "s2", "s3", "s4"]), st.sampled_from([Protocol.TCP, Protocol.UDP])),
    st.lists(endpoint_st, max_size=4),
    max_size=4,
).map(lambda d: [IngressPort(sid, sid, 1000 + int(sid[1]), proto, tuple(eps)) for (sid, proto), eps in d.items()])


@settings(max_examples=150, deadline=None)
@given(ports_st, ports_st)
def test_any_diff_applies_cleanly_and_reaches_the_desired_state(a: list[IngressPort], b: list[IngressPort]) -> None:
    state: dict[tuple[str, str], list[str]] = {("nat", c): [] for c in ("PREROUTING", "OUTPUT", "POSTROUTING")}
    state.update({("filter", c): [] for c in ("INPUT", "FORWARD", "OUTPUT")})
    state[("nat", "PREROUTING")].append("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER")
    for desired in (render_node_rules(a, NODE), render_node_rules(b, NODE)):
        current, jumps = parse_save(as_save(state))
        simulate(state, restore_text(desired, current, jumps))
        current, jumps = parse_save(as_save(state))
        assert current == desired
        assert jumps == applied_jumps()
        assert restore_text(desired, current, jumps) == ""
    simulate(state, removal_text(*parse_save(as_save(state))))
    assert {c for _, c in state} == {"PREROUTING", "OUTPUT", "POSTROUTING", "INPUT", "FORWARD"}
    assert not any("PYSW" in r for rs in state.values() for r in rs)


def test_render_and_diff_of_1000_services_is_fast() -> None:
    def services(shift: int) -> list[IngressPort]:
        return [
            port(
                f"service-{i:04d}",
                10000 + i,
                *(
                    ep(f"10.0.{(i + j) % 50}.{j + 1}", 30000 + (i * 3 + j + shift) % 30000, "172.17.0.2", 80)
                    for j in range(3)
                ),
                name=f"svc{i}",
            )
            for i in range(1000)
        ]

    before_ports, after_ports = services(0), services(0)
    after_ports[500] = port("service-0500", 10500, ep("10.0.9.9", 31000), name="svc500")  # endpoints changed
    start = time.perf_counter()
    before = render_node_rules(before_ports, "10.0.1.1")
    after = render_node_rules(after_ports, "10.0.1.1")
    text = restore_text(after, before, applied_jumps())
    elapsed = time.perf_counter() - start
    assert len(before.chains) > 4000
    assert 0 < len(text.splitlines()) < 20
    assert elapsed < 0.5, f"render x2 + diff of 1,000 services took {elapsed:.3f}s"


# ---------------------------------------------------------------------------------------------- real iptables


def _have_iptables() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "iptables-restore", "iptables-save"))


needs_iptables = pytest.mark.skipif(not _have_iptables(), reason="needs root, ip and iptables")


@pytest.fixture
def netns() -> Iterator[str]:
    """A throwaway network namespace, always deleted. The root namespace's iptables are never touched."""
    name = f"psw-rt-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if made.returncode:
        pytest.skip(f"cannot create a network namespace: {made.stderr.decode().strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ns_restore(ns: str, text: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-restore", "-w", "5", "--noflush"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr.decode()}\n{text}"


def ns_save(ns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True, check=True
    ).stdout


@needs_iptables
def test_round_trip_through_real_iptables(netns: str) -> None:
    ports = [
        port(
            "s1",
            80,
            ep(NODE, 30001, "172.17.0.2", 8080),
            ep("10.0.0.2", 30002),
            ep("10.0.0.3", 30003),
            name="stack_web",
        ),
        port("s2", 53, ep("10.0.0.2", 30004), ep(NODE, 30005), proto=Protocol.UDP, name="dns"),
        port("s3", 8443, name="no-endpoints"),
        port("s4", 9000, name="bad name; $(x)"),
        port("s5", 5353, *(ep(f"10.0.1.{i}", 31000 + i) for i in range(1, 8)), proto=Protocol.UDP),
    ]
    desired = render_node_rules(ports, NODE)
    # Docker's own jumps are there first, as on a real node.
    ns_restore(netns, "*nat\n:DOCKER - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n")
    ns_restore(netns, restore_text(desired, *parse_save(ns_save(netns))))

    saved = ns_save(netns)
    current, jumps = parse_save(saved)
    assert current == desired  # rendered rules are already in iptables-save's canonical form
    assert jumps == applied_jumps()
    assert restore_text(desired, current, jumps) == ""
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER" in saved

    # A change rewrites one service's chains and deletes the stale ones, in one transaction.
    ports[1] = port("s2", 53, ep("10.0.0.7", 30009), proto=Protocol.UDP, name="dns")
    del ports[3]
    changed = render_node_rules(ports, NODE)
    ns_restore(netns, restore_text(changed, current, jumps))
    current, jumps = parse_save(ns_save(netns))
    assert current == changed
    assert restore_text(changed, current, jumps) == ""

    # Docker restarts and puts its jump first again: ours moves back to the head.
    ns_restore(netns, "*nat\n-I PREROUTING 1 -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n")
    current, jumps = parse_save(ns_save(netns))
    assert jumps[("nat", "PREROUTING")] == ((2, "-j PYSWARM-INGRESS"),)
    ns_restore(netns, restore_text(changed, current, jumps))
    assert parse_save(ns_save(netns))[1] == applied_jumps()

    ns_restore(netns, removal_text(*parse_save(ns_save(netns))))
    saved = ns_save(netns)
    assert "PYSW" not in saved
    assert saved.count("-j DOCKER") == 2


def test_leftover_jumps_from_other_builtin_chains_are_deleted_before_their_chain() -> None:
    rs = render_node_rules([], NODE)
    current = RuleSet({**rs.chains, ("nat", "PYSWARM-OLD"): ()})
    jumps = {**applied_jumps(), ("nat", "INPUT"): ((1, "-j PYSWARM-OLD"),)}
    lines = restore_text(rs, current, jumps).splitlines()
    assert lines == ["*nat", ":PYSWARM-OLD - [0:0]", "-D INPUT -j PYSWARM-OLD", "-X PYSWARM-OLD", "COMMIT"]
