"""Secrets and configs: named blobs a service's tasks get as files, as `docker secret` / `docker config`.

The objects, the rules for their names and data (swarmkit's, with its messages), the parser of the
`--secret` / `--config` flag (docker's CSV syntax), and their codec. Pure: no I/O.
"""

from __future__ import annotations

import base64
import csv
import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pyswarm.model import FileReference
from pyswarm.model.parse import SpecError

Kind = Literal["secret", "config"]

SECRETS_DIR = "/run/secrets"
MAX_NAME = 64
# swarmkit's limits (api/validation, manager/controlapi/config.go): data must be under these, and not empty.
MAX_SECRET_SIZE = 500 * 1024
MAX_CONFIG_SIZE = 1000 * 1024
MAX_SIZE: dict[str, int] = {"secret": MAX_SECRET_SIZE, "config": MAX_CONFIG_SIZE}
MAX_TARGET = 1024

_NAME = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?")  # swarmkit's
_NUMERIC_ID = re.compile(r"[0-9]{1,10}")
_FIELDS = ("source", "src", "target", "uid", "gid", "mode")


@dataclass(frozen=True)
class _FileObject:
    id: str
    name: str
    data: bytes = field(repr=False)
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Secret(_FileObject):
    """Its data is never shown: not by repr, the API or the CLI; the store keeps it encrypted."""

    kind: ClassVar[Kind] = "secret"


@dataclass(frozen=True)
class Config(_FileObject):
    kind: ClassVar[Kind] = "config"


def object_name(name: str) -> str:
    """A secret's or config's name, by swarmkit's rule and with its message."""
    if not name:
        raise SpecError("name must be provided")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise SpecError(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be "
            "[a-zA-Z0-9]"
        )
    return name


def object_data(data: bytes, kind: Kind) -> bytes:
    if not 0 < len(data) < MAX_SIZE[kind]:
        raise SpecError(f"{kind} data must be larger than 0 and less than {MAX_SIZE[kind]} bytes")
    return data


def file_reference(text: str, kind: Kind) -> FileReference:
    """`--secret NAME` or `--secret source=NAME,target=T,uid=U,gid=G,mode=0444` (`src` for source; the keys
    are case-insensitive and the mode octal, as docker reads them). The target is checked and normalised
    (see secret_target, config_target)."""
    try:
        fields = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise SpecError(f"invalid {kind} {text[:80]!r}: {exc}") from None
    if len(fields) == 1 and "=" not in fields[0]:
        name = object_name(fields[0])
        return FileReference(name=name, target=file_target("", name, kind))
    values: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"invalid field '{item[:80]}' must be a key=value pair")
        key = key.lower()
        if key not in _FIELDS:
            raise SpecError(f"invalid field in {kind} request: {key[:40]}")
        values["source" if key == "src" else key] = value
    if not values.get("source"):
        raise SpecError("source is required")
    name = object_name(values["source"])
    return FileReference(
        name=name,
        target=file_target(values.get("target", ""), name, kind),
        uid=numeric_id(values.get("uid", "0"), "uid"),
        gid=numeric_id(values.get("gid", "0"), "gid"),
        mode=file_mode(values.get("mode", "0444")),
    )


def numeric_id(text: str, what: str) -> str:
    if not _NUMERIC_ID.fullmatch(text) or int(text) >= 2**32:
        raise SpecError(f"invalid {what} {text[:40]!r}: must be a number from 0 to 4294967295")
    return text


def file_mode(text: str) -> int:
    """Octal, with or without a leading 0 or 0o: 0444, 444 and 0o444 are all r--r--r--."""
    digits = text.lower().removeprefix("0o")
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits) or int(digits, 8) > 0o777:
        raise SpecError(f"invalid mode specified: {text[:40]!r} (an octal mode from 0 to 0777, e.g. 0444)")
    return int(digits, 8)


def file_target(target: str, name: str, kind: Kind) -> str:
    return secret_target(target, name) if kind == "secret" else config_target(target, name)


def mount_path(ref: FileReference, kind: Kind) -> str:
    """Where the file appears in the container: a secret's target is under /run/secrets/, a config's is its own."""
    return posixpath.join(SECRETS_DIR, ref.target) if kind == "secret" else ref.target


def secret_target(target: str, name: str) -> str:
    """The file's path under /run/secrets/ (relative; the name by default). An absolute target must be under
    /run/secrets/: it is kept relative to it."""
    target = target or name
    if target.startswith("/"):
        inside = target[len(SECRETS_DIR) + 1 :] if target.startswith(SECRETS_DIR + "/") else ""
        if not inside:
            raise SpecError(f"invalid secret target {target[:80]!r}: an absolute target must be under {SECRETS_DIR}/")
        target = inside
    _check_path(target, "secret")
    return target


def config_target(target: str, name: str) -> str:
    """An absolute path in the container (/NAME by default; a relative one is taken from /, as docker does)."""
    target = target or name
    target = target if target.startswith("/") else "/" + target
    _check_path(target[1:], "config")
    return target


def _check_path(relative: str, kind: Kind) -> None:
    """A path that names a file: no `.` or `..` parts, no empty ones, no control characters."""
    parts = relative.split("/")
    problem = ""
    if not relative or any(part in ("", ".", "..") for part in parts):
        problem = "use a file path without '.', '..' or empty parts"
    elif len(relative) > MAX_TARGET or any(ord(c) < 0x20 or ord(c) == 0x7F for c in relative):
        problem = f"at most {MAX_TARGET} characters, no control characters"
    if problem or posixpath.normpath(relative) != relative:
        raise SpecError(f"invalid {kind} target {relative[:80]!r}: {problem or 'not a normal path'}")


# --- codec ---------------------------------------------------------------------------------------------


def object_to_dict(item: Secret | Config, *, with_data: bool = False) -> dict[str, Any]:
    """The object as the store keeps it (its data apart, as a blob) or, with_data, a config with its data in
    base64 (a secret's is never put in a document)."""
    if with_data and isinstance(item, Secret):
        raise ValueError("a secret's data is never shown")
    doc: dict[str, Any] = {
        "id": item.id,
        "name": item.name,
        "labels": dict(item.labels),
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    }
    if with_data:
        doc["data"] = base64.b64encode(item.data).decode("ascii")
    return doc


def secret_from_dict(doc: dict[str, Any], data: bytes | None = None) -> Secret:
    return Secret(**_fields(doc, data))


def config_from_dict(doc: dict[str, Any], data: bytes | None = None) -> Config:
    return Config(**_fields(doc, data))


def _fields(doc: dict[str, Any], data: bytes | None) -> dict[str, Any]:
    return {
        "id": str(doc["id"]),
        "name": str(doc["name"]),
        "data": data if data is not None else base64.b64decode(doc["data"], validate=True),
        "labels": {str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
        "created_at": float(doc.get("created_at", 0.0)),
        "updated_at": float(doc.get("updated_at", 0.0)),
    }
