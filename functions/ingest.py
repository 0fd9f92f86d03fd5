"""ingest: a bucket notification in, document.uploaded (or .deleted) out.

Registers each new object as a document, by content hash: the same bytes
under the same key are processed once however often the store notifies; the
same bytes under another key follow DOCLANE_DUPLICATE_POLICY (skip, reprocess
the original, or allow a second document)."""

from __future__ import annotations

import logging
import mimetypes
import uuid
from pathlib import PurePosixPath

from cloudevents.http import CloudEvent

from doclane.events.envelope import child_traceparent, derive, new_event
from doclane.events.models import BucketNotificationV1
from doclane.functions import limits, notifications
from doclane.functions.common import document_id, fail, sha256
from doclane.functions.errors import NotFound, Permanent
from doclane.functions.notifications import ObjectEvent
from doclane.functions.ports import DocumentRecord
from doclane.functions.runtime import Function

log = logging.getLogger("doclane.ingest")
_UPLOAD_NAMESPACE = uuid.UUID("3a1f6b2e-9c4d-4e7a-8b5f-0d2c6e9a1b34")


def handle(event: CloudEvent, data: BucketNotificationV1, ctx) -> list[CloudEvent]:
    try:
        objects = notifications.parse(data.model_dump())
    except notifications.NotNotification as exc:
        raise Permanent(f"not a bucket notification: {exc}") from None
    out: list[CloudEvent] = []
    for obj in objects:
        if _artefact(obj, ctx.settings):
            continue
        problem = limits.key_problem(obj.key)
        if problem:  # no store is asked for it: the folder store would resolve it as a path
            if obj.action == "created":
                out.append(_bad_key(event, obj, problem, ctx))
            continue
        if obj.action == "removed":
            out.append(_deleted(event, obj))
        else:
            out.extend(_created(event, obj, ctx))
    return out


def _artefact(obj: ObjectEvent, settings) -> bool:
    """doclane's own parsed documents in the bucket are not documents: a
    notification for them must never loop back into the pipeline."""
    if not settings.s3:
        return False
    from doclane.functions.adapters.s3_store import ARTEFACT_PREFIX

    return obj.bucket == settings.s3_artefact_bucket or obj.key.startswith(ARTEFACT_PREFIX)


def _bad_key(event: CloudEvent, obj: ObjectEvent, problem: str, ctx) -> CloudEvent:
    """document.failed for an object whose key doclane refuses (limits.key_problem).
    Not registered: the key may not even be storable (NUL in PostgreSQL text)."""
    log.warning("%s: %s", obj.bucket, problem)
    try:
        doc_id = document_id(obj.bucket, obj.key)
    except UnicodeEncodeError:  # a lone surrogate is no UTF-8: name the key by its escaped form
        doc_id = document_id(obj.bucket, ascii(obj.key))
    return fail(event, ctx, stage="ingest", reason=problem, error_type="bad_key", document_id=doc_id)


def _deleted(event: CloudEvent, obj: ObjectEvent) -> CloudEvent:
    doc_id = document_id(obj.bucket, obj.key)
    return derive(event, "document.deleted", {"document_id": doc_id, "bucket": obj.bucket, "key": obj.key},
                  source="ingest", subject=doc_id, key=obj.key)


def _created(event: CloudEvent, obj: ObjectEvent, ctx) -> list[CloudEvent]:
    doc_id = document_id(obj.bucket, obj.key)
    filename = PurePosixPath(obj.key).name
    try:
        info = ctx.objects(obj.bucket).head(obj.key)
    except NotFound:
        log.info("%s/%s is gone before ingest; nothing to do", obj.bucket, obj.key)
        return []
    except Permanent as exc:  # the store refuses the key (a symlink out of the folder store)
        return [_bad_key(event, obj, str(exc), ctx)]
    content_type = obj.content_type or info.content_type or mimetypes.guess_type(filename)[0]
    existing = ctx.metadata.get(doc_id)
    batch_id = (obj.metadata.get("x-amz-meta-batch-id") or obj.metadata.get("batch-id")
                or (existing.batch_id if existing else None))
    try:  # the size before the bytes are fetched
        limits.check_file_size(info.size, ctx.settings, filename)
    except limits.Refused as exc:
        return [_refused(event, ctx, exc, doc_id, obj, filename, content_type, info.size, "0" * 64, batch_id)]
    content = ctx.objects(obj.bucket).get(obj.key)
    digest = sha256(content)
    try:  # executables, a name that lies about the content, zip bombs: before any parser
        limits.inspect(content, filename, content_type, ctx.settings)
    except limits.Refused as exc:
        return [_refused(event, ctx, exc, doc_id, obj, filename, content_type, len(content), digest, batch_id)]

    if existing is None:
        twin = ctx.metadata.find_by_sha256(digest)
        if twin is not None and twin.document_id != doc_id:
            policy = ctx.settings.duplicate_policy
            if policy == "skip":
                log.info("%s has the same content as %s (%s); skipped (DOCLANE_DUPLICATE_POLICY=skip)",
                         obj.key, twin.key, twin.document_id)
                return []
            if policy == "reprocess":
                return [_uploaded(twin.document_id, twin.bucket, twin.key, twin.filename, twin.content_type,
                                  twin.size, digest, batch_id, parent=event, fresh=True)]
        _register(ctx, doc_id, obj, filename, content_type, len(content), digest, batch_id)
    elif existing.sha256 != digest:
        # A new version under the same key: start again from scratch.
        ctx.metadata.update(doc_id, sha256=digest, size=len(content), status="uploaded", error=None,
                            category=None, category_confidence=None, fields={}, content_type=content_type)
    return [_uploaded(doc_id, obj.bucket, obj.key, filename, content_type, len(content), digest, batch_id, parent=event)]


def _uploaded(doc_id, bucket, key, filename, content_type, size, digest, batch_id, *, parent: CloudEvent,
              fresh: bool = False) -> CloudEvent:
    # The id depends on the document and its content only, so a repeated
    # notification of unchanged bytes yields the same event and the bus drops it.
    seed = f"uploaded|{doc_id}|{digest}" + (f"|{parent['id']}" if fresh else "")
    return new_event("document.uploaded", {
        "document_id": doc_id, "bucket": bucket, "key": key, "filename": filename,
        "content_type": content_type, "size": size, "sha256": digest, "batch_id": batch_id,
    }, subject=doc_id, source="ingest", id=str(uuid.uuid5(_UPLOAD_NAMESPACE, seed)),
        traceparent=child_traceparent(parent.get("traceparent")))


def _refused(event: CloudEvent, ctx, exc: limits.Refused, doc_id, obj: ObjectEvent, filename, content_type, size,
             digest, batch_id) -> CloudEvent:
    """The document is registered (the dashboard lists it with the reason) and failed."""
    rec = _register(ctx, doc_id, obj, filename, content_type, size, digest, batch_id)
    return fail(event, ctx, stage="ingest", reason=str(exc), error_type=exc.error_type,
                document_id=rec.document_id, filename=filename, batch_id=batch_id)


def _register(ctx, doc_id, obj: ObjectEvent, filename, content_type, size, digest, batch_id) -> DocumentRecord:
    rec, _ = ctx.metadata.register(DocumentRecord(
        document_id=doc_id, bucket=obj.bucket, key=obj.key, filename=filename, content_type=content_type,
        size=size, sha256=digest, status="uploaded", batch_id=batch_id,
    ))
    return rec


FUNCTION = Function(
    name="ingest",
    consumes=("bucket.notification",),
    emits=("document.uploaded", "document.deleted", "document.failed"),
    handle=handle,
    lease_seconds=300.0,
)
