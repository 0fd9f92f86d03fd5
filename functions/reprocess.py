"""Send documents through the pipeline again (`doclane reprocess`, POST
/reprocess, the dashboard's retry): after a failure, or after a category's
fields, the extractor or the models changed.

Documents are selected by id and/or by filters (status, category, created
in a time range), combined with AND; ids are added to what the filters
select. Each selected document gets a fresh document.uploaded from its
current bytes, whose id is derived from the document, its content and its
*reprocess generation* (1 + the reprocess passes in its history). So a
second pass has new event ids all the way down (every later id is derived
from this one): webhooks and e-mails for it fire once more, instead of
being de-duplicated as repeats of the first pass. Yet two requests racing
for the same pass (a double click) make the same id and the bus keeps one.
The index replaces a document's chunks on every pass, so no duplicates.

Dead letters are replayed differently: their events were published before,
so publishing them again would be dropped as duplicates; the bus puts them
back on their trigger's queue (`EventBus.requeue_dead`) with a fresh attempt
count, which also takes them off the dead-letter queue. A document that a
dead letter had failed is in progress again. Bytes that never were a valid
event stay dead: on a queue again they would only die again.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from doclane.events.bus import DeadLetter
from doclane.events.envelope import new_event
from doclane.functions.adapters.sql_metadata import STATUSES
from doclane.functions.ports import DocumentRecord

_REPROCESS_NAMESPACE = uuid.UUID("6f4b2d8e-91c3-4a57-b0e6-3d5c7a9f1e20")
ALL_TRIGGERS = "*"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PAGE = 500


def parse_time(value: str | datetime, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (a date, or a date and time; without a zone it is UTC) or a
    duration back from now: 90s, 30m, 2h, 7d, 1w."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        match = _DURATION.match(text)
        if match:
            delta = timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
            return (now or datetime.now(timezone.utc)) - delta
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a time: use ISO 8601 (2024-05-01 or 2024-05-01T09:00:00Z) "
                             "or a duration ago (30m, 2h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Selection:
    """What to reprocess; `empty` when nothing is named."""

    document_ids: tuple[str, ...] = ()
    status: str | None = None
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    dead_letters: str | None = None  # a trigger (function) name, or ALL_TRIGGERS

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}: use one of {', '.join(STATUSES)}")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        if self.dead_letters not in (None, ALL_TRIGGERS):
            from doclane.functions.runtime import STAGES

            if self.dead_letters not in STAGES:
                raise ValueError(f"no function {self.dead_letters!r} has dead letters: "
                                 f"name one of {', '.join(STAGES)}, or none for all")

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.status, self.category, self.since, self.until))

    @property
    def empty(self) -> bool:
        return not self.document_ids and not self.filtered and self.dead_letters is None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Selection":
        """POST /reprocess's body; ValueError names what is wrong."""
        ids = body.get("document_ids") or []
        if isinstance(ids, str) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("document_ids must be a list of strings")
        for name in ("status", "category", "since", "until"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise ValueError(f"{name} must be a string")
        dead = body.get("dead_letters")
        if dead is True:
            dead = ALL_TRIGGERS
        elif dead in (False, None):
            dead = None
        elif not isinstance(dead, str):
            raise ValueError("dead_letters must be true or a function name")
        selection = cls(
            document_ids=tuple(ids), status=body.get("status") or None, category=body.get("category") or None,
            since=parse_time(body["since"]) if body.get("since") else None,
            until=parse_time(body["until"]) if body.get("until") else None, dead_letters=dead)
        if selection.empty:
            raise ValueError("name document_ids, or select by status, category, since/until or dead_letters")
        return selection


@dataclass
class Result:
    dry_run: bool
    documents: list[tuple[str, str]] = field(default_factory=list)  # (document id, outcome)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # trigger, event_id, type, subject, outcome

    @property
    def count(self) -> int:
        """What was (or would be) sent again: documents and dead letters."""
        taken = ("queued", "would reprocess", "requeued", "would requeue")
        return (sum(1 for _, o in self.documents if o.startswith(taken))
                + sum(1 for d in self.dead_letters if d["outcome"].startswith(taken)))

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "count": self.count,
                "documents": [{"document_id": d, "outcome": o} for d, o in self.documents],
                "dead_letters": self.dead_letters}


def select(ctx, selection: Selection) -> tuple[list[DocumentRecord], list[str]]:
    """The documents the selection names (each once, named ids first) and
    the ids that name no document."""
    found = [(i, ctx.metadata.get(i)) for i in dict.fromkeys(selection.document_ids)]
    missing = [i for i, rec in found if rec is None]
    records = {rec.document_id: rec for _, rec in found if rec is not None}
    if selection.filtered:
        # Read every page before changing anything: reprocessing changes the
        # status, so paging over a status filter while queueing would skip rows.
        offset = 0
        while page := ctx.metadata.list(status=selection.status, category=selection.category,
                                        since=selection.since, until=selection.until, limit=_PAGE, offset=offset):
            for rec in page:
                records.setdefault(rec.document_id, rec)
            offset += len(page)
    return list(records.values()), missing


def generation(ctx, document_id: str) -> int:
    """This document's next reprocess pass: 1 + the passes in its history."""
    return 1 + sum(1 for e in ctx.metadata.history(document_id) if e.get("stage") == "reprocess")


def _requeue(ctx, rec: DocumentRecord) -> str:
    gen = generation(ctx, rec.document_id)
    event = new_event("document.uploaded", {
        "document_id": rec.document_id, "bucket": rec.bucket, "key": rec.key, "filename": rec.filename,
        "content_type": rec.content_type, "size": rec.size, "sha256": rec.sha256, "batch_id": rec.batch_id,
    }, subject=rec.document_id, source="reprocess",
        id=str(uuid.uuid5(_REPROCESS_NAMESPACE, f"{rec.document_id}|{rec.sha256}|{gen}")))
    ctx.metadata.update(rec.document_id, status="uploaded", error=None)
    ctx.metadata.record_event(event, stage="reprocess")
    try:
        return "queued" if ctx.bus.publish(event) else "already queued"
    except Exception:
        # Not sent (the bus or broker is away): the document keeps the status that
        # selected it, so the same request, tried again, finds it again.
        ctx.metadata.update(rec.document_id, status=rec.status, error=rec.error)
        raise


def _replay_dead_letters(ctx, letters: list[DeadLetter], dry_run: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_trigger: dict[str, list[dict[str, Any]]] = {}
    for dl in letters:
        entry = {"trigger": dl.trigger, "event_id": dl.event_id, "type": dl.type, "subject": dl.subject,
                 "reason": dl.reason, "attempts": dl.attempts}
        out.append(entry)
        if dl.type is None or dl.event_id is None:
            # Bytes that never were a valid event: on the queue again they would only die again.
            entry["outcome"] = "skipped: not a valid event"
        elif dry_run:
            entry["outcome"] = "would requeue"
        else:
            by_trigger.setdefault(dl.trigger, []).append(entry)
    for name, entries in by_trigger.items():
        requeued = ctx.bus.requeue_dead(name, [e["event_id"] for e in entries])
        outcome = "requeued" if requeued >= len(entries) else f"requeued ({requeued} of {len(entries)} were still dead)"
        for e in entries:
            e["outcome"] = outcome
            _resume(ctx, e)
    return out


def _resume(ctx, letter: dict[str, Any]) -> None:
    """The binding failed the document when its event died; back on the queue,
    the document is in progress again, at the step the event says it reached
    (io.doclane.document.classified.v1: classified), so it leaves the failures."""
    reached = (letter["type"] or "").split(".")[-2:-1]
    if not letter["subject"] or reached not in (["uploaded"], ["classified"], ["extracted"]):
        return
    record = ctx.metadata.get(letter["subject"])
    if record is not None and record.status == "failed":
        ctx.metadata.update(record.document_id, status=reached[0], error=None)


def run(ctx, selection: Selection, *, dry_run: bool = False) -> Result:
    """Reprocess what `selection` names; with dry_run, only say what would be."""
    result = Result(dry_run=dry_run)
    # Dead letters are read first: a bus that keeps none (DOCLANE_BUS=http, whose
    # broker dead-letters to a sink) refuses before any document is sent again.
    letters = None if selection.dead_letters is None else ctx.bus.dead_letters(
        None if selection.dead_letters == ALL_TRIGGERS else selection.dead_letters)
    records, missing = select(ctx, selection)
    result.documents.extend((i, "no such document") for i in missing)
    for rec in records:
        if dry_run:
            result.documents.append((rec.document_id, f"would reprocess ({rec.status}: {rec.filename})"))
        else:
            result.documents.append((rec.document_id, _requeue(ctx, rec)))
    if letters is not None:
        result.dead_letters = _replay_dead_letters(ctx, letters, dry_run)
    return result


def reprocess(ctx, document_ids: list[str], *, all_failed: bool = False, dry_run: bool = False) -> list[tuple[str, str]]:
    """By id, or every failed document (the dashboard's retry): (id, outcome) pairs."""
    return run(ctx, Selection(tuple(document_ids), status="failed" if all_failed else None), dry_run=dry_run).documents
