"""Placement constraints, matched like swarmkit's constraint.NodeMatches."""

from __future__ import annotations

import json

import pytest

from pyswarm.model import Constraint, ConstraintOp, Node, NodeRole, Service, ServiceSpec, parse
from pyswarm.model.codec import service_from_dict, service_to_dict, spec_from_dict
from pyswarm.planners.constraints import is_supported_key, node_matches, unsatisfied

EQ, NE = ConstraintOp.EQ, ConstraintOp.NE


def make_node(**overrides: object) -> Node:
    fields: dict[str, object] = {
        "id": "abc123",
        "hostname": "node-01",
        "engine_url": "tcp://10.0.0.1:2376",
        "addr": "10.0.0.1",
        "role": NodeRole.WORKER,
        "labels": {"zone": "east", "Disk": "ssd"},
    }
    fields.update(overrides)
    return Node(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "op", "value", "expected"),
    [
        ("node.id", EQ, "abc123", True),
        ("node.id", NE, "abc123", False),
        ("node.hostname", EQ, "node-01", True),
        ("node.hostname", EQ, "NODE-01", True),  # swarm compares values with strings.EqualFold
        ("node.hostname", EQ, "node-02", False),
        ("node.hostname", NE, "node-02", True),
        ("Node.Hostname", EQ, "node-01", True),  # the attribute name is case-insensitive too
        ("node.role", EQ, "worker", True),
        ("node.role", EQ, "manager", False),
        ("node.role", NE, "manager", True),
        ("node.labels.zone", EQ, "east", True),
        ("node.labels.zone", EQ, "EAST", True),
        ("node.labels.zone", NE, "east", False),
        ("node.labels.zone", EQ, "west", False),
        ("node.labels.Disk", EQ, "ssd", True),
        ("node.labels.disk", EQ, "ssd", False),  # label names are case-sensitive
        ("node.labels.rack", EQ, "r1", False),  # a missing label: == fails
        ("node.labels.rack", NE, "r1", True),  # ... and != passes
        ("engine.labels.os", EQ, "linux", False),  # engine labels are not collected: read as absent
        ("engine.labels.os", NE, "linux", True),
        ("node.platform.os", EQ, "linux", False),
        ("node.ip", EQ, "10.0.0.1", True),
        ("node.ip", NE, "10.0.0.1", False),
        ("node.ip", EQ, "10.0.0.0/24", True),
        ("node.ip", NE, "10.1.0.0/16", True),
        ("node.ip", EQ, "not-an-ip", False),
        ("node.ip", NE, "not-an-ip", False),  # swarm rejects a malformed address whatever the operator
        ("node.colour", EQ, "red", False),  # unknown keys never match
        ("node.colour", NE, "red", False),
    ],
)
def test_single_constraint(key: str, op: ConstraintOp, value: str, expected: bool) -> None:
    assert node_matches([Constraint(key, op, value)], make_node()) is expected


def test_manager_role() -> None:
    node = make_node(role=NodeRole.MANAGER)
    assert node_matches([Constraint("node.role", EQ, "manager")], node)
    assert not node_matches([Constraint("node.role", EQ, "worker")], node)


def test_node_ip_with_a_port_in_the_address() -> None:
    node = make_node(addr="192.168.1.7:2377")
    assert node_matches([Constraint("node.ip", EQ, "192.168.1.0/24")], node)


def test_constraints_are_anded_and_empty_matches_everything() -> None:
    node = make_node()
    assert node_matches([], node)
    both = [Constraint("node.role", EQ, "worker"), Constraint("node.labels.zone", EQ, "east")]
    assert node_matches(both, node)
    one_fails = [Constraint("node.role", EQ, "worker"), Constraint("node.labels.zone", EQ, "west")]
    assert not node_matches(one_fails, node)
    assert unsatisfied(one_fails, node) == [one_fails[1]]


@pytest.mark.parametrize(
    ("key", "supported"),
    [
        ("node.id", True),
        ("node.hostname", True),
        ("NODE.ROLE", True),
        ("node.ip", True),
        ("node.labels.zone", True),
        ("engine.labels.os", True),
        ("node.labels.", False),
        ("node.colour", False),
        ("hostname", False),
    ],
)
def test_is_supported_key(key: str, supported: bool) -> None:
    assert is_supported_key(key) is supported


# --- constraints read back from the store place tasks as the ones accepted did (security review, 6) -------


def _restarted(constraints: tuple[Constraint, ...]) -> tuple[Constraint, ...]:
    """The constraints as a restarted manager has them: through the store's JSON."""
    spec = ServiceSpec(name="web", image="nginx", constraints=constraints)
    return service_from_dict(json.loads(json.dumps(service_to_dict(Service(id="s", spec=spec))))).spec.constraints


@pytest.mark.parametrize(
    "text",
    [
        "node.hostname==node-01",
        "node.hostname!=node-02",
        "node.role==worker",
        "node.labels.zone!=east",
        "node.labels.env==a=b",  # a value may hold a single `=`
        "node.labels.env!=a!b",
    ],
)
def test_a_stored_constraint_matches_the_same_nodes(text: str) -> None:
    accepted = (parse.constraint(text),)
    assert _restarted(accepted) == accepted
    nodes = [
        make_node(),
        make_node(id="n2", hostname="node-02", role=NodeRole.MANAGER, labels={"env": "a=b"}),
        make_node(id="n3", hostname="node-03", labels={"zone": "west", "env": "a!b"}),
    ]
    assert [node_matches(_restarted(accepted), n) for n in nodes] == [node_matches(accepted, n) for n in nodes]


def test_the_rule_an_older_state_file_holds_is_the_one_that_was_accepted() -> None:
    """The previous release accepted `node.hostname==node-02!=x` as hostname == `node-02!=x`, stored its
    text, and read it back split at the `!=`: the unknown key `node.hostname==node-02`, which never
    matches, so the service's tasks could go nowhere after a restart. Read at the first operator, the old
    text is the rule that was accepted; the parser now refuses such a value."""
    old = {"name": "web", "image": "nginx", "constraints": ["node.hostname==node-02!=x", "node.labels.zone!=east"]}
    constraints = spec_from_dict(old).constraints
    assert constraints == (Constraint("node.hostname", EQ, "node-02!=x"), Constraint("node.labels.zone", NE, "east"))
    assert node_matches(constraints, make_node(hostname="node-02!=x", labels={}))
    assert not node_matches(constraints, make_node(hostname="node-02", labels={}))
    with pytest.raises(parse.SpecError, match="ambiguous"):
        parse.constraint("node.hostname==node-02!=x")
