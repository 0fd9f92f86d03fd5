"""Small helpers the stage functions share."""

from __future__ import annotations

import hashlib
import json
import uuid

from cloudevents.http import CloudEvent

from doclane.events.envelope import derive
from doclane.functions.errors import NotFound, Permanent
from doclane.functions.ports import ParsedDocument

_DOC_NAMESPACE = uuid.UUID("7d0c5e8a-1f7e-4a8e-b3c4-5a9e2f6d7c11")


def document_id(bucket: str, key: str) -> str:
    """A document is an object key in a bucket: the same key is the same
    document (a new upload of it is a new version), on every platform."""
    return str(uuid.uuid5(_DOC_NAMESPACE, f"{bucket}/{key}"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parsed_key(document_id: str, sha: str) -> str:
    return f"{document_id}/{sha[:16]}.parsed.json"


def save_parsed(ctx, key: str, doc: ParsedDocument) -> None:
    ctx.artefacts.put(key, json.dumps(doc.to_json(), ensure_ascii=False).encode(), "application/json")


def load_parsed(ctx, key: str) -> ParsedDocument:
    return ParsedDocument.from_json(json.loads(ctx.artefacts.get(key)))


def require_parsed(ctx, key: str) -> ParsedDocument:
    """The parsed document a later stage needs. Missing, it cannot appear by
    retrying: Permanent, so the binding dead-letters the event and fails the
    document with this reason."""
    try:
        return load_parsed(ctx, key)
    except NotFound:
        raise Permanent(f"the parsed document {key} is missing from the artefact store") from None


def fail(event: CloudEvent, ctx, *, stage: str, reason: str, error_type: str, document_id: str,
         filename: str | None = None, batch_id: str | None = None) -> CloudEvent:
    """Mark the document failed and make the document.failed event that says why."""
    try:
        ctx.metadata.update(document_id, status="failed", error=f"{stage}: {reason}")
    except NotFound:
        pass
    return derive(event, "document.failed", {
        "document_id": document_id, "stage": stage, "reason": reason, "error_type": error_type,
        "filename": filename, "batch_id": batch_id,
    }, source=stage, subject=document_id, key=document_id)  # keyed: one notification (several
    # S3 records) may fail several documents, and each needs an event id of its own
