"""The embedded state store (the default, one manager): SQLite in WAL mode, one transaction per write batch.

Nodes and services are JSON documents made by pyswarm.model.codec. Tasks, by far the most numerous and the
most often written (a reconcile pass may write 100k of them), are plain columns: binding a tuple costs a
fraction of encoding a document, and the state file can be queried. Secrets and configs are documents with
their data beside them in a blob: a config's as it is, a secret's encrypted (store/cipher.py). The manager
keeps the live copy in memory and writes through to here, so a restarted manager loads exactly what was
accepted.

Schema versions: 1 kept tasks as documents too; a version-1 file is migrated in place on open (one
transaction). Any other version is refused. The secrets and configs tables came later, within version 2:
they are created when a file lacks them (an older release ignores them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pyswarm.manager.files import secure_dir
from pyswarm.manager.store.base import Snapshot, StoreError
from pyswarm.manager.store.cipher import SecretCipher
from pyswarm.model import Node, Service, Task, TaskState
from pyswarm.model.codec import (
    node_from_dict,
    node_to_dict,
    service_from_dict,
    service_to_dict,
    task_from_dict,
)
from pyswarm.model.secret import Config, Secret, config_from_dict, object_to_dict, secret_from_dict

SCHEMA_VERSION = 2
STATE_FILE = "state.db"

# Task columns, in the order of the tuples that task_row makes and task_from_row reads.
_CREATE_TASKS = (
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, slot INTEGER NOT NULL, "
    "node_id TEXT NOT NULL, desired_state TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, "
    "error TEXT NOT NULL, container_id TEXT NOT NULL, "
    "host_ports TEXT NOT NULL, "  # a JSON object: container port/protocol -> host port
    "spec_version INTEGER NOT NULL, spec_digest TEXT NOT NULL, container_addr TEXT NOT NULL, "
    "created_at REAL NOT NULL, updated_at REAL NOT NULL, state_changed_at REAL NOT NULL)"
)
_SELECT_TASKS = (
    "SELECT id, service_id, slot, node_id, desired_state, state, message, error, container_id, host_ports, "
    "spec_version, spec_digest, container_addr, created_at, updated_at, state_changed_at FROM tasks"
)
_TASK_COLUMNS = (
    "id, service_id, slot, node_id, desired_state, state, message, error, container_id, host_ports, "
    "spec_version, spec_digest, container_addr, created_at, updated_at, state_changed_at"
)
# An upsert that updates in place (about twice as fast as OR REPLACE, a delete and an insert, here), of many
# rows per statement: Python's sqlite3 lets go of the GIL around every statement step, and getting it back can
# take a switch interval (5 ms) when other threads are busy. Row by row (executemany), a big batch would wait
# for it thousands of times; binding a few thousand rows to one statement is cheap C work.
_ON_CONFLICT = ", ".join(f"{c}=excluded.{c}" for c in _TASK_COLUMNS.split(", ")[1:])
_ROW = "(" + ", ".join("?" * 16) + ")"


@functools.cache
def _upsert_tasks(rows: int) -> str:
    values = ", ".join([_ROW] * rows)
    return f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES {values} ON CONFLICT(id) DO UPDATE SET {_ON_CONFLICT}"  # noqa: S608


@functools.cache
def _delete_tasks(rows: int) -> str:
    return f"DELETE FROM tasks WHERE id IN ({', '.join('?' * rows)})"  # noqa: S608


def _statement_sizes(count: int, most: int) -> Iterator[tuple[int, int]]:
    """(start, size) parts of `count` rows: parts of `most`, then powers of two, so that few distinct
    statements are ever prepared (and cached)."""
    start = 0
    while count - start >= most:
        yield start, most
        start += most
    size = 1 << max(0, (count - start).bit_length() - 1)
    while start < count:
        if count - start >= size:
            yield start, size
            start += size
        size >>= 1


_STATES = {state.value: state for state in TaskState}

TaskRow = tuple[str, str, int, str, str, str, str, str, str, str, int, str, str, float, float, float]
# (table, rows of (id, name, doc, data), ids to delete): the secrets' or the configs' part of one write.
_ObjectRow = tuple[str, str, str, bytes]
_ObjectWrite = tuple[str, list[_ObjectRow], list[str]]
_OBJECT_TABLES = ("secrets", "configs")


def task_row(t: Task) -> TaskRow:
    ports = _ports_json(t.host_ports) if t.host_ports else "{}"
    # _value_, not value: Enum's value is a property, a Python call; this runs for every task written.
    return (
        t.id, t.service_id, t.slot, t.node_id, t.desired_state._value_, t.state._value_, t.message, t.error,
        t.container_id, ports, t.spec_version, t.spec_digest, t.container_addr,
        t.created_at, t.updated_at, t.state_changed_at,
    )  # fmt: skip


_PLAIN_KEY = re.compile(r"[0-9A-Za-z/._-]+")
_plain_keys: set[str] = set()  # keys seen to match _PLAIN_KEY ("80/tcp": a service's few ports)


def _ports_json(ports: dict[str, int]) -> str:
    """JSON of {"80/tcp": 32768, ...}, without json.dumps' overhead for the plain keys engines use."""
    parts = []
    for key, port in ports.items():
        if key not in _plain_keys:
            if not _PLAIN_KEY.fullmatch(key):
                return json.dumps(ports, separators=(",", ":"))
            if len(_plain_keys) < 65536:
                _plain_keys.add(key)
        parts.append(f'"{key}":{int(port)}')
    return "{" + ",".join(parts) + "}"


def task_from_row(row: TaskRow) -> Task:
    ports = row[9]
    return Task(
        id=row[0],
        service_id=row[1],
        slot=int(row[2]),
        node_id=row[3],
        desired_state=_STATES[row[4]],
        state=_STATES[row[5]],
        message=row[6],
        error=row[7],
        container_id=row[8],
        host_ports={k: int(v) for k, v in json.loads(ports).items()} if ports != "{}" else {},
        spec_version=int(row[10]),
        spec_digest=row[11],
        container_addr=row[12],
        created_at=float(row[13]),
        updated_at=float(row[14]),
        state_changed_at=float(row[15]),
    )


class SqliteStore:
    """The StateStore protocol on one SQLite file."""

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
        # Writers of single changes (API calls, under the manager's lock) waiting for _lock: the background
        # task writer lets them in between its parts. Python's locks are not fair: a thread that releases a
        # lock and takes it again at once keeps it, so an API call could wait for a whole batch of parts.
        self._urgent = 0
        self._turn = threading.Condition(threading.Lock())
        self._cipher = SecretCipher(data_dir)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # 64 MiB of page cache, not 2: a big swarm's task table and its id index (random ids) stay in
            # memory, so a batch upsert does not read its pages back from the OS (10-15 % of its time).
            self._db.execute("PRAGMA cache_size=-65536")
            # SQLite allows 32766 bound variables per statement (999 before 3.32): 16 per task row.
            self.rows_per_statement = max(1, min(2048, self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 16))
            self.task_batch_size = self.rows_per_statement
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
            if row is not None and int(row[0]) == 1:
                self._migrate_from_1()
            elif row is not None and int(row[0]) != SCHEMA_VERSION:
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
            self._db.execute(_CREATE_TASKS)
            for table in _OBJECT_TABLES:  # added after version 2: created in files that lack them
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
                    "doc TEXT NOT NULL, data BLOB NOT NULL)"
                )
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._db.execute("COMMIT")

    def _migrate_from_1(self) -> None:
        """Version 1 -> 2: task documents become columns. One transaction: a crash leaves version 1."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE tasks RENAME TO tasks_v1")
            self._db.execute(_CREATE_TASKS)
            docs = self._db.execute("SELECT doc FROM tasks_v1").fetchall()
            try:
                rows = [task_row(task_from_dict(json.loads(doc))) for (doc,) in docs]
            except (ValueError, KeyError) as exc:
                raise StoreError(f"state file {self.path} is corrupt ({exc}); restore it from a backup") from None
            self._upsert_tasks(rows)
            self._db.execute("DROP TABLE tasks_v1")
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
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
                for row in self._db.execute(_SELECT_TASKS):
                    task = task_from_row(row)
                    snapshot.tasks[task.id] = task
                for doc, blob in self._db.execute("SELECT doc, data FROM secrets"):
                    fields = json.loads(doc)
                    secret = secret_from_dict(fields, self._cipher.decrypt(blob, fields["id"]))
                    snapshot.secrets[secret.id] = secret
                for doc, blob in self._db.execute("SELECT doc, data FROM configs"):
                    config = config_from_dict(json.loads(doc), bytes(blob))
                    snapshot.configs[config.id] = config
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
        delete_meta: Iterable[str] = (),
        secrets: Iterable[Secret] = (),
        configs: Iterable[Config] = (),
        delete_secrets: Iterable[str] = (),
        delete_configs: Iterable[str] = (),
    ) -> None:
        """Write everything given in one transaction: all of it lands, or none. Deletions go before writes."""
        node_rows = [(n.id, json.dumps(node_to_dict(n))) for n in nodes]
        service_rows = [(s.id, s.spec.name, json.dumps(service_to_dict(s))) for s in services]
        task_rows = [task_row(t) for t in tasks]
        objects = [
            (
                "secrets",
                [self._object_row(x, self._cipher.encrypt(x.data, x.id)) for x in secrets],
                list(delete_secrets),
            ),
            ("configs", [self._object_row(x, x.data) for x in configs], list(delete_configs)),
        ]
        with self._turn:
            self._urgent += 1
        try:
            self._write(
                meta, node_rows, service_rows, task_rows, delete_nodes, delete_services, delete_tasks, delete_meta,
                objects,
            )  # fmt: skip
        finally:
            with self._turn:
                self._urgent -= 1
                if not self._urgent:
                    self._turn.notify_all()

    def _write(
        self,
        meta: dict[str, str] | None,
        node_rows: list[tuple[str, str]],
        service_rows: list[tuple[str, str, str]],
        task_rows: list[TaskRow],
        delete_nodes: Iterable[str],
        delete_services: Iterable[str],
        delete_tasks: Iterable[str],
        delete_meta: Iterable[str] = (),
        objects: Iterable[_ObjectWrite] = (),
    ) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM meta WHERE key=?", [(k,) for k in delete_meta])
                if meta:
                    self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
                self._db.executemany("DELETE FROM services WHERE id=?", [(i,) for i in delete_services])
                self._delete_tasks(list(delete_tasks))
                self._db.executemany("DELETE FROM nodes WHERE id=?", [(i,) for i in delete_nodes])
                self._db.executemany("INSERT OR REPLACE INTO nodes (id, doc) VALUES (?, ?)", node_rows)
                # An upsert on id, not OR REPLACE: a clashing name must fail, not delete the other service.
                self._db.executemany(
                    "INSERT INTO services (id, name, doc) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
                    service_rows,
                )
                self._upsert_tasks(task_rows)
                for table, rows, deleted in objects:
                    self._write_objects(table, rows, deleted)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _object_row(item: Secret | Config, data: bytes) -> _ObjectRow:
        return (item.id, item.name, json.dumps(object_to_dict(item)), data)

    def _write_objects(self, table: str, rows: list[_ObjectRow], deleted: list[str]) -> None:
        assert table in _OBJECT_TABLES  # a constant: the statements below name it
        self._db.executemany(f"DELETE FROM {table} WHERE id=?", [(i,) for i in deleted])  # noqa: S608
        # An upsert on id: a clashing name fails (UNIQUE), it never replaces the other object.
        self._db.executemany(
            f"INSERT INTO {table} (id, name, doc, data) VALUES (?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc, data=excluded.data",
            rows,
        )

    # The rows of the task writer: encoded under the manager's lock (tasks change under it), written outside.
    encode_task = staticmethod(task_row)

    def write_task_rows(self, rows: list[TaskRow], deleted: list[str], part: int | None = None) -> None:
        """Upsert task rows (made by task_row) and delete tasks, in transactions of at most `part` rows (by
        default one statement's worth): other writers wait for one part at most, and a write() waiting when
        a part ends goes first. For a writer that batches task changes in the background."""
        part = part or self.rows_per_statement
        for start in range(0, max(len(rows), 1), part):
            if self._urgent:  # an API call waits for the file: it goes first (read without the lock: a hint)
                with self._turn:
                    self._turn.wait_for(lambda: not self._urgent, timeout=0.5)
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if start == 0:
                        self._delete_tasks(deleted)
                    self._upsert_tasks(rows[start : start + part])
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")

    def _upsert_tasks(self, rows: list[TaskRow]) -> None:
        for start, size in _statement_sizes(len(rows), self.rows_per_statement):
            self._db.execute(_upsert_tasks(size), list(itertools.chain.from_iterable(rows[start : start + size])))

    def _delete_tasks(self, ids: list[str]) -> None:
        for start, size in _statement_sizes(len(ids), self.rows_per_statement * 16):
            self._db.execute(_delete_tasks(size), ids[start : start + size])

    def seal(self, data: bytes, object_id: str) -> str:
        return base64.b64encode(self._cipher.encrypt(data, object_id)).decode()

    def unseal(self, sealed: str, object_id: str) -> bytes:
        try:
            blob = base64.b64decode(sealed, validate=True)
        except binascii.Error:
            raise StoreError(f"{object_id}'s sealed data in the state file is corrupt") from None
        return self._cipher.decrypt(blob, object_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()
