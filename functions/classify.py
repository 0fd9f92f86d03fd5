"""classify: document.uploaded in, document.classified (or .failed) out.

Parses the document (Docling, in an isolated process with a timeout: a PDF
that crashes or hangs the parser fails only itself), keeps the parsed form
in the artefact store for the later stages, and gives it a category."""

from __future__ import annotations

import logging

from cloudevents.http import CloudEvent

from doclane.events.envelope import derive
from doclane.events.models import DocumentUploadedV1
from doclane.functions.common import fail, parsed_key, save_parsed, sha256
from doclane.functions.errors import NotFound, ParseError
from doclane.functions.observability import metrics
from doclane.functions.runtime import Function

log = logging.getLogger("doclane.classify")


def handle(event: CloudEvent, data: DocumentUploadedV1, ctx) -> list[CloudEvent]:
    doc_id = data.document_id
    record = ctx.metadata.get(doc_id)
    if record is None or record.sha256 != data.sha256:
        log.info("%s was deleted or replaced since this upload; skipped", doc_id)
        return []
    failed = dict(stage="classify", document_id=doc_id, filename=data.filename, batch_id=data.batch_id)
    try:
        content = ctx.objects(data.bucket).get(data.key)
    except NotFound:
        return [fail(event, ctx, reason=f"{data.key} is no longer in the bucket", error_type="missing", **failed)]
    if sha256(content) != data.sha256:
        log.info("%s changed since this upload; its own notification will bring it", data.key)
        return []
    try:
        with metrics.PARSE_SECONDS.time():
            parsed = ctx.parser.parse(content, data.filename, data.content_type)
    except ParseError as exc:
        return [fail(event, ctx, reason=str(exc), error_type="parse_error", **failed)]

    key = parsed_key(doc_id, data.sha256)
    save_parsed(ctx, key, parsed)
    result = ctx.classifier.classify(parsed, data.filename)
    ctx.metadata.advance(doc_id, "classified", category=result.category,
                         category_confidence=round(result.confidence, 4), error=None)
    return [derive(event, "document.classified", {
        "document_id": doc_id, "filename": data.filename, "category": result.category,
        "confidence": round(result.confidence, 4), "classifier": result.classifier,
        "parsed_key": key, "pages": parsed.pages, "batch_id": data.batch_id,
    }, source="classify")]


FUNCTION = Function(
    name="classify",
    consumes=("document.uploaded",),
    emits=("document.classified", "document.failed"),
    handle=handle,
    lease_seconds=600.0,
)
