"""Send documents through the pipeline again: a fresh document.uploaded (new
event id, so the bus takes it) for each one, from its current bytes."""

from __future__ import annotations

import uuid

from doclane.events.envelope import new_event


def reprocess(ctx, document_ids: list[str], *, all_failed: bool = False, dry_run: bool = False) -> list[tuple[str, str]]:
    records = [ctx.metadata.get(i) for i in document_ids]
    out: list[tuple[str, str]] = [(i, "no such document") for i, r in zip(document_ids, records) if r is None]
    records = [r for r in records if r is not None]
    if all_failed:
        offset = 0
        while batch := ctx.metadata.list(status="failed", limit=500, offset=offset):
            records.extend(batch)
            offset += len(batch)
    for rec in {r.document_id: r for r in records}.values():
        if dry_run:
            out.append((rec.document_id, f"would reprocess ({rec.status}: {rec.filename})"))
            continue
        ctx.metadata.update(rec.document_id, status="uploaded", error=None)
        event = new_event("document.uploaded", {
            "document_id": rec.document_id, "bucket": rec.bucket, "key": rec.key, "filename": rec.filename,
            "content_type": rec.content_type, "size": rec.size, "sha256": rec.sha256, "batch_id": rec.batch_id,
        }, subject=rec.document_id, source="reprocess", id=str(uuid.uuid4()))
        ctx.metadata.record_event(event, stage="reprocess")
        ctx.bus.publish(event)
        out.append((rec.document_id, "queued"))
    return out
