"""User input parsing: what is accepted, and a clear message for what is not."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyswarm.model import Constraint, ConstraintOp, PortConfig, Protocol, PublishMode, Service, ServiceSpec
from pyswarm.model import parse as p
from pyswarm.model.codec import (
    constraint_from_text,
    service_from_dict,
    service_to_dict,
    spec_from_dict,
    spec_to_dict,
)


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


# --- label keys: each checked on its own (security review, problem 6) ------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a=b", "cannot contain '='"),
        ("zone=", "cannot contain '='"),
        ("a b", "cannot contain whitespace"),
        ("a\tb", "cannot contain whitespace"),
        ("zone\n", "cannot contain whitespace"),
        ("a\x1b[31m", "cannot contain control characters"),
        ("a\x00", "cannot contain control characters"),
        ("a\x85b", "cannot contain whitespace"),  # NEL: whitespace and a C1 control
        ("a\x9bb", "cannot contain control characters"),
        ("", "cannot be empty"),
        ("x" * 129, "at most 128 characters"),
        ("-zone", "starting with a letter or digit"),
        ("zöne", "use 1-128 characters from"),
    ],
)
def test_bad_label_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(p.SpecError, match=f"invalid label key .*{reason}"):
        p.label_key(key)
    with pytest.raises(p.SpecError, match="invalid label key"):
        p.labels({key: "v"})  # the API's form: the key is not cut at its first `=`


@pytest.mark.parametrize("key", ["zone", "Zone-1", "com.example/rack", "a_b.c", "9", "x" * 128])
def test_good_label_keys(key: str) -> None:
    assert p.label_key(key) == key
    assert p.labels({key: "v=w"}) == {key: "v=w"}


def test_a_label_key_with_equals_is_not_read_as_a_shorter_key() -> None:
    """The hole: the API checked `f"{key}={value}"`, cut at its first `=`, so the key `zone=a` passed as the
    key `zone`, and was stored whole; `--label-rm` then refused to name it."""
    with pytest.raises(p.SpecError, match="invalid label key 'zone=a'"):
        p.labels({"zone=a": "b"})
    assert p.label("zone=a=b") == ("zone", "a=b")  # the CLI's KEY=VALUE: the value may hold `=`
    assert p.label("zone") == ("zone", "")


def test_label_values() -> None:
    assert p.label_value("k", "x" * 4096) == "x" * 4096
    for bad in ("x" * 4097, "a\x00b"):
        with pytest.raises(p.SpecError, match="invalid value for label 'k'"):
            p.labels({"k": bad})


@pytest.mark.parametrize("key", ["zone=a", "a b", "a\tb", "zone", "x" * 4225, "-x", "é"])
def test_any_key_a_stored_label_may_have_can_be_named_for_removal(key: str) -> None:
    assert p.removable_label_key(key) == key


@pytest.mark.parametrize("key", ["", "a\x00b", "x" * 4226])
def test_a_key_no_label_can_have_is_refused_for_removal(key: str) -> None:
    with pytest.raises(p.SpecError, match=r"invalid label key .*no label can have it"):
        p.removable_label_key(key)


# --- constraints: one operator each, and their text reads back as the same constraint ---------------------


@pytest.mark.parametrize(
    ("text", "operator"),
    [
        ("node.hostname==node-02!=x", "!="),
        ("node.hostname!=node-02==x", "=="),
        ("node.labels.zone==a==b", "=="),
        ("node.labels.zone!=a!=b", "!="),
        ("node.id==x!=", "!="),
    ],
)
def test_a_constraint_value_holding_an_operator_is_refused(text: str, operator: str) -> None:
    with pytest.raises(p.SpecError, match=f"its value .* contains '{operator}', so it is ambiguous"):
        p.constraint(text)


@pytest.mark.parametrize(
    ("text", "key", "op", "value"),
    [
        ("node.labels.env==a=b", "node.labels.env", ConstraintOp.EQ, "a=b"),  # a single `=` is no operator
        ("node.labels.env!=a!", "node.labels.env", ConstraintOp.NE, "a!"),
        ("node.labels.env==a!b", "node.labels.env", ConstraintOp.EQ, "a!b"),
        ("  node.role == manager ", "node.role", ConstraintOp.EQ, "manager"),
    ],
)
def test_constraints_with_a_single_operator(text: str, key: str, op: ConstraintOp, value: str) -> None:
    parsed = p.constraint(text)
    assert (parsed.key, parsed.op, parsed.value) == (key, op, value)
    assert p.constraint(str(parsed)) == parsed


_CONSTRAINT_TEXT = st.one_of(
    st.text(alphabet="node.hostnamlabe=!zx- \t0123456789", max_size=40),
    st.builds(
        lambda key, op, value: f"{key}{op}{value}",
        st.sampled_from(["node.id", "node.hostname", "node.role", "node.labels.zone", "engine.labels.os"]),
        st.sampled_from(["==", "!="]),
        st.text(alphabet="ab=!-.: \t", max_size=12),
    ),
)


@given(_CONSTRAINT_TEXT)
def test_every_accepted_constraint_reads_back_the_same_from_its_text_and_from_the_store(text: str) -> None:
    try:
        parsed = p.constraint(text)
    except p.SpecError:
        return
    assert p.constraint(str(parsed)) == parsed  # the API's text form
    assert constraint_from_text(str(parsed)) == parsed  # the text form of older state files
    spec = ServiceSpec(name="web", image="nginx", constraints=(parsed,))
    stored = json.loads(json.dumps(service_to_dict(Service(id="s", spec=spec))))
    assert stored["spec"]["constraints"] == [{"key": parsed.key, "op": parsed.op.value, "value": parsed.value}]
    assert service_from_dict(stored).spec.constraints == (parsed,)


def test_constraints_of_an_older_state_file_are_read_at_their_first_operator() -> None:
    """An older release stored each constraint as its text and split it at a `!=` wherever it was, so the
    `node.hostname==node-02!=x` it had accepted came back as the unknown key `node.hostname==node-02`."""
    assert constraint_from_text("node.hostname==node-02!=x") == Constraint(
        "node.hostname", ConstraintOp.EQ, "node-02!=x"
    )
    assert constraint_from_text("node.labels.zone!=east") == Constraint("node.labels.zone", ConstraintOp.NE, "east")
    assert constraint_from_text("node.labels.env==a=b") == Constraint("node.labels.env", ConstraintOp.EQ, "a=b")
    with pytest.raises(ValueError, match="has no operator"):
        constraint_from_text("node.hostname=x")


def test_the_api_shows_constraints_as_text() -> None:
    spec = ServiceSpec(name="web", image="nginx", constraints=(p.constraint("node.role!=manager"),))
    assert spec_to_dict(spec)["constraints"] == ["node.role!=manager"]
    assert spec_from_dict(spec_to_dict(spec)) == spec
