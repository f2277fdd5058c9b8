"""Parsing and validation of user input into model values. Pure: strings in, model values out.

Every error is a `SpecError` with a message fit to show the user as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

from pyswarm.model import (
    Availability,
    Constraint,
    ConstraintOp,
    PortConfig,
    Protocol,
    PublishMode,
    RestartCondition,
)


class SpecError(ValueError):
    """A user-supplied value is malformed; the message says which and why."""


# Docker's rule for service names, plus a length cap: they become container and DNS names.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
# A label key, checked on its own (never as the part of a KEY=VALUE text before its first `=`): like docker's
# rules, no `=`, whitespace or control characters, and here only these characters.
_LABEL_KEY = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-/]{0,127}")
_LABEL_KEY_RULE = "use 1-128 characters from [a-zA-Z0-9_.-/], starting with a letter or digit"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
# An image reference: [registry/]name[:tag][@digest]; no whitespace or shell metacharacters.
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]{0,254}$", re.IGNORECASE)
_CONSTRAINT = re.compile(r"^\s*(?P<key>[a-zA-Z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<value>[^=!\s][^\s]*)\s*$")
_CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role")
_LABEL_KEY_PREFIXES = ("node.labels.", "engine.labels.")
_MAX_VALUE = 4096
# The longest label key an earlier release could store: through the API it checked only the part of a key
# before its first `=`, so `zone=a=b` was kept whole as a key, of at most 128 + 1 + _MAX_VALUE characters.
MAX_STORED_LABEL_KEY = 128 + 1 + _MAX_VALUE
_E = TypeVar("_E", Protocol, PublishMode, RestartCondition, Availability)


def service_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise SpecError(
            f"invalid service name {shown!r}: use 1-63 characters from [a-zA-Z0-9_.-], starting with a letter or digit"
        )
    return name


def image(ref: str) -> str:
    if not _IMAGE.fullmatch(ref) or ".." in ref:
        raise SpecError(f"invalid image reference {ref[:80]!r}")
    return ref


def port_number(text: str | int, what: str = "port") -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.isdigit():
        value = int(text)
    else:
        raise SpecError(f"invalid {what} {text!r}: must be a number from 1 to 65535")
    if not 1 <= value <= 65535:
        raise SpecError(f"invalid {what} {value}: must be from 1 to 65535")
    return value


def publish(text: str) -> PortConfig:
    """`-p 80:80`, `8080:80/udp`, or the long form `published=8080,target=80,protocol=udp,mode=host`."""
    text = text.strip()
    if "=" in text:
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("published", "target", "protocol", "mode"):
                raise SpecError(f"invalid publish option {part!r} in {text!r}")
            fields[key.strip()] = value.strip()
        if "target" not in fields:
            raise SpecError(f"invalid publish {text!r}: target is required")
        if "published" not in fields:
            raise SpecError(f"invalid publish {text!r}: published is required (ephemeral ports are not supported)")
        return PortConfig(
            published=port_number(fields["published"], "published port"),
            target=port_number(fields["target"], "target port"),
            protocol=_enum(Protocol, fields.get("protocol", "tcp"), "protocol"),
            mode=_enum(PublishMode, fields.get("mode", "ingress"), "publish mode"),
        )
    ports, _, proto = text.partition("/")
    published, sep, target = ports.partition(":")
    if not sep:
        raise SpecError(f"invalid publish {text!r}: expected published:target[/tcp|udp], e.g. 80:80")
    return PortConfig(
        published=port_number(published, "published port"),
        target=port_number(target, "target port"),
        protocol=_enum(Protocol, proto or "tcp", "protocol"),
    )


def check_port_conflicts(ports: Iterable[PortConfig]) -> None:
    seen: set[tuple[int, Protocol]] = set()
    for port in ports:
        key = (port.published, port.protocol)
        if key in seen:
            raise SpecError(f"published port {port.published}/{port.protocol.value} is given twice")
        seen.add(key)


def constraint(text: str) -> Constraint:
    """`KEY==VALUE` or `KEY!=VALUE`. The key holds no `=` or `!`, so the operator is the first `==` or `!=`;
    a value holding one more (`node.hostname==node-02!=x`) reads as two conditions and is refused, so that
    every constraint's text (`str(constraint)`) reads back as the same constraint."""
    match = _CONSTRAINT.fullmatch(text)
    if not match:
        raise SpecError(
            f"invalid constraint {text[:80]!r}: expected KEY==VALUE or KEY!=VALUE, e.g. node.hostname==node-01"
        )
    key, value = match["key"], match["value"]
    if key not in _CONSTRAINT_KEYS and not (key.startswith(_LABEL_KEY_PREFIXES) and len(key.split(".", 2)[2]) > 0):
        raise SpecError(f"invalid constraint key {key!r}: use node.id, node.hostname, node.role or node.labels.KEY")
    for operator in ("==", "!="):
        if operator in value:
            raise SpecError(
                f"invalid constraint {text[:80]!r}: its value {value[:40]!r} contains {operator!r}, so it is "
                "ambiguous; a constraint has one operator: give each condition as a constraint of its own"
            )
    if key == "node.role" and value not in ("manager", "worker"):
        raise SpecError(f"invalid constraint {text!r}: node.role is manager or worker")
    return Constraint(key=key, op=ConstraintOp(match["op"]), value=value)


def placement_pref(text: str) -> str:
    """`spread=node.labels.zone` -> "zone"."""
    strategy, sep, target = text.partition("=")
    if strategy != "spread" or not sep or not target.startswith("node.labels.") or len(target) <= 12:
        raise SpecError(f"invalid placement preference {text!r}: expected spread=node.labels.KEY")
    return label_key(target[len("node.labels.") :])


def label_key(key: str) -> str:
    """A label key being set, or named by a placement preference, checked on its own."""
    if not _LABEL_KEY.fullmatch(key):
        raise SpecError(f"invalid label key {key[:80]!r}: {_label_key_problem(key)}")
    return key


def _label_key_problem(key: str) -> str:
    if not key:
        return "a key cannot be empty"
    if "=" in key:
        return f"a key cannot contain '=' (it separates a label's key from its value); {_LABEL_KEY_RULE}"
    if any(char.isspace() for char in key):
        return f"a key cannot contain whitespace; {_LABEL_KEY_RULE}"
    if any(_is_control(char) for char in key):
        return f"a key cannot contain control characters; {_LABEL_KEY_RULE}"
    if len(key) > 128:
        return f"a key has at most 128 characters; {_LABEL_KEY_RULE}"
    return _LABEL_KEY_RULE


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0


def label_value(key: str, value: str) -> str:
    if len(value) > _MAX_VALUE or "\x00" in value:
        raise SpecError(f"invalid value for label {key[:80]!r}: at most {_MAX_VALUE} characters, no NUL byte")
    return value


def label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` (or `KEY`, for an empty value), as the CLI's --label takes it: the key ends at the first
    `=`; the value may hold more."""
    key, _, value = text.partition("=")
    return label_key(key), label_value(key, value)


def labels(items: dict[str, str]) -> dict[str, str]:
    """Labels given as a mapping (the API's): each key and each value checked on its own."""
    for key, value in items.items():
        label_key(key)
        label_value(key, value)
    return items


def removable_label_key(key: str) -> str:
    """A key named by a label removal (`--label-rm`): any key a stored label may have, including one an
    earlier release let in (`zone=a`, or with whitespace), so that such a label can still be removed. A key
    not set is refused later, by the command, as not set."""
    if not key or len(key) > MAX_STORED_LABEL_KEY or "\x00" in key:
        raise SpecError(f"invalid label key {key[:80]!r}: no label can have it")
    return key


def env(text: str) -> str:
    key, _, value = text.partition("=")
    if not _ENV_KEY.fullmatch(key) or len(value) > _MAX_VALUE or "\x00" in value:
        raise SpecError(f"invalid environment variable {text[:80]!r}: expected NAME=VALUE")
    return text


def replicas(value: str | int) -> int:
    if isinstance(value, bool):
        raise SpecError(f"invalid replicas {value!r}")
    if isinstance(value, str):
        if not value.isdigit():
            raise SpecError(f"invalid replicas {value!r}: must be a whole number from 0 to 10000")
        value = int(value)
    if not 0 <= value <= 10000:
        raise SpecError(f"invalid replicas {value}: must be from 0 to 10000")
    return value


def duration(text: str | float) -> float:
    """Docker-style durations: 5s, 300ms, 1m30s, 2h; a bare number means seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        text = str(text).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise SpecError(f"invalid duration {text[:40]!r}: e.g. 5s, 300ms, 1m30s") from None
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    if not 0 <= seconds <= 86400 * 365:
        raise SpecError(f"invalid duration {text!r}")
    return seconds


def restart_condition(text: str) -> RestartCondition:
    return _enum(RestartCondition, text, "restart condition")


def availability(text: str) -> Availability:
    return _enum(Availability, text, "availability")


def _enum(kind: type[_E], text: str, what: str) -> _E:
    try:
        return kind(text.strip().lower())
    except ValueError:
        choices = "|".join(str(member.value) for member in kind)
        raise SpecError(f"invalid {what} {text[:40]!r}: expected {choices}") from None
