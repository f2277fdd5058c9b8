"""Secret and config commands: create, list, inspect, remove, and resolving a service's references to them.

Both are immutable once created, as in swarm (only labels may change there; not offered here). One is in use
while any service's spec references its ID, and cannot be removed then. Each command is durable before it
returns; nothing here touches the engines (tasks get their files when they start).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import replace
from typing import ClassVar, Generic, TypeVar

from pyswarm.manager.errors import Conflict, Invalid, NotFound
from pyswarm.manager.ids import new_id
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.model import FileReference, ServiceSpec
from pyswarm.model import parse as p
from pyswarm.model.parse import SpecError
from pyswarm.model.secret import Config, Kind, Secret, file_target, numeric_id, object_data, object_name

_T = TypeVar("_T", Secret, Config)


class FileObjectCommands(Generic[_T]):
    """What secrets and configs share; the subclasses say where each kind lives."""

    kind: ClassVar[Kind]

    def __init__(self, state: ClusterState, store: StateStore) -> None:
        self.state = state
        self.store = store

    # --- the kind's own parts -------------------------------------------------------------------------------

    def _objects(self) -> dict[str, _T]:
        raise NotImplementedError

    def _new(self, name: str, data: bytes, labels: dict[str, str]) -> _T:
        raise NotImplementedError

    def _write(self, created: list[_T], deleted: list[str]) -> None:
        raise NotImplementedError

    @staticmethod
    def _references(spec: ServiceSpec) -> tuple[FileReference, ...]:
        raise NotImplementedError

    def _find(self, ref: str) -> _T:
        raise NotImplementedError

    # --- commands ---------------------------------------------------------------------------------------

    def create(self, name: str, data: bytes, labels: dict[str, str] | None = None) -> str:
        """The new object's ID. Conflict when the name is taken (names are unique per kind)."""
        labels = dict(labels or {})
        try:
            object_name(name)
            object_data(data, self.kind)
            p.labels(labels)
        except SpecError as exc:
            raise Invalid(str(exc)) from None
        with self.state.lock:
            objects = self._objects()
            if any(o.name == name for o in objects.values()):
                raise Conflict(f"{self.kind} {name} already exists")
            item = self._new(name, data, labels)
            self._write([item], [])  # durable before we answer
            objects[item.id] = item
        return item.id

    def list(self) -> list[_T]:
        """Every object, by name (as `docker secret ls` sorts them)."""
        with self.state.lock:
            return sorted(self._objects().values(), key=lambda o: (o.name, o.id))

    def inspect(self, ref: str) -> _T:
        """By ID, name or unique ID prefix: NotFound, or Conflict when the prefix is ambiguous."""
        return self._find(ref)

    def remove(self, refs: Iterable[str]) -> builtins.list[_T]:
        """Remove these, all or none: each must exist and be in use by no service."""
        with self.state.lock:
            found: dict[str, _T] = {}
            for ref in refs:
                item = self._find(ref)
                found[item.id] = item
            for item in found.values():
                self._check_unused(item)
            self._write([], list(found))
            objects = self._objects()
            for object_id in found:
                del objects[object_id]
        return list(found.values())

    def resolve(self, refs: tuple[FileReference, ...]) -> tuple[FileReference, ...]:
        """A service's references with each object's ID filled in and its target checked and normalised (the
        name's default), by name as docker's CLI resolves them. NotFound for a name no object has; Invalid for
        a bad target, uid, gid or mode, or two references to one target. Call it with the state lock held
        (or not: it takes it), before the spec is stored."""
        with self.state.lock:
            by_name = {o.name: o for o in self._objects().values()}
            resolved: list[FileReference] = []
            targets: dict[str, str] = {}
            for ref in refs:
                item = by_name.get(ref.name)
                if item is None:
                    raise NotFound(f"{self.kind} not found: {ref.name[:80]}")
                target = self._checked_target(ref)
                if target in targets:
                    raise Invalid(
                        f"{self.kind} references '{targets[target]}' and '{ref.name}' have a conflicting target: "
                        f"'{target[:80]}'"
                    )
                targets[target] = ref.name
                resolved.append(replace(ref, id=item.id, target=target))
            return tuple(resolved)

    def users(self, object_id: str) -> builtins.list[str]:
        """The names of the services whose spec references this object, sorted (lock held or not)."""
        with self.state.lock:
            return sorted(
                service.spec.name
                for service in self.state.services.values()
                if any(r.id == object_id for r in self._references(service.spec))
            )

    def _check_unused(self, item: _T) -> None:
        users = self.users(item.id)
        if users:
            noun = "service" if len(users) == 1 else "services"
            raise Conflict(f"{self.kind} '{item.name}' is in use by the following {noun}: {', '.join(users)}")

    def _checked_target(self, ref: FileReference) -> str:
        try:
            target = file_target(ref.target, ref.name, self.kind)
            numeric_id(ref.uid, "uid")
            numeric_id(ref.gid, "gid")
        except SpecError as exc:
            raise Invalid(str(exc)) from None
        if not 0 <= ref.mode <= 0o777:
            raise Invalid(f"invalid mode {ref.mode:o} for {self.kind} {ref.name}: an octal mode from 0 to 0777")
        return target


class SecretCommands(FileObjectCommands[Secret]):
    kind: ClassVar[Kind] = "secret"

    def _objects(self) -> dict[str, Secret]:
        return self.state.secrets

    def _new(self, name: str, data: bytes, labels: dict[str, str]) -> Secret:
        return Secret(id=new_id(), name=name, data=data, labels=labels)

    def _write(self, created: list[Secret], deleted: list[str]) -> None:
        self.store.write(secrets=created, delete_secrets=deleted)

    @staticmethod
    def _references(spec: ServiceSpec) -> tuple[FileReference, ...]:
        return spec.secrets

    def _find(self, ref: str) -> Secret:
        return self.state.find_secret(ref)


class ConfigCommands(FileObjectCommands[Config]):
    kind: ClassVar[Kind] = "config"

    def _objects(self) -> dict[str, Config]:
        return self.state.configs

    def _new(self, name: str, data: bytes, labels: dict[str, str]) -> Config:
        return Config(id=new_id(), name=name, data=data, labels=labels)

    def _write(self, created: list[Config], deleted: list[str]) -> None:
        self.store.write(configs=created, delete_configs=deleted)

    @staticmethod
    def _references(spec: ServiceSpec) -> tuple[FileReference, ...]:
        return spec.configs

    def _find(self, ref: str) -> Config:
        return self.state.find_config(ref)
