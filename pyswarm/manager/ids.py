"""Object IDs and tokens, and the garbage collector's tuning for a manager's process."""

from __future__ import annotations

import gc
import os
import secrets
import string

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_BYTES = bytes(ord(_ID_ALPHABET[b % len(_ID_ALPHABET)]) for b in range(256))
_ID_LENGTH = 25
_IDS_PER_READ = 256
_ids: list[str] = []  # made ahead, from one urandom read: a pass makes an id per new task
os.register_at_fork(after_in_child=_ids.clear)  # a forked child must not hand out its parent's ids

# The youngest generation is collected after this many allocations, the middle one after this many of those.
GC_YOUNG_THRESHOLD = 50_000
GC_MIDDLE_THRESHOLD = 20


def new_id() -> str:
    """25 lowercase alphanumerics, like swarm's object IDs: one random byte each, about 129 bits in all.
    (One urandom call and one translate per 256 ids; list.pop is atomic, so no id is handed out twice.)"""
    try:
        return _ids.pop()
    except IndexError:
        pass
    chars = os.urandom(_ID_LENGTH * _IDS_PER_READ).translate(_ID_BYTES).decode()
    fresh = [chars[i : i + _ID_LENGTH] for i in range(0, len(chars), _ID_LENGTH)]
    mine = fresh.pop()
    _ids.extend(fresh)
    return mine


def new_token(kind: str, ca_digest: str) -> str:
    """A credential: PSWTKN-1-<cluster CA digest>-<kind>-<secret>. The digest lets a joining node check the
    manager's CA before it sends the token (as swarm's SWMTKN-1-<CA digest>-<secret>)."""
    return f"PSWTKN-1-{ca_digest}-{kind}-{secrets.token_hex(24)}"


def token_ca_digest(token: str) -> str | None:
    """The CA digest a token carries, or None for a token of another form."""
    parts = token.split("-")
    if len(parts) == 5 and parts[:2] == ["PSWTKN", "1"] and len(parts[2]) == 64:
        return parts[2]
    return None


def tune_gc() -> None:
    """Fewer cyclic garbage collections, for a process that runs a manager.

    A manager holds a large heap that lives long (a Task, its dicts and tuples per task) and makes few
    reference cycles; refcounting frees nearly everything. With CPython's default thresholds (700, 10, 10)
    the collector's passes over that heap took about a fifth of the CPU of a large ramp (docs/performance.md).
    The oldest generation keeps its default count, and CPython adds its own rule: no full collection before
    the long-lived objects grew by a quarter."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_YOUNG_THRESHOLD), max(gen1, GC_MIDDLE_THRESHOLD), gen2)
