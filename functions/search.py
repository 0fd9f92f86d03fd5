"""search: the HTTP function behind GET /search.

  GET /search?q=&mode=hybrid|keyword|semantic&category=&limit=&offset=
  -> {"total", "results": [{document_id, filename, category, score, snippet, fields}],
      "facets": {"category": {...}}, "mode", "took_ms"}
"""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from doclane.functions.http import ctx, problem
from doclane.functions.ports import SEARCH_MODES

MODES = SEARCH_MODES
MAX_LIMIT = 100

bp = Blueprint("search", __name__)


def run(context, q: str, *, mode: str = "hybrid", category: str | None = None, limit: int = 10, offset: int = 0) -> dict:
    started = time.perf_counter()
    vector = context.embedder.embed([q])[0] if mode != "keyword" and q.strip() else None
    result = context.index.search(q, vector, mode=mode, category=category or None, limit=limit, offset=offset)
    return {
        "total": result.total,
        "results": [
            {"document_id": h.document_id, "filename": h.filename, "category": h.category,
             "score": round(float(h.score), 6), "snippet": h.snippet, "fields": h.fields}
            for h in result.hits
        ],
        "facets": result.facets,
        "mode": mode,
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
    }


@bp.get("/search")
def search():
    q = request.args.get("q", "")
    mode = request.args.get("mode", "hybrid")
    if mode not in MODES:
        return problem(400, "Bad mode", f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    try:
        limit = int(request.args.get("limit", 10))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        return problem(400, "Bad paging", "limit and offset must be whole numbers")
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        return problem(400, "Bad paging", f"limit must be 1..{MAX_LIMIT} and offset >= 0")
    if len(q) > 1000:
        return problem(400, "Query too long", "q may have at most 1000 characters")
    if mode == "semantic" and not q.strip():
        return problem(400, "No query", "semantic search needs words in q (keyword and hybrid take an empty q)")
    return jsonify(run(ctx(), q, mode=mode, category=request.args.get("category"), limit=limit, offset=offset))
