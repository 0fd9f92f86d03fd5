"""Live progress fan-out: every event the bus binding publishes for a document
or a batch is also announced as compact JSON

    {"type": "document.indexed", "document_id": ..., "batch_id": ..., "status": "indexed", "time": ...}

on Redis pub/sub (DOCLANE_REDIS_URL): channel `doclane:progress`, and
`doclane:progress:<batch_id>` when the event belongs to a batch. Without
Redis, an in-process fan-out does the same for subscribers of this process.

Progress is a hint, never the record: the metadata store keeps status and
history, so a lost announcement (Redis down, a slow subscriber) costs a
dashboard a poll, never a document. Publishing therefore never raises.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Iterable, Iterator

from cloudevents.http import CloudEvent

from doclane.events.registry import REGISTRY

log = logging.getLogger("doclane.progress")
CHANNEL = "doclane:progress"


def channel(batch_id: str | None = None) -> str:
    return f"{CHANNEL}:{batch_id}" if batch_id else CHANNEL


def message(event: CloudEvent) -> dict | None:
    """The announcement of an event, or None when it concerns no document or batch."""
    data = event.get_data() if isinstance(event.get_data(), dict) else {}
    document_id = data.get("document_id") or (event.get("subject") if "document" in event["type"] else None)
    batch_id = data.get("batch_id")
    if not (document_id or batch_id):
        return None
    name = REGISTRY.get(event["type"]).name if event["type"] in REGISTRY else event["type"]
    status = data.get("status") if name.startswith("batch.") else None  # completed_with_failures
    return {"type": name, "document_id": document_id, "batch_id": batch_id,
            "status": status or name.rsplit(".", 1)[-1], "time": event.get("time")}


class RedisProgress:
    def __init__(self, url: str):
        import redis  # only where Redis is configured

        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors = (redis.RedisError, OSError)

    def publish(self, events: Iterable[CloudEvent]) -> int:
        """Announce; returns how many announcements were sent."""
        sent = 0
        try:
            pipe = self._redis.pipeline(transaction=False)
            for event in events:
                msg = message(event)
                if msg is None:
                    continue
                body = json.dumps(msg, separators=(",", ":"))
                pipe.publish(channel(), body)
                if msg["batch_id"]:
                    pipe.publish(channel(msg["batch_id"]), body)
                sent += 1
            if sent:
                pipe.execute()
        except self._errors as exc:
            log.warning("progress not announced on Redis (%s): %r", self.url, exc)
            return 0
        return sent

    def subscribe(self, batch_id: str | None = None, *, until: float | None = None,
                  heartbeat: float = 1.0) -> Iterator[dict | None]:
        """Announcements as they come; None every `heartbeat` seconds of
        silence; ends at `until` (a monotonic deadline)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel(batch_id))
        try:
            while until is None or time.monotonic() < until:
                wait = heartbeat if until is None else max(min(heartbeat, until - time.monotonic()), 0.0)
                msg = pubsub.get_message(timeout=wait)
                yield json.loads(msg["data"]) if msg and msg.get("type") == "message" else None
        finally:
            pubsub.close()

    def close(self) -> None:
        self._redis.close()


class LocalProgress:
    """The same fan-out inside one process: each subscriber has a bounded
    queue; a subscriber that does not keep up loses the oldest announcements."""

    def __init__(self, maxsize: int = 1000):
        self.maxsize = maxsize
        self._subscribers: list[tuple[str | None, queue.Queue]] = []
        self._lock = threading.Lock()

    def publish(self, events: Iterable[CloudEvent]) -> int:
        sent = 0
        for event in events:
            msg = message(event)
            if msg is None:
                continue
            with self._lock:
                targets = [q for b, q in self._subscribers if b is None or b == msg["batch_id"]]
            for q in targets:
                while True:
                    try:
                        q.put_nowait(msg)
                        break
                    except queue.Full:
                        _drop_oldest(q)
            sent += 1
        return sent

    def subscribe(self, batch_id: str | None = None, *, until: float | None = None,
                  heartbeat: float = 1.0) -> Iterator[dict | None]:
        entry = (batch_id, queue.Queue(self.maxsize))
        with self._lock:
            self._subscribers.append(entry)
        try:
            while until is None or time.monotonic() < until:
                wait = heartbeat if until is None else max(min(heartbeat, until - time.monotonic()), 0.0)
                try:
                    yield entry[1].get(timeout=wait)
                except queue.Empty:
                    yield None
        finally:
            with self._lock:
                self._subscribers.remove(entry)

    def close(self) -> None:
        pass


def _drop_oldest(q: queue.Queue) -> None:
    try:
        q.get_nowait()
    except queue.Empty:
        pass


_shared: dict[str | None, RedisProgress | LocalProgress] = {}
_shared_lock = threading.Lock()


def for_settings(settings) -> RedisProgress | LocalProgress:
    """One fan-out per process and Redis URL (the local one when unset)."""
    url = getattr(settings, "redis_url", None)
    with _shared_lock:
        if url not in _shared:
            _shared[url] = RedisProgress(url) if url else LocalProgress()
        return _shared[url]


def announce(ctx, events: Iterable[CloudEvent]) -> None:
    """The binding's hook: announce what a function just published."""
    settings = getattr(ctx, "settings", None)
    if settings is not None:
        for_settings(settings).publish(events)
