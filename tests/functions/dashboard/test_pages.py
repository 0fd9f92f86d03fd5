"""The dashboard's pages, live feeds and WebSocket, on the real gateway app
with the embedded stores (documents are put in the stores directly, so no
model is loaded; the browser tests run the whole pipeline)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.dashboard import live
from doclane.functions.dashboard.pages import throughput
from doclane.functions.dashboard.ws import websocket_server
from doclane.functions.ports import Chunk, DocumentRecord, IndexedDocument
from doclane.functions.runtime import triggers
from doclane.local.gateway import create_app

KEY = "dashboard-test-admin-key"
HTML = {"Accept": "text/html"}


@pytest.fixture
def dash(settings, monkeypatch):
    monkeypatch.setattr(live, "POLL_SECONDS", 0.02)
    context = Context(settings.model_copy(update={"api_key": KEY}))
    context.bus.declare(triggers(context.settings))
    app = create_app(context)
    client = app.test_client()
    client.post("/login", data={"key": KEY})
    page = client.get("/ui/failures", headers=HTML).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    yield context, app, client, csrf
    context.close()


def add(context, name: str, *, status="indexed", category="invoice", error=None, text="", batch=None) -> str:
    data = f"bytes of {name}".encode()
    context.bucket.put(f"uploads/{name}", data, "text/plain")
    doc_id = f"doc-{name.split('.')[0]}"
    context.metadata.register(DocumentRecord(
        document_id=doc_id, bucket=context.bucket.bucket, key=f"uploads/{name}", filename=name,
        content_type="text/plain", size=len(data), sha256=hashlib.sha256(data).hexdigest(), status=status, category=category,
        category_confidence=0.62, error=error, batch_id=batch,
        fields={"total": {"value": "12.50", "confidence": 0.9, "raw": "12,50", "source": "heuristic"}}))
    for stage, ms in (("ingest", 12.0), ("classify", 340.0)):
        context.metadata.record_event(new_event("document.uploaded" if stage == "ingest" else "document.classified",
                                                _data(doc_id, name, stage), subject=doc_id, source=stage),
                                      stage=stage, duration_ms=ms)
    if text:
        context.index.upsert(IndexedDocument(doc_id, name, category, {}, "2024-05-01T00:00:00Z"),
                             [Chunk(doc_id, 0, text)], np.ones((1, 384), dtype=np.float32) / np.sqrt(384))
    return doc_id


def _data(doc_id, name, stage):
    base = {"document_id": doc_id, "filename": name}
    if stage == "ingest":
        return {**base, "bucket": "inbox", "key": f"uploads/{name}", "content_type": "text/plain", "size": 1,
                "sha256": "0" * 64}
    return {**base, "category": "invoice", "confidence": 0.62, "classifier": "test", "parsed_key": "p"}


def test_browsers_get_the_dashboard_and_scripts_get_json(dash):
    _, _, client, _ = dash
    page = client.get("/", headers=HTML)
    assert page.status_code == 200 and b'id="drop"' in page.data
    assert "/ui/search" in client.get("/", headers={"Accept": "application/json"}).get_json()["endpoints"]
    assert client.get("/").is_json  # curl's */*


def test_search_page_highlights_facets_and_pages(dash):
    context, _, client, _ = dash
    for i in range(12):
        add(context, f"inv{i}.txt", text=f"invoice number {i} from Acme totals twelve euro")
    add(context, "memo.txt", category="letter", text="a memo about the Acme invoice run")
    page = client.get("/ui/search?q=acme&mode=keyword", headers=HTML).get_data(as_text=True)
    assert "13 documents" in page and "<mark>Acme</mark>" in page
    assert 'category=letter' in page and "page 1 of 2" in page
    second = client.get("/ui/search?q=acme&mode=keyword&page=2", headers=HTML).get_data(as_text=True)
    assert second.count('class="hit"') == 3
    only = client.get("/ui/search?q=acme&mode=keyword&category=letter", headers=HTML).get_data(as_text=True)
    assert "1 document " in only and "memo.txt" in only
    future = client.get("/ui/search?q=acme&mode=keyword&from=2999-01-01", headers=HTML).get_data(as_text=True)
    assert "0 documents" in future
    today = datetime.now(timezone.utc).date().isoformat()
    dated = client.get(f"/ui/search?q=acme&mode=keyword&from={today}&to={today}", headers=HTML).get_data(as_text=True)
    assert "13 documents" in dated
    bad = client.get("/ui/search?q=acme&from=31/12/2024", headers=HTML).get_data(as_text=True)
    assert "must be a date like" in bad


def test_document_page_download_and_category_correction(dash):
    context, _, client, csrf = dash
    doc_id = add(context, "bill.txt")
    page = client.get(f"/ui/documents/{doc_id}", headers=HTML).get_data(as_text=True)
    assert "bill.txt" in page and "62%" in page and "12.50" in page and "90%" in page
    assert "340 ms" in page and "classified" in page and f"/documents/{doc_id}/content" in page
    original = client.get(f"/documents/{doc_id}/content")
    assert original.data == b"bytes of bill.txt" and "attachment" in original.headers["Content-Disposition"]
    resp = client.post(f"/ui/documents/{doc_id}/category", data={"category": "letter", "csrf_token": csrf})
    assert resp.status_code == 302
    assert context.metadata.get(doc_id).category == "letter"
    assert context.bus.counts()["extract"]["ready"] == 1  # extraction runs again for the new category
    assert "classifier keeps this" in client.get(f"/ui/documents/{doc_id}", headers=HTML).get_data(as_text=True)
    client.post(f"/ui/documents/{doc_id}/category", data={"category": "nope", "csrf_token": csrf})
    assert "Not changed" in client.get(f"/ui/documents/{doc_id}", headers=HTML).get_data(as_text=True)
    assert client.get("/ui/documents/unknown", headers=HTML).status_code == 404


def test_failures_page_retries_one_or_all(dash):
    context, _, client, csrf = dash
    a = add(context, "a.pdf", status="failed", error="the PDF is encrypted")
    b = add(context, "b.pdf", status="failed", error="parse timed out")
    page = client.get("/ui/failures", headers=HTML).get_data(as_text=True)
    assert "the PDF is encrypted" in page and "Retry all 2" in page
    client.post("/ui/failures/retry", data={"document_id": a, "csrf_token": csrf})
    assert context.metadata.get(a).status == "uploaded" and context.metadata.get(b).status == "failed"
    client.post("/ui/failures/retry", data={"all": "1", "csrf_token": csrf})
    assert context.metadata.get(b).status == "uploaded"
    assert context.bus.counts()["classify"]["ready"] == 2


def test_stats_page_counts_and_chart(dash):
    context, _, client, _ = dash
    add(context, "x.txt")
    add(context, "y.txt", status="failed", category="letter")
    page = client.get("/ui/stats", headers=HTML).get_data(as_text=True)
    assert "<svg" in page and page.count("<rect") == 12 and "letter" in page


def test_throughput_slots():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    events = [{"time": (now - timedelta(minutes=m)).isoformat()} for m in (1, 2, 3, 31, 59)]
    chart = throughput(events, now)
    assert chart["slot_minutes"] == 5.0 and chart["total"] == 5
    assert [b["count"] for b in chart["bars"]][-1] == 3 and max(b["height"] for b in chart["bars"]) == 100


def _batch(context) -> tuple[str, list[str]]:
    ids = [add(context, "one.txt", status="indexed", batch="b1"), add(context, "two.txt", status="classified", batch="b1")]
    context.metadata.add_batch("b1", ids)
    return "b1", ids


def test_server_sent_events_follow_a_batch_to_its_end(dash):
    context, _, client, _ = dash
    batch_id, ids = _batch(context)
    threading.Timer(0.2, lambda: context.metadata.update(ids[1], status="indexed")).start()
    body = client.get(f"/ui/live/batch/{batch_id}").get_data(as_text=True)
    events = [json.loads(d) for d in re.findall(r"^data: (.+)$", body, re.M) if d != "{}"]
    assert [e["pending"] for e in events] == [1, 0] and events[-1]["done"]
    assert body.startswith("retry: 1000") and body.rstrip().endswith("event: end\ndata: {}")


def test_websocket_sends_progress_and_checks_credentials(dash):
    context, app, client, _ = dash
    batch_id, ids = _batch(context)
    server = websocket_server(app, context, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws/progress/{batch_id}"
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=5)
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            connect(url + "?access_token=wrong", open_timeout=5)
        with connect(url + f"?access_token={KEY}", open_timeout=5) as ws:
            first = json.loads(ws.recv(timeout=5))
            assert first["type"] == "batch" and first["pending"] == 1
            context.metadata.update(ids[1], status="failed", error="boom")
            last = json.loads(ws.recv(timeout=5))
            assert last["done"] and last["failed"] == 1
        with connect(url, additional_headers={"X-API-Key": KEY}, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["done"]
    finally:
        server.shutdown()
    plain = client.get(f"/ws/progress/{batch_id}")
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"


def test_with_redis_an_announcement_wakes_the_stream_at_once(dash, monkeypatch):
    """The store is read when the pipeline announces a change on Redis, not on a timer."""
    import redis

    from doclane.functions.adapters import redis_progress
    from tests.conftest import require

    url = "redis://127.0.0.1:6379/14"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure to reach it
        require(False, f"Redis at {url} is unreachable: {exc}")
    context = dash[0]
    context.settings = context.settings.model_copy(update={"redis_url": url})
    monkeypatch.setattr(live, "REDIS_IDLE_SECONDS", 30.0)  # a timer alone would not see the change in time
    batch_id, ids = _batch(context)
    stream = live.batch_progress(context, batch_id)
    assert next(stream)["pending"] == 1
    announce = new_event("batch.uploaded", {"batch_id": batch_id, "document_ids": ids}, subject=None, source="test")

    def finish():
        context.metadata.update(ids[1], status="indexed")
        redis_progress.for_settings(context.settings).publish([announce])

    threading.Timer(0.3, finish).start()
    started = time.monotonic()
    done = next(stream)
    assert done["done"] and time.monotonic() - started < 5
