"""Reprocessing: selectors (ids, status, category, time range), dry runs,
reprocess generations, dead-letter replay on the embedded bus and on
RabbitMQ, the CLI and POST /reprocess; and a category schema change that a
reprocess applies end to end through the real stage functions."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from click.testing import CliRunner

from doclane.events import codec
from doclane.events.envelope import new_event
from doclane.functions import binding, notifications, subscriptions
from doclane.functions.categories import DEFAULT_FILE
from doclane.functions.context import Context
from doclane.functions.mailer import email_subscription
from doclane.functions.ports import DocumentRecord
from doclane.functions.reprocess import ALL_TRIGGERS, Selection, parse_time, reprocess, run
from doclane.functions.runtime import STAGES, load, triggers
from doclane.local.cli import main as cli
from doclane.local.gateway import create_app
from tests.amqp_support import AMQP_URL, delete_broker, require_rabbitmq, unique_broker
from tests.redis_support import REDIS_URL, require_redis
from tests.redis_support import delete_broker as delete_redis_broker
from tests.redis_support import unique_broker as unique_redis_broker


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.fixture
def ctx(settings):
    c = Context(settings)
    c.bus.declare(triggers(settings))
    yield c
    c.close()


def add(ctx, doc_id, status="indexed", category="invoice", created=None):
    ctx.metadata.register(DocumentRecord(
        document_id=doc_id, bucket="inbox", key=f"{doc_id}.pdf", filename=f"{doc_id}.pdf", content_type=None,
        size=1, sha256=hashlib.sha256(doc_id.encode()).hexdigest(), status=status,
        category=category, created_at=iso(created or datetime.now(timezone.utc))))


def queued(ctx, trigger="classify") -> list[dict]:
    out = []
    while d := ctx.bus.receive(trigger, wait_seconds=0):
        out.append(codec.loads(d[0].body))
        ctx.bus.ack(d[0])
    return out


# --------------------------------------------------------------------------- selection
def test_reprocess_failed_documents(settings):
    ctx = Context(settings)
    ctx.bus.declare(triggers(settings))
    for i, status in enumerate(["failed", "indexed", "failed"]):
        ctx.metadata.register(DocumentRecord(document_id=f"d{i}", bucket="inbox", key=f"{i}.pdf", filename=f"{i}.pdf",
                                             content_type=None, size=1, sha256=f"{i}" * 64, status=status))
    ctx.metadata.update("d0", status="failed", error="classify: parse timed out")
    dry = reprocess(ctx, [], all_failed=True, dry_run=True)
    assert sorted(d for d, _ in dry) == ["d0", "d2"] and ctx.bus.backlog("classify") == 0
    done = dict(reprocess(ctx, ["nope"], all_failed=True))
    assert done == {"nope": "no such document", "d0": "queued", "d2": "queued"}
    assert ctx.metadata.get("d0").status == "uploaded" and ctx.metadata.get("d0").error is None
    ids = set()
    while d := ctx.bus.receive("classify", wait_seconds=0):
        ev = codec.loads(d[0].body)
        assert ev["type"] == "io.doclane.document.uploaded.v1"
        ids.add(ev["subject"])
        ctx.bus.ack(d[0])
    assert ids == {"d0", "d2"}
    # again: a fresh event id each time, so the bus takes it again
    reprocess(ctx, ["d1"])
    assert ctx.bus.backlog("classify") == 1
    ctx.close()


def test_selectors_combine_with_and_and_ids_add_to_them(ctx):
    add(ctx, "old-invoice-1", created=datetime.now(timezone.utc) - timedelta(days=3))
    add(ctx, "new-invoice-2", created=datetime.now(timezone.utc) - timedelta(minutes=30))
    add(ctx, "new-failed-3", status="failed", created=datetime.now(timezone.utc) - timedelta(minutes=20))
    add(ctx, "new-receipt-4", category="receipt", created=datetime.now(timezone.utc) - timedelta(minutes=10))

    def chosen(**kw):
        return sorted(d for d, _ in run(ctx, Selection(**kw), dry_run=True).documents)

    assert chosen(category="invoice") == ["new-failed-3", "new-invoice-2", "old-invoice-1"]
    assert chosen(status="failed") == ["new-failed-3"]
    assert chosen(since=parse_time("2h")) == ["new-failed-3", "new-invoice-2", "new-receipt-4"]
    assert chosen(until=parse_time("1d")) == ["old-invoice-1"]
    assert chosen(category="invoice", since=parse_time("2h"), until=parse_time("25m")) == ["new-invoice-2"]
    assert chosen(document_ids=("new-receipt-4",), category="invoice", status="indexed") == [
        "new-invoice-2", "new-receipt-4", "old-invoice-1"]
    assert chosen(category="contract") == []
    # a dry run lists, and changes nothing
    result = run(ctx, Selection(category="invoice"), dry_run=True)
    assert result.count == 3 and result.to_json()["count"] == 3
    assert all(o.startswith("would reprocess (") for _, o in result.documents)
    assert ctx.bus.backlog("classify") == 0 and ctx.metadata.get("new-failed-3").status == "failed"
    assert all(not e for e in (ctx.metadata.history(d) for d, _ in result.documents))


def test_a_status_filter_is_read_fully_before_anything_changes(ctx, monkeypatch):
    monkeypatch.setattr("doclane.functions.reprocess._PAGE", 2)  # several pages over a shrinking set
    for i in range(5):
        add(ctx, f"failed-{i}", status="failed", created=datetime.now(timezone.utc) - timedelta(minutes=i))
    result = run(ctx, Selection(status="failed"))
    assert result.count == 5 and {e["subject"] for e in queued(ctx)} == {f"failed-{i}" for i in range(5)}


def test_times_iso_or_ago():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_time("2h", now=now) == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert parse_time("90s", now=now) == now - timedelta(seconds=90)
    assert parse_time("1.5d", now=now) == now - timedelta(hours=36)
    assert parse_time("30 min", now=now) == now - timedelta(minutes=30)
    assert parse_time("1w", now=now) == now - timedelta(weeks=1)
    assert parse_time("2024-04-30") == datetime(2024, 4, 30, tzinfo=timezone.utc)
    assert parse_time("2024-04-30T09:15:00Z") == datetime(2024, 4, 30, 9, 15, tzinfo=timezone.utc)
    assert parse_time("2024-04-30T11:15:00+02:00") == datetime(2024, 4, 30, 9, 15, tzinfo=timezone.utc)
    for bad in ("yesterday", "2h ago", "-2h", "2024-13-01"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_time(bad)
    with pytest.raises(ValueError, match="before until"):
        Selection(since=parse_time("1h"), until=parse_time("2h"))
    with pytest.raises(ValueError, match="unknown status"):
        Selection(status="lost")
    with pytest.raises(ValueError, match="no function 'parse'"):
        Selection(dead_letters="parse")


def test_each_reprocess_is_a_new_generation_and_a_racing_repeat_is_one(ctx, monkeypatch):
    add(ctx, "doc-a")
    first = run(ctx, Selection(("doc-a",)))
    second = run(ctx, Selection(("doc-a",)))
    assert first.documents == second.documents == [("doc-a", "queued")]
    a, b = queued(ctx)
    assert a["id"] != b["id"] and a["source"] == b["source"] == "/doclane/reprocess"
    history = ctx.metadata.history("doc-a")
    assert [(e["id"], e["stage"]) for e in history] == [(a["id"], "reprocess"), (b["id"], "reprocess")]
    # two requests for the same pass (a double click): both compute generation 3, the bus keeps one
    monkeypatch.setattr("doclane.functions.reprocess.generation", lambda c, d: 3)
    assert run(ctx, Selection(("doc-a",))).documents == [("doc-a", "queued")]
    assert run(ctx, Selection(("doc-a",))).documents == [("doc-a", "already queued")]
    assert len(queued(ctx)) == 1


# --------------------------------------------------------------------------- dead letters
@pytest.fixture(params=["sqlite", "rabbitmq", "redis"])
def any_bus(request, settings):
    """A Context on the embedded bus, on RabbitMQ or on Redis Streams (a broker of its own)."""
    if request.param == "rabbitmq":
        require_rabbitmq()
        settings = settings.model_copy(update={"amqp_url": AMQP_URL, "broker": unique_broker("replay")})
    elif request.param == "redis":
        require_redis()
        settings = settings.model_copy(update={"bus": "redis", "redis_url": REDIS_URL,
                                               "broker": unique_redis_broker("replay")})
    c = Context(settings)
    c.bus.declare(triggers(settings))
    yield c
    c.close()
    if request.param == "rabbitmq":
        delete_broker(settings.broker, triggers(settings))
    elif request.param == "redis":
        delete_redis_broker(settings.broker)


def uploaded(doc_id):
    return new_event("document.uploaded", {"document_id": doc_id, "bucket": "inbox", "key": f"{doc_id}.pdf",
                                           "filename": f"{doc_id}.pdf", "size": 3, "sha256": "0" * 64},
                     subject=doc_id, source="test")


def kill(bus, trigger, reason):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = bus.receive(trigger, wait_seconds=1)
        if got:
            assert bus.nack(got[0], reason, retryable=False) is True
            return codec.loads(got[0].body)
    raise AssertionError(f"nothing to receive on {trigger}")


def wait_dead(bus, trigger, count):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        letters = bus.dead_letters(trigger)
        if len(letters) >= count:
            return letters
        time.sleep(0.1)
    raise AssertionError(f"{count} dead letters expected on {trigger}, got {bus.dead_letters(trigger)}")


def test_dead_letters_are_replayed_and_leave_the_dead_letter_queue(any_bus):
    ctx, bus = any_bus, any_bus.bus
    events = [uploaded("d1"), uploaded("d2")]
    for e in events:
        assert bus.publish(e)
    killed = [kill(bus, "classify", "parser crashed"), kill(bus, "classify", "parser crashed")]
    bus.enqueue_raw("extract", b"not an event")
    got = bus.receive("extract", wait_seconds=2)  # RabbitMQ dead-letters it on receipt
    if got:
        bus.nack(got[0], "InvalidEvent: not JSON", retryable=False)
    wait_dead(bus, "classify", 2)
    wait_dead(bus, "extract", 1)

    dry = run(ctx, Selection(dead_letters=ALL_TRIGGERS), dry_run=True)
    outcomes = sorted((d["trigger"], d["outcome"]) for d in dry.dead_letters)
    assert outcomes == [("classify", "would requeue"), ("classify", "would requeue"),
                        ("extract", "skipped: not a valid event")]
    assert dry.count == 2 and all("parser crashed" in d["reason"] for d in dry.dead_letters if d["type"])
    assert len(wait_dead(bus, "classify", 2)) == 2  # a dry run leaves them there

    assert bus.publish(events[0]) is False  # why a replay cannot be a publish: the id was seen
    add(ctx, "d1", status="failed")  # the binding failed it when its event died
    ctx.metadata.update("d1", error="classify: parser crashed")
    done = run(ctx, Selection(dead_letters="classify"))
    assert done.count == 2 and {d["event_id"] for d in done.dead_letters} == {e["id"] for e in events}
    assert all(d["outcome"] == "requeued" for d in done.dead_letters)
    assert bus.dead_letters("classify") == []
    assert (ctx.metadata.get("d1").status, ctx.metadata.get("d1").error) == ("uploaded", None)  # in progress again
    assert len(bus.dead_letters("extract")) == 1  # garbage stays where it is
    again = []
    deadline = time.monotonic() + 30
    while len(again) < 2 and time.monotonic() < deadline:
        for d in bus.receive("classify", wait_seconds=1):
            again.append((codec.loads(d.body)["id"], d.attempt))
            bus.ack(d)
    assert sorted(again) == sorted((e["id"], 1) for e in killed)  # fresh attempt counts


# --------------------------------------------------------------------------- CLI and HTTP
def test_cli_selectors_and_dry_run(settings, monkeypatch):
    monkeypatch.setenv("DOCLANE_INBOX", str(settings.inbox))
    c = Context(settings)
    add(c, "inv-1", created=datetime.now(timezone.utc) - timedelta(hours=1))
    add(c, "inv-2", status="failed", created=datetime.now(timezone.utc) - timedelta(days=2))
    c.close()
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "reprocess"]
    out = runner.invoke(cli, base + ["--category", "invoice", "--since", "1d", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "inv-1: would reprocess (indexed: inv-1.pdf)" in out.output and "inv-2" not in out.output
    assert "1 would be reprocessed (dry run: nothing was sent)" in out.output
    out = runner.invoke(cli, base + ["--failed", "--dead-letters"])
    assert out.exit_code == 0, out.output
    assert "inv-2: queued" in out.output and "1 sent through the pipeline again" in out.output
    for args, message in (([], "name document ids"), (["--since", "soon"], "not a time"),
                          (["--failed", "--status", "indexed"], "--failed is --status failed"),
                          (["--status", "lost"], "unknown status 'lost'"),
                          (["--dead-letters", "bogus"], "no function 'bogus'")):
        out = runner.invoke(cli, base + args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)


def test_http_reprocess(settings):
    key = "reprocess-test-admin-key"
    c = Context(settings.model_copy(update={"api_key": key}))
    c.bus.declare(triggers(c.settings))
    add(c, "inv-1")
    add(c, "rec-2", category="receipt")
    client = create_app(c).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    dry = client.post("/reprocess", json={"category": "invoice", "since": "1h", "dry_run": True}, headers=auth)
    assert dry.status_code == 200 and dry.json["count"] == 1 and dry.json["dry_run"] is True
    assert [d["document_id"] for d in dry.json["documents"]] == ["inv-1"]
    done = client.post("/reprocess", json={"document_ids": ["rec-2", "ghost"], "dead_letters": True}, headers=auth)
    assert done.status_code == 202 and done.json["count"] == 1
    assert {d["document_id"]: d["outcome"] for d in done.json["documents"]} == {"rec-2": "queued",
                                                                                 "ghost": "no such document"}
    for body in ({}, {"status": "lost"}, {"since": "soon"}, {"document_ids": "inv-1"}, {"dead_letters": 3}):
        resp = client.post("/reprocess", json=body, headers=auth)
        assert resp.status_code == 422 and resp.content_type == "application/problem+json", body
    from doclane.functions.adapters.sql_keys import ApiKeys

    _, user_key = ApiKeys(c.metadata).create("reader")
    assert client.post("/reprocess", json={"status": "failed"},
                       headers={"Authorization": f"Bearer {user_key}"}).status_code == 403
    c.close()


# --------------------------------------------------------------------------- a schema change, end to end
INVOICE = """INVOICE

Invoice number: INV-7731
Invoice date: 2024-03-12
Project code: ALPHA-7

Bill to: Beta GmbH, Hauptstrasse 1, Berlin
Description                 Qty   Amount
Consulting, March           10    1,000.00
Subtotal                          1,000.00
VAT 21%                             210.00
Total due                     EUR 1,210.00

Please pay within 30 days to IBAN NL91ABNA0417164300.
"""


def drain(ctx, timeout=300):
    """Run every stage on the embedded bus until no work is left."""
    fns = [load(n) for n in STAGES]
    deadline = time.monotonic() + timeout
    while any(ctx.bus.backlog(fn.name) for fn in fns):
        assert time.monotonic() < deadline, ctx.bus.counts()
        busy = False
        for fn in fns:
            for d in ctx.bus.receive(fn.name, max_messages=4, wait_seconds=0):
                binding.handle_delivery(ctx.bus, fn, d, ctx, ctx.settings.max_attempts)
                busy = True
        if not busy:
            time.sleep(0.05)  # a retry waiting for its back-off


@pytest.mark.slow
def test_a_category_schema_change_is_applied_by_reprocess_without_duplicates(settings, tmp_path):
    from tests.e2e.harness import SECRET, Receiver
    from tests.smtp_support import SmtpServer

    before = tmp_path / "categories-before.yaml"
    shutil.copyfile(DEFAULT_FILE, before)
    spec = yaml.safe_load(DEFAULT_FILE.read_text())
    spec["categories"]["invoice"]["fields"]["project_code"] = {"type": "string", "description": "Internal project"}
    after = tmp_path / "categories-after.yaml"
    after.write_text(yaml.safe_dump(spec))

    receiver, smtp = Receiver(), SmtpServer()
    common = {"webhook_allow": "127.0.0.1", "smtp_url": f"smtp://127.0.0.1:{smtp.port}",
              "smtp_from": "doclane@test.example"}
    try:
        first = Context(settings.model_copy(update={"categories": str(before), **common}))
        first.bus.declare(triggers(first.settings))
        first.metadata.add_webhook(subscriptions.from_body({"url": receiver.url, "secret": SECRET}, categories=first.categories.names,
                                                           allow="127.0.0.1"))
        email = email_subscription(["ap@example.com"], categories=("invoice",))
        first.metadata.add_webhook(email)
        settings.inbox.mkdir(parents=True, exist_ok=True)
        (settings.inbox / "march.txt").write_text(INVOICE)
        first.bus.publish(new_event("bucket.notification", {"Records": [notifications.record_for(
            "created", "inbox", "march.txt", size=len(INVOICE))]}, subject=None, source="test"))
        drain(first)
        (doc,) = first.metadata.list()
        assert (doc.status, doc.category) == ("indexed", "invoice"), doc
        assert doc.fields["invoice_number"]["value"] == "INV-7731" and "project_code" not in doc.fields
        first.close()

        # The category gains a field; the next processes read the new file.
        second = Context(settings.model_copy(update={"categories": str(after), **common}))
        second.bus.declare(triggers(second.settings))
        result = run(second, Selection(category="invoice"))
        assert result.documents == [(doc.document_id, "queued")]
        drain(second)

        again = second.metadata.get(doc.document_id)
        assert again.status == "indexed" and again.fields["project_code"]["value"] == "ALPHA-7"
        assert again.fields["invoice_number"]["value"] == "INV-7731"
        hits = second.index.search("consulting invoice", None, mode="keyword", limit=10).hits
        assert [h.document_id for h in hits] == [doc.document_id]  # one document, not one per pass
        assert hits[0].fields["project_code"]["value"] == "ALPHA-7"
        with sqlite3.connect(second.settings.index_path) as db:
            (chunks,) = db.execute("SELECT count(*) FROM chunks WHERE document_id = ?", (doc.document_id,)).fetchone()
        history = second.metadata.history(doc.document_id)
        indexed = [e for e in history if e["type"].endswith("document.indexed.v1")]
        assert [e["data"]["chunks"] for e in indexed] == [chunks, chunks]  # the second pass replaced the first
        assert [e["stage"] for e in history].count("reprocess") == 1
        after_reprocess = [e["type"].split(".")[-2] for e in history[[e["stage"] for e in history].index("reprocess"):]]
        assert after_reprocess == ["uploaded", "classified", "extracted", "indexed"]

        # Subscribers hear of each pass once, with new event ids.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(receiver.received) < 2 or len(smtp.received) < 2):
            time.sleep(0.1)
        hooks = receiver.events("document.indexed.v1")
        assert [h["id"] for h in hooks] == [e["id"] for e in indexed] and len(receiver.received) == 2
        assert "project_code" not in hooks[0]["data"]["fields"] and hooks[1]["data"]["fields"]["project_code"]
        mails = smtp.wait_for(2)
        assert len(mails) == 2 and mails[0].message["Message-ID"] != mails[1].message["Message-ID"]
        assert "ALPHA-7" not in mails[0].part("plain") and "Project code: ALPHA-7" in mails[1].part("plain")
        assert "ALPHA-7" in mails[1].part("html")
        drain(second)  # nothing more comes: no repeats
        assert len(receiver.received) == 2 and smtp.handler.data_commands == 2
        second.close()
    finally:
        receiver.close()
        smtp.stop()
