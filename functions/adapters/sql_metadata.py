"""The MetadataStore written once in portable SQL; SQLite and PostgreSQL
adapters only say how to open a transaction.

Every public method is one short transaction, so several processes can share
the database: nothing is cached in memory, and every read-modify-write is a
single statement (INSERT ... ON CONFLICT, UPDATE ... WHERE) whose outcome the
database decides, not the caller. SQL is written with `?` placeholders; the
PostgreSQL transaction rewrites them to `%s` (no statement here contains a
literal `?` or `%`).
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from cloudevents.http import CloudEvent

from doclane.functions.adapters import sql_migrations
from doclane.functions.errors import NotFound, Permanent
from doclane.functions.ports import DocumentRecord, Webhook

STATUSES = ("uploaded", "classified", "extracted", "indexed", "failed")
FINAL_STATUSES = ("indexed", "failed")
_PIPELINE = ("uploaded", "classified", "extracted", "indexed")  # the stages' statuses, in order
_UPDATABLE = frozenset({
    "bucket", "key", "filename", "content_type", "size", "sha256", "status",
    "category", "category_confidence", "fields", "error", "batch_id",
})
_DOC_COLUMNS = (
    "document_id", "bucket", "key", "filename", "content_type", "size", "sha256", "status",
    "category", "category_confidence", "fields", "error", "batch_id", "created_at", "updated_at",
)
# Quoted because KEY is a keyword in both dialects' grammars.
_DOC_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in _DOC_COLUMNS) + " FROM documents"


class InvalidChange(Permanent, ValueError):
    """A write the store refuses (unknown status or column): retrying the same
    call cannot succeed, and callers catching ValueError see it too."""


class Tx(ABC):
    """One open transaction: the few calls the store needs from a DB-API connection."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a statement; returns a cursor with rowcount/fetchone/fetchall."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.execute(sql, params).fetchall()]


def utc_now() -> str:
    """ISO 8601 UTC with fixed-width microseconds: string order is time order."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_iso(value: str | datetime | None) -> str:
    """Normalise an event time to utc_now()'s format, so events from clocks in
    other zones still sort by real time; an unparseable time is kept as is."""
    if value is None:
        return utc_now()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidChange(f"unknown document status {status!r}: use one of {', '.join(STATUSES)}")


def _data_json(data: Any) -> str | None:
    """Event data as JSON text. Bytes that are not UTF-8 are kept as base64
    under a "base64" key so history never loses what was sent."""
    if data is None:
        return None
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return json.dumps({"base64": base64.b64encode(raw).decode("ascii")})
        try:
            json.loads(text)
            return text
        except ValueError:
            return json.dumps(text)
    return json.dumps(data, default=str)


def _record(row: dict[str, Any]) -> DocumentRecord:
    row = dict(row)
    row["fields"] = json.loads(row["fields"]) if row["fields"] else {}
    return DocumentRecord(**row)


def _batch_summary(batch: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = [m["status"] for m in members]
    indexed, failed = statuses.count("indexed"), statuses.count("failed")
    return {
        "batch_id": batch["batch_id"],
        "total": len(members),
        "indexed": indexed,
        "failed": failed,
        "pending": len(members) - indexed - failed,
        "created_at": batch["created_at"],
        "completed_at": batch["completed_at"],
        "document_ids": [m["document_id"] for m in members],
    }


class SqlMetadata(ABC):
    """MetadataStore over any database that speaks this SQL (see ports.py)."""

    dialect: sql_migrations.Dialect

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Tx]:
        """A transaction that commits on success and rolls back on error;
        `write` says the caller will write (SQLite takes the write lock up front)."""

    @abstractmethod
    def close(self) -> None: ...

    def _migrate(self, tx: Tx) -> list[int]:
        versions = lambda: {r["version"] for r in tx.all("SELECT version FROM schema_migrations")}  # noqa: E731
        return sql_migrations.apply(tx.execute, versions, self.dialect)

    def schema_version(self) -> int:
        with self._transaction(write=False) as tx:
            row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0) if row else 0

    # ------------------------------------------------------------------ documents
    def register(self, rec: DocumentRecord) -> tuple[DocumentRecord, bool]:
        """Insert if no document has this id; else return the stored one untouched,
        so a redelivered upload event cannot reset a document's progress."""
        _check_status(rec.status)
        now = utc_now()
        values = asdict(rec)
        values.update(fields=json.dumps(rec.fields or {}, default=str),
                      created_at=rec.created_at or now, updated_at=now)
        columns = ", ".join(f'"{c}"' for c in _DOC_COLUMNS)
        marks = ", ".join("?" for _ in _DOC_COLUMNS)
        with self._transaction(write=True) as tx:
            cursor = tx.execute(
                f"INSERT INTO documents ({columns}) VALUES ({marks}) ON CONFLICT (document_id) DO NOTHING",
                [values[c] for c in _DOC_COLUMNS],
            )
            created = cursor.rowcount == 1
            row = tx.one(f"{_DOC_SELECT} WHERE document_id = ?", (rec.document_id,))
        assert row is not None  # inserted or already there, in this transaction
        return _record(row), created

    def get(self, document_id: str) -> DocumentRecord | None:
        with self._transaction(write=False) as tx:
            row = tx.one(f"{_DOC_SELECT} WHERE document_id = ?", (document_id,))
        return _record(row) if row else None

    def find_by_sha256(self, sha256: str) -> DocumentRecord | None:
        """The first document registered with this content (the duplicate's original)."""
        with self._transaction(write=False) as tx:
            row = tx.one(f"{_DOC_SELECT} WHERE sha256 = ? ORDER BY created_at, seq LIMIT 1", (sha256,))
        return _record(row) if row else None

    def update(self, document_id: str, **changes: Any) -> DocumentRecord:
        return self._update(document_id, changes)

    def advance(self, document_id: str, status: str, **changes: Any) -> DocumentRecord:
        """A pipeline stage's update: set `status` (one of uploaded,
        classified, extracted, indexed) and `changes`, unless the document is
        already further along, in one statement. Delivery is at least once,
        so a stage may run again on an event whose outputs were already
        published and handled downstream (its retry after the store failed
        between the two); it must not set an indexed document back to
        "classified", where nothing would move it on. "failed" is not further
        along: a replayed dead letter moves a failed document on again.
        Returns the record as it is now (unchanged when it was further)."""
        if status not in _PIPELINE:
            raise InvalidChange(f"{status!r} is not a pipeline stage's status: use one of {', '.join(_PIPELINE)}")
        return self._update(document_id, {**changes, "status": status},
                            unless=_PIPELINE[_PIPELINE.index(status) + 1:])

    def _update(self, document_id: str, changes: dict[str, Any], unless: tuple[str, ...] = ()) -> DocumentRecord:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidChange(
                f"cannot update {', '.join(sorted(unknown))} of a document: "
                f"updatable are {', '.join(sorted(_UPDATABLE))}"
            )
        if "status" in changes:
            _check_status(changes["status"])
        if "fields" in changes:
            changes["fields"] = json.dumps(changes["fields"] or {}, default=str)
        assignments = "".join(f'"{c}" = ?, ' for c in changes)
        guard = f" AND status NOT IN ({', '.join('?' for _ in unless)})" if unless else ""
        with self._transaction(write=True) as tx:
            cursor = tx.execute(
                f"UPDATE documents SET {assignments}updated_at = ? WHERE document_id = ?{guard}",
                [*changes.values(), utc_now(), document_id, *unless],
            )
            row = tx.one(f"{_DOC_SELECT} WHERE document_id = ?", (document_id,))
            if cursor.rowcount == 0 and row is None:
                raise NotFound(f"no document {document_id!r} in the metadata store")
        assert row is not None
        return _record(row)

    def delete(self, document_id: str) -> None:
        """Forget the document (a no-op if unknown, so a repeated delete is harmless).
        It also leaves its batches, which could otherwise never complete; its
        event history stays, as the audit trail of what happened."""
        with self._transaction(write=True) as tx:
            tx.execute("DELETE FROM documents WHERE document_id = ?", (document_id,))
            tx.execute("DELETE FROM batch_documents WHERE document_id = ?", (document_id,))

    def list(self, *, status: str | None = None, category: str | None = None, since: str | datetime | None = None,
             until: str | datetime | None = None, limit: int = 100, offset: int = 0) -> list[DocumentRecord]:
        """Newest first, optionally only one status, one category, and those
        created (registered) at or after `since` and before `until`."""
        if limit < 0 or offset < 0:
            raise InvalidChange(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        conditions, params = [], []
        if status is not None:
            _check_status(status)
            conditions.append("status = ?")
            params.append(status)
        if category is not None:
            conditions.append("category = ?")
            params.append(category)
        # created_at is utc_now()'s fixed-width format: string order is time order.
        if since is not None:
            conditions.append("created_at >= ?")
            params.append(utc_iso(since))
        if until is not None:
            conditions.append("created_at < ?")
            params.append(utc_iso(until))
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        with self._transaction(write=False) as tx:
            rows = tx.all(f"{_DOC_SELECT}{where} ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
                          [*params, limit, offset])
        return [_record(r) for r in rows]

    def stats(self) -> dict[str, dict[str, int]]:
        """Documents per status and per category (unclassified ones count only by status)."""
        with self._transaction(write=False) as tx:
            by_status = tx.all("SELECT status AS k, COUNT(*) AS n FROM documents GROUP BY status")
            by_category = tx.all("SELECT category AS k, COUNT(*) AS n FROM documents "
                                 "WHERE category IS NOT NULL GROUP BY category")
        return {"status": {r["k"]: int(r["n"]) for r in by_status},
                "category": {r["k"]: int(r["n"]) for r in by_category}}

    # ------------------------------------------------------------------ events
    def record_event(self, event: CloudEvent, *, stage: str | None = None,
                     duration_ms: float | None = None) -> None:
        """Append to the subject document's history; a redelivered event (same id) is kept once."""
        with self._transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO events (event_id, document_id, type, source, event_time, stage, "
                "duration_ms, data, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event["id"], event.get("subject"), event["type"], event["source"],
                 utc_iso(event.get("time")), stage, duration_ms, _data_json(event.data), utc_now()),
            )

    def history(self, document_id: str) -> list[dict[str, Any]]:
        """The document's events in event-time order (ties in recording order)."""
        with self._transaction(write=False) as tx:
            rows = tx.all(
                "SELECT event_id, document_id, type, source, event_time, stage, duration_ms, data "
                "FROM events WHERE document_id = ? ORDER BY event_time, seq", (document_id,))
        return [_event_dict(r) for r in rows]

    def recent_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest events of all documents (and those without one), newest first:
        a live feed for the dashboard."""
        with self._transaction(write=False) as tx:
            rows = tx.all(
                "SELECT event_id, document_id, type, source, event_time, stage, duration_ms, data "
                "FROM events ORDER BY event_time DESC, seq DESC LIMIT ?", (limit,))
        return [_event_dict(r) for r in rows]

    # ------------------------------------------------------------------ webhooks
    def add_webhook(self, hook: Webhook) -> None:
        """Add, or replace the url/secret/types/categories of the subscription with this id."""
        with self._transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO webhooks (id, url, secret, event_types, categories, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, "
                "event_types = excluded.event_types, categories = excluded.categories",
                (hook.id, hook.url, hook.secret, json.dumps(list(hook.event_types)),
                 json.dumps(list(hook.categories)), utc_now()),
            )

    def webhooks(self) -> list[Webhook]:
        """Every subscription, webhooks and e-mail alike (Webhook.kind tells them apart)."""
        with self._transaction(write=False) as tx:
            rows = tx.all("SELECT id, url, secret, event_types, categories FROM webhooks ORDER BY created_at, id")
        return [Webhook(id=r["id"], url=r["url"], secret=r["secret"], event_types=tuple(json.loads(r["event_types"])),
                        categories=tuple(json.loads(r["categories"]))) for r in rows]

    def remove_webhook(self, webhook_id: str) -> bool:
        """True if a hook was removed. Its past deliveries stay on record."""
        with self._transaction(write=True) as tx:
            return tx.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount > 0

    def record_delivery(self, webhook_id: str, event_id: str, *, ok: bool, status: int | None,
                        error: str | None, attempt: int, permanent: bool = False) -> None:
        """Every attempt is a row: the retry history is what explains a late
        delivery. `permanent` marks a failure that retrying cannot fix (the
        receiver refused for good), so the event is not sent there again."""
        with self._transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO deliveries (webhook_id, event_id, ok, status, error, attempt, at, permanent) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (webhook_id, event_id, bool(ok), status, error, attempt, utc_now(), bool(permanent and not ok)),
            )

    def delivered(self, webhook_id: str, event_id: str) -> bool:
        with self._transaction(write=False) as tx:
            row = tx.one("SELECT 1 AS hit FROM deliveries WHERE webhook_id = ? AND event_id = ? AND ok = ? "
                         "LIMIT 1", (webhook_id, event_id, True))
        return row is not None

    def settled(self, webhook_id: str, event_id: str) -> bool:
        """Delivered, or failed for good: either way the event is not sent there again."""
        with self._transaction(write=False) as tx:
            row = tx.one("SELECT 1 AS hit FROM deliveries WHERE webhook_id = ? AND event_id = ? "
                         "AND (ok = ? OR permanent = ?) LIMIT 1", (webhook_id, event_id, True, True))
        return row is not None

    def deliveries(self, event_id: str | None = None, *, webhook_id: str | None = None) -> list[dict[str, Any]]:
        """Attempts in the order they were made: of one event, of one subscription, or of all."""
        conditions = [(c, v) for c, v in (("event_id = ?", event_id), ("webhook_id = ?", webhook_id)) if v is not None]
        where = ("WHERE " + " AND ".join(c for c, _ in conditions) + " ") if conditions else ""
        with self._transaction(write=False) as tx:
            rows = tx.all("SELECT webhook_id, event_id, ok, status, error, attempt, at, permanent FROM deliveries "
                          f"{where}ORDER BY seq", tuple(v for _, v in conditions))
        return [{**r, "ok": bool(r["ok"]), "permanent": bool(r["permanent"])} for r in rows]

    # ------------------------------------------------------------------ batches
    def add_batch(self, batch_id: str, document_ids: Sequence[str]) -> None:
        """Create the batch or add the ids it lacks (a repeated call changes nothing)."""
        ids = list(dict.fromkeys(document_ids))
        with self._transaction(write=True) as tx:
            tx.execute("INSERT INTO batches (batch_id, created_at) VALUES (?, ?) "
                       "ON CONFLICT (batch_id) DO NOTHING", (batch_id, utc_now()))
            row = tx.one("SELECT COUNT(*) AS n FROM batch_documents WHERE batch_id = ?", (batch_id,))
            start = int(row["n"]) if row else 0
            tx.executemany(
                "INSERT INTO batch_documents (batch_id, document_id, ordinal) VALUES (?, ?, ?) "
                "ON CONFLICT (batch_id, document_id) DO NOTHING",
                [(batch_id, doc, start + i) for i, doc in enumerate(ids)],
            )

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """Counts by outcome; a document not registered yet counts as pending."""
        with self._transaction(write=False) as tx:
            return self._batch(tx, batch_id)

    def complete_batch_once(self, batch_id: str) -> dict[str, Any] | None:
        """One conditional UPDATE decides the winner: the database serialises
        concurrent updates of the batch row, and the loser finds completed_at set."""
        with self._transaction(write=True) as tx:
            cursor = tx.execute(
                "UPDATE batches SET completed_at = ? WHERE batch_id = ? AND completed_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM batch_documents bd "
                "LEFT JOIN documents d ON d.document_id = bd.document_id "
                "WHERE bd.batch_id = ? AND (d.status IS NULL OR d.status NOT IN (?, ?)))",
                (utc_now(), batch_id, batch_id, *FINAL_STATUSES),
            )
            if cursor.rowcount != 1:
                return None
            return self._batch(tx, batch_id)

    @staticmethod
    def _batch(tx: Tx, batch_id: str) -> dict[str, Any] | None:
        batch = tx.one("SELECT batch_id, created_at, completed_at FROM batches WHERE batch_id = ?", (batch_id,))
        if batch is None:
            return None
        members = tx.all(
            "SELECT bd.document_id, d.status FROM batch_documents bd "
            "LEFT JOIN documents d ON d.document_id = bd.document_id "
            "WHERE bd.batch_id = ? ORDER BY bd.ordinal, bd.document_id", (batch_id,))
        return _batch_summary(batch, members)

    # ------------------------------------------------------------------ idempotency
    def first_time(self, function: str, event_id: str) -> bool:
        """Atomically claim (function, event_id): True for exactly one caller, ever."""
        with self._transaction(write=True) as tx:
            return tx.execute(
                "INSERT INTO processed_events (function_name, event_id, at) VALUES (?, ?, ?) "
                "ON CONFLICT (function_name, event_id) DO NOTHING", (function, event_id, utc_now()),
            ).rowcount == 1

    def mark_seen(self, function: str, event_id: str) -> None:
        """Record that `function` finished `event_id`; call it after the work
        succeeded, so a crash in between means a retry, not a lost event."""
        self.first_time(function, event_id)

    def seen(self, function: str, event_id: str) -> bool:
        with self._transaction(write=False) as tx:
            return tx.one("SELECT 1 AS hit FROM processed_events WHERE function_name = ? AND event_id = ?",
                          (function, event_id)) is not None


def _event_dict(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["event_id"], "document_id": row["document_id"], "type": row["type"],
        "time": row["event_time"], "source": row["source"], "stage": row["stage"],
        "duration_ms": row["duration_ms"], "data": json.loads(row["data"]) if row["data"] else None,
    }
