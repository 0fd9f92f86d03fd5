"""extract: document.classified in, document.extracted out: the fields its
category's schema calls for, each with a confidence."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from doclane.events.envelope import derive
from doclane.events.models import DocumentClassifiedV1
from doclane.functions.common import require_parsed
from doclane.functions.runtime import Function


def fields_json(fields) -> dict:
    return {name: {"value": f.value, "confidence": round(float(f.confidence), 4), "raw": f.raw}
            for name, f in fields.items()}


def handle(event: CloudEvent, data: DocumentClassifiedV1, ctx) -> list[CloudEvent]:
    doc_id = data.document_id
    if ctx.metadata.get(doc_id) is None:
        return []
    parsed = require_parsed(ctx, data.parsed_key)
    category = data.category if data.category in ctx.categories.names else "other"
    fields = fields_json(ctx.extractor.extract(parsed, category))
    ctx.metadata.advance(doc_id, "extracted", fields=fields)
    return [derive(event, "document.extracted", {
        "document_id": doc_id, "filename": data.filename, "category": category,
        "fields": fields, "parsed_key": data.parsed_key, "batch_id": data.batch_id,
    }, source="extract")]


FUNCTION = Function(
    name="extract",
    consumes=("document.classified",),
    emits=("document.extracted", "document.failed"),
    handle=handle,
    lease_seconds=300.0,
)
