"""The store interface: what the manager needs from durable state, whichever store keeps it.

SQLite (store/sqlite.py) is the embedded default for one manager; a distributed store for several managers
implements the same protocol. Nothing above this package may depend on a particular store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyswarm.model import Node, Service, Task
from pyswarm.model.secret import Config, Secret


class StoreError(Exception):
    """The state cannot be used; the message says why and what to do."""


@dataclass
class Snapshot:
    """Everything a store holds, as loaded when a manager starts."""

    meta: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    configs: dict[str, Config] = field(default_factory=dict)


class StateStore(Protocol):
    """Durable cluster state. Nodes, services, secrets, configs and meta are written by commands, one
    transaction per call (a secret's data encrypted at rest); tasks by one background writer, which encodes
    them under the manager's lock and writes them outside it."""

    # How many encoded tasks one write_task_rows transaction holds at most (the writer takes a few at once).
    task_batch_size: int

    def load(self) -> Snapshot: ...

    def write(
        self,
        *,
        meta: dict[str, str] | None = None,
        nodes: Iterable[Node] = (),
        services: Iterable[Service] = (),
        tasks: Iterable[Task] = (),
        delete_nodes: Iterable[str] = (),
        delete_services: Iterable[str] = (),
        delete_tasks: Iterable[str] = (),
        delete_meta: Iterable[str] = (),
        secrets: Iterable[Secret] = (),
        configs: Iterable[Config] = (),
        delete_secrets: Iterable[str] = (),
        delete_configs: Iterable[str] = (),
    ) -> None:
        """Write everything given at once: all of it lands, or none. Deletions go before writes."""

    def encode_task(self, task: Task) -> Any:
        """The task as this store writes it: taken while the task cannot change, written later."""

    def write_task_rows(self, rows: list[Any], deleted: list[str]) -> None:
        """Write tasks encoded by encode_task and delete tasks by ID."""

    def seal(self, data: bytes, object_id: str) -> str:
        """data encrypted under this store's key, bound to object_id, as text (registry credentials)."""

    def unseal(self, sealed: str, object_id: str) -> bytes:
        """What seal() was given; StoreError when the key or the text is not the one it was sealed with."""

    def close(self) -> None: ...
