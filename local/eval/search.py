"""Search quality on a BEIR folder, through the index function's own path.

A BEIR folder holds corpus.jsonl ({"_id", "title", "text"}), queries.jsonl
({"_id", "text"}) and qrels/<split>.tsv (query-id, corpus-id, score, with a
header). Each corpus entry becomes a ParsedDocument (title + text) and goes
through `chunking.chunk`, the MiniLM embedder and `EmbeddedIndex.upsert`, as
the index function does it; each judged query then runs in every mode through
`EmbeddedIndex.search`, its vector from the same embedder, as GET /search
does. Latency is per query: embedding it (not in keyword mode) plus the search.
The embedder is the pipeline's (DOCLANE_EMBEDDER_BACKEND: torch, onnx or
onnx-int8), and the cache keeps each backend's vectors apart.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from doclane.functions.errors import ConfigError
from doclane.local.eval import metrics
from doclane.local.eval.cache import CachedEmbedder

MODES = ("keyword", "semantic", "hybrid")
DEPTH = 100  # Recall@100 needs the first hundred documents


@dataclass(frozen=True)
class BeirSet:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load(folder: Path, split: str = "test", limit_queries: int | None = None) -> BeirSet:
    """The corpus, the judged queries (first `limit_queries` of them), their qrels."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            have = ", ".join(sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))) or "none"
            raise ConfigError(f"{path} is missing: a BEIR folder has corpus.jsonl, queries.jsonl and "
                              f"qrels/<split>.tsv (splits here: {have}; pass --split)")
    corpus = {str(o["_id"]): (str(o.get("title") or ""), str(o.get("text") or ""))
              for o in _jsonl(folder / "corpus.jsonl")}
    queries = {str(o["_id"]): str(o["text"]) for o in _jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # the header, or a blank line
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    judged = [q for q in qrels if q in queries and any(r > 0 for r in qrels[q].values())]
    if not judged:
        raise ConfigError(f"no query of {qrels_path} has a text in queries.jsonl and a relevant document")
    judged = judged[:limit_queries] if limit_queries else judged
    return BeirSet(corpus, {q: queries[q] for q in judged}, {q: qrels[q] for q in judged})


def evaluate(folder: Path, *, split: str = "test", modes: Iterable[str] = MODES, cache_dir: Path | None = None,
             limit_queries: int | None = None, embedder=None, progress=print, **index_options: Any) -> dict:
    """Index the corpus (embeddings from the cache where it has them), run the
    queries, and return {"dataset", "split", "index": {...}, "modes": {mode: figures}}."""
    from doclane.functions.adapters import minilm

    data = load(folder, split, limit_queries)
    embedder = CachedEmbedder(embedder or minilm.shared(), cache_dir)
    work = Path(cache_dir) if cache_dir else Path(folder)
    index, ingest = _ingest(data, embedder, work / f"index-{Path(folder).name}.sqlite", progress, index_options)
    try:
        figures = {mode: _run_queries(data, index, embedder, mode) for mode in modes}
    finally:
        index.close()
    return {"dataset": str(folder), "split": split, "embedder": f"{embedder.name} ({embedder.backend})",
            "index": ingest, "modes": figures}


def _ingest(data: BeirSet, embedder: CachedEmbedder, path: Path, progress, options: dict):
    """Rebuild the index file from scratch: chunk, embed (cached), upsert."""
    from doclane.functions import index as index_function
    from doclane.functions.adapters.embedded_index import EmbeddedIndex
    from doclane.functions.ports import IndexedDocument, ParsedDocument

    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    from doclane.functions.settings import load as load_settings

    settings = load_settings()  # as the index function chunks and embeds (DOCLANE_CHUNK_TOKENS, _SEARCH_PASSAGES)
    t0 = time.perf_counter()
    prepared = {}
    for doc_id, (title, text) in data.corpus.items():
        body = f"{title}\n\n{text}" if title else text
        doc = ParsedDocument(markdown=f"# {title}\n\n{text}" if title else text, text=body, title=title or None)
        prepared[doc_id] = (*index_function.texts(doc, doc_id, embedder, settings), body)
    chunk_s = time.perf_counter() - t0
    chunks = sum(len(c) for c, _, _ in prepared.values())
    texts = [t for _, ts, _ in prepared.values() for t in ts]
    progress(f"{len(prepared)} documents, {chunks} chunks and {len(texts) - chunks} passages; "
             "embedding what the cache lacks")
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)  # one call: the cache is written once, the model sees full batches
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    options = {**EmbeddedIndex.settings_options(settings), **options}  # as the pipeline sets it up, then the command
    index = EmbeddedIndex(path, **options)
    at = 0
    for doc_id, (chunk_list, ts, body) in prepared.items():
        title = data.corpus[doc_id][0]
        index.upsert(IndexedDocument(doc_id, title[:200] or doc_id, "document", {}, "2024-01-01T00:00:00+00:00"),
                     chunk_list, vectors[at: at + len(chunk_list)],
                     passage_vectors=vectors[at + len(chunk_list): at + len(ts)], text=body)
        at += len(ts)
    return index, {"documents": len(prepared), "chunks": chunks, "passages": len(texts) - chunks,
                   "embedded": embedder.misses, "from_cache": embedder.hits, "chunk_s": round(chunk_s, 2),
                   "embed_s": round(embed_s, 2), "upsert_s": round(time.perf_counter() - t0, 2), "options": options}


def _run_queries(data: BeirSet, index, embedder: CachedEmbedder, mode: str) -> dict:
    """Every query as GET /search runs it; the query vector comes from the
    real embedder (never the cache) so latency is honest."""
    run: dict[str, list[str]] = {}
    latency: list[float] = []
    for qid, text in data.queries.items():
        t0 = time.perf_counter()
        vector = embedder.inner.embed([text])[0] if mode != "keyword" else None
        result = index.search(text, vector, mode=mode, limit=DEPTH)
        latency.append(time.perf_counter() - t0)
        run[qid] = [h.document_id for h in result.hits]
    return {**metrics.retrieval(run, data.qrels), **metrics.percentiles(latency)}


def render(report: dict) -> str:
    """The figures as a plain table."""
    ix = report["index"]
    lines = [f"{report['dataset']} ({report['split']}): {ix['documents']} documents, {ix['chunks']} chunks, "
             f"{ix.get('passages', 0)} passages ({ix['embedded']} embedded, {ix['from_cache']} from cache), {report.get('embedder', '')}",
             f"{'mode':<10}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}{'queries':>9}"]
    for mode, m in report["modes"].items():
        lines.append(f"{mode:<10}{m['ndcg@10']:>9.4f}{m['recall@100']:>8.4f}{m['mrr@10']:>8.4f}"
                     f"{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}{m['queries']:>9}")
    return "\n".join(lines)


def _jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{path} line {n} is not JSON: {exc}") from None
