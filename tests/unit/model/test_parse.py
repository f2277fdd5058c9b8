"""User input parsing: what is accepted, and a clear message for what is not."""

from __future__ import annotations

import pytest

from pyswarm.model import ConstraintOp, PortConfig, Protocol, PublishMode
from pyswarm.model import parse as p


def test_publish_short_and_long_forms() -> None:
    assert p.publish("80:80") == PortConfig(80, 80)
    assert p.publish("8080:80/udp") == PortConfig(8080, 80, Protocol.UDP)
    assert p.publish("published=8080,target=80,protocol=udp,mode=host") == PortConfig(
        8080, 80, Protocol.UDP, PublishMode.HOST
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:80", "published port 0"),
        ("65536:80", "published port 65536"),
        ("-1:80", "published port '-1'"),
        ("80:", "target port ''"),
        ("abc", "expected published:target"),
        ("80:80/sctp", "invalid protocol 'sctp'"),
        ("published=80", "target is required"),
        ("published=80,target=80,mode=vip", "invalid publish mode 'vip'"),
        ("published=80,target=80,color=red", "invalid publish option"),
    ],
)
def test_bad_ports_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(p.SpecError, match=message):
        p.publish(text)


def test_duplicate_published_port_is_refused() -> None:
    with pytest.raises(p.SpecError, match="given twice"):
        p.check_port_conflicts([p.publish("80:80"), p.publish("80:8080")])
    p.check_port_conflicts([p.publish("53:53"), p.publish("53:53/udp")])


@pytest.mark.parametrize("name", ["my web", "a/b", "web;rm -rf /", "$(id)", "", "-web", "x" * 10_000, "web\n"])
def test_bad_service_names(name: str) -> None:
    with pytest.raises(p.SpecError, match="invalid service name"):
        p.service_name(name)


@pytest.mark.parametrize("value", ["-1", "1e9", "three", "", "10001", "1.5"])
def test_bad_replicas(value: str) -> None:
    with pytest.raises(p.SpecError, match="invalid replicas"):
        p.replicas(value)


def test_constraints() -> None:
    parsed = p.constraint("node.labels.zone != east")
    assert (parsed.key, parsed.op, parsed.value) == ("node.labels.zone", ConstraintOp.NE, "east")
    for bad in ("node.hostname=node-01", "node.hostname<>x", "node.color==red", "node.role==boss", "==x"):
        with pytest.raises(p.SpecError):
            p.constraint(bad)


def test_durations() -> None:
    assert p.duration("5s") == 5.0
    assert p.duration("300ms") == pytest.approx(0.3)
    assert p.duration("1m30s") == 90.0
    for bad in ("5 parsecs", "-3s", "s"):
        with pytest.raises(p.SpecError):
            p.duration(bad)
