"""EmbeddedIndex on a real SQLite file with real MiniLM embeddings of a small
corpus: keyword, semantic and hybrid retrieval, filters, facets, paging, the
write operations, sharing the file between instances and processes, and
hostile queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from doclane.functions.adapters.embedded_index import EmbeddedIndex, fts_query
from doclane.functions.errors import ConfigError
from doclane.functions.ports import Chunk, IndexedDocument

pytestmark = pytest.mark.slow  # loads the embedding model

# document_id -> (filename, category, fields, chunks as (heading, text))
CORPUS: dict[str, tuple[str, str, dict, list[tuple[str | None, str]]]] = {
    "inv-1": ("acme_invoice_2023-042.pdf", "invoice", {"invoice_number": "INV-2023-0042", "total": "1210.00"}, [
        ("Invoice", "Invoice number INV-2023-0042. Invoice date 12 March 2023. Bill to Beta GmbH."),
        ("Payment", "Total due EUR 1,210.00 including VAT 21%. Please pay within 30 days to "
                    "IBAN NL91ABNA0417164300."),
    ]),
    "inv-2": ("factuur_118.pdf", "invoice", {"invoice_number": "2014-118", "total": "717.97"}, [
        (None, "Factuur 2014-118. Hosting and domain registration for the year. Totaal incl. BTW 717,97."),
    ]),
    "con-1": ("service_agreement.docx", "contract", {"parties": ["Alpha Ltd", "Beta GmbH"]}, [
        ("Term", "This Service Agreement starts on the Effective Date and runs for twelve months."),
        ("Termination", "Either party may terminate this Agreement with ninety days written notice. "
                        "The Agreement is governed by the laws of England."),
    ]),
    "con-2": ("office_lease.pdf", "contract", {"parties": ["Gamma BV"]}, [
        ("Lease", "The landlord lets the office space on the second floor to the tenant. "
                  "Monthly rent is payable in advance on the first day of each month."),
    ]),
    "rec-1": ("coffee_receipt.jpg", "receipt", {"merchant": "Coffee Corner"}, [
        (None, "Coffee Corner. 2 Cappuccino 7.00, 1 Croissant 2.50. TOTAL 9.50 paid by VISA card. Thank you!"),
    ]),
    "man-1": ("washer_manual.pdf", "manual", {}, [
        ("Guarantee", "The manufacturer guarantees this washing machine against defects in materials "
                      "and workmanship for two years from purchase."),
        ("Cleaning", "Clean the detergent drawer and the filter regularly to avoid bad smells."),
    ]),
    "rep-1": ("q3_report.pdf", "report", {}, [
        ("Results", "Revenue grew by eight percent in the third quarter while costs stayed flat."),
        ("Outlook", "We expect growth to slow down next year because of weaker demand in Europe."),
    ]),
    "rec-2": ("recipe_pancakes.md", "other", {}, [
        (None, "Whisk flour, milk and eggs into a smooth batter, then fry thin pancakes in butter."),
    ]),
}

HOSTILE = ['AND (', '"', '""', "'", "NEAR(", "a OR", "*", "^", "col:x", ")", "NOT", "-", "\x00", "🙂",
           "SELECT * FROM documents; --", '"unbalanced phrase', "(((((", "_", "\u0301", "x\u200by", "x" * 5000, " ".join(["word"] * 500)]


@pytest.fixture(scope="module")
def embedder():
    from doclane.functions.adapters.minilm import shared

    return shared()


@pytest.fixture(scope="module")
def embedded_corpus(embedder):
    """The corpus as upsert arguments, embedded once for the whole module."""
    items = []
    for doc_id, (filename, category, fields, parts) in CORPUS.items():
        doc = IndexedDocument(doc_id, filename, category, fields, "2024-05-01T12:00:00Z")
        chunks = [Chunk(doc_id, i, text, heading) for i, (heading, text) in enumerate(parts)]
        vectors = embedder.embed([f"{c.heading or ''} {c.text}".strip() for c in chunks])
        items.append((doc, chunks, vectors))
    return items


@pytest.fixture
def index(tmp_path, embedded_corpus) -> EmbeddedIndex:
    ix = EmbeddedIndex(tmp_path / "index.db")
    for doc, chunks, vectors in embedded_corpus:
        ix.upsert(doc, chunks, vectors)
    return ix


def search(ix: EmbeddedIndex, embedder, query: str, **kw):
    return ix.search(query, embedder.embed([query])[0], **kw)


def test_keyword_finds_exact_terms_with_highlights(index, embedder):
    result = search(index, embedder, "IBAN NL91ABNA0417164300", mode="keyword")
    assert [h.document_id for h in result.hits] == ["inv-1"]
    assert result.total == 1
    assert "<mark>IBAN</mark>" in result.hits[0].snippet
    assert "<mark>NL91ABNA0417164300</mark>" in result.hits[0].snippet
    assert result.hits[0].fields == {"invoice_number": "INV-2023-0042", "total": "1210.00"}


def test_keyword_stems_and_matches_filenames(index, embedder):
    stemmed = search(index, embedder, "terminated", mode="keyword")  # text says "terminate"
    assert [h.document_id for h in stemmed.hits] == ["con-1"]
    by_name = search(index, embedder, "factuur", mode="keyword")
    assert by_name.hits[0].document_id == "inv-2"


def test_semantic_finds_a_paraphrase_that_keyword_misses(index, embedder):
    query = "how long is the warranty on my appliance"
    assert search(index, embedder, query, mode="keyword").total == 0
    semantic = search(index, embedder, query, mode="semantic")
    assert semantic.hits[0].document_id == "man-1"
    assert "guarantees this washing machine" in semantic.hits[0].snippet  # the best chunk, not the first


@pytest.mark.parametrize("query, expected", [
    ("notice period to end the agreement", "con-1"),
    ("what did I pay for coffee", "rec-1"),
    ("quarterly revenue growth", "rep-1"),
    ("invoice INV-2023-0042", "inv-1"),
    ("monthly rent for the office", "con-2"),
])
@pytest.mark.parametrize("fusion", ["minmax", "zscore", "rrf"])
def test_hybrid_ranks_the_right_document_first(tmp_path, embedded_corpus, embedder, query, expected, fusion):
    ix = EmbeddedIndex(tmp_path / "index.db", fusion=fusion)
    for doc, chunks, vectors in embedded_corpus:
        ix.upsert(doc, chunks, vectors)
    result = search(ix, embedder, query, mode="hybrid")
    assert result.hits[0].document_id == expected


def test_category_filter_keeps_facets_of_the_whole_query(index, embedder):
    unfiltered = search(index, embedder, "agreement invoice factuur", mode="keyword")
    filtered = search(index, embedder, "agreement invoice factuur", mode="keyword", category="contract")
    assert filtered.facets == unfiltered.facets
    assert unfiltered.facets["category"]["invoice"] == 2
    assert unfiltered.facets["category"]["contract"] == 1
    assert {h.category for h in filtered.hits} == {"contract"}
    assert filtered.total == unfiltered.facets["category"]["contract"] == len(filtered.hits)
    assert sum(unfiltered.facets["category"].values()) == unfiltered.total


def test_pagination_pages_through_every_match_once(index, embedder):
    full = search(index, embedder, "money paid", mode="semantic", limit=100)
    assert full.total == len(CORPUS)  # every document is among the nearest chunks here
    pages = [search(index, embedder, "money paid", mode="semantic", limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert [len(p.hits) for p in pages] == [3, 3, 2, 0]
    assert all(p.total == full.total for p in pages)
    assert [h.document_id for p in pages for h in p.hits] == [h.document_id for h in full.hits]
    scores = [h.score for h in full.hits]
    assert scores == sorted(scores, reverse=True)


def test_upsert_twice_keeps_one_copy(index, embedded_corpus, embedder):
    doc, chunks, vectors = embedded_corpus[0]
    index.upsert(doc, chunks, vectors)
    index.upsert(doc, chunks, vectors)
    assert index.count() == len(CORPUS)
    result = search(index, embedder, "IBAN", mode="keyword")
    assert [h.document_id for h in result.hits] == ["inv-1"]
    semantic = search(index, embedder, "bank account for the payment", mode="semantic", limit=100)
    assert [h.document_id for h in semantic.hits].count("inv-1") == 1


def test_upsert_replaces_old_chunks(index, embedder):
    doc = IndexedDocument("inv-1", "acme_invoice_2023-042.pdf", "invoice", {}, "2024-05-01T12:00:00Z")
    chunk = Chunk("inv-1", 0, "Credit note replacing the earlier bill.")
    index.upsert(doc, [chunk], embedder.embed([chunk.text]))
    assert search(index, embedder, "IBAN", mode="keyword").total == 0
    assert search(index, embedder, "credit note", mode="keyword").hits[0].document_id == "inv-1"


def test_delete_removes_document_everywhere(index, embedder):
    index.delete("man-1")
    index.delete("does-not-exist")  # no error: deleting is idempotent
    assert index.count() == len(CORPUS) - 1
    assert search(index, embedder, "washing machine", mode="keyword").total == 0
    semantic = search(index, embedder, "washing machine guarantee", mode="semantic", limit=100)
    assert "man-1" not in {h.document_id for h in semantic.hits}


def test_update_fields_changes_category_and_fields(index, embedder):
    index.update_fields("rec-2", "recipe", {"dish": "pancakes"})
    result = search(index, embedder, "pancakes batter", mode="hybrid", category="recipe")
    assert [h.document_id for h in result.hits] == ["rec-2"]
    assert result.hits[0].fields == {"dish": "pancakes"}
    assert result.facets["category"]["recipe"] == 1
    assert "other" not in result.facets["category"]


def test_second_instance_sees_writes(index, embedder):
    other = EmbeddedIndex(index.path)
    assert other.count() == len(CORPUS)
    query = "solar panels on the roof"
    before = search(other, embedder, query, mode="semantic")  # loads other's vector cache
    assert before.hits[0].document_id != "sol-1"
    doc = IndexedDocument("sol-1", "solar_quote.pdf", "other", {}, "2024-05-02T08:00:00Z")
    chunk = Chunk("sol-1", 0, "Quote for installing twelve photovoltaic panels on your roof.")
    index.upsert(doc, [chunk], embedder.embed([chunk.text]))
    assert other.count() == len(CORPUS) + 1
    assert search(other, embedder, query, mode="semantic").hits[0].document_id == "sol-1"
    assert search(other, embedder, "photovoltaic", mode="keyword").hits[0].document_id == "sol-1"
    index.delete("sol-1")
    assert "sol-1" not in {h.document_id for h in search(other, embedder, query, mode="semantic").hits}


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    """Two processes upsert at once while this one searches: WAL + busy_timeout queue them."""
    path = tmp_path / "shared.db"
    EmbeddedIndex(path)  # create the schema before the writers race
    writer = textwrap.dedent(f"""
        import sys, numpy as np
        from doclane.functions.adapters.embedded_index import EmbeddedIndex
        from doclane.functions.ports import Chunk, IndexedDocument
        ix, tag, rng = EmbeddedIndex({str(path)!r}), sys.argv[1], np.random.default_rng(int(sys.argv[2]))
        for i in range(40):
            doc = IndexedDocument(f"{{tag}}-{{i}}", f"{{tag}}.txt", tag, {{}}, "2024-01-01")
            chunks = [Chunk(doc.document_id, j, f"{{tag}} note {{i}} part {{j}}") for j in range(3)]
            ix.upsert(doc, chunks, rng.normal(size=(3, 16)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, tag, str(seed)], stderr=subprocess.PIPE)
             for seed, tag in enumerate(["alpha", "beta"])]
    reader = EmbeddedIndex(path)
    while any(p.poll() is None for p in procs):
        reader.search("note", np.ones(16, dtype=np.float32), mode="hybrid")
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read().decode() for p in procs]
    result = reader.search("note", np.ones(16, dtype=np.float32), mode="keyword")
    assert reader.count() == 80
    assert result.facets == {"category": {"alpha": 40, "beta": 40}}


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_hostile_queries_do_not_raise(index, embedder, mode):
    for query in HOSTILE:
        result = index.search(query, embedder.embed(["x"])[0], mode=mode)
        assert result.total >= 0
    assert index.search("the and of", None, mode="keyword").total == 0  # stop words only


def test_fts_query_quotes_every_term():
    assert fts_query('"termination notice" AND (fees') == '"termination notice" OR "fees"'
    assert fts_query("the of and") is None
    assert fts_query('"') is None
    assert fts_query('"invoice" the') == '"invoice"'  # a quoted word is kept, a bare stop word is not


def test_wrong_vector_dimension_is_a_config_error(index):
    doc = IndexedDocument("x", "x.txt", "other", {}, "2024-01-01")
    with pytest.raises(ConfigError, match="dimension|384"):
        index.upsert(doc, [Chunk("x", 0, "text")], np.ones((1, 8), dtype=np.float32))
    assert index.count() == len(CORPUS)  # the failed upsert rolled back


def test_empty_index_answers_empty(tmp_path):
    ix = EmbeddedIndex(tmp_path / "empty.db")
    for mode in ("keyword", "semantic", "hybrid"):
        result = ix.search("anything", np.ones(384, dtype=np.float32), mode=mode)
        assert (result.total, result.hits, result.facets) == (0, [], {"category": {}})
    with pytest.raises(ValueError, match="mode"):
        ix.search("x", None, mode="fuzzy")


def test_refreshed_vector_cache_matches_a_fresh_load(tmp_path):
    """A reader's cache, refreshed after every write by another instance, ranks
    exactly as a reader that loads everything at once."""
    rng = np.random.default_rng(7)
    reader, writer = EmbeddedIndex(tmp_path / "ix.db"), EmbeddedIndex(tmp_path / "ix.db")
    query = rng.normal(size=16).astype(np.float32)
    for step in range(60):
        doc_id = f"d{rng.integers(0, 15)}"
        if rng.random() < 0.3:
            writer.delete(doc_id)
        else:
            n = int(rng.integers(1, 4))
            doc = IndexedDocument(doc_id, f"{doc_id}.txt", "other", {}, "2024-01-01")
            writer.upsert(doc, [Chunk(doc_id, i, f"text {step} {i}") for i in range(n)], rng.normal(size=(n, 16)))
        reader.search("", query, mode="semantic", limit=100)
    fresh = EmbeddedIndex(tmp_path / "ix.db").search("", query, mode="semantic", limit=100)
    cached = reader.search("", query, mode="semantic", limit=100)
    assert [(h.document_id, h.score) for h in cached.hits] == [(h.document_id, h.score) for h in fresh.hits]
    assert cached.total == fresh.total == writer.count()


# ---------------------------------------------------------------- fusion and feedback, on hand-made vectors
def _unit(*xs: float, dim: int = 16) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[:len(xs)] = xs
    return v / np.linalg.norm(v)


def _toy(tmp_path, docs: dict[str, list[tuple[str, np.ndarray]]], **options) -> EmbeddedIndex:
    """An index of documents given as chunks of (text, vector)."""
    ix = EmbeddedIndex(tmp_path / "toy.db", **options)
    for doc_id, parts in docs.items():
        ix.upsert(IndexedDocument(doc_id, f"{doc_id}.txt", "other", {}, "2024-01-01"),
                  [Chunk(doc_id, i, text) for i, (text, _) in enumerate(parts)], np.stack([v for _, v in parts]))
    return ix


def test_semantic_returns_the_nearest_documents_not_chunks(tmp_path):
    """Three chunks of one document near the query must not crowd out the next document."""
    ix = _toy(tmp_path, {
        "many": [(f"part {i}", _unit(1, 0.1 * i)) for i in range(3)],
        "near": [("one part", _unit(1, 0.5))],
        "far": [("other", _unit(0, 1))],
    }, candidates=2)
    result = ix.search("", _unit(1), mode="semantic", limit=10)
    assert [h.document_id for h in result.hits] == ["many", "near"] and result.total == 2
    assert result.hits[0].snippet == "part 0"  # the best chunk of the document


def test_zscore_fusion_gives_keyword_matches_their_real_semantic_score(tmp_path):
    """`related` and `unrelated` match the keyword equally and both lie outside the
    two nearest documents; `related`'s vector is close to the query, so it must
    rank first. (Min-max clips both to 0 below the top range, and they tie.)"""
    docs = {
        "unrelated": [("alpha report", _unit(0, 0, 1))],
        "related": [("alpha report", _unit(1, 0.5))],
        "near-1": [("beta", _unit(1))],
        "near-2": [("gamma", _unit(1, 0.1))],
    }
    ix = _toy(tmp_path, docs, fusion="zscore", candidates=2)
    result = ix.search("alpha", _unit(1), mode="hybrid", limit=10)
    ranked = [h.document_id for h in result.hits]
    assert ranked.index("related") < ranked.index("unrelated")
    assert set(ranked) == set(docs) and result.total == 4
    scores = {h.document_id: h.score for h in result.hits}
    assert scores["related"] > scores["unrelated"]


def test_pseudo_relevance_feedback_moves_the_query_towards_the_top_document(tmp_path):
    """The keyword match `top` ranks first; its vector leans towards `sibling`.
    Without feedback `decoy` (nearer the bare query) outranks `sibling`; one
    round of feedback from the top document turns that round."""
    docs = {
        "top": [("alpha study", _unit(1, 1))],
        "sibling": [("beta", _unit(0.5, 1))],
        "decoy": [("gamma", _unit(1, 0, 1.2))],
    }
    plain = _toy(tmp_path, docs, prf_docs=0).search("alpha", _unit(1), mode="hybrid", limit=10)
    assert [h.document_id for h in plain.hits] == ["top", "decoy", "sibling"]
    feedback = EmbeddedIndex(tmp_path / "toy.db", prf_docs=1, prf_weight=1.0)
    moved = feedback.search("alpha", _unit(1), mode="hybrid", limit=10)
    assert [h.document_id for h in moved.hits] == ["top", "sibling", "decoy"]
    # feedback needs a first pass of both retrievers: keyword and semantic modes are unchanged
    for mode in ("keyword", "semantic"):
        assert ([h.document_id for h in feedback.search("alpha", _unit(1), mode=mode).hits]
                == [h.document_id for h in _toy(tmp_path / "x", docs, prf_docs=0).search("alpha", _unit(1),
                                                                                         mode=mode).hits])


def test_keyword_feedback_finds_a_document_in_the_words_of_the_top_ones(tmp_path):
    """`synonym` shares no word with the query, only with the documents that
    match it: without feedback keyword search cannot see it; with feedback
    (RM3) it comes back, below the documents that match the query itself,
    and the expansion never loses the original matches or their order."""
    docs = {
        "direct": [("myocardial infarction raises troponin levels in serum", _unit(1))],
        "direct2": [("myocardial infarction patients had high troponin", _unit(1, 1))],
        "synonym": [("heart attack survivors show troponin elevation", _unit(0, 1))],
        "other": [("quarterly revenue grew in the retail segment", _unit(0, 0, 1))],
    }
    plain = _toy(tmp_path / "plain", docs, expand_docs=0).search("myocardial infarction", None, mode="keyword")
    assert [h.document_id for h in plain.hits] == ["direct", "direct2"] or \
        [h.document_id for h in plain.hits] == ["direct2", "direct"]
    expanded = _toy(tmp_path / "rm3", docs, expand_docs=2).search("myocardial infarction", None, mode="keyword")
    ranked = [h.document_id for h in expanded.hits]
    assert set(ranked[:2]) == {"direct", "direct2"} and ranked[2] == "synonym" and "other" not in ranked
    # snippets still mark the user's words, not the expansion's
    assert "<mark>" in expanded.hits[0].snippet and "troponin</mark>" not in expanded.hits[0].snippet


def test_fusion_and_feedback_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="fusion"):
        EmbeddedIndex(tmp_path / "a.db", fusion="mean")
    with pytest.raises(ConfigError, match="prf"):
        EmbeddedIndex(tmp_path / "a.db", prf_docs=-1)
    with pytest.raises(ConfigError, match="expand"):
        EmbeddedIndex(tmp_path / "a.db", expand_weight=1.0)
    with pytest.raises(ConfigError, match="passage_weight"):
        EmbeddedIndex(tmp_path / "a.db", passage_weight=1.5)


# ---------------------------------------------------------------- document-level keywords, passages, migration
def test_keyword_scores_the_whole_document_and_shows_its_best_chunk(tmp_path):
    """`split` holds both query words, each in a chunk of its own, as long as
    the other documents' one chunk with one of the words: chunk by chunk all
    four tie, as documents `split` ranks first. Each hit shows a chunk with a
    query word, marked."""
    docs = {
        "split": [("alpha appears here", _unit(1)), ("zeta appears here", _unit(0, 1))],
        "only-alpha": [("alpha appears there", _unit(0, 0, 1))],
        "only-zeta": [("zeta appears there", _unit(0, 0, 0, 1))],
        "none": [("nothing relevant", _unit(0, 0, 0, 0, 1))],
    }
    ix = _toy(tmp_path, docs)
    result = ix.search("alpha zeta", None, mode="keyword")
    assert [h.document_id for h in result.hits][0] == "split" and result.total == 3
    assert all("<mark>" in h.snippet for h in result.hits)
    assert ix.search("alpha", None, mode="keyword").hits[0].snippet.startswith("<mark>alpha</mark>")


def test_a_sentence_vector_finds_what_the_chunk_average_hides(tmp_path):
    """`buried`'s one chunk points away from the query, but one of its
    passages (a sentence) points at it (.4 x 0 + .6 x .995 = .60): with passages it is the nearest
    document, with passage_weight 0 (chunks only) it is not; its snippet is
    still its chunk."""
    def build(path, **options):
        ix = EmbeddedIndex(path, prf_docs=0, **options)
        ix.upsert(IndexedDocument("buried", "b.txt", "other", {}, "2024-01-01"), [Chunk("buried", 0, "long text")],
                  np.stack([_unit(0, 1)]), passage_vectors=np.stack([_unit(1, 0.1), _unit(0, 0, 1)]))
        ix.upsert(IndexedDocument("plain", "p.txt", "other", {}, "2024-01-01"), [Chunk("plain", 0, "other text")],
                  np.stack([_unit(1, 2)]))  # no passages: scores by its chunk (cosine .45)
        return ix
    with_passages = build(tmp_path / "p.db").search("", _unit(1), mode="semantic")
    assert [h.document_id for h in with_passages.hits] == ["buried", "plain"]
    assert with_passages.hits[0].snippet == "long text"
    chunks_only = build(tmp_path / "c.db", passage_weight=0.0).search("", _unit(1), mode="semantic")
    assert [h.document_id for h in chunks_only.hits] == ["plain", "buried"]


def test_passages_are_replaced_and_deleted_with_their_document(tmp_path):
    import sqlite3

    ix = EmbeddedIndex(tmp_path / "ix.db")
    doc = IndexedDocument("d", "d.txt", "other", {}, "2024-01-01")
    ix.upsert(doc, [Chunk("d", 0, "first version")], np.stack([_unit(1)]), passage_vectors=np.stack([_unit(1)] * 3))
    ix.upsert(doc, [Chunk("d", 0, "second version")], np.stack([_unit(1)]), passage_vectors=np.stack([_unit(0, 1)]))
    db = sqlite3.connect(tmp_path / "ix.db")
    assert db.execute("SELECT count(*) FROM passages").fetchone()[0] == 1
    assert [h.document_id for h in ix.search("second", None, mode="keyword").hits] == ["d"]
    assert ix.search("first", None, mode="keyword").total == 0  # the old text left the document's keyword row
    ix.delete("d")
    assert [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("passages", "doc_text", "chunks")] == [0] * 3
    assert ix.search("second", None, mode="keyword").total == 0
    with pytest.raises(ValueError, match="passage vectors"):
        ix.upsert(doc, [Chunk("d", 0, "x")], np.stack([_unit(1)]), passage_vectors=np.ones((2, 3), np.float32))


def test_an_index_from_before_document_keywords_is_backfilled(tmp_path):
    """A file written by the previous version has chunks but no doc_text rows:
    opening it gives every document its keyword row (its chunks in order), so
    keyword search finds it without re-indexing."""
    import sqlite3

    path = tmp_path / "old.db"
    _toy(tmp_path, {"d": [("ventricular", _unit(1)), ("fibrillation", _unit(0, 1))]}).close()
    (tmp_path / "toy.db").rename(path)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM doc_text")
    db.commit()
    assert db.execute("SELECT count(*) FROM doc_fts WHERE doc_fts MATCH 'ventricular'").fetchone()[0] == 0
    reopened = EmbeddedIndex(path)
    assert db.execute("SELECT text FROM doc_text WHERE document_id = 'd'").fetchone()[0] == "ventricular\nfibrillation"
    hits = reopened.search("ventricular fibrillation", None, mode="keyword").hits
    assert [h.document_id for h in hits] == ["d"]


def test_minmax_keeps_the_semantic_distance_of_keyword_matches_below_its_range(tmp_path):
    """Both `a-far` and `z-close` match the keyword alike and lie outside the
    two nearest documents; `z-close`'s vector is nearer the query. Min-max
    clips only the keyword side (at BM25's no-match floor), so the semantic
    side still tells them apart, against the alphabetical tie-break."""
    docs = {
        "a-far": [("alpha report", _unit(0, 0, 1))],
        "z-close": [("alpha report", _unit(1, 0.8))],
        "near-1": [("beta", _unit(1))],
        "near-2": [("gamma", _unit(1, 0.1))],
    }
    ranked = [h.document_id for h in _toy(tmp_path, docs, candidates=2, prf_docs=0).search(
        "alpha", _unit(1), mode="hybrid", limit=10).hits]
    assert ranked.index("z-close") < ranked.index("a-far")


def test_the_keyword_row_is_the_documents_whole_text_when_given(tmp_path):
    ix = EmbeddedIndex(tmp_path / "ix.db")
    doc = IndexedDocument("d", "d.txt", "other", {}, "2024-01-01")
    ix.upsert(doc, [Chunk("d", 0, "chunk words")], np.stack([_unit(1)]), text="the whole original text")
    assert [h.document_id for h in ix.search("original", None, mode="keyword").hits] == ["d"]
    ix.upsert(doc, [Chunk("d", 0, "chunk words")], np.stack([_unit(1)]))  # no text: the chunks'
    assert ix.search("original", None, mode="keyword").total == 0
    assert ix.search("chunk", None, mode="keyword").total == 1
    ix.upsert(doc, [Chunk("d", 0, "zygote words")], np.stack([_unit(1)]), text="  \n")  # blank: the chunks' too
    assert ix.search("zygote", None, mode="keyword").total == 1
