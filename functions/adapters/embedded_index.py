"""SearchIndex without a server: one SQLite file holds documents, chunks,
an FTS5 keyword index and the chunk vectors, so an index worker (writing) and
an HTTP search process (reading) can share it: WAL mode lets readers run
beside the one writer, and `busy_timeout` makes writers queue instead of
failing.

Retrieval
  keyword   FTS5 BM25 over each document's whole text and its file name (or
            title, x3), Porter stemming, diacritics folded, query terms
            OR-combined so a natural-language query matches partially; the
            best-matching documents rank first anyway. Matches: the best
            `keyword_depth` documents. A hit shows its best-matching chunk
            (BM25 over chunk text, heading and file name).
            Keyword feedback (`expand_docs`, RM3, off by default): the query
            gains the likeliest words of its top documents and BM25 runs
            again (see `_expanded`).
  semantic  cosine over every chunk vector and every passage vector (one per
            sentence, the title in front: `chunking.passages`), with numpy on
            matrices cached in memory; a generation counter bumped by every
            write tells a reader (in any process) to refresh them. A document
            scores (1 - passage_weight) x its best chunk + passage_weight x
            its best passage (no passages: its best chunk); matches: the
            `candidates` nearest documents (cosine has no "no match").
  hybrid    both, fused per document over the union of their matches, each
            with its real scores on both sides (a keyword match outside the
            nearest documents keeps its cosine; a semantic match without a
            query term gets BM25's floor, 0): min-max normalised weighted sum
            (default, semantic weight 0.5, over each side's top `candidates`),
            z-score weighted sum, or reciprocal rank fusion (k=60). Then one
            round of pseudo-relevance feedback (`prf_docs` = 2, Rocchio): each
            vector view's query moves towards the mean of the first pass's top
            documents in that view (weight `prf_weight` = 0.5) and the search
            is fused again.
            SciFact (docs/QUALITY.md), hybrid nDCG@10 / Recall@100 on train
            (held-out test): .736 / .950 (.736 / .953) with chunk-level BM25
            and chunk vectors alone; .750 / .971 (.748 / .976) with the
            document-level BM25, the passages and the feedback.

Results are per document: a document scores by its best chunk (a bonus for
several matching chunks, or the mean of its chunk vectors, did not help on
SciFact), and its snippet comes from that chunk, HTML-escaped, with the query
terms in `<mark>`.

Facets count the matching documents BEFORE the category filter, hits and
`total` AFTER it: a UI shows "invoice (12) · contract (3)" beside the hits
of the chosen category, so the user can switch without losing the counts.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from doclane.functions.errors import ConfigError, Retryable
from doclane.functions.ports import SEARCH_MODES, Chunk, Hit, IndexedDocument, SearchResult, check_search_args

MODES = SEARCH_MODES
FUSIONS = ("minmax", "zscore", "rrf")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY, filename TEXT NOT NULL, category TEXT NOT NULL,
    fields TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_category ON documents (category);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, text TEXT NOT NULL, heading TEXT, filename TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, heading, filename, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text, heading, filename)
    VALUES (new.id, new.text, new.heading, new.filename);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, heading, filename)
    VALUES ('delete', old.id, old.text, old.heading, old.filename);
END;
CREATE TABLE IF NOT EXISTS doc_text (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL UNIQUE REFERENCES documents (document_id) ON DELETE CASCADE,
    text TEXT NOT NULL, filename TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS doc_fts USING fts5 (
    text, filename, content='doc_text', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS doc_text_ai AFTER INSERT ON doc_text BEGIN
    INSERT INTO doc_fts (rowid, text, filename) VALUES (new.id, new.text, new.filename);
END;
CREATE TRIGGER IF NOT EXISTS doc_text_ad AFTER DELETE ON doc_text BEGIN
    INSERT INTO doc_fts (doc_fts, rowid, text, filename) VALUES ('delete', old.id, old.text, old.filename);
END;
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS passages_document ON passages (document_id);
"""

# FTS5 has no stop words: without these "the report" would match every chunk.
_STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves
""".split())
_WORD = re.compile(r"\w+", re.UNICODE)
_PHRASE = re.compile(r'"([^"]*)"')
_MAX_TERMS = 32
_EXPAND_LEVELS = 8  # keyword feedback: weights quantised into 1..8 repetitions of a phrase
_EXPAND_WORDS = 2_000  # keyword feedback: the words read from each feedback document, at most
_OPEN, _CLOSE, _ELLIPSIS = "\ue000", "\ue001", "\ue002"  # markers no document contains


def fts_query(query: str) -> str | None:
    """A user's text as a safe FTS5 MATCH expression: every term and "quoted
    phrase" becomes a quoted string, OR-combined, so no input is FTS5 syntax.
    None when nothing searchable is left (empty or only stop words)."""
    parts: list[str] = []
    for phrase in _PHRASE.findall(query):  # quoted by the user: kept whole, stop words too
        words = _WORD.findall(phrase.lower())
        if words and '"' + " ".join(words) + '"' not in parts:
            parts.append('"' + " ".join(words) + '"')
    for word in _WORD.findall(_PHRASE.sub(" ", query).replace('"', " ").lower()):
        if word not in _STOPWORDS and f'"{word}"' not in parts:
            parts.append(f'"{word}"')
    return " OR ".join(parts[:_MAX_TERMS]) or None


@dataclass
class _Matrix:
    """Every chunk vector, in chunk-id order, for one index generation.

    An upsert writes a document's chunks in one transaction under the write
    lock, so their AUTOINCREMENT ids, and so their rows here, are consecutive:
    `runs` (the first row of each document's run) lets numpy take a per-document
    maximum in one `reduceat` instead of a Python loop over chunks."""

    generation: int
    chunk_ids: np.ndarray  # int64
    doc_index: np.ndarray  # int32: row -> position in doc_ids
    doc_ids: list[str]
    vectors: np.ndarray  # float32, (n, dimension)
    position: dict[str, int] = field(default_factory=dict)  # doc_ids' inverse
    runs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first row of each run

    def __post_init__(self) -> None:
        if not self.position:
            self.position = {d: i for i, d in enumerate(self.doc_ids)}
        if len(self.doc_index) and not len(self.runs):
            self.runs = np.flatnonzero(np.r_[True, self.doc_index[1:] != self.doc_index[:-1]])
        run_docs = self.doc_index[self.runs]
        self._one_run = len(np.unique(run_docs)) == len(run_docs)
        self._first = np.zeros(len(self.doc_ids), np.int64)
        self._stop = np.zeros(len(self.doc_ids), np.int64)  # a deleted document: an empty range
        if len(run_docs):
            self._first[run_docs], self._stop[run_docs] = self.runs, np.r_[self.runs[1:], len(self.doc_index)]

    def rows(self, position: int) -> np.ndarray:
        """The rows of one document: its run, or (never expected) every row it has."""
        if self._one_run:
            return np.arange(self._first[position], self._stop[position])
        return np.flatnonzero(self.doc_index == position)


@dataclass
class _Candidates:
    """One retriever's view of the matching documents: score and best chunk."""

    scores: dict[str, float]
    best_chunk: dict[str, int]

    def top(self, n: int) -> list[str]:
        return sorted(self.scores, key=self.scores.__getitem__, reverse=True)[:n]


class _Dense:
    """One query vector against every chunk vector, and (where the documents
    have them) every passage vector: the cosines, and per document the best
    of them (a document scores by its best chunk). With passages, a
    document's semantic score is (1 - passage_weight) x its best chunk's
    cosine + passage_weight x its best passage's; a document without
    passages keeps its best chunk's. Every document gets a semantic score,
    so hybrid fusion never has to guess one."""

    def __init__(self, matrix: _Matrix, query: np.ndarray, passages: _Matrix | None = None,
                 passage_weight: float = 0.0, passage_query: np.ndarray | None = None):
        self.matrix, self.query, self.passages, self.passage_weight = matrix, query, passages, passage_weight
        self.passage_query = query if passage_query is None else passage_query
        self.cosine = matrix.vectors @ query if len(matrix.vectors) else np.zeros(0, np.float32)
        self.best = _best(matrix, self.cosine, len(matrix.doc_ids))
        if passages is not None and len(passages.vectors) and passage_weight:
            by_passage = _best(passages, passages.vectors @ self.passage_query, len(matrix.doc_ids))
            has = np.isfinite(by_passage) & np.isfinite(self.best)
            self.best[has] = (1 - passage_weight) * self.best[has] + passage_weight * by_passage[has]

    def score(self, doc_id: str) -> float:
        at = self.matrix.position.get(doc_id)
        return float(self.best[at]) if at is not None else float("-inf")

    def top(self, n: int) -> _Candidates:
        """The n documents nearest the query, each with its best chunk."""
        live = np.flatnonzero(np.isfinite(self.best))  # deleted documents keep a position but no rows
        k = min(n, len(live))
        if k == 0:
            return _Candidates({}, {})
        picked = live[np.argpartition(-self.best[live], k - 1)[:k]]
        cands = _Candidates({}, {})
        for at in picked:
            rows = self.matrix.rows(int(at))
            doc_id = self.matrix.doc_ids[at]
            cands.scores[doc_id] = float(self.best[at])
            cands.best_chunk[doc_id] = int(self.matrix.chunk_ids[rows[np.argmax(self.cosine[rows])]])
        return cands

    def moved(self, doc_ids: list[str], weight: float) -> "_Dense":
        """Rocchio: each view's query vector moved towards the mean of the
        documents' own mean vectors in that view (each made unit length)."""
        query = _towards(self.query, _feedback(self.matrix, doc_ids), weight)
        passage_query = (_towards(self.passage_query, _feedback(self.passages, doc_ids), weight)
                         if self.passages is not None else None)
        return _Dense(self.matrix, query, self.passages, self.passage_weight, passage_query)


def _best(matrix: _Matrix, cosine: np.ndarray, documents: int) -> np.ndarray:
    """Each document's best cosine (-inf: no rows), over `documents` positions."""
    best = np.full(documents, -np.inf, dtype=np.float32)
    if len(cosine):
        np.maximum.at(best, matrix.doc_index[matrix.runs], np.maximum.reduceat(cosine, matrix.runs))
    return best


def _feedback(matrix: _Matrix | None, doc_ids: list[str]) -> np.ndarray | None:
    """The mean of the documents' own mean vectors in one view (None: no rows)."""
    means = []
    for doc_id in doc_ids:
        at = matrix.position.get(doc_id) if matrix is not None else None
        rows = matrix.rows(at) if at is not None and at < len(matrix.doc_ids) else np.zeros(0, np.int64)
        if len(rows):
            m = matrix.vectors[rows].mean(axis=0)
            means.append(m / (np.linalg.norm(m) or 1.0))
    return np.mean(means, axis=0) if means else None


def _towards(query: np.ndarray, mean: np.ndarray | None, weight: float) -> np.ndarray:
    if mean is None:
        return query
    moved = query + weight * mean
    return moved / (np.linalg.norm(moved) or 1.0)


class EmbeddedIndex:
    """The embedded `SearchIndex` (see module doc). Safe to share between
    threads (one connection per thread) and processes (SQLite locking)."""

    def __init__(
        self, path: str | Path, *, fusion: str = "minmax", semantic_weight: float = 0.5,
        candidates: int = 150, rrf_k: int = 60, column_weights: tuple[float, float, float] = (1.0, 2.0, 3.0),
        keyword_depth: int = 1_000, prf_docs: int = 2, prf_weight: float = 0.5, busy_timeout_ms: int = 10_000,
        expand_docs: int = 0, expand_terms: int = 30, expand_weight: float = 0.4, passage_weight: float = 0.6,
        document_weights: tuple[float, float] = (1.0, 3.0),
    ):
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
        if not 0.0 <= semantic_weight <= 1.0:
            raise ConfigError(f"semantic_weight must lie in [0, 1], got {semantic_weight}")
        if prf_docs < 0 or prf_weight < 0:
            raise ConfigError(f"prf_docs and prf_weight must not be negative, got {prf_docs} and {prf_weight}")
        self.path = Path(path)
        self.fusion, self.semantic_weight, self.candidates, self.rrf_k = fusion, semantic_weight, candidates, rrf_k
        self.prf_docs, self.prf_weight = prf_docs, prf_weight
        if not 0.0 <= passage_weight <= 1.0:
            raise ConfigError(f"passage_weight must lie in [0, 1], got {passage_weight}")
        self.passage_weight, self.document_weights = passage_weight, document_weights
        if expand_docs < 0 or expand_terms < 0 or not 0.0 <= expand_weight < 1.0:
            raise ConfigError("expand_docs and expand_terms must not be negative and expand_weight must lie in "
                              f"[0, 1), got {expand_docs}, {expand_terms} and {expand_weight}")
        self.expand_docs, self.expand_terms, self.expand_weight = expand_docs, expand_terms, expand_weight
        self.column_weights, self.keyword_depth = column_weights, keyword_depth
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._matrix: _Matrix | None = None
        self._passages: _Matrix | None = None
        self._matrix_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db().executescript("BEGIN IMMEDIATE; " + _SCHEMA + " COMMIT;")
        self._backfill()

    def _backfill(self) -> None:
        """An index written before documents had their own keyword row (doc_text):
        each such document gets one, its chunks' text in order. Its passage
        vectors stay missing until it is indexed again; until then it scores by
        its chunks alone."""
        db = self._db()
        if not db.execute("SELECT 1 FROM documents WHERE document_id NOT IN (SELECT document_id FROM doc_text) "
                          "LIMIT 1").fetchone():
            return
        with self._write() as db:
            db.execute(
                "INSERT INTO doc_text (document_id, text, filename) SELECT d.document_id, coalesce(("
                "  SELECT group_concat(text, char(10)) FROM (SELECT text FROM chunks AS c "
                "  WHERE c.document_id = d.document_id ORDER BY ordinal)), ''), d.filename FROM documents AS d "
                "WHERE d.document_id NOT IN (SELECT document_id FROM doc_text)")

    @staticmethod
    def settings_options(settings) -> dict[str, Any]:
        """The constructor's options from the pipeline's settings (DOCLANE_SEARCH_*)."""
        return {"fusion": settings.search_fusion, "semantic_weight": settings.search_semantic_weight,
                "prf_docs": settings.search_prf_docs, "prf_weight": settings.search_prf_weight,
                "passage_weight": settings.search_passage_weight, "expand_docs": settings.search_expand_docs}

    # ------------------------------------------------------------------ writes
    def upsert(self, doc: IndexedDocument, chunks: Sequence[Chunk], vectors: np.ndarray,
               passage_vectors: np.ndarray | None = None, text: str | None = None) -> None:
        """Replace the document: its chunks with their vectors, its keyword row
        (`text`, the document's whole text; without it, or if it is blank, the
        chunks' text in order, where overlapping windows repeat some words), and its passage
        vectors (one per sentence, see `chunking.passages`; none: the document
        scores by its chunks)."""
        vectors = _unit_rows(vectors)
        if vectors.ndim != 2 or len(vectors) != len(chunks):
            raise ValueError(f"need one vector per chunk: {len(chunks)} chunks, vectors of shape {vectors.shape}")
        if any(c.document_id != doc.document_id for c in chunks):
            raise ValueError(f"every chunk must belong to document {doc.document_id}")
        passages = _unit_rows(passage_vectors if passage_vectors is not None else np.zeros((0, vectors.shape[1])))
        if passages.ndim != 2 or (len(passages) and passages.shape[1] != vectors.shape[1]):
            raise ValueError(f"passage vectors of shape {passages.shape} do not match chunk vectors {vectors.shape}")
        with self._write() as db:
            self._check_dimension(db, vectors.shape[1])
            db.execute("DELETE FROM chunks WHERE document_id = ?", (doc.document_id,))
            db.execute("DELETE FROM passages WHERE document_id = ?", (doc.document_id,))
            db.execute("DELETE FROM doc_text WHERE document_id = ?", (doc.document_id,))
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?) ON CONFLICT (document_id) DO UPDATE SET "
                "filename = excluded.filename, category = excluded.category, fields = excluded.fields, "
                "created_at = excluded.created_at",
                (doc.document_id, doc.filename, doc.category, _dumps(doc.fields), doc.created_at),
            )
            db.executemany(
                "INSERT INTO chunks (document_id, ordinal, text, heading, filename, vector) VALUES (?, ?, ?, ?, ?, ?)",
                [(doc.document_id, c.ordinal, c.text, c.heading, doc.filename, v.tobytes())
                 for c, v in zip(chunks, vectors)],
            )
            db.execute("INSERT INTO doc_text (document_id, text, filename) VALUES (?, ?, ?)",
                       (doc.document_id, text if text and text.strip() else "\n".join(c.text for c in chunks),
                        doc.filename))
            db.executemany("INSERT INTO passages (document_id, vector) VALUES (?, ?)",
                           [(doc.document_id, v.tobytes()) for v in passages])

    def delete(self, document_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
            db.execute("DELETE FROM passages WHERE document_id = ?", (document_id,))
            db.execute("DELETE FROM doc_text WHERE document_id = ?", (document_id,))
            db.execute("DELETE FROM documents WHERE document_id = ?", (document_id,))

    def update_fields(self, document_id: str, category: str, fields: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("UPDATE documents SET category = ?, fields = ? WHERE document_id = ?",
                       (category, _dumps(fields), document_id))

    def count(self) -> int:
        return self._db().execute("SELECT count(*) FROM documents").fetchone()[0]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ search
    def search(
        self, query: str, query_vector: np.ndarray | None, *, mode: str = "hybrid",
        category: str | None = None, limit: int = 10, offset: int = 0,
    ) -> SearchResult:
        check_search_args(mode, query_vector)
        match = fts_query(query or "")
        db = self._db()
        try:
            db.execute("BEGIN")  # one snapshot for every read below
            keyword = self._keyword(db, match) if mode != "semantic" and match else None
            if keyword is not None and self.expand_docs and self.expand_terms and self.expand_weight:
                keyword = self._expanded(db, match, keyword)
            dense = (self._dense(db, query_vector) if mode != "keyword" and query_vector is not None
                     else None)
            scores, semantic = self._rank(keyword, dense)
            docs = self._documents(db, list(scores))
            facets: dict[str, int] = {}
            for doc_id in scores:
                facets[docs[doc_id][1]] = facets.get(docs[doc_id][1], 0) + 1
            # ties (e.g. keyword matches below both fusion ranges) keep their own retriever's order
            tiebreak = (keyword or semantic).scores if (keyword or semantic) else {}
            ranked = sorted((d for d in scores if category is None or docs[d][1] == category),
                            key=lambda d: (-scores[d], -tiebreak.get(d, 0.0), d))
            page = ranked[offset: offset + limit]
            best = self._best_chunks(db, match if keyword is not None else None, page, semantic)
            snippets = self._snippets(db, match, list(best.values()))
        except sqlite3.OperationalError as exc:  # e.g. disk I/O, a lock held during WAL recovery
            raise Retryable(f"search index unavailable: {exc}") from exc
        finally:
            db.execute("COMMIT")
        hits = [Hit(document_id=d, filename=docs[d][0], category=docs[d][1], score=scores[d],
                    snippet=snippets.get(best.get(d, -1), ""), fields=json.loads(docs[d][2])) for d in page]
        return SearchResult(total=len(ranked), hits=hits, facets={"category": facets})

    def _keyword(self, db: sqlite3.Connection, match: str) -> _Candidates:
        """BM25 of each matching document as a whole (its text, and its file
        name or title weighted x3), the best `keyword_depth` of them. SciFact
        (docs/QUALITY.md): keyword nDCG@10 .698 by best chunk -> .708 by
        document, and the document scores fuse better with the vectors. The
        chunk a hit shows comes from `_best_chunks`."""
        weights = ", ".join(str(float(w)) for w in self.document_weights)
        rows = db.execute(
            f"SELECT t.document_id, -f.score FROM ("
            f"  SELECT rowid, bm25(doc_fts, {weights}) AS score FROM doc_fts"
            f"  WHERE doc_fts MATCH ? ORDER BY score LIMIT ?) AS f "
            f"JOIN doc_text AS t ON t.id = f.rowid", (match, self.keyword_depth)).fetchall()
        return _Candidates({doc_id: score for doc_id, score in rows}, {})

    def _best_chunks(self, db: sqlite3.Connection, match: str | None, page: list[str],
                     semantic: _Candidates | None) -> dict[str, int]:
        """The chunk each hit shows: its best keyword match (BM25 over chunk
        text, heading and file name), else its nearest chunk, else its first."""
        best: dict[str, int] = {}
        if match and page:
            # One pass over the matching chunks, best first (as fast as FTS5 gets: a rowid IN (...) filter
            # beside MATCH costs a lookup per row, 5x slower for a page of 100).
            weights = ", ".join(str(float(w)) for w in self.column_weights)
            wanted = set(page)
            rows = db.execute(
                f"SELECT c.document_id, c.id, -f.score FROM ("
                f"  SELECT rowid, bm25(chunks_fts, {weights}) AS score FROM chunks_fts"
                f"  WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?) AS f "
                f"JOIN chunks AS c ON c.id = f.rowid", (match, self.keyword_depth)).fetchall()
            best = _best_per_document([r for r in rows if r[0] in wanted]).best_chunk
        for d in page:
            if d not in best and semantic is not None and d in semantic.best_chunk:
                best[d] = semantic.best_chunk[d]
        missing = [d for d in page if d not in best]
        if missing:
            best.update(db.execute(
                "SELECT document_id, min(id) FROM chunks WHERE document_id IN (SELECT value FROM json_each(?)) "
                "GROUP BY document_id", (json.dumps(missing),)).fetchall())
        return best

    def _expanded(self, db: sqlite3.Connection, match: str, first: _Candidates) -> _Candidates:
        """Keyword pseudo-relevance feedback (RM3, Lavrenko and Croft's relevance
        model mixed with the query): the words of the first pass's best chunks
        of its top `expand_docs` documents, each chunk weighted by its share of
        exp(BM25) and each word by its frequency in the chunk, give the
        `expand_terms` most likely words; the query becomes (1 - expand_weight)
        of its own terms plus expand_weight of those, and BM25 runs again. FTS5
        weighs every phrase of a MATCH expression alike, so the weights are
        quantised into repetitions of a phrase (1 to _EXPAND_LEVELS; repeating
        a phrase in an OR expression adds its BM25 term again). Finds relevant
        documents written in other words than the query's. SciFact (docs/
        QUALITY.md): hybrid Recall@100 up (.953 -> .966 on held-out test
        qrels) but nDCG@10 down (.736 -> .723), so it is off by default."""
        top = first.top(self.expand_docs)
        if not top:
            return first
        texts: dict[str, list[str]] = {}
        for doc_id, text in db.execute(
                "SELECT document_id, text FROM chunks WHERE document_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY document_id, ordinal", (json.dumps(top),)):
            texts.setdefault(doc_id, []).append(text)
        best = first.scores[top[0]]
        model: dict[str, float] = {}
        for doc_id in top:
            words = [w for w in _WORD.findall(" ".join(texts.get(doc_id, ())).lower())
                     if w not in _STOPWORDS and not w.isdigit() and len(w) > 1][:_EXPAND_WORDS]
            weight = float(np.exp(first.scores[doc_id] - best))  # the chunk's likelihood, up to a constant
            for w in words:
                model[w] = model.get(w, 0.0) + weight / len(words)
        terms = sorted(model, key=model.__getitem__, reverse=True)[:self.expand_terms]
        mass = sum(model[t] for t in terms)
        if not mass:
            return first
        original = match.split(" OR ")  # fts_query's phrases, each '"..."'
        weights = {p: (1 - self.expand_weight) / len(original) for p in original}
        for t in terms:
            weights[f'"{t}"'] = weights.get(f'"{t}"', 0.0) + self.expand_weight * model[t] / mass
        peak = max(weights.values())
        phrases = []
        for phrase, w in sorted(weights.items(), key=lambda kv: -kv[1]):
            reps = round(_EXPAND_LEVELS * w / peak)
            if reps or phrase in original:  # the user's own terms always stay
                phrases += [phrase] * max(reps, 1)
        return self._keyword(db, " OR ".join(phrases))

    def _dense(self, db: sqlite3.Connection, query_vector: np.ndarray) -> _Dense:
        """The query's cosine to every chunk, and each document's best."""
        matrix, passages = self._load_matrix(db)
        q = np.asarray(query_vector, dtype=np.float32).ravel()
        if len(matrix.chunk_ids) and q.shape[0] != matrix.vectors.shape[1]:
            raise ValueError(f"query vector has {q.shape[0]} dimensions, the index {matrix.vectors.shape[1]}")
        return _Dense(matrix, q / (np.linalg.norm(q) or 1.0), passages, self.passage_weight)

    def _rank(self, keyword: _Candidates | None, dense: _Dense | None) -> tuple[dict[str, float], _Candidates | None]:
        """Document scores, and the semantic candidates they came from. With
        `prf_docs`, a hybrid search runs twice: pseudo-relevance feedback
        (Rocchio) moves the query vector towards the mean of the documents the
        first pass ranks highest (weight `prf_weight`), and the second pass
        fuses the keyword side with the moved vector's neighbours."""
        semantic = dense.top(self.candidates) if dense is not None else None
        scores = self._fuse(keyword, semantic, dense)
        if self.prf_docs and self.prf_weight and keyword is not None and dense is not None and scores:
            first = sorted(scores, key=scores.__getitem__, reverse=True)[:self.prf_docs]
            dense = dense.moved(first, self.prf_weight)
            semantic = dense.top(self.candidates)
            scores = self._fuse(keyword, semantic, dense)
        return scores, semantic

    def _fuse(self, keyword: _Candidates | None, semantic: _Candidates | None,
              dense: _Dense | None = None) -> dict[str, float]:
        """Document scores: one retriever's own, or both fused over the union
        of their candidates. Every candidate has its real semantic score (from
        `dense`), so a keyword match outside the nearest `candidates` is not
        counted as semantically worthless; a semantic candidate without any
        query term has no keyword score, i.e. the keyword floor."""
        if keyword is None or semantic is None:
            only = keyword or semantic
            return {} if only is None else dict(only.scores)
        if self.fusion == "rrf":
            fused: dict[str, float] = {}
            for cands in (keyword, semantic):
                for rank, d in enumerate(cands.top(self.candidates), start=1):
                    fused[d] = fused.get(d, 0.0) + 1.0 / (self.rrf_k + rank)
            return fused
        union = keyword.scores.keys() | semantic.scores.keys()
        sem_scores = {d: semantic.scores[d] if d in semantic.scores else dense.score(d) if dense else float("-inf")
                      for d in union}
        scale = _zscore if self.fusion == "zscore" else _minmax
        kw, unmatched = scale(keyword.scores, keyword.top(self.candidates), floor=0.0)
        sem, _ = scale(sem_scores, semantic.top(self.candidates))
        w = self.semantic_weight
        return {d: (1 - w) * kw.get(d, unmatched) + w * sem[d] for d in union}

    def _documents(self, db: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[str, str, str]]:
        rows = db.execute("SELECT document_id, filename, category, fields FROM documents "
                          "WHERE document_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))
        return {r[0]: r[1:] for r in rows}

    def _snippets(self, db: sqlite3.Connection, match: str | None, chunk_ids: list[int]) -> dict[int, str]:
        """FTS5 snippets where the chunk contains a query term, else its opening words;
        HTML-escaped, with the terms in <mark>."""
        out: dict[int, str] = {}
        if match and chunk_ids:
            rows = db.execute(
                "SELECT rowid, snippet(chunks_fts, 0, ?, ?, ?, 32) FROM chunks_fts "
                "WHERE chunks_fts MATCH ? AND rowid IN (SELECT value FROM json_each(?))",
                (_OPEN, _CLOSE, _ELLIPSIS, match, json.dumps(chunk_ids)))
            out = {rowid: _html(text) for rowid, text in rows if _OPEN in text}
        missing = [c for c in chunk_ids if c not in out]
        if missing:
            rows = db.execute("SELECT id, text FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                              (json.dumps(missing),))
            out.update((rowid, _lead(text)) for rowid, text in rows)
        return out

    # ------------------------------------------------------------------ plumbing
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
        return db

    def _write(self) -> "_WriteTransaction":
        return _WriteTransaction(self._db())

    def _check_dimension(self, db: sqlite3.Connection, dimension: int) -> None:
        db.execute("INSERT OR IGNORE INTO meta VALUES ('dimension', ?)", (dimension,))
        stored = db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()[0]
        if stored != dimension:
            raise ConfigError(f"the index at {self.path} holds {stored}-dimensional vectors, got {dimension}: "
                              "the embedding model changed, so delete the index file and re-index")

    def _load_matrix(self, db: sqlite3.Connection) -> tuple[_Matrix, _Matrix]:
        """The cached chunk and passage vectors, brought up to date when any
        writer bumped the generation. Row ids only grow (AUTOINCREMENT) and rows
        are never updated in place, so a refresh drops the ids that are gone and
        reads only the newer rows: cheap while an index worker writes during
        searches. Passages share the chunks' document positions."""
        generation = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
        with self._matrix_lock:
            if self._matrix is not None and self._matrix.generation == generation:
                return self._matrix, self._passages
            chunks = _refresh(db, "chunks", "chunks_document", self._matrix, generation, None)
            passages = _refresh(db, "passages", "passages_document", self._passages, generation, chunks)
            self._matrix, self._passages = chunks, passages
            return chunks, passages


def _refresh(db: sqlite3.Connection, table: str, index: str, m: _Matrix | None, generation: int,
             owner: _Matrix | None) -> _Matrix:
    """One table's vectors (chunks or passages) as of `generation`, from the
    previous matrix plus the newer rows. With `owner` (the chunk matrix), rows
    take its document positions; a row of a document it lacks is skipped."""
    if m is None:
        m = _Matrix(0, np.zeros(0, np.int64), np.zeros(0, np.int32), [], np.zeros((0, 0), np.float32))
    last = int(m.chunk_ids[-1]) if len(m.chunk_ids) else 0
    rows = db.execute(f"SELECT id, document_id, vector FROM {table} WHERE id > ? ORDER BY id", (last,)).fetchall()
    # Both reads below scan the small index, not the table with its vectors (10x faster).
    survivors = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - len(rows)
    if survivors == len(m.chunk_ids):  # nothing deleted: skip the id scan
        keep = np.ones(len(m.chunk_ids), dtype=bool)
    else:
        ids = db.execute(f"SELECT id FROM {table} INDEXED BY {index} WHERE id <= ?", (last,))
        keep = np.isin(m.chunk_ids, np.fromiter((r[0] for r in ids), np.int64), assume_unique=True)
    if owner is not None:
        doc_ids, position = owner.doc_ids, owner.position
        rows = [r for r in rows if r[1] in position]
    else:
        doc_ids = list(m.doc_ids)  # deleted documents' ids stay: unreferenced, harmless
        position = {d: i for i, d in enumerate(doc_ids)}
        for r in rows:
            if r[1] not in position:
                position[r[1]] = len(doc_ids)
                doc_ids.append(r[1])
    vectors = m.vectors if keep.all() else m.vectors[keep]  # no copy when nothing was deleted
    row_ids, doc_index = m.chunk_ids[keep], m.doc_index[keep]
    if rows:
        new = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), -1)
        vectors = np.concatenate([vectors, new]) if len(vectors) else new
        row_ids = np.concatenate([row_ids, np.fromiter((r[0] for r in rows), np.int64, len(rows))])
        doc_index = np.concatenate([doc_index, np.fromiter((position[r[1]] for r in rows), np.int32)])
    return _Matrix(generation, row_ids, doc_index, doc_ids, vectors, position)


def _unit_rows(vectors) -> np.ndarray:
    """float32 rows scaled to unit length (cosine = dot); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype("<f4")


class _WriteTransaction:
    """BEGIN IMMEDIATE (take the write lock up front, so two writers queue on
    busy_timeout rather than deadlock), bump the generation, commit or roll back."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Retryable(f"search index is busy: {exc}") from exc
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.db.execute("ROLLBACK")
            if issubclass(exc_type, sqlite3.OperationalError):
                raise Retryable(f"search index write failed: {exc}") from exc
            return
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        self.db.execute("COMMIT")


def _best_per_document(rows: list[tuple[str, int, float]]) -> _Candidates:
    cands = _Candidates({}, {})
    for doc_id, chunk_id, score in rows:
        if score > cands.scores.get(doc_id, float("-inf")):
            cands.scores[doc_id], cands.best_chunk[doc_id] = score, chunk_id
    return cands


def _minmax(scores: dict[str, float], top: list[str], floor: float | None = None) -> tuple[dict[str, float], float]:
    """Scores scaled so the retriever's own top documents span [0, 1] (the
    second value: the scaled score of a document the retriever lacks, 0).
    With a `floor` (keyword: BM25's "no match"), a score below that range
    clips to 0, so a weak match never ranks under no match at all. Without
    one (semantic: every document has a cosine), it goes on below 0: a
    keyword match far from the query keeps that distance. SciFact (train):
    hybrid nDCG@10 .748 -> .750 and Recall@100 .969 -> .971 against clipping
    both sides."""
    if not top:
        return {d: 0.0 for d in scores}, 0.0
    span = scores[top[0]] - (lo := scores[top[-1]])
    if span == 0:
        return {d: float(s >= lo) for d, s in scores.items()}, 0.0
    if floor is None:
        return {d: (s - lo) / span for d, s in scores.items()}, 0.0
    return {d: max(0.0, (s - lo) / span) for d, s in scores.items()}, 0.0


def _zscore(scores: dict[str, float], top: list[str], floor: float | None = None) -> tuple[dict[str, float], float]:
    """Standard scores against the retriever's own top documents (their mean
    and spread), so a clear winner stands out by as many deviations as it
    leads; `floor` (BM25's 0: no match) is scaled alike for a document the
    retriever lacks, else the lowest of the top."""
    if not top:
        return {d: 0.0 for d in scores}, 0.0
    values = np.array([scores[d] for d in top], dtype=np.float64)
    mean, spread = float(values.mean()), float(values.std()) or 1.0
    lowest = (float(values.min()) - mean) / spread
    scaled = {d: ((s - mean) / spread if np.isfinite(s) else lowest) for d, s in scores.items()}
    return scaled, ((floor - mean) / spread if floor is not None else lowest)


def _html(snippet: str) -> str:
    return html.escape(snippet).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>").replace(_ELLIPSIS, "…")


def _lead(text: str, words: int = 32) -> str:
    head = text.split()
    return html.escape(" ".join(head[:words])) + ("…" if len(head) > words else "")


def _dumps(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, default=str)
