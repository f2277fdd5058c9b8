"""The embedded state store: SQLite in WAL mode, one transaction per write batch.

Rows hold JSON documents made by pyswarm.model.codec; the manager keeps the live copy in memory and
writes through to here, so a restarted manager loads exactly what was accepted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyswarm.model import Node, Service, Task
from pyswarm.model.codec import (
    node_from_dict,
    node_to_dict,
    service_from_dict,
    service_to_dict,
    task_from_dict,
    task_to_dict,
)

SCHEMA_VERSION = 1
STATE_FILE = "state.db"


class StoreError(Exception):
    """The state file cannot be used; the message says why and what to do."""


@dataclass
class Snapshot:
    meta: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)


def secure_dir(path: Path) -> Path:
    """Create a 0700 directory, or refuse one that others can read or write."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o700)
    return path


class Store:
    def __init__(self, data_dir: Path) -> None:
        secure_dir(data_dir)
        self.path = data_dir / STATE_FILE
        fresh = not self.path.exists()
        if fresh:
            # Create the file 0600 before SQLite opens it, so it is never readable by others.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        elif stat.S_IMODE(self.path.stat().st_mode) & 0o077:
            os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"state file {self.path} is unreadable ({exc}). Restore it from a backup, or move it away "
                "to start a new swarm (this forgets all services; their containers are removed on start)"
            ) from None

    def _init_schema(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None and int(row[0]) != SCHEMA_VERSION:
                version = int(row[0])
                raise StoreError(
                    f"state file {self.path} has schema version {version}; this pyswarm reads version "
                    f"{SCHEMA_VERSION}. Use the pyswarm release that wrote it"
                    + (" (it is newer than this one)" if version > SCHEMA_VERSION else "")
                )
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
                "doc TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, doc TEXT NOT NULL)"
            )
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._db.execute("COMMIT")

    def load(self) -> Snapshot:
        with self._lock:
            try:
                snapshot = Snapshot(meta=dict(self._db.execute("SELECT key, value FROM meta").fetchall()))
                for (doc,) in self._db.execute("SELECT doc FROM nodes"):
                    node = node_from_dict(json.loads(doc))
                    snapshot.nodes[node.id] = node
                for (doc,) in self._db.execute("SELECT doc FROM services"):
                    service = service_from_dict(json.loads(doc))
                    snapshot.services[service.id] = service
                for (doc,) in self._db.execute("SELECT doc FROM tasks"):
                    task = task_from_dict(json.loads(doc))
                    snapshot.tasks[task.id] = task
            except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
                raise StoreError(f"state file {self.path} is corrupt ({exc}); restore it from a backup") from None
            return snapshot

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
    ) -> None:
        """Write everything given in one transaction: all of it lands, or none."""
        node_rows = [(n.id, json.dumps(node_to_dict(n))) for n in nodes]
        service_rows = [(s.id, s.spec.name, json.dumps(service_to_dict(s))) for s in services]
        task_rows = [(t.id, t.service_id, json.dumps(task_to_dict(t))) for t in tasks]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if meta:
                    self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
                self._db.executemany("DELETE FROM services WHERE id=?", [(i,) for i in delete_services])
                self._db.executemany("DELETE FROM tasks WHERE id=?", [(i,) for i in delete_tasks])
                self._db.executemany("DELETE FROM nodes WHERE id=?", [(i,) for i in delete_nodes])
                self._db.executemany("INSERT OR REPLACE INTO nodes (id, doc) VALUES (?, ?)", node_rows)
                # An upsert on id, not OR REPLACE: a clashing name must fail, not delete the other service.
                self._db.executemany(
                    "INSERT INTO services (id, name, doc) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
                    service_rows,
                )
                self._db.executemany("INSERT OR REPLACE INTO tasks (id, service_id, doc) VALUES (?, ?, ?)", task_rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
