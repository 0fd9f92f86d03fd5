"""index: document.extracted in, document.indexed out; document.deleted in,
the document gone from index, artefacts and metadata.

Chunks with Docling's HybridChunker (MiniLM's tokenizer), embeds the chunks
in batches, and replaces the document in the search index (idempotent)."""

from __future__ import annotations

from datetime import datetime, timezone

from cloudevents.http import CloudEvent

from doclane.events.envelope import derive
from doclane.events.models import DocumentDeletedV1, DocumentExtractedV1
from doclane.functions import chunking
from doclane.functions.adapters.minilm import model_path
from doclane.functions.common import require_parsed
from doclane.functions.observability import metrics
from doclane.functions.ports import IndexedDocument
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
    chunks = chunking.chunk(parsed, doc_id, model_path(), max_tokens=getattr(ctx.embedder, "max_tokens", 256),
                            chunk_tokens=ctx.settings.chunk_tokens)
    with metrics.EMBED_SECONDS.time():
        vectors = ctx.embedder.embed([c.text for c in chunks])
    fields = {k: v.model_dump(exclude_none=True) for k, v in data.fields.items()}
    ctx.index.upsert(IndexedDocument(
        document_id=doc_id, filename=data.filename, category=data.category, fields=fields,
        created_at=record.created_at or datetime.now(timezone.utc).isoformat(),
    ), chunks, vectors)
    ctx.metadata.advance(doc_id, "indexed", error=None)
    return [derive(event, "document.indexed", {
        "document_id": doc_id, "filename": data.filename, "category": data.category,
        "chunks": len(chunks), "fields": fields, "batch_id": data.batch_id,
    }, source="index")]


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
