"""Secret data at rest: AES-256-GCM under a key file in the manager's data directory.

The key file is made (0600, 32 random bytes) when the first secret is written. Each blob is a version byte,
a random 96-bit nonce and the ciphertext; the secret's ID is its associated data, so a blob copied onto
another secret's row does not decrypt. Whoever can read the key file can read the secrets: it is as private
as the state file, and a backup of the state without it holds no secret in clear.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyswarm.manager.store.base import StoreError

KEY_FILE = "secrets.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"


class SecretCipher:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEY_FILE
        self._aead: AESGCM | None = None
        self._lock = threading.Lock()

    def encrypt(self, data: bytes, object_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._key(create=True).encrypt(nonce, data, object_id.encode())

    def decrypt(self, blob: bytes, object_id: str) -> bytes:
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES:
            raise StoreError(f"secret {object_id}'s data in the state file is corrupt; restore it from a backup")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._key(create=False).decrypt(nonce, sealed, object_id.encode())
        except InvalidTag:
            raise StoreError(
                f"secret {object_id} cannot be decrypted with the key in {self.path}: the key file is not the one "
                "it was written with, or the state file is corrupt; restore both from the same backup"
            ) from None

    def _key(self, create: bool) -> AESGCM:
        with self._lock:
            if self._aead is None:
                self._aead = AESGCM(self._read(create))
            return self._aead

    def _read(self, create: bool) -> bytes:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            if not create:
                raise StoreError(
                    f"the secrets' key file {self.path} is missing: the state file holds secrets that only it can "
                    "decrypt. Restore it from the backup of this state file"
                ) from None
            return self._create()
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(self.path, 0o600)  # ours: private again, as the state file
        key = self.path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise StoreError(f"the secrets' key file {self.path} is corrupt ({len(key)} bytes, not {_KEY_BYTES})")
        return key

    def _create(self) -> bytes:
        """Written whole under a temporary name, then linked into place: a crash never leaves a short key, and
        a key that appeared meanwhile is kept (link fails), not replaced."""
        key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        tmp = self.path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return self._read(create=False)
        finally:
            tmp.unlink(missing_ok=True)
        _sync_dir(self.path.parent)
        return key


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
