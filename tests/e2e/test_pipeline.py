"""The whole pipeline as a newcomer runs it: `doclane up` in a fresh folder,
real documents dropped into the inbox, search, categories, invoice fields,
signed webhooks; then a restart while files are in flight."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import AUTH, Doclane, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIXTURES = Path(__file__).parents[1] / "fixtures"
INVOICES = sorted((FIXTURES / "invoices").glob("*.pdf"))
OTHERS = [FIXTURES / "docs" / n for n in (
    "simple.docx", "fake-email-attachment.eml", "fake-power-point.pptx", "stanley-cups.xlsx", "fake-html.html",
    "minimal-document.pdf", "issue15590.pdf", "password.pdf", "simple.doc",
)]
BROKEN = {"issue15590.pdf", "password.pdf", "simple.doc"}


def norm(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(value).lower())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    receiver = Receiver()
    doclane = Doclane(root, webhook=receiver.url).start()
    doclane.drop(*INVOICES, *OTHERS)
    started = time.monotonic()
    stats = doclane.wait_done(len(INVOICES) + len(OTHERS))
    elapsed = time.monotonic() - started
    print(f"\n{len(INVOICES) + len(OTHERS)} documents done in {elapsed:.1f}s: {stats['status']}")
    yield doclane, receiver
    doclane.stop()
    receiver.close()


def documents(doclane) -> dict[str, dict]:
    docs = doclane.get("/documents", limit=500)["documents"]
    return {d["filename"]: d for d in docs}


def test_every_file_ends_indexed_or_failed_with_a_reason(run):
    doclane, _ = run
    docs = documents(doclane)
    assert set(docs) == {p.name for p in INVOICES + OTHERS}
    for name, doc in docs.items():
        if name in BROKEN:
            assert doc["status"] == "failed" and doc["error"], name
        else:
            assert doc["status"] == "indexed", (name, doc["error"])


def test_failure_reasons_say_what_is_wrong(run):
    doclane, _ = run
    docs = documents(doclane)
    assert "password" in docs["password.pdf"]["error"].lower() or "encrypt" in docs["password.pdf"]["error"].lower()
    assert "unsupported" in docs["simple.doc"]["error"].lower()


def test_categories(run):
    doclane, _ = run
    docs = documents(doclane)
    for p in INVOICES:
        assert docs[p.name]["category"] == "invoice", p.name
    assert docs["fake-email-attachment.eml"]["category"] == "email"


def test_invoice_fields_are_extracted(run):
    doclane, _ = run
    docs = documents(doclane)
    for p in INVOICES:
        expected = json.loads(p.with_suffix(".json").read_text())[0]
        fields = doclane.get(f"/documents/{docs[p.name]['document_id']}")["fields"]
        assert norm(fields["invoice_number"]["value"]) == norm(expected["invoice_number"]), p.name
        assert 0 < fields["invoice_number"]["confidence"] <= 1


def test_search_invoice_ranks_the_invoices_first(run):
    doclane, _ = run
    result = doclane.get("/search", q="invoice", limit=len(INVOICES))
    assert result["total"] >= len(INVOICES)
    assert {r["filename"] for r in result["results"]} == {p.name for p in INVOICES}
    assert result["facets"]["category"]["invoice"] == len(INVOICES)
    first = result["results"][0]
    assert set(first) >= {"document_id", "filename", "category", "score", "snippet", "fields"}


def test_search_modes_and_category_filter(run):
    doclane, _ = run
    keyword = doclane.get("/search", q="Stanley Cup", mode="keyword")
    assert keyword["results"][0]["filename"] == "stanley-cups.xlsx"
    assert "<mark>" in keyword["results"][0]["snippet"]
    semantic = doclane.get("/search", q="ice hockey championship winners", mode="semantic")
    assert "stanley-cups.xlsx" in [r["filename"] for r in semantic["results"][:3]]
    only_email = doclane.get("/search", q="email", category="email")
    assert only_email["results"] and {r["category"] for r in only_email["results"]} == {"email"}
    bad = httpx.get(doclane.url + "/search", params={"q": "x", "mode": "fuzzy"}, headers=AUTH)
    assert bad.status_code == 400


def test_the_index_function_writes_passages_and_the_whole_text(run):
    """Through the real pipeline: every indexed document has sentence vectors
    beside its chunk vectors (more of them than chunks for the longer ones)
    and one keyword row with the parsed text, not the joined windows."""
    import sqlite3

    doclane, _ = run
    indexed = {d["document_id"] for d in documents(doclane).values() if d["status"] == "indexed"}
    db = sqlite3.connect(doclane.data / "index.sqlite")
    passages = dict(db.execute("SELECT document_id, count(*) FROM passages GROUP BY document_id"))
    chunks = dict(db.execute("SELECT document_id, count(*) FROM chunks GROUP BY document_id"))
    rows = dict(db.execute("SELECT document_id, text FROM doc_text"))
    assert set(rows) == set(chunks) == indexed
    assert set(passages) <= indexed and len(passages) >= len(indexed) - 1  # a document may have no sentence
    assert sum(passages.values()) > sum(chunks.values())
    assert all(rows[d].strip() for d in indexed)


def test_document_view_has_history_with_stage_timings(run):
    doclane, _ = run
    doc_id = documents(doclane)["coolblue1.pdf"]["document_id"]
    view = doclane.get(f"/documents/{doc_id}")
    types = [e["type"].split(".")[-2] for e in view["events"]]
    assert types[:4] == ["uploaded", "classified", "extracted", "indexed"]
    assert all(e["duration_ms"] is not None for e in view["events"][:4])


def test_signed_webhook_for_every_document_exactly_once(run):
    doclane, receiver = run
    deadline = time.monotonic() + 30
    total = len(INVOICES) + len(OTHERS)
    while time.monotonic() < deadline and len(receiver.received) < total:
        time.sleep(0.2)
    assert receiver.rejected == []
    indexed = receiver.events("document.indexed.v1")
    failed = receiver.events("document.failed.v1")
    assert len({e["subject"] for e in indexed}) == total - len(BROKEN)
    assert {e["data"]["filename"] for e in failed} == BROKEN
    ids = [r["headers"]["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)), "a webhook fired twice for one event"
    assert all(r["headers"]["webhook-id"] == r["event"]["id"] for r in receiver.received)


def test_metadata_correction_is_validated_reindexed_and_recorded(run):
    doclane, _ = run
    doc_id = documents(doclane)["coolblue1.pdf"]["document_id"]
    url = f"{doclane.url}/documents/{doc_id}/metadata"
    assert httpx.put(url, json={"fields": {"date": "not a date"}}, headers=AUTH).status_code == 422
    assert httpx.put(url, json={"category": "nope"}, headers=AUTH).status_code == 422
    resp = httpx.put(url, json={"fields": {"total": "717.97", "invoice_number": "993548900-A"}}, headers=AUTH)
    assert resp.status_code == 200
    hit = doclane.get("/search", q="coolblue", mode="keyword")["results"][0]
    assert hit["fields"]["invoice_number"]["value"] == "993548900-A"
    view = doclane.get(f"/documents/{doc_id}")
    assert view["events"][-1]["type"] == "io.doclane.document.corrected.v1"


def test_schemas_are_served(run):
    doclane, _ = run
    listed = doclane.get("/schemas")["schemas"]
    assert "io.doclane.document.indexed.v1" in {s["type"] for s in listed}
    schema = doclane.get("/schemas/io.doclane.document.indexed.v1")
    assert schema["$id"] == "urn:doclane:schema:io.doclane.document.indexed.v1"


def test_restart_in_flight_loses_nothing_and_indexes_nothing_twice(tmp_path):
    receiver = Receiver()
    doclane = Doclane(tmp_path, webhook=receiver.url).start()
    files = INVOICES + [FIXTURES / "docs" / n for n in ("simple.docx", "fake-power-point.pptx", "minimal-document.pdf")]
    try:
        doclane.drop(*files)
        # stop while work is in flight: some documents are past ingest, none done
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = doclane.get("/stats")["status"]
            if sum(s.values()) >= 3 and s.get("indexed", 0) < len(files):
                break
            time.sleep(0.1)
        doclane.stop(signal.SIGKILL)  # the worst case: no clean shutdown
        doclane.start()
        doclane.wait_done(len(files))
        docs = documents(doclane)
        assert len(docs) == len(files) and all(d["status"] == "indexed" for d in docs.values())
        for d in docs.values():
            view = doclane.get(f"/documents/{d['document_id']}")
            indexed = [e for e in view["events"] if e["type"].endswith("document.indexed.v1")]
            assert len(indexed) == 1, d["filename"]
        result = doclane.get("/search", q="invoice", mode="keyword", limit=50)
        ids = [r["document_id"] for r in result["results"]]
        assert len(ids) == len(set(ids))
        time.sleep(2)
        hooks = [r["headers"]["webhook-id"] for r in receiver.received]
        assert len(hooks) == len(set(hooks)) == len(files)
    finally:
        doclane.stop()
        receiver.close()
