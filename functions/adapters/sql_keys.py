"""API keys in the metadata database (table `api_keys`, migration 2).

A key is shown once, when created: `dl_<id>_<secret>`. The store keeps its
SHA-256 only. A plain (unsalted, fast) hash is the right tool here, unlike for
passwords: the secret is 32 random bytes, so there is nothing to guess, and a
lookup by hash is one indexed read per request.

Why a module beside SqlMetadata rather than methods on it: keys are the
gateway's concern, not the pipeline's, and this keeps the MetadataStore port
small. It shares the store's transactions, so it works on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from doclane.functions.adapters.sql_metadata import SqlMetadata, utc_now

Role = Literal["admin", "user"]
ROLES: tuple[str, ...] = ("admin", "user")
PREFIX = "dl_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str  # the first characters of the key, for people to recognise it
    role: str
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _row(r: dict) -> ApiKey:
    return ApiKey(id=r["id"], name=r["name"], prefix=r["prefix"], role=r["role"], created_at=r["created_at"],
                  revoked_at=r["revoked_at"], last_used_at=r["last_used_at"])


_SELECT = "SELECT id, name, prefix, role, created_at, revoked_at, last_used_at FROM api_keys"


class ApiKeys:
    def __init__(self, store: SqlMetadata):
        self._store = store

    def create(self, name: str, role: str = "user") -> tuple[ApiKey, str]:
        """A new key; returns (record, the key itself), the only time it is seen."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise ValueError("a key needs a name of 1 to 100 characters (who or what uses it)")
        key_id = secrets.token_hex(4)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        rec = ApiKey(id=key_id, name=name, prefix=key[:12], role=role, created_at=utc_now())
        with self._store._transaction(write=True) as tx:
            tx.execute("INSERT INTO api_keys (id, name, prefix, key_hash, role, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (rec.id, rec.name, rec.prefix, hash_key(key), rec.role, rec.created_at))
        return rec, key

    def verify(self, key: str) -> ApiKey | None:
        """The active key with this secret, or None (unknown or revoked)."""
        if not key.startswith(PREFIX):
            return None
        with self._store._transaction(write=False) as tx:
            row = tx.one(f"{_SELECT} WHERE key_hash = ?", (hash_key(key),))
        if row is None or row["revoked_at"] is not None:
            return None
        return _row(row)

    def get(self, key_id: str) -> ApiKey | None:
        with self._store._transaction(write=False) as tx:
            row = tx.one(f"{_SELECT} WHERE id = ?", (key_id,))
        return _row(row) if row else None

    def list(self) -> list[ApiKey]:
        with self._store._transaction(write=False) as tx:
            return [_row(r) for r in tx.all(f"{_SELECT} ORDER BY created_at, id")]

    def revoke(self, key_id: str) -> bool:
        """True if an active key was revoked; revoking twice changes nothing."""
        with self._store._transaction(write=True) as tx:
            cursor = tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                (utc_now(), key_id))
            return cursor.rowcount == 1

    def touch(self, key_id: str) -> None:
        """Record use, for `doclane keys list` (best effort, at most once a minute per key)."""
        now = utc_now()
        with self._store._transaction(write=True) as tx:
            tx.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ? AND "
                       "(last_used_at IS NULL OR last_used_at < ?)", (now, key_id, _minute_ago(now)))

    def count(self) -> int:
        with self._store._transaction(write=False) as tx:
            row = tx.one("SELECT COUNT(*) AS n FROM api_keys")
        return int(row["n"]) if row else 0


def _minute_ago(now: str) -> str:
    from datetime import datetime, timedelta

    t = datetime.fromisoformat(now.replace("Z", "+00:00")) - timedelta(minutes=1)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")
