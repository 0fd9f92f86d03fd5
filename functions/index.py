"""index: document.extracted in, document.indexed out; document.deleted in,
the document gone from index, artefacts and metadata.

Chunks with Docling's HybridChunker (MiniLM's tokenizer), embeds the chunks
and the document's sentences (the passage view) in batches, and replaces the
document in the search index (idempotent)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from cloudevents.http import CloudEvent

from doclane.events.envelope import derive
from doclane.events.models import DocumentDeletedV1, DocumentExtractedV1
from doclane.functions import chunking
from doclane.functions.adapters.minilm import model_path
from doclane.functions.common import require_parsed
from doclane.functions.observability import metrics
from doclane.functions.ports import Chunk, IndexedDocument, ParsedDocument
from doclane.functions.runtime import Function


def handle(event: CloudEvent, data, ctx) -> list[CloudEvent]:
    if isinstance(data, DocumentDeletedV1):
        return _delete(data, ctx)
    return _index(event, data, ctx)


def _index(event: CloudEvent, data: DocumentExtractedV1, ctx) -> list[CloudEvent]:
    doc_id = data.document_id
    record = ctx.metadata.get(doc_id)
    if record is None:
        return []
    parsed = require_parsed(ctx, data.parsed_key)
    chunks, vectors, passage_vectors = embed(parsed, doc_id, ctx.embedder, ctx.settings)
    fields = {k: v.model_dump(exclude_none=True) for k, v in data.fields.items()}
    ctx.index.upsert(IndexedDocument(
        document_id=doc_id, filename=data.filename, category=data.category, fields=fields,
        created_at=record.created_at or datetime.now(timezone.utc).isoformat(),
    ), chunks, vectors, passage_vectors=passage_vectors, text=parsed.text)
    ctx.metadata.advance(doc_id, "indexed", error=None)
    return [derive(event, "document.indexed", {
        "document_id": doc_id, "filename": data.filename, "category": data.category,
        "chunks": len(chunks), "fields": fields, "batch_id": data.batch_id,
    }, source="index")]


def texts(parsed: ParsedDocument, doc_id: str, embedder, settings) -> tuple[list[Chunk], list[str]]:
    """A document's chunks, and the texts to embed for it: the chunks' own,
    then its passages (one per sentence, `chunking.passages`; none with
    DOCLANE_SEARCH_PASSAGES=false). The eval and the bench's sequential floor
    call this too, so they measure the index function's own work."""
    chunks = chunking.chunk(parsed, doc_id, model_path(), max_tokens=getattr(embedder, "max_tokens", 256),
                            chunk_tokens=settings.chunk_tokens)
    extra = chunking.passages(chunks, parsed.title) if settings.search_passages and chunks else []
    return chunks, [c.text for c in chunks] + extra


def embed(parsed: ParsedDocument, doc_id: str, embedder, settings) -> tuple[list[Chunk], np.ndarray, np.ndarray]:
    """The chunks, their vectors and the passage vectors, embedded in one batched call."""
    chunks, to_embed = texts(parsed, doc_id, embedder, settings)
    with metrics.EMBED_SECONDS.time():
        vectors = np.asarray(embedder.embed(to_embed), dtype=np.float32)
    return chunks, vectors[:len(chunks)], vectors[len(chunks):]


def _delete(data: DocumentDeletedV1, ctx) -> list[CloudEvent]:
    ctx.index.delete(data.document_id)
    record = ctx.metadata.get(data.document_id)
    if record is not None:
        for obj in list(ctx.artefacts.list(prefix=f"{data.document_id}/")):
            ctx.artefacts.delete(obj.key)
        ctx.metadata.delete(data.document_id)
    return []


FUNCTION = Function(
    name="index",
    consumes=("document.extracted", "document.deleted"),
    emits=("document.indexed", "document.failed"),
    handle=handle,
    lease_seconds=600.0,
)
