"""Live progress: what the pages' Server-Sent Events and the WebSocket send.

The feed source is the metadata store: every function process records each
event in the document's history as it happens, so reading `recent_events`
and `batch` (one indexed read each) sees the whole pipeline across
processes. Without Redis the streams read every POLL_SECONDS. With
DOCLANE_REDIS_URL the bus binding announces each event on Redis pub/sub
(adapters/redis_progress.py) and a stream reads when an announcement for it
arrives (or every REDIS_IDLE_SECONDS at the latest): the announcement is
only a wake-up, the store stays the one source of truth, so a lost message
costs a delay, never a wrong page.

SSE streams end after STREAM_SECONDS; EventSource reconnects on its own
(`retry:`), which keeps each of waitress' threads busy only for a while.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

from flask import Response, current_app, stream_with_context

from doclane.functions.adapters import redis_progress
from doclane.functions.dashboard import bp
from doclane.functions.http import ctx, problem

POLL_SECONDS = 0.25
STREAM_SECONDS = 30.0
REDIS_IDLE_SECONDS = 2.0
HEARTBEAT_SECONDS = 5.0  # a quiet stream still writes, so a closed tab frees its thread


def _wait(seconds: float) -> None:
    time.sleep(seconds)


def _waker(context, batch_id: str | None) -> Callable[[], None]:
    """What a stream does between two reads of the store: sleep, or with
    Redis wait for the next announcement of this batch (or of anything)."""
    if not context.settings.redis_url:
        return lambda: _wait(POLL_SECONDS)
    announcements = redis_progress.for_settings(context.settings).subscribe(batch_id, heartbeat=REDIS_IDLE_SECONDS)
    return lambda: next(announcements, None)


def batch_progress(context, batch_id: str, *, until: float | None = None) -> Iterator[dict | None]:
    """The batch's summary with each document's status, every time it changes;
    ends after the completed one (or at `until`, a monotonic deadline).
    None now and then is a heartbeat: nothing changed."""
    last, quiet_since, wake = None, time.monotonic(), _waker(context, batch_id)
    while until is None or time.monotonic() < until:
        summary = context.metadata.batch(batch_id)
        if summary is None:
            yield {"type": "error", "detail": f"no batch {batch_id}"}
            return
        docs = [context.metadata.get(d) for d in summary["document_ids"]]
        summary["documents"] = [{"document_id": r.document_id, "filename": r.filename, "status": r.status,
                                 "category": r.category, "error": r.error} for r in docs if r is not None]
        summary["done"] = summary["pending"] == 0
        if summary != last:
            yield {"type": "batch", **summary}
            last, quiet_since = summary, time.monotonic()
        if summary["done"]:
            return
        if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield None
            quiet_since = time.monotonic()
        wake()


def recent_events(context, *, document_id: str | None = None, until: float | None = None) -> Iterator[dict | None]:
    """New events of every document (or one), oldest first, as they are
    recorded; None is a heartbeat."""
    seen: set[str] = {e["id"] for e in context.metadata.recent_events(200)}
    quiet_since, wake = time.monotonic(), _waker(context, None)
    while until is None or time.monotonic() < until:
        fresh = [e for e in reversed(context.metadata.recent_events(100)) if e["id"] not in seen]
        for e in fresh:
            seen.add(e["id"])
            if document_id is None or e["document_id"] == document_id:
                rec = context.metadata.get(e["document_id"]) if e["document_id"] else None
                yield {"type": "event", "id": e["id"], "document_id": e["document_id"], "event": e["type"],
                       "stage": e["stage"], "duration_ms": e["duration_ms"], "time": e["time"],
                       "status": rec.status if rec else None, "filename": rec.filename if rec else None,
                       "category": rec.category if rec else None}
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield None
            quiet_since = time.monotonic()
        wake()


def sse(messages: Iterator[dict | None]) -> Response:
    def body():
        yield "retry: 1000\n\n"
        for m in messages:
            if m is None:
                yield ": heartbeat\n\n"  # a comment: EventSource ignores it
                continue
            yield f"event: {m['type']}\ndata: {json.dumps(m, default=str)}\n\n"
        yield "event: end\ndata: {}\n\n"

    return Response(stream_with_context(body()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.get("/ui/live/batch/<batch_id>")
def live_batch(batch_id: str):
    return sse(batch_progress(ctx(), batch_id, until=time.monotonic() + STREAM_SECONDS))


@bp.get("/ui/live/events")
def live_events():
    from flask import request

    return sse(recent_events(ctx(), document_id=request.args.get("document_id") or None,
                             until=time.monotonic() + STREAM_SECONDS))


@bp.get("/ws/progress/<batch_id>")
def ws_progress(batch_id: str):
    """On the HTTP port this path can only explain where the WebSocket is."""
    ws_url = current_app.config.get("doclane.ws_url")
    where = f"connect to {ws_url}/ws/progress/{batch_id}" if ws_url else "no WebSocket server runs here"
    resp = problem(426, "Upgrade Required", f"this server speaks plain HTTP only; {where} "
                   f"(or read Server-Sent Events at /ui/live/batch/{batch_id})")
    resp.headers["Upgrade"] = "websocket"
    return resp
