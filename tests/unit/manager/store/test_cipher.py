"""The key that encrypts secrets at rest: without it, or with another one, the state is refused, not
misread."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from pyswarm.manager.store import STATE_FILE, SqliteStore, StoreError
from pyswarm.manager.store.cipher import KEY_FILE, SecretCipher
from pyswarm.model.secret import Secret


def _stored(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.write(secrets=[Secret(id="s1", name="a", data=b"one"), Secret(id="s2", name="b", data=b"two")])
    store.close()


def test_a_missing_key_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    _stored(tmp_path)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(StoreError, match=f"key file {tmp_path / KEY_FILE} is missing.*Restore it"):
        SqliteStore(tmp_path).load()
    assert not (tmp_path / KEY_FILE).exists()  # not replaced by a new key that would decrypt nothing


def test_another_key_is_refused(tmp_path: Path) -> None:
    _stored(tmp_path)
    (tmp_path / KEY_FILE).write_bytes(os.urandom(32))
    with pytest.raises(StoreError, match="cannot be decrypted"):
        SqliteStore(tmp_path).load()


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    _stored(tmp_path)
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(StoreError, match=r"corrupt \(5 bytes, not 32\)"):
        SqliteStore(tmp_path).load()


def test_a_blob_copied_onto_another_secret_does_not_decrypt(tmp_path: Path) -> None:
    """The secret's ID is the associated data: rows cannot be swapped to read one secret as another."""
    _stored(tmp_path)
    with sqlite3.connect(tmp_path / STATE_FILE) as db:
        db.execute("UPDATE secrets SET data=(SELECT data FROM secrets WHERE id='s1') WHERE id='s2'")
    with pytest.raises(StoreError, match="secret s2 cannot be decrypted"):
        SqliteStore(tmp_path).load()


def test_a_key_file_others_can_read_is_made_private_again(tmp_path: Path) -> None:
    _stored(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    assert SqliteStore(tmp_path).load().secrets["s1"].data == b"one"
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_each_encryption_has_its_own_nonce(tmp_path: Path) -> None:
    cipher = SecretCipher(tmp_path)
    first, second = cipher.encrypt(b"same", "s1"), cipher.encrypt(b"same", "s1")
    assert first != second
    assert cipher.decrypt(first, "s1") == cipher.decrypt(second, "s1") == b"same"
    with pytest.raises(StoreError, match="corrupt"):
        cipher.decrypt(b"\x02" + first[1:], "s1")
