"""`service update`'s merge, as docker/cli's `updateService(flags, spec)`: the flags given on the command line
applied to a service's current spec (the API's JSON). Pure: no I/O; the caller fetches the spec and posts the
result.

The flags are kept as given (strings) and validated here, in the order the fields are merged, so a command
with several bad values reports the same one it always did. Every error is a `parse.SpecError` whose message
is fit to show the user as is. Removals apply before additions (`--env-rm`, then `--env`/`--env-add`), as
docker does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pyswarm.model import parse


@dataclass(frozen=True)
class UpdateFlags:
    """The spec-changing flags of `service update`; the defaults change nothing. Field names are the click
    parameter names, so the command builds this with `UpdateFlags(**flags)`."""

    replicas: str | None = None
    image: str | None = None
    env: tuple[str, ...] = ()  # -e/--env: add or replace, like --env-add
    env_add: tuple[str, ...] = ()
    env_rm: tuple[str, ...] = ()  # variable names
    labels: tuple[str, ...] = ()  # -l/--label: add or replace, like --label-add
    label_add: tuple[str, ...] = ()
    label_rm: tuple[str, ...] = ()  # label keys
    publish: tuple[str, ...] = ()  # -p/--publish: add or replace, like --publish-add
    publish_add: tuple[str, ...] = ()
    publish_rm: tuple[str, ...] = ()  # PUBLISHED[:TARGET][/PROTOCOL]: every port on PUBLISHED goes
    constraints: tuple[str, ...] = ()  # --constraint: add, like --constraint-add
    constraint_add: tuple[str, ...] = ()
    constraint_rm: tuple[str, ...] = ()
    placement_prefs: tuple[str, ...] = ()  # replace the preferences when given
    replicas_max_per_node: str | None = None
    restart_condition: str | None = None
    restart_delay: str | None = None
    restart_max_attempts: str | None = None
    restart_window: str | None = None
    stop_grace_period: str | None = None
    force: bool = False


def whole_number(text: str, what: str) -> int:
    """A count given as digits only, for flags such as --replicas-max-per-node and --tail."""
    if not text.isdigit():
        raise parse.SpecError(f"invalid {what} {text!r}: must be a whole number")
    return int(text)


def since_time(text: str, now: float) -> float:
    """`--since`: a duration back from now (42m), a unix time, or an RFC 3339 time (2013-01-02T13:23:37Z)."""
    import datetime

    try:
        value = float(text)  # a bare number is a unix time, as docker reads it
    except ValueError:
        try:
            return now - parse.duration(text)
        except parse.SpecError:
            pass
        try:
            value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise parse.SpecError(
                f"invalid --since {text[:40]!r}: a duration (42m), a unix time or a time like 2013-01-02T13:23:37Z"
            ) from None
    if not 0 <= value <= 2**40:
        raise parse.SpecError(f"invalid --since {text[:40]!r}")
    return value


def port_dict(text: str) -> dict[str, Any]:
    """A --publish value as the API's port object."""
    port = parse.publish(text)
    return {
        "published": port.published,
        "target": port.target,
        "protocol": port.protocol.value,
        "mode": port.mode.value,
    }


def updated_spec(spec: dict[str, Any], flags: UpdateFlags) -> dict[str, Any]:
    """`spec` with `flags` applied, as a new dict (`spec` is left as it is); raises `parse.SpecError`."""
    new = copy.deepcopy(spec)
    if flags.replicas is not None:
        if new["mode"] in ("global", "global-job"):
            raise parse.SpecError("replicas can only be used with replicated or replicated-job mode")
        new["replicas"] = parse.replicas(flags.replicas)
    if flags.image:
        new["image"] = parse.image(flags.image)
    new["env"] = _updated_env(new["env"], flags)
    new["labels"] = _updated_labels(new["labels"], flags)
    new["ports"] = _updated_ports(new["ports"], flags, new["name"])
    new["constraints"] = _updated_constraints(new["constraints"], flags)
    if flags.placement_prefs:
        new["placement_prefs"] = [parse.placement_pref(pref) for pref in flags.placement_prefs]
    if flags.replicas_max_per_node is not None:
        new["max_replicas_per_node"] = whole_number(flags.replicas_max_per_node, "--replicas-max-per-node")
    new["restart_policy"] = _updated_restart_policy(new["restart_policy"], flags)
    if flags.stop_grace_period:
        new["stop_grace_period"] = parse.duration(flags.stop_grace_period)
    if flags.force:
        new["force_update"] = int(new.get("force_update", 0)) + 1
    return new


def _env_key(item: str) -> str:
    return item.split("=", 1)[0]


def _updated_env(env: list[str], flags: UpdateFlags) -> list[str]:
    """Removed names go first; an added variable replaces every one of its name and goes last."""
    removed = set(flags.env_rm)
    result = [item for item in env if _env_key(item) not in removed]
    for item in (*flags.env, *flags.env_add):
        parse.env(item)
        result = [e for e in result if _env_key(e) != _env_key(item)] + [item]
    return result


def _updated_labels(labels: dict[str, str], flags: UpdateFlags) -> dict[str, str]:
    removed = set(flags.label_rm)
    result = {key: value for key, value in labels.items() if key not in removed}
    result.update(dict(parse.label(item) for item in (*flags.labels, *flags.label_add)))
    return result


def _removed_port(text: str) -> int:
    """--publish-rm names a port by its published number: `8080`, `8080:80` or `8080/udp` all mean 8080."""
    return parse.port_number(text.split(":")[0].split("/")[0], "port")


def _updated_ports(ports: list[dict[str, Any]], flags: UpdateFlags, service_name: str) -> list[dict[str, Any]]:
    """Each --publish-rm must match a published port (of any protocol); an added port replaces the one on the
    same published port and protocol, and goes last."""
    result = list(ports)
    for item in flags.publish_rm:
        published = _removed_port(item)
        kept = [p for p in result if p["published"] != published]
        if len(kept) == len(result):
            raise parse.SpecError(f"no published port {published} on service {service_name}")
        result = kept
    for item in (*flags.publish, *flags.publish_add):
        added = port_dict(item)
        result = [p for p in result if (p["published"], p["protocol"]) != (added["published"], added["protocol"])]
        result.append(added)
    return result


def _updated_constraints(constraints: list[str], flags: UpdateFlags) -> list[str]:
    """Constraints are matched by their whole normalised text (`node.role==worker`), not by key: adding one
    already there changes nothing, and adding `node.role==manager` keeps `node.role==worker`."""
    # The --constraint-rm values are checked only when there are constraints to remove from: on a service
    # without constraints a malformed one is ignored, as it always was.
    removed = {str(parse.constraint(text)) for text in flags.constraint_rm} if constraints else set()
    result = [text for text in constraints if text not in removed]
    for item in (*flags.constraints, *flags.constraint_add):
        text = str(parse.constraint(item))
        if text not in result:
            result.append(text)
    return result


def _updated_restart_policy(policy: dict[str, Any], flags: UpdateFlags) -> dict[str, Any]:
    result = dict(policy)
    if flags.restart_condition:
        result["condition"] = parse.restart_condition(flags.restart_condition).value
    if flags.restart_delay:
        result["delay"] = parse.duration(flags.restart_delay)
    if flags.restart_max_attempts:
        result["max_attempts"] = whole_number(flags.restart_max_attempts, "--restart-max-attempts")
    if flags.restart_window:
        result["window"] = parse.duration(flags.restart_window)
    return result
