"""`updated_spec`: `service update`'s flags applied to a service's current spec (the API's JSON), as a new dict.

Each flag's effect, removals before additions, replacement by key, the errors (with the messages the CLI
prints), and properties: no flags change nothing, env names stay unique, the input is never modified."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyswarm.cli.container_flags import ContainerFlags
from pyswarm.cli.service_cmds import service_update
from pyswarm.cli.spec_update import UpdateFlags, updated_spec, whole_number
from pyswarm.model.parse import SpecError


def spec(**changes: Any) -> dict[str, Any]:
    """A replicated service's spec as the API returns it."""
    base: dict[str, Any] = {
        "name": "web",
        "image": "nginx",
        "mode": "replicated",
        "replicas": 2,
        "command": ["nginx", "-g", "daemon off;"],
        "env": ["A=1", "B=2"],
        "labels": {"team": "a", "tier": "front"},
        "ports": [
            {"published": 80, "target": 80, "protocol": "tcp", "mode": "ingress"},
            {"published": 53, "target": 53, "protocol": "udp", "mode": "ingress"},
        ],
        "constraints": ["node.role==worker"],
        "placement_prefs": ["zone"],
        "max_replicas_per_node": 0,
        "restart_policy": {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0},
        "stop_grace_period": 10.0,
        "force_update": 0,
    }
    return {**base, **changes}


def port(published: int, target: int, protocol: str = "tcp", mode: str = "ingress") -> dict[str, Any]:
    return {"published": published, "target": target, "protocol": protocol, "mode": mode}


def update(current: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return updated_spec(current, UpdateFlags(**flags))


def changed(current: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The fields whose value differs."""
    return {key: value for key, value in result.items() if current.get(key) != value}


# --- the flags, one by one ---------------------------------------------------------------------------------


def test_no_flags_change_nothing() -> None:
    current = spec()
    result = update(current)
    assert result == current
    assert result is not current


def test_replicas() -> None:
    assert changed(spec(), update(spec(), replicas="5")) == {"replicas": 5}
    assert update(spec(), replicas="0")["replicas"] == 0


def test_image() -> None:
    assert changed(spec(), update(spec(), image="nginx:1.27")) == {"image": "nginx:1.27"}


def test_an_empty_image_changes_nothing() -> None:
    assert update(spec(), image="") == spec()


def test_env_add_replaces_the_variable_of_that_name_and_puts_it_last() -> None:
    assert update(spec(), env_add=("A=9",))["env"] == ["B=2", "A=9"]
    assert update(spec(), env_add=("C=3",))["env"] == ["A=1", "B=2", "C=3"]


def test_env_and_env_add_both_add_env_first() -> None:
    assert update(spec(), env=("C=3",), env_add=("D=4",))["env"] == ["A=1", "B=2", "C=3", "D=4"]
    assert update(spec(), env=("C=3",), env_add=("C=4",))["env"] == ["A=1", "B=2", "C=4"]


def test_env_rm_removes_by_name() -> None:
    assert update(spec(), env_rm=("A",))["env"] == ["B=2"]
    assert update(spec(env=["A=1", "A=2", "B=2"]), env_rm=("A",))["env"] == ["B=2"]


def test_env_rm_of_a_variable_not_set_changes_nothing() -> None:
    assert update(spec(), env_rm=("NOPE",)) == spec()


def test_env_rm_applies_before_env_add() -> None:
    assert update(spec(), env_rm=("A",), env_add=("A=3",))["env"] == ["B=2", "A=3"]


def test_a_variable_without_a_value_replaces_one_with_a_value() -> None:
    assert update(spec(), env_add=("A",))["env"] == ["B=2", "A"]


def test_label_add_sets_or_replaces() -> None:
    result = update(spec(), label_add=("tier=back", "new=1"))
    assert result["labels"] == {"team": "a", "tier": "back", "new": "1"}


def test_label_and_label_add_the_later_wins() -> None:
    assert update(spec(), labels=("x=1",), label_add=("x=2",))["labels"]["x"] == "2"


def test_label_rm_removes_by_key_and_applies_before_label_add() -> None:
    assert update(spec(), label_rm=("team",))["labels"] == {"tier": "front"}
    assert update(spec(), label_rm=("team", "nope"), label_add=("team=b",))["labels"] == {"tier": "front", "team": "b"}


def test_publish_add_appends_a_new_port() -> None:
    assert update(spec(), publish_add=("8080:80",))["ports"] == [*spec()["ports"], port(8080, 80)]


def test_publish_add_replaces_the_port_with_the_same_published_port_and_protocol() -> None:
    ports = update(spec(), publish_add=("80:8080",))["ports"]
    assert ports == [port(53, 53, "udp"), port(80, 8080)]


def test_publish_add_of_another_protocol_on_the_same_number_keeps_both() -> None:
    ports = update(spec(), publish_add=("80:80/udp",))["ports"]
    assert ports == [*spec()["ports"], port(80, 80, "udp")]


def test_publish_long_form_and_host_mode() -> None:
    ports = update(spec(ports=[]), publish=("published=9100,target=9100,mode=host",))["ports"]
    assert ports == [port(9100, 9100, mode="host")]


def test_reserved_ports_and_conflicts_are_left_to_the_manager() -> None:
    # The API refuses port 22 and a port another service publishes (test_bad_input_cli has both).
    assert update(spec(), publish_add=("22:80",))["ports"][-1] == port(22, 80)


def test_publish_rm_removes_every_port_on_that_published_number() -> None:
    current = spec(ports=[port(80, 80), port(80, 80, "udp"), port(443, 443)])
    assert update(current, publish_rm=("80",))["ports"] == [port(443, 443)]


@pytest.mark.parametrize("text", ["53", "53:53", "53/udp", "53:99/tcp"])
def test_publish_rm_reads_only_the_published_number(text: str) -> None:
    assert update(spec(), publish_rm=(text,))["ports"] == [port(80, 80)]


def test_publish_rm_applies_before_publish_add() -> None:
    assert update(spec(), publish_rm=("80",), publish_add=("80:81",))["ports"] == [port(53, 53, "udp"), port(80, 81)]


def test_constraint_add_appends_normalised_text_and_does_not_duplicate() -> None:
    assert update(spec(), constraint_add=("node.hostname == node-02",))["constraints"] == [
        "node.role==worker",
        "node.hostname==node-02",
    ]
    assert update(spec(), constraints=("node.role == worker",))["constraints"] == ["node.role==worker"]


def test_constraints_are_matched_by_their_whole_text_not_by_key() -> None:
    # Unlike env, ports and labels: a second constraint on the same key is added next to the first.
    assert update(spec(), constraint_add=("node.role==manager",))["constraints"] == [
        "node.role==worker",
        "node.role==manager",
    ]


def test_constraint_rm_removes_by_normalised_text_and_applies_before_constraint_add() -> None:
    assert update(spec(), constraint_rm=("node.role == worker",))["constraints"] == []
    assert update(spec(), constraint_rm=("node.role==manager",))["constraints"] == ["node.role==worker"]
    result = update(spec(), constraint_rm=("node.role==worker",), constraint_add=("node.role==worker",))
    assert result["constraints"] == ["node.role==worker"]


def test_placement_prefs_replace_the_preferences() -> None:
    result = update(spec(), placement_prefs=("spread=node.labels.rack", "spread=node.labels.dc"))
    assert changed(spec(), result) == {"placement_prefs": ["rack", "dc"]}


def test_replicas_max_per_node() -> None:
    assert changed(spec(), update(spec(), replicas_max_per_node="3")) == {"max_replicas_per_node": 3}
    assert update(spec(max_replicas_per_node=3), replicas_max_per_node="0")["max_replicas_per_node"] == 0


def test_restart_policy_flags() -> None:
    result = update(
        spec(),
        restart_condition="on-failure",
        restart_delay="1m30s",
        restart_max_attempts="4",
        restart_window="300ms",
    )
    assert changed(spec(), result) == {
        "restart_policy": {"condition": "on-failure", "delay": 90.0, "max_attempts": 4, "window": 0.3}
    }


def test_each_restart_flag_changes_only_its_field() -> None:
    policy = spec()["restart_policy"]
    assert update(spec(), restart_condition="NONE")["restart_policy"] == {**policy, "condition": "none"}
    assert update(spec(), restart_delay="2s")["restart_policy"] == {**policy, "delay": 2.0}
    assert update(spec(), restart_max_attempts="7")["restart_policy"] == {**policy, "max_attempts": 7}
    assert update(spec(), restart_window="1h")["restart_policy"] == {**policy, "window": 3600.0}


def test_stop_grace_period() -> None:
    assert changed(spec(), update(spec(), stop_grace_period="30s")) == {"stop_grace_period": 30.0}


def test_force_increments_force_update() -> None:
    assert update(spec(), force=True)["force_update"] == 1
    assert update(spec(force_update=4), force=True)["force_update"] == 5
    without = spec()
    del without["force_update"]
    assert update(without, force=True)["force_update"] == 1
    assert "force_update" not in update(without)


def test_unknown_fields_are_kept() -> None:
    assert update(spec(extra={"x": 1}), replicas="3")["extra"] == {"x": 1}


def test_the_command_is_never_changed() -> None:
    result = update(spec(), replicas="1", image="redis", env_add=("Z=1",), force=True)
    assert result["command"] == spec()["command"]


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"replicas": "-1"}, "invalid replicas '-1'", id="replicas -1"),
        pytest.param({"replicas": ""}, "invalid replicas ''", id="replicas empty"),
        pytest.param({"replicas": "10001"}, "invalid replicas 10001: must be from 0 to 10000", id="replicas 10001"),
        pytest.param({"image": "bad image"}, "invalid image reference 'bad image'", id="image"),
        pytest.param({"env_add": ("=x",)}, "invalid environment variable '=x'", id="env-add"),
        pytest.param({"env": ("A B=1",)}, "invalid environment variable 'A B=1'", id="env"),
        pytest.param({"label_add": ("=x",)}, "invalid label key ''", id="label-add"),
        pytest.param({"labels": ("a b=1",)}, "invalid label key 'a b'", id="label"),
        pytest.param({"publish_rm": ("abc",)}, "invalid port 'abc'", id="publish-rm abc"),
        pytest.param({"publish_rm": ("9999",)}, "no published port 9999 on service web", id="publish-rm absent"),
        pytest.param({"publish_add": ("0:80",)}, "invalid published port 0", id="publish-add 0"),
        pytest.param({"publish": ("8081:80/sctp",)}, "invalid protocol 'sctp'", id="publish sctp"),
        pytest.param({"constraint_add": ("node.hostname~=x",)}, "invalid constraint", id="constraint-add"),
        pytest.param({"constraint_rm": ("node.colour==red",)}, "invalid constraint key 'node.colour'", id="rm"),
        pytest.param({"placement_prefs": ("zone",)}, "invalid placement preference 'zone'", id="placement"),
        pytest.param(
            {"replicas_max_per_node": "-1"},
            "invalid --replicas-max-per-node '-1': must be a whole number",
            id="max per node",
        ),
        pytest.param({"replicas_max_per_node": ""}, "invalid --replicas-max-per-node ''", id="max per node empty"),
        pytest.param({"restart_condition": "sometimes"}, "invalid restart condition 'sometimes'", id="condition"),
        pytest.param({"restart_delay": "5parsecs"}, "invalid duration '5parsecs'", id="delay"),
        pytest.param({"restart_max_attempts": "lots"}, "invalid --restart-max-attempts 'lots'", id="attempts"),
        pytest.param({"restart_window": "-5s"}, "invalid duration '-5s'", id="window"),
        pytest.param({"stop_grace_period": "forever"}, "invalid duration 'forever'", id="grace"),
    ],
)
def test_bad_values_raise_a_spec_error_that_names_them(flags: dict[str, Any], message: str) -> None:
    current = spec()
    before = copy.deepcopy(current)
    with pytest.raises(SpecError) as raised:
        update(current, **flags)
    assert message in str(raised.value)
    assert current == before


def test_replicas_of_a_global_service_is_an_error() -> None:
    with pytest.raises(SpecError) as raised:
        update(spec(mode="global"), replicas="2")
    assert str(raised.value) == "replicas can only be used with replicated or replicated-job mode"


def test_the_global_mode_check_comes_before_the_replicas_value() -> None:
    with pytest.raises(SpecError, match="replicas can only be used with replicated or replicated-job mode"):
        update(spec(mode="global"), replicas="three")


def test_a_global_service_accepts_the_other_flags() -> None:
    result = update(spec(mode="global"), image="redis", force=True)
    assert changed(spec(mode="global"), result) == {"image": "redis", "force_update": 1}


def test_publish_rm_of_a_port_removed_by_an_earlier_publish_rm_is_an_error() -> None:
    with pytest.raises(SpecError, match="no published port 80 on service web"):
        update(spec(), publish_rm=("80", "80:80"))


def test_the_first_bad_value_in_merge_order_is_reported() -> None:
    # Fields are checked in merge order: replicas, image, env, labels, ports, constraints, placement, ...
    with pytest.raises(SpecError, match="invalid image reference"):
        update(spec(), image="bad image", env_add=("=x",), restart_delay="5parsecs")
    with pytest.raises(SpecError, match="invalid environment variable"):
        update(spec(), env_add=("=x",), publish_rm=("9999",))
    with pytest.raises(SpecError, match="no published port 9999"):
        update(spec(), publish_rm=("9999",), publish_add=("0:80",))
    with pytest.raises(SpecError, match="invalid duration '5parsecs'"):
        update(spec(), restart_delay="5parsecs", stop_grace_period="forever")


def test_removal_flags_are_not_validated_except_ports_and_constraints() -> None:
    # --env-rm and --label-rm name keys to drop: one that is not there, or could never be, is no error.
    assert update(spec(), env_rm=("not a name",), label_rm=("=",)) == spec()


def test_a_bad_constraint_rm_is_only_checked_when_the_service_has_constraints() -> None:
    # As `service update` always did: with no constraint to remove from, --constraint-rm is not read.
    assert update(spec(constraints=[]), constraint_rm=("bogus",))["constraints"] == []
    with pytest.raises(SpecError, match="invalid constraint 'bogus'"):
        update(spec(), constraint_rm=("bogus",))


def test_whole_number() -> None:
    assert whole_number("0", "--tail") == 0
    assert whole_number("42", "--tail") == 42
    for text in ("", "-1", "1.5", "1e3", " 1", "many"):
        with pytest.raises(SpecError, match=f"invalid --tail {text!r}: must be a whole number"):
            whole_number(text, "--tail")


# --- the input is never modified ---------------------------------------------------------------------------


def test_the_input_is_not_modified_and_shares_nothing_mutable_with_the_result() -> None:
    current = spec()
    before = copy.deepcopy(current)
    result = update(
        current,
        replicas="3",
        env_rm=("A",),
        env_add=("C=3",),
        label_rm=("team",),
        label_add=("x=y",),
        publish_rm=("53",),
        publish_add=("8080:80",),
        constraint_rm=("node.role==worker",),
        constraint_add=("node.hostname==n1",),
        placement_prefs=("spread=node.labels.rack",),
        restart_delay="1s",
        force=True,
    )
    assert current == before
    result["command"].append("x")
    result["ports"].append(port(1, 1))
    result["placement_prefs"].append("x")
    result["labels"]["z"] = "1"
    assert current == before


# --- the command's flags and UpdateFlags -------------------------------------------------------------------


def test_every_spec_flag_of_service_update_is_a_field_of_update_flags() -> None:
    """The command builds ContainerFlags and UpdateFlags from its parameters minus its own: each
    parameter lands in exactly one of them (the file-read --env-file lines are create's only)."""
    params = {param.name for param in service_update.params} - {
        "detach",
        "quiet",
        "timeout",
        "ref",
        "no_resolve_image",
        "with_registry_auth",
    }
    container = {field.name for field in dataclasses.fields(ContainerFlags)} - {"env_file_lines"}
    update = {field.name for field in dataclasses.fields(UpdateFlags)}
    assert not container & update
    assert params == container | update


def test_update_flags_is_frozen() -> None:
    flags = UpdateFlags(replicas="2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.replicas = "3"  # type: ignore[misc]


# --- properties --------------------------------------------------------------------------------------------

_ENV_NAMES = st.sampled_from(["A", "B", "C", "PATH", "_X", "lower"])
_ENV_ITEMS = st.builds(lambda name, value: f"{name}={value}", _ENV_NAMES, st.sampled_from(["", "1", "x=y", "a b"]))
_LABELS = st.dictionaries(st.sampled_from(["a", "b", "team", "x.y/z"]), st.sampled_from(["", "1", "v"]), max_size=4)
_PORTS = st.lists(
    st.builds(
        port,
        st.sampled_from([80, 443, 8080, 9100]),
        st.sampled_from([80, 9100]),
        st.sampled_from(["tcp", "udp"]),
        st.sampled_from(["ingress", "host"]),
    ),
    max_size=4,
    unique_by=lambda p: (p["published"], p["protocol"]),
)
_CONSTRAINTS = st.lists(
    st.sampled_from(["node.role==worker", "node.role!=manager", "node.hostname==n1", "node.labels.zone==a"]),
    max_size=3,
    unique=True,
)
_SPECS = st.builds(
    lambda mode, env, labels, ports, constraints, force: spec(
        mode=mode,
        env=list({item.split("=", 1)[0]: item for item in env}.values()),  # unique names, as the API keeps them
        labels=labels,
        ports=ports,
        constraints=constraints,
        force_update=force,
    ),
    st.sampled_from(["replicated", "global"]),
    st.lists(_ENV_ITEMS, max_size=5),
    _LABELS,
    _PORTS,
    _CONSTRAINTS,
    st.integers(0, 5),
)
_TEXTS = st.lists(st.sampled_from(["A=1", "B", "=x", "80", "80:80/udp", "8080:80", "node.role==worker", "x=1"]))
_FLAGS = st.builds(
    UpdateFlags,
    replicas=st.none() | st.sampled_from(["0", "3", "-1", ""]),
    image=st.none() | st.sampled_from(["", "redis:7", "bad image"]),
    env=st.lists(_ENV_ITEMS, max_size=3).map(tuple),
    env_add=(st.lists(_ENV_ITEMS, max_size=3) | _TEXTS).map(tuple),
    env_rm=st.lists(_ENV_NAMES, max_size=3).map(tuple),
    label_add=st.lists(st.sampled_from(["a=2", "new=1", "=x"]), max_size=3).map(tuple),
    label_rm=st.lists(st.sampled_from(["a", "team", "nope"]), max_size=3).map(tuple),
    publish_add=st.lists(st.sampled_from(["80:80", "8080:81/udp", "443:443", "22:80"]), max_size=3).map(tuple),
    publish_rm=st.lists(st.sampled_from(["80", "443:443", "9100/udp"]), max_size=2).map(tuple),
    constraint_add=st.lists(st.sampled_from(["node.role==manager", "node.hostname==n1"]), max_size=2).map(tuple),
    constraint_rm=st.lists(st.sampled_from(["node.role==worker", "bogus"]), max_size=2).map(tuple),
    restart_delay=st.none() | st.sampled_from(["1s", "5parsecs"]),
    force=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(_SPECS)
def test_applying_no_flags_returns_an_equal_spec(current: dict[str, Any]) -> None:
    assert updated_spec(current, UpdateFlags()) == current


@settings(max_examples=300, deadline=None)
@given(_SPECS, _FLAGS)
def test_the_input_is_never_modified(current: dict[str, Any], flags: UpdateFlags) -> None:
    before = copy.deepcopy(current)
    with contextlib.suppress(SpecError):
        updated_spec(current, flags)
    assert current == before


@settings(max_examples=300, deadline=None)
@given(_SPECS, st.lists(_ENV_ITEMS, max_size=4), st.lists(_ENV_ITEMS, max_size=4), st.lists(_ENV_NAMES, max_size=3))
def test_env_names_stay_unique_and_the_last_added_value_wins(
    current: dict[str, Any], env: list[str], env_add: list[str], env_rm: list[str]
) -> None:
    flags = UpdateFlags(env=tuple(env), env_add=tuple(env_add), env_rm=tuple(env_rm))
    result = updated_spec(current, flags)["env"]
    names = [item.split("=", 1)[0] for item in result]
    assert len(names) == len(set(names))
    added = {item.split("=", 1)[0]: item for item in (*env, *env_add)}
    for item in added.values():
        assert item in result
    kept = [item for item in current["env"] if item.split("=", 1)[0] not in {*env_rm, *added}]
    assert result[: len(kept)] == kept  # untouched variables keep their order, ahead of the added ones


@settings(max_examples=300, deadline=None)
@given(_SPECS, _FLAGS)
def test_ports_stay_unique_by_published_port_and_protocol(current: dict[str, Any], flags: UpdateFlags) -> None:
    try:
        result = updated_spec(current, flags)
    except SpecError:
        return
    keys = [(p["published"], p["protocol"]) for p in result["ports"]]
    assert len(keys) == len(set(keys))
    assert len(result["constraints"]) == len(set(result["constraints"]))
