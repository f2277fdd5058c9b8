"""Tasks in the store: columns that round-trip exactly, batches written in one statement, and schema
version 1 (task documents) migrated in place to version 2 (task columns)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pyswarm.manager.store import SCHEMA_VERSION, STATE_FILE, SqliteStore, StoreError
from pyswarm.model import Task, TaskState
from pyswarm.model.codec import task_to_dict


def _version_1_file(data: Path, docs: list[str]) -> None:
    data.mkdir(mode=0o700)
    db = sqlite3.connect(data / STATE_FILE)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1'), ('cluster_id', 'c1');"
        "CREATE TABLE nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL);"
        "CREATE TABLE services (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, doc TEXT NOT NULL);"
        "CREATE TABLE tasks (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, doc TEXT NOT NULL);"
    )
    db.executemany("INSERT INTO tasks VALUES (?, 's1', ?)", [(f"t{i}", doc) for i, doc in enumerate(docs)])
    db.commit()
    db.close()


def test_version_1_tasks_are_migrated_to_columns(tmp_path: Path) -> None:
    task = Task(
        id="t0", service_id="s1", slot=2, node_id="n1", state=TaskState.RUNNING, message="started",
        container_id="c" * 64, host_ports={"80/tcp": 32768}, spec_digest="d", container_addr="172.18.1.2",
    )  # fmt: skip
    _version_1_file(tmp_path / "data", [json.dumps(task_to_dict(task))])
    store = SqliteStore(tmp_path / "data")
    assert store.load().tasks == {"t0": task}
    assert store.load().meta["schema_version"] == str(SCHEMA_VERSION)
    store.write(tasks=[task])  # and it writes the new schema
    store.close()
    assert SqliteStore(tmp_path / "data").load().tasks == {"t0": task}


def test_a_corrupt_version_1_task_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    _version_1_file(tmp_path / "data", ["{not json"])
    with pytest.raises(StoreError, match="corrupt"):
        SqliteStore(tmp_path / "data")
    db = sqlite3.connect(tmp_path / "data" / STATE_FILE)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_tasks_round_trip_in_one_batch_and_deletes_land(tmp_path: Path) -> None:
    tasks = [
        Task(id=f"t{i}", service_id="s1", slot=i, node_id="n1", state=TaskState.RUNNING, message=message,
             host_ports={"80/tcp": 32768 + i} if i % 2 else {}, created_at=1764468000.123456789 + i / 7)
        for i, message in enumerate(["started", "héllo 😀", 'quote " \\ back', "ctl\x01\n", "nul\x00inside", ""])
    ]  # fmt: skip
    store = SqliteStore(tmp_path / "data")
    store.write(tasks=tasks)
    store.write(tasks=tasks[:2], delete_tasks=["t5", "t4"])  # updated in place, and a NUL row deleted
    assert SqliteStore(tmp_path / "data").load().tasks == {t.id: t for t in tasks[:4]}
    store.write(tasks=[tasks[4]])  # a NUL alone
    assert SqliteStore(tmp_path / "data").load().tasks["t4"] == tasks[4]
