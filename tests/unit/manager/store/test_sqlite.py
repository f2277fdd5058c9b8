"""Secrets and configs in the SQLite store: durable, in the same transaction as the rest, a secret's data
never in clear in the state files, and state files from before these tables open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pyswarm.manager.store import STATE_FILE, SqliteStore
from pyswarm.manager.store.cipher import KEY_FILE
from pyswarm.model import FileReference, Service, ServiceSpec
from pyswarm.model.secret import Config, Secret

PLAIN = b"correct horse battery staple"


def _secret(object_id: str = "s1", name: str = "pw", data: bytes = PLAIN) -> Secret:
    return Secret(id=object_id, name=name, data=data, labels={"env": "prod"}, created_at=1.0, updated_at=2.0)


def test_secrets_and_configs_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    config = Config(id="c1", name="site", data=b"server {}\n", labels={}, created_at=3.0, updated_at=3.0)
    store.write(secrets=[_secret()], configs=[config])
    store.close()
    loaded = SqliteStore(tmp_path).load()
    assert loaded.secrets == {"s1": _secret()}
    assert loaded.configs == {"c1": config}


def test_deletions_remove_them(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.write(secrets=[_secret(), _secret("s2", "other")], configs=[Config(id="c1", name="c", data=b"x")])
    store.write(delete_secrets=["s1"], delete_configs=["c1"])
    loaded = store.load()
    assert set(loaded.secrets) == {"s2"} and loaded.configs == {}


def test_a_write_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    """A name taken by another secret fails the whole write: the service written with it is not kept."""
    store = SqliteStore(tmp_path)
    store.write(secrets=[_secret()])
    ref = FileReference(name="pw", target="pw", id="s2")
    service = Service(id="v1", spec=ServiceSpec(name="web", image="nginx", secrets=(ref,)))
    with pytest.raises(sqlite3.IntegrityError):
        store.write(services=[service], secrets=[_secret("s2", "pw")], delete_secrets=["nothing"])
    loaded = store.load()
    assert loaded.services == {} and set(loaded.secrets) == {"s1"}


def test_a_secrets_data_is_never_in_clear_in_the_state_files(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.write(secrets=[_secret()], configs=[Config(id="c1", name="site", data=b"plain config text")])
    files = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith(STATE_FILE))
    assert b"plain config text" in files  # configs are not secret: kept as they are, so this scan can see data
    assert PLAIN not in files
    blob = sqlite3.connect(tmp_path / STATE_FILE).execute("SELECT data FROM secrets").fetchone()[0]
    assert PLAIN not in blob and len(blob) == 1 + 12 + len(PLAIN) + 16  # version, nonce, ciphertext, tag
    store.close()


def test_the_key_file_is_made_private_on_the_first_secret_only(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.write(configs=[Config(id="c1", name="c", data=b"x")])
    assert not (tmp_path / KEY_FILE).exists()
    store.write(secrets=[_secret()])
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / KEY_FILE).read_bytes()) == 32


def test_a_state_file_from_before_secrets_opens_and_gets_the_tables(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        db.execute("DROP TABLE secrets")
        db.execute("DROP TABLE configs")
    store = SqliteStore(tmp_path)
    assert store.load().secrets == {}
    store.write(secrets=[_secret()])
    assert set(SqliteStore(tmp_path).load().secrets) == {"s1"}
