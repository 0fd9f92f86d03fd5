"""Live progress fan-out: the same contract on Redis pub/sub (the server
running here) and on the in-process fallback; and the binding's hook."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from doclane.events.envelope import derive, new_event
from doclane.functions import binding
from doclane.functions.adapters import redis_progress
from doclane.functions.adapters.redis_progress import LocalProgress, RedisProgress, message
from doclane.functions.context import Context
from doclane.functions.runtime import Function, triggers
from tests.conftest import require

REDIS_URL = os.environ.get("DOCLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_progress_or_skip() -> RedisProgress:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        require(False, f"Redis at {REDIS_URL} is unreachable ({exc!r}); set DOCLANE_TEST_REDIS_URL")
    return RedisProgress(REDIS_URL)


@pytest.fixture(params=["redis", "local"])
def fanout(request):
    fan = redis_progress_or_skip() if request.param == "redis" else LocalProgress()
    yield fan
    fan.close()


def failed(doc: str, batch: str | None = None):
    return new_event("document.failed", {"document_id": doc, "stage": "classify", "reason": "x", "batch_id": batch},
                     subject=doc, source="test")


def collect(fan, batch_id, out: list, ready: threading.Event, seconds: float = 1.5):
    stream = fan.subscribe(batch_id, until=time.monotonic() + seconds, heartbeat=0.1)
    next(stream)  # subscribed (a heartbeat) before anything is published
    ready.set()
    out.extend(m for m in stream if m is not None)


def test_message_is_compact_and_names_document_batch_and_status():
    ev = failed("d1", "b1")
    assert message(ev) == {"type": "document.failed", "document_id": "d1", "batch_id": "b1", "status": "failed",
                           "time": ev["time"]}
    done = new_event("batch.completed", {"batch_id": "b1", "total": 2, "indexed": 1, "failed": 1,
                                         "status": "completed_with_failures"}, subject="b1", source="test")
    assert message(done)["status"] == "completed_with_failures" and message(done)["document_id"] is None
    note = new_event("bucket.notification", {"Records": []}, subject=None, source="test")
    assert message(note) is None  # not about a document


def test_subscribers_get_the_announcements_of_everything_or_of_their_batch(fanout):
    batch, other = f"b-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    everything, mine, ready_all, ready_mine = [], [], threading.Event(), threading.Event()
    threads = [threading.Thread(target=collect, args=(fanout, None, everything, ready_all)),
               threading.Thread(target=collect, args=(fanout, batch, mine, ready_mine))]
    for t in threads:
        t.start()
    assert ready_all.wait(3) and ready_mine.wait(3)
    docs = [f"d-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    assert fanout.publish([failed(docs[0], batch), failed(docs[1], other), failed(docs[2])]) == 3
    for t in threads:
        t.join()
    assert [m["document_id"] for m in everything if m["document_id"] in docs] == docs
    assert [m["document_id"] for m in mine] == [docs[0]]


def test_redis_down_costs_an_announcement_never_an_error():
    assert RedisProgress("redis://127.0.0.1:1/0").publish([failed("d1")]) == 0


def test_a_slow_local_subscriber_loses_the_oldest():
    fan = LocalProgress(maxsize=2)
    stream = fan.subscribe(None, heartbeat=0.05)
    assert next(stream) is None
    fan.publish([failed("d1"), failed("d2"), failed("d3")])
    assert [next(stream)["document_id"], next(stream)["document_id"]] == ["d2", "d3"]


def test_the_binding_announces_what_a_function_published(settings):
    ctx = Context(settings)  # no DOCLANE_REDIS_URL: the in-process fan-out
    ctx.bus.declare(triggers(settings))
    fn = Function("classify", ("document.uploaded",), ("document.failed",),
                  handle=lambda event, data, c: [derive(event, "document.failed", {
                      "document_id": data.document_id, "stage": "classify", "reason": "test"}, source="classify")])
    uploaded = new_event("document.uploaded", {"document_id": "d9", "bucket": "inbox", "key": "a", "filename": "a",
                                               "size": 1, "sha256": "0" * 64}, subject="d9", source="test")
    ctx.bus.publish(uploaded)
    stream = redis_progress.for_settings(settings).subscribe(None, heartbeat=0.05)
    assert next(stream) is None
    (delivery,) = ctx.bus.receive("classify", wait_seconds=1)
    assert binding.handle_delivery(ctx.bus, fn, delivery, ctx, max_attempts=3) == "ok"
    got = next(m for m in stream if m is not None)
    assert (got["type"], got["document_id"], got["status"]) == ("document.failed", "d9", "failed")
    ctx.close()
