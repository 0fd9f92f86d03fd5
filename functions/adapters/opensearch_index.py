"""SearchIndex on OpenSearch (opensearch-py): one OpenSearch document per
chunk, hybrid search through a search pipeline.

Start-up (on first use, so a cluster that is briefly down does not poison
the adapter): read the cluster version from `GET /`, then apply what
`infra/opensearch/` holds: the index template (stemmed text fields, keyword
facet fields, `fields` as an unindexed object, a `knn_vector` with HNSW and
cosine whose dimension is the embedder's), the index itself, and the search
pipelines: normalization-processor (min_max + weighted arithmetic_mean),
and score-ranker-processor (RRF) when the cluster is 2.19 or newer.

Writes: chunk ids are deterministic (`<document_id>:<ordinal>`), so an upsert
bulk-overwrites the chunks in place and then deletes the ordinals the new
version no longer has; the document never disappears from search meanwhile.
A document without chunks still gets chunk 0 (no text, no vector), so
`count()` (chunks with ordinal 0) counts documents.

Search mirrors the embedded index (see embedded_index.py):
  keyword   multi_match (BM25) over text, heading^2, filename^3
  semantic  knn on the vector field, k = candidates
  hybrid    the `hybrid` query with both, through the pipeline
Results are per document: the best chunk of each document (the top chunks
are grouped client-side: `collapse` with a hybrid query needs OpenSearch 3.1,
grouping works from 2.13 on).

Where it differs from the embedded index (whose choices were measured on
SciFact, docs/QUALITY.md): the pipeline normalises each sub-query over the
chunks it returned, so a keyword match outside the knn's k counts as
semantically 0 (the embedded index gives it its real cosine); `zscore`
fusion falls back to min-max (a z_score pipeline needs OpenSearch 3.0); and
pseudo-relevance feedback (`prf_docs`, and the keyword feedback `expand_docs`)
is not applied (it would cost a second round trip). None of the three moved SciFact's hybrid nDCG@10 by more than
0.004 in the embedded index, so the two stay comparable. The category filter is a `post_filter`, which
leaves aggregations alone, so facets count documents before the filter and
hits come after it, as in the embedded index; `total` is the number of
matching documents (a cardinality aggregation on document_id).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import logging
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from doclane.functions.adapters.embedded_index import FUSIONS, MODES, _lead
from doclane.functions.errors import ConfigError, Permanent, Retryable
from doclane.functions.ports import Chunk, Hit, IndexedDocument, SearchResult, check_search_args

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra" / "opensearch"
PIPELINES = {"minmax": "doclane-hybrid-minmax", "rrf": "doclane-hybrid-rrf"}
MIN_VERSION = (2, 13)  # hybrid query with aggregations and post_filter
RRF_VERSION = (2, 19)  # score-ranker-processor
MAX_WINDOW = 10_000  # index.max_result_window default
KEYWORD_FIELDS = ["text", "heading^2", "filename.text^3"]
HIGHLIGHT_CHARS = 200


class OpenSearchIndex:
    """The OpenSearch `SearchIndex` (see module doc)."""

    def __init__(
        self, url: str, index: str = "doclane-chunks", dimension: int = 384, *, fusion: str = "minmax",
        semantic_weight: float = 0.5, candidates: int = 100, timeout: float = 30.0, verify_certs: bool = True,
        refresh: str = "wait_for", infra_dir: str | Path = INFRA_DIR, client: Any = None,
    ):
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
        if not 0.0 <= semantic_weight <= 1.0:
            raise ConfigError(f"semantic_weight must lie in [0, 1], got {semantic_weight}")
        self.url, self.index, self.dimension = url, index, int(dimension)
        self.fusion, self.semantic_weight, self.candidates = fusion, semantic_weight, candidates
        self.refresh = refresh  # "wait_for": a document is searchable when upsert returns, as with the embedded index
        self.infra_dir = Path(infra_dir)
        self.version: tuple[int, ...] | None = None
        self.pipeline: str | None = None
        self._ready_lock = threading.Lock()
        if client is None:
            OpenSearch = _opensearchpy().OpenSearch
            # The transport retries a dropped connection or a 502/503/504 at once;
            # anything longer is the bus's job (Retryable, with back-off).
            client = OpenSearch(hosts=[url], timeout=timeout, max_retries=2, retry_on_timeout=True,
                                verify_certs=verify_certs, ssl_show_warn=verify_certs)
        self.client = client

    @classmethod
    def from_settings(cls, settings, dimension: int) -> "OpenSearchIndex":
        return cls(settings.opensearch_url, settings.opensearch_index, dimension, fusion=settings.search_fusion,
                   semantic_weight=settings.search_semantic_weight, verify_certs=settings.opensearch_verify_certs)

    # ------------------------------------------------------------------ start-up
    def ensure(self) -> None:
        """Template, index and pipelines in place (idempotent; once per process)."""
        if self.pipeline is not None:
            return
        with self._ready_lock:
            if self.pipeline is not None:
                return
            with _translated("reading the cluster version", self.url, config=True):
                info = self.client.info()
            self.version = _version(info)
            if (info.get("version") or {}).get("distribution", "opensearch") != "opensearch" or self.version < MIN_VERSION:
                raise ConfigError(f"DOCLANE_OPENSEARCH_URL={self.url} answers as {info.get('version')}: doclane needs "
                                  f"OpenSearch {'.'.join(map(str, MIN_VERSION))} or newer (hybrid query with aggregations)")
            with _translated("applying the index template", self.url, config=True):
                self.client.indices.put_index_template(name=self.index, body=self._template())
                if not self.client.indices.exists(index=self.index):
                    self._create_index()
                self._check_mapping()
            with _translated("applying the search pipelines", self.url, config=True):
                self.client.search_pipeline.put(id=PIPELINES["minmax"], body=self._pipeline("minmax"))
                if self.version >= RRF_VERSION:
                    self.client.search_pipeline.put(id=PIPELINES["rrf"], body=self._pipeline("rrf"))
            fusion = self.fusion
            if fusion == "zscore":  # no pipeline of ours for it yet (OpenSearch 3.0+ has the z_score technique)
                log.warning("the OpenSearch adapter has no z-score pipeline: hybrid search uses min-max fusion")
                fusion = "minmax"
            if fusion == "rrf" and self.version < RRF_VERSION:
                log.warning("OpenSearch %s has no score-ranker-processor (2.19+): hybrid search uses min-max fusion",
                            ".".join(map(str, self.version)))
                fusion = "minmax"
            self.pipeline = PIPELINES[fusion]

    def _create_index(self) -> None:
        try:
            self.client.indices.create(index=self.index)
        except _opensearchpy().exceptions.RequestError as exc:
            if not _reason(exc.info).startswith("resource_already_exists_exception"):
                raise  # another process creating it first is fine; anything else is not

    def _template(self) -> dict:
        template = self._read("index-template.json")
        template["index_patterns"] = [self.index]
        template["template"]["mappings"]["properties"]["vector"]["dimension"] = self.dimension
        return template

    def _pipeline(self, fusion: str) -> dict:
        pipeline = self._read(f"search-pipeline-{fusion}.json")
        if fusion == "minmax":  # weights in the order of the hybrid queries: keyword, semantic
            processor = pipeline["phase_results_processors"][0]["normalization-processor"]
            processor["combination"]["parameters"]["weights"] = [round(1 - self.semantic_weight, 6),
                                                                 round(self.semantic_weight, 6)]
        return pipeline

    def _read(self, name: str) -> dict:
        path = self.infra_dir / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}): the OpenSearch adapter applies the files in infra/opensearch/")

    def _check_mapping(self) -> None:
        """An existing index built for another embedding model cannot take our vectors."""
        mapping = self.client.indices.get_mapping(index=self.index)
        props = next(iter(mapping.values()), {}).get("mappings", {}).get("properties", {})
        have = (props.get("vector") or {}).get("dimension")
        if have is not None and int(have) != self.dimension:
            raise ConfigError(f"OpenSearch index {self.index} holds {have}-dimensional vectors, the embedder gives "
                              f"{self.dimension}: the embedding model changed, so set DOCLANE_OPENSEARCH_INDEX to a "
                              "new index name (or delete the index) and re-index")

    # ------------------------------------------------------------------ writes
    def upsert(self, doc: IndexedDocument, chunks: Sequence[Chunk], vectors: np.ndarray,
               passage_vectors: np.ndarray | None = None, text: str | None = None) -> None:
        """Bulk-index the chunks. Passage vectors and the whole text are not
        stored: this adapter ranks by chunk, on both sides (per-sentence knn
        and a per-document BM25 field are future work)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) and (vectors.ndim != 2 or len(vectors) != len(chunks)):
            raise ValueError(f"need one vector per chunk: {len(chunks)} chunks, vectors of shape {vectors.shape}")
        if any(c.document_id != doc.document_id for c in chunks):
            raise ValueError(f"every chunk must belong to document {doc.document_id}")
        if len(chunks) and vectors.shape[1] != self.dimension:
            raise ConfigError(f"OpenSearch index {self.index} takes {self.dimension}-dimensional vectors, got "
                              f"{vectors.shape[1]}: the embedding model changed; re-index into a new index")
        self.ensure()
        base = {"document_id": doc.document_id, "filename": doc.filename, "category": doc.category,
                "fields": doc.fields, "created_at": doc.created_at}
        sources = [{**base, "ordinal": c.ordinal, "text": c.text, "heading": c.heading, "vector": v.tolist()}
                   for c, v in zip(chunks, vectors)] or [{**base, "ordinal": 0, "text": "", "heading": None}]
        body: list[dict] = []
        for src in sources:
            body += [{"index": {"_index": self.index, "_id": chunk_id(doc.document_id, src["ordinal"])}}, src]
        with _translated(f"indexing {doc.document_id}", self.url):
            answer = self.client.bulk(body=body, refresh=self.refresh)
            _raise_item_errors(answer, doc.document_id)
            # The previous version may have had more chunks: drop the ordinals this one has not.
            self.client.delete_by_query(index=self.index, body={"query": {"bool": {"filter": [
                {"term": {"document_id": doc.document_id}},
                {"range": {"ordinal": {"gt": max(s["ordinal"] for s in sources)}}}]}}}, refresh=True)

    def delete(self, document_id: str) -> None:
        self.ensure()
        with _translated(f"deleting {document_id}", self.url):
            self.client.delete_by_query(index=self.index, body={"query": {"term": {"document_id": document_id}}},
                                        refresh=True)

    def update_fields(self, document_id: str, category: str, fields: dict[str, Any]) -> None:
        self.ensure()
        script = {"lang": "painless", "source": "ctx._source.category = params.category; ctx._source.fields = params.fields",
                  "params": {"category": category, "fields": fields}}
        with _translated(f"updating the fields of {document_id}", self.url):
            self.client.update_by_query(index=self.index, refresh=True, body={
                "query": {"term": {"document_id": document_id}}, "script": script})

    def count(self) -> int:
        self.ensure()
        with _translated("counting documents", self.url):
            return int(self.client.count(index=self.index, body={"query": {"term": {"ordinal": 0}}})["count"])

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ search
    def search(
        self, query: str, query_vector: np.ndarray | None, *, mode: str = "hybrid",
        category: str | None = None, limit: int = 10, offset: int = 0,
    ) -> SearchResult:
        check_search_args(mode, query_vector)
        text = (query or "").strip()
        keyword = {"multi_match": {"query": text, "fields": KEYWORD_FIELDS}} if mode != "semantic" and text else None
        semantic = None
        if mode != "keyword" and query_vector is not None:
            vector = np.asarray(query_vector, dtype=np.float32).ravel()
            if vector.shape[0] != self.dimension:
                raise ValueError(f"query vector has {vector.shape[0]} dimensions, the index {self.dimension}")
            semantic = {"knn": {"vector": {"vector": vector.tolist(), "k": self.candidates}}}
        if keyword is None and semantic is None:
            return SearchResult(total=0, hits=[], facets={"category": {}})
        self.ensure()
        body, params = self.search_body(keyword, semantic, text, category, limit, offset)
        with _translated("searching", self.url):
            answer = self.client.search(index=self.index, body=body, **params)
        return _result(answer, category, limit, offset)

    def search_body(self, keyword: dict | None, semantic: dict | None, text: str, category: str | None,
                    limit: int, offset: int) -> tuple[dict, dict]:
        """The request: top chunks (enough to fill the page with documents),
        facet and total aggregations, highlights; the pipeline for hybrid."""
        hybrid = keyword is not None and semantic is not None
        body: dict[str, Any] = {
            "size": min(MAX_WINDOW, max(self.candidates, 5 * (offset + limit))),
            "_source": {"excludes": ["vector"]},
            "query": {"hybrid": {"queries": [keyword, semantic]}} if hybrid else (keyword or semantic),
            "aggs": {
                "documents": {"cardinality": {"field": "document_id", "precision_threshold": 10_000}},
                "categories": {"terms": {"field": "category", "size": 100},
                               "aggs": {"documents": {"cardinality": {"field": "document_id",
                                                                      "precision_threshold": 10_000}}}},
            },
            # A plain match as highlight_query: highlighting never depends on the
            # hybrid/knn query, and a chunk without the terms shows its opening words.
            "highlight": {"pre_tags": ["<mark>"], "post_tags": ["</mark>"], "encoder": "html",
                          "fields": {"text": {"fragment_size": HIGHLIGHT_CHARS, "number_of_fragments": 1,
                                              "no_match_size": HIGHLIGHT_CHARS}},
                          **({"highlight_query": {"match": {"text": {"query": text}}}} if text else {})},
        }
        if category:
            body["post_filter"] = {"term": {"category": category}}
        return body, ({"search_pipeline": self.pipeline} if hybrid else {})


def chunk_id(document_id: str, ordinal: int) -> str:
    return f"{document_id}:{ordinal}"


def _result(answer: dict, category: str | None, limit: int, offset: int) -> SearchResult:
    """Chunk hits (best first) -> one Hit per document, paged; facets and total from the aggregations."""
    best: dict[str, dict] = {}
    for hit in (answer.get("hits") or {}).get("hits") or []:
        best.setdefault((hit.get("_source") or {}).get("document_id"), hit)
    best.pop(None, None)
    hits = []
    for doc_id, hit in list(best.items())[offset: offset + limit]:
        src = hit["_source"]
        fragments = (hit.get("highlight") or {}).get("text") or []
        hits.append(Hit(document_id=doc_id, filename=src.get("filename", ""), category=src.get("category", ""),
                        score=float(hit.get("_score") or 0.0),
                        snippet=" … ".join(fragments) if fragments else _lead(src.get("text") or ""),
                        fields=src.get("fields") or {}))
    aggs = answer.get("aggregations") or {}
    facets = {b["key"]: int(b["documents"]["value"]) for b in (aggs.get("categories") or {}).get("buckets", [])}
    total = facets.get(category, 0) if category else int((aggs.get("documents") or {}).get("value", len(best)))
    return SearchResult(total=total, hits=hits, facets={"category": facets})


def _version(info: dict) -> tuple[int, ...]:
    number = str((info.get("version") or {}).get("number", "0"))
    parts = []
    for piece in number.split("-")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


def _raise_item_errors(answer: dict, document_id: str) -> None:
    """A bulk answers 200 even when items failed: look at each item."""
    if not answer.get("errors"):
        return
    failed = [item.get("index") or next(iter(item.values())) for item in answer.get("items", [])]
    failed = [f for f in failed if f.get("error")]
    if not failed:
        return
    first = failed[0]
    reason = f"{len(failed)} chunk(s) of {document_id} not indexed: {_reason(first.get('error'))}"
    if any(f.get("status", 500) == 429 or f.get("status", 500) >= 500 for f in failed):
        raise Retryable(reason)
    raise Permanent(reason)


@contextmanager
def _translated(what: str, url: str, *, config: bool = False) -> Iterator[None]:
    """opensearch-py errors -> ours: unreachable, 429, 409 and 5xx are retryable;
    401/403 and (at start-up) 400 are configuration; other 4xx are permanent."""
    exceptions = _opensearchpy().exceptions
    OSConnectionError, TransportError = exceptions.ConnectionError, exceptions.TransportError
    try:
        yield
    except OSConnectionError as exc:
        raise Retryable(f"OpenSearch at {url} is unreachable while {what}: {exc.error}") from exc
    except TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else 500
        reason = f"OpenSearch answered {status} while {what}: {_reason(exc.info)}"
        if status in (409, 429) or status >= 500:
            raise Retryable(reason) from exc
        if status in (401, 403):
            raise ConfigError(reason + ": check the credentials in DOCLANE_OPENSEARCH_URL") from exc
        raise (ConfigError if config else Permanent)(reason) from exc


def _opensearchpy():
    """opensearch-py imports the PyPI package `events` (for its metrics); with
    the repository root on sys.path (pytest, `python -m` from a checkout) our
    own events/ folder would answer that import. Load the real one first."""
    current = sys.modules.get("events")
    if current is None or not hasattr(current, "Events"):
        root = Path(__file__).resolve().parents[2]
        path = [p for p in sys.path if Path(p or ".").resolve() != root]
        spec = importlib.machinery.PathFinder.find_spec("events", path)
        if spec is None or spec.loader is None:
            raise ConfigError("opensearch-py needs the `Events` package: run `make install`")
        module = importlib.util.module_from_spec(spec)
        sys.modules["events"] = module  # before running it: its own relative imports look it up there
        spec.loader.exec_module(module)
    import opensearchpy

    return opensearchpy


def _reason(info: Any) -> str:
    error = info.get("error", info) if isinstance(info, dict) else info
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(error)
