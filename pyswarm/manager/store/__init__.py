"""Durable cluster state: the StateStore protocol and its SQLite implementation."""

from pyswarm.manager.store.base import Snapshot, StateStore, StoreError
from pyswarm.manager.store.sqlite import SCHEMA_VERSION, STATE_FILE, SqliteStore, TaskRow, task_from_row, task_row

__all__ = [
    "SCHEMA_VERSION",
    "STATE_FILE",
    "Snapshot",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "TaskRow",
    "task_from_row",
    "task_row",
]
