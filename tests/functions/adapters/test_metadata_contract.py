"""One contract for every MetadataStore adapter: SQLite in a temporary folder
and PostgreSQL on a running server (each test in a fresh schema, dropped after).

PostgreSQL comes from DOCLANE_TEST_POSTGRES_URL (default: the local server).
If it is unreachable these tests skip on a laptop and fail when CI is set.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import psycopg.conninfo
import pytest
from cloudevents.http import CloudEvent

from doclane.functions.adapters import sql_migrations
from doclane.functions.adapters.metadata import open_metadata
from doclane.functions.adapters.postgres_metadata import PostgresMetadata
from doclane.functions.adapters.sql_metadata import InvalidChange, SqlMetadata
from doclane.functions.adapters.sqlite_metadata import SqliteMetadata
from doclane.functions.errors import ConfigError, NotFound, Permanent, Retryable
from doclane.functions.ports import DocumentRecord, Webhook

PG_URL = os.environ.get("DOCLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# --------------------------------------------------------------------------- fixtures
@functools.cache
def _postgres_problem() -> str | None:
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
        return None
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0]


def _require_postgres() -> None:
    problem = _postgres_problem()
    if problem:
        message = f"PostgreSQL at {PG_URL} is unreachable ({problem}); set DOCLANE_TEST_POSTGRES_URL"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message + " (required because CI is set)")
        pytest.skip(message)


def _with_params(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + query


@dataclass
class Backend:
    name: str
    target: str  # what open_metadata() takes
    opened: list[SqlMetadata] = field(default_factory=list)

    def open(self) -> SqlMetadata:
        store = open_metadata(self.target)
        self.opened.append(store)
        return store

    def sql(self, statement: str) -> list[tuple]:
        """Run SQL beside the adapter, to inspect or tamper with what it stored."""
        if self.name == "sqlite":
            with sqlite3.connect(self.target) as conn:
                return conn.execute(statement).fetchall()
        with psycopg.connect(self.target, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


@contextmanager
def _backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    if name == "sqlite":
        b = Backend("sqlite", str(tmp_path / "metadata.db"))
        yield b
        for store in b.opened:
            store.close()
        return
    _require_postgres()
    schema = f"doclane_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    b = Backend("postgres", _with_params(PG_URL, options=f"-csearch_path%3D{schema}",
                                         application_name=schema))
    try:
        yield b
    finally:
        for store in b.opened:
            store.close()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    with _backend(request.param, tmp_path) as b:
        yield b


@pytest.fixture
def pg_backend(tmp_path):
    with _backend("postgres", tmp_path) as b:
        yield b


@pytest.fixture
def store(backend) -> SqlMetadata:
    return backend.open()


def doc(document_id: str, **overrides: Any) -> DocumentRecord:
    values = dict(bucket="inbox", key=f"in/{document_id}.pdf", filename=f"{document_id}.pdf",
                  content_type="application/pdf", size=1234, sha256=f"sha-{document_id}", status="uploaded")
    return DocumentRecord(document_id=document_id, **{**values, **overrides})


def event(event_id: str, subject: str | None, *, type_: str = "org.doclane.document.uploaded.v1",
          time: str | None = None, data: Any = None) -> CloudEvent:
    attributes = {"id": event_id, "type": type_, "source": "/doclane/test"}
    if subject is not None:
        attributes["subject"] = subject
    if time is not None:
        attributes["time"] = time
    return CloudEvent(attributes, data)


def race(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Run call(0..n-1) on n threads released together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --------------------------------------------------------------------------- documents
def test_register_inserts_once_and_keeps_the_first_record(store, backend):
    assert isinstance(store, SqliteMetadata if backend.name == "sqlite" else PostgresMetadata)
    first, created = store.register(doc("d1", fields={"total": {"value": 12.5, "currency": "€"}}))
    assert created and first.status == "uploaded" and first.fields["total"]["currency"] == "€"
    again, created_again = store.register(doc("d1", filename="other.pdf", status="indexed"))
    assert not created_again and again == first and again.filename == "d1.pdf"
    assert store.get("d1") == first and store.get("nope") is None


def test_timestamps_are_iso_utc_and_update_bumps_updated_at(store):
    rec, _ = store.register(doc("d1"))
    for stamp in (rec.created_at, rec.updated_at):
        assert stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    changed = store.update("d1", status="classified", category="invoice", category_confidence=0.91,
                           fields={"iban": "NL91ABNA0417164300"}, error=None, filename="renamed.pdf")
    assert (changed.status, changed.category, changed.category_confidence) == ("classified", "invoice", 0.91)
    assert changed.fields == {"iban": "NL91ABNA0417164300"} and changed.filename == "renamed.pdf"
    assert changed.created_at == rec.created_at and changed.updated_at > rec.updated_at
    assert store.get("d1") == changed
    kept, _ = store.register(doc("d2", created_at="2020-01-02T03:04:05.000000Z"))
    assert kept.created_at == "2020-01-02T03:04:05.000000Z"


def test_update_rejects_unknown_ids_statuses_and_columns(store):
    store.register(doc("d1"))
    with pytest.raises(NotFound, match="nope"):
        store.update("nope", status="failed")
    with pytest.raises(ValueError, match="unknown document status 'done'") as info:
        store.update("d1", status="done")
    assert isinstance(info.value, Permanent)
    with pytest.raises(ValueError, match="created_at"):
        store.update("d1", created_at="2001-01-01T00:00:00.000000Z")
    with pytest.raises(ValueError, match="status"):
        store.register(doc("d3", status="parsed"))
    with pytest.raises(ValueError):
        store.list(status="done")
    assert store.get("d1").status == "uploaded" and store.get("d3") is None


def test_find_by_sha256_returns_the_first_with_that_content(store):
    store.register(doc("orig", sha256="same"))
    store.register(doc("copy", sha256="same"))
    assert store.find_by_sha256("same").document_id == "orig"
    assert store.find_by_sha256("other") is None


def test_delete_forgets_the_document_and_is_idempotent(store):
    store.register(doc("d1"))
    store.delete("d1")
    store.delete("d1")
    assert store.get("d1") is None and store.list() == []


def test_list_is_newest_first_with_status_filter_and_paging(store):
    for i in range(5):
        store.register(doc(f"d{i}", status="indexed" if i % 2 else "uploaded"))
    assert [r.document_id for r in store.list()] == ["d4", "d3", "d2", "d1", "d0"]
    assert [r.document_id for r in store.list(status="indexed")] == ["d3", "d1"]
    assert [r.document_id for r in store.list(limit=2, offset=1)] == ["d3", "d2"]
    store.register(doc("old", created_at="2001-01-01T00:00:00.000000Z"))
    assert store.list()[-1].document_id == "old"


def test_list_filters_by_category_and_creation_time(store):
    store.register(doc("a", category="invoice", created_at="2024-05-01T10:00:00.000000Z"))
    store.register(doc("b", category="invoice", status="failed", created_at="2024-05-02T10:00:00.000000Z"))
    store.register(doc("c", category="receipt", created_at="2024-05-03T10:00:00.000000Z"))
    ids = lambda **kw: [r.document_id for r in store.list(**kw)]  # noqa: E731
    assert ids(category="invoice") == ["b", "a"]
    assert ids(since="2024-05-02T10:00:00Z") == ["c", "b"]  # since is inclusive
    assert ids(until="2024-05-02T10:00:00Z") == ["a"]  # until is exclusive
    assert ids(since=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), category="invoice") == ["b", "a"]
    assert ids(category="invoice", status="failed", since="2024-05-01", until="2024-05-03") == ["b"]


def test_stats_count_by_status_and_category(store):
    store.register(doc("a"))
    store.register(doc("b"))
    store.update("b", status="indexed", category="invoice")
    store.register(doc("c"))
    store.update("c", status="failed", category="invoice", error="encrypted PDF")
    store.register(doc("d"))
    store.update("d", status="indexed", category="letter")
    assert store.stats() == {"status": {"uploaded": 1, "indexed": 2, "failed": 1},
                             "category": {"invoice": 2, "letter": 1}}


# --------------------------------------------------------------------------- events
def test_history_is_in_event_time_order_and_idempotent(store):
    store.record_event(event("e1", "d1", time="2024-05-01T10:00:00Z", data={"n": 1}), stage="ingest")
    store.record_event(event("e3", "d1", time="2024-05-01T10:00:00.5Z", type_="x.indexed"),
                       stage="index", duration_ms=812.5)
    # 11:30 at +02:00 is 09:30 UTC: earliest, though it sorts last as text
    store.record_event(event("e2", "d1", time="2024-05-01T11:30:00+02:00", data={"n": 2}))
    store.record_event(event("e1", "d1", time="2024-05-01T10:00:00Z", data={"n": 1}), stage="ingest")
    store.record_event(event("other", "d2", time="2024-05-01T08:00:00Z"))
    history = store.history("d1")
    assert [h["id"] for h in history] == ["e2", "e1", "e3"]
    assert history[0]["time"] == "2024-05-01T09:30:00.000000Z"
    assert history[1] == {"id": "e1", "document_id": "d1", "type": "org.doclane.document.uploaded.v1",
                          "time": "2024-05-01T10:00:00.000000Z", "source": "/doclane/test",
                          "stage": "ingest", "duration_ms": None, "data": {"n": 1}}
    assert (history[2]["stage"], history[2]["duration_ms"], history[2]["data"]) == ("index", 812.5, None)
    assert store.history("unknown") == []


def test_events_without_subject_and_binary_data_are_kept(store):
    store.record_event(event("loose", None, time="2024-05-01T10:00:00Z", data=b"\xff\xfe"))
    store.record_event(event("text", "d1", time="2024-05-01T11:00:00Z", data=b'{"a": [1, 2]}'))
    recent = store.recent_events(limit=10)
    assert [e["id"] for e in recent] == ["text", "loose"]
    assert recent[1]["document_id"] is None and recent[1]["data"] == {"base64": "//4="}
    assert store.history("d1")[0]["data"] == {"a": [1, 2]}


# --------------------------------------------------------------------------- webhooks
def test_webhooks_add_replace_list_remove(store):
    store.add_webhook(Webhook("h1", "https://a.example/hook", "whsec_AAAA", ("document.indexed",)))
    store.add_webhook(Webhook("h2", "https://b.example/hook", "whsec_BBBB"))
    store.add_webhook(Webhook("h1", "https://a.example/v2", "whsec_CCCC", ("document.indexed", "document.failed")))
    assert store.webhooks() == [
        Webhook("h1", "https://a.example/v2", "whsec_CCCC", ("document.indexed", "document.failed")),
        Webhook("h2", "https://b.example/hook", "whsec_BBBB", ()),
    ]
    assert store.remove_webhook("h1") is True and store.remove_webhook("h1") is False
    assert [h.id for h in store.webhooks()] == ["h2"]


def test_every_delivery_attempt_is_recorded(store):
    store.record_delivery("h1", "e1", ok=False, status=503, error="Service Unavailable", attempt=1)
    store.record_delivery("h2", "e1", ok=False, status=None, error="connection refused", attempt=1)
    assert not store.delivered("h1", "e1")
    store.record_delivery("h1", "e1", ok=True, status=200, error=None, attempt=2)
    store.record_delivery("h1", "e2", ok=True, status=204, error=None, attempt=1)
    assert store.delivered("h1", "e1") and store.delivered("h1", "e2")
    assert not store.delivered("h2", "e1") and not store.delivered("h2", "e2")
    attempts = store.deliveries("e1")
    assert [(d["webhook_id"], d["ok"], d["status"], d["attempt"]) for d in attempts] == [
        ("h1", False, 503, 1), ("h2", False, None, 1), ("h1", True, 200, 2)]
    assert attempts[1]["error"] == "connection refused" and attempts[0]["at"].endswith("Z")
    assert len(store.deliveries()) == 4 and store.deliveries("none") == []


def test_subscription_filters_and_final_failures(store):
    store.add_webhook(Webhook("m1", "mailto:ap@example.com", "", ("document.failed",), ("invoice", "receipt")))
    assert store.webhooks() == [Webhook("m1", "mailto:ap@example.com", "", ("document.failed",), ("invoice", "receipt"))]
    assert store.webhooks()[0].kind == "email"
    store.record_delivery("m1", "e1", ok=False, status=451, error="SMTP 451 busy", attempt=1)
    assert not store.settled("m1", "e1")
    store.record_delivery("m1", "e1", ok=False, status=550, error="SMTP 550 no such user", attempt=2, permanent=True)
    store.record_delivery("m1", "e2", ok=True, status=250, error=None, attempt=1)
    store.record_delivery("h9", "e1", ok=False, status=None, error="timeout", attempt=1)
    assert store.settled("m1", "e1") and not store.delivered("m1", "e1")  # failed for good
    assert store.settled("m1", "e2") and not store.settled("h9", "e1")
    mine = store.deliveries(webhook_id="m1")
    assert [(d["event_id"], d["ok"], d["permanent"]) for d in mine] == [
        ("e1", False, False), ("e1", False, True), ("e2", True, False)]
    assert [d["attempt"] for d in store.deliveries("e1", webhook_id="m1")] == [1, 2]


# --------------------------------------------------------------------------- batches
def test_batch_counts_and_completes_exactly_once(store):
    assert store.batch("b1") is None and store.complete_batch_once("b1") is None
    store.add_batch("b1", ["a", "b", "c", "a"])
    store.add_batch("b1", ["a", "b", "c"])
    assert store.batch("b1")["total"] == 3
    store.add_batch("b1", ["c", "d"])
    summary = store.batch("b1")
    assert summary["document_ids"] == ["a", "b", "c", "d"] and summary["completed_at"] is None
    assert (summary["total"], summary["indexed"], summary["failed"], summary["pending"]) == (4, 0, 0, 4)
    for name in "abcd":
        store.register(doc(name, batch_id="b1"))
    store.update("a", status="indexed")
    store.update("b", status="failed", error="broken")
    store.update("c", status="indexed")
    assert store.complete_batch_once("b1") is None  # d is still uploaded
    store.update("d", status="extracted")
    assert store.complete_batch_once("b1") is None
    store.update("d", status="indexed")
    done = store.complete_batch_once("b1")
    assert (done["total"], done["indexed"], done["failed"], done["pending"]) == (4, 3, 1, 0)
    assert done["completed_at"] and store.batch("b1")["completed_at"] == done["completed_at"]
    assert store.complete_batch_once("b1") is None


def test_deleted_documents_leave_their_batch_so_it_can_complete(store):
    store.add_batch("b1", ["a", "gone"])
    store.register(doc("a", status="indexed"))
    store.register(doc("gone"))
    assert store.complete_batch_once("b1") is None
    store.delete("gone")
    assert store.complete_batch_once("b1")["document_ids"] == ["a"]


def test_one_winner_when_threads_on_two_connections_complete_a_batch(backend):
    stores = [backend.open(), backend.open()]  # two pools / two files handles: two connections at least
    for round_ in range(5):
        batch_id = f"b{round_}"
        ids = [f"{batch_id}-{i}" for i in range(3)]
        stores[0].add_batch(batch_id, ids)
        for i, document_id in enumerate(ids):
            stores[i % 2].register(doc(document_id, status="indexed"))
        results = race(8, lambda i: stores[i % 2].complete_batch_once(batch_id))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0]["indexed"] == 3


# --------------------------------------------------------------------------- idempotency
def test_function_idempotency_records(store):
    assert not store.seen("classify", "e1")
    store.mark_seen("classify", "e1")
    store.mark_seen("classify", "e1")
    assert store.seen("classify", "e1") and not store.seen("extract", "e1")
    assert store.first_time("extract", "e1") is True and store.first_time("extract", "e1") is False


def test_a_stage_never_sets_a_document_back(store):
    """`advance`, the stages' update: a stage that runs again on an old event
    (at-least-once delivery) must not move an indexed document back to
    "classified", where nothing would move it on; a failed one moves on."""
    store.register(doc("d1", status="uploaded"))
    assert store.advance("d1", "classified", category="invoice").status == "classified"
    assert store.advance("d1", "indexed", error=None).status == "indexed"
    again = store.advance("d1", "classified", category="contract")  # the stale repeat
    assert again.status == "indexed" and again.category == "invoice"  # nothing changed
    assert store.advance("d1", "indexed").status == "indexed"  # the same stage again is fine
    store.update("d1", status="failed", error="boom")
    assert store.advance("d1", "extracted", error=None).status == "extracted"  # a replayed dead letter
    store.update("d1", status="uploaded")  # reprocess starts over
    assert store.advance("d1", "classified").status == "classified"
    with pytest.raises(NotFound):
        store.advance("nope", "classified")
    with pytest.raises(InvalidChange, match="pipeline"):
        store.advance("d1", "failed")


def test_concurrent_claims_and_registrations_have_one_winner(backend):
    stores = [backend.open(), backend.open()]
    assert sum(race(8, lambda i: stores[i % 2].first_time("index", "e-race"))) == 1
    created = race(8, lambda i: stores[i % 2].register(doc("same", filename=f"{i}.pdf"))[1])
    assert sum(created) == 1 and len(stores[0].list()) == 1


def test_processes_share_one_store(backend):
    """Three processes write at once: nothing lost, each claim won once."""
    script = textwrap.dedent("""
        import sys
        from doclane.functions.adapters.metadata import open_metadata
        from doclane.functions.ports import DocumentRecord
        store, name, wins = open_metadata(sys.argv[1]), sys.argv[2], 0
        for i in range(25):
            store.register(DocumentRecord(f"{name}-{i}", "b", "k", "f", None, 1, "s", "uploaded"))
            store.update(f"{name}-{i}", status="indexed")
            wins += store.first_time("notify", f"shared-{i}")
        print(wins)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, backend.target, f"p{n}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert sum(int(out) for out, _ in outputs) == 25
    assert backend.open().stats()["status"] == {"indexed": 75}


# --------------------------------------------------------------------------- migrations
def test_migrations_are_versioned_and_idempotent(backend):
    opened = race(4, lambda i: backend.open())  # concurrent first starts
    opened[0].register(doc("d1"))
    again = backend.open()
    assert again.get("d1") is not None and again.schema_version() == sql_migrations.LATEST
    rows = backend.sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in sql_migrations.MIGRATIONS]


def test_a_newer_schema_is_refused(backend):
    backend.open()
    backend.sql(f"INSERT INTO schema_migrations (version, name, applied_at) "
                f"VALUES ({sql_migrations.LATEST + 1}, 'future', '2099-01-01T00:00:00.000000Z')")
    with pytest.raises(ConfigError, match="upgrade doclane"):
        backend.open()


# --------------------------------------------------------------------------- failures
def test_sqlite_lock_held_too_long_is_retryable(tmp_path):
    store = SqliteMetadata(tmp_path / "m.db", busy_timeout_s=0.2)
    blocker = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Retryable, match="locked"):
            store.register(doc("d1"))
        assert store.get("d1") is None  # readers are not blocked by the writer (WAL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()
    assert SqliteMetadata(tmp_path / "m.db").register(doc("d1"))[1]


class _Proxy:
    """A TCP forwarder to PostgreSQL that can be cut, to play a server going away."""

    def __init__(self, host: str, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.target = self.listener.getsockname()[1], (host, port)
        self.sockets: list[socket.socket] = []
        self.lock, self.is_cut = threading.Lock(), False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
                if self.is_cut:  # accepted just before the cut: cut it too
                    self._shutdown(client, server)
                    return
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        _Proxy._shutdown(src, dst)

    @staticmethod
    def _shutdown(*sockets: socket.socket) -> None:
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # unlike close(), wakes the piping threads and sends FIN
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            self.listener.close()
            self._shutdown(*self.sockets)


def test_postgres_server_going_away_is_retryable():
    _require_postgres()
    info = psycopg.conninfo.conninfo_to_dict(PG_URL)
    proxy = _Proxy(info.get("host", "127.0.0.1"), int(info.get("port", 5432)))
    schema = f"doclane_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = psycopg.conninfo.make_conninfo(PG_URL, port=str(proxy.port), options=f"-csearch_path={schema}")
    store = PostgresMetadata(url, min_size=1, max_size=1, timeout_s=1.5)
    try:
        store.register(doc("d1"))
        proxy.cut()
        with pytest.raises(Retryable, match="PostgreSQL metadata store"):
            store.get("d1")
        with pytest.raises(Retryable, match="unreachable"):
            PostgresMetadata(url, timeout_s=1)
    finally:
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_pool_replaces_connections_the_server_closed(pg_backend):
    backend = pg_backend
    store = backend.open()
    store.register(doc("d1"))
    schema = backend.target.rsplit("application_name=", 1)[1]
    killed = backend.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE application_name = '{schema}' AND pid <> pg_backend_pid()")
    assert killed and all(k[0] for k in killed)
    assert store.get("d1").document_id == "d1"


# --------------------------------------------------------------------------- factory
def test_factory_opens_sqlite_from_paths_and_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_metadata("sqlite:///data/rel.db")
    absolute = open_metadata(f"sqlite:///{tmp_path}/abs.db")
    plain = open_metadata(tmp_path / "plain.db")
    for store in (relative, absolute, plain):
        assert isinstance(store, SqliteMetadata)
        store.close()
    assert (tmp_path / "data" / "rel.db").exists() and (tmp_path / "abs.db").exists()


@pytest.mark.parametrize("target", ["", "  ", "mysql://app@db/doclane", "sqlite://", "sqlite:///:memory:",
                                    ":memory:", "https://example.com/db"])
def test_factory_rejects_what_it_cannot_open(target):
    with pytest.raises(ConfigError, match="postgresql://|file path"):
        open_metadata(target)
