"""Bucket notifications -> object events. Pure functions over the JSON that
S3, MinIO (old and current shapes), Ceph RGW or the folder watcher send.

MinIO URL-query-escapes `s3.object.key` ('+' is a space, '%2F' a slash);
AWS S3 does the same. ObjectRemoved records carry no size or eTag.
`s3:TestEvent` (sent when a notification is configured) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectEvent:
    action: Literal["created", "removed"]
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    event_name: str = ""
    sequencer: str | None = None


class NotNotification(ValueError):
    """The payload is not a bucket notification we understand."""


def parse(payload: Any) -> list[ObjectEvent]:
    if not isinstance(payload, dict):
        raise NotNotification("a bucket notification is a JSON object")
    if payload.get("Event") == "s3:TestEvent" or payload.get("EventName") == "s3:TestEvent":
        return []
    records = payload.get("Records")
    if records is None:
        raise NotNotification("no 'Records' in the notification")
    if not isinstance(records, list):
        raise NotNotification("'Records' must be a list")
    return [ev for ev in (_record(r) for r in records) if ev is not None]


def _record(rec: Any) -> ObjectEvent | None:
    if not isinstance(rec, dict):
        raise NotNotification("a record must be a JSON object")
    name = str(rec.get("eventName") or "")
    short = name.removeprefix("s3:")
    if short.startswith("ObjectCreated"):
        action = "created"
    elif short.startswith("ObjectRemoved"):
        action = "removed"
    else:
        return None  # replication, restore, tagging, ... : not ours
    s3 = rec.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    key = obj.get("key")
    if not bucket or not key:
        raise NotNotification(f"{name} record without bucket name or object key")
    meta = obj.get("userMetadata") or obj.get("userDefined") or {}
    size = obj.get("size")
    return ObjectEvent(
        action=action,
        bucket=str(bucket),
        key=unquote_plus(str(key)),
        size=int(size) if size is not None and action == "created" else None,
        etag=(obj.get("eTag") or obj.get("etag") or None),
        content_type=obj.get("contentType") or meta.get("content-type") or meta.get("Content-Type"),
        metadata={str(k).lower(): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {},
        event_name=name,
        sequencer=obj.get("sequencer"),
    )


def record_for(action: Literal["created", "removed"], bucket: str, key: str, *, size: int | None = None,
               etag: str | None = None, content_type: str | None = None, source: str = "doclane:folder") -> dict:
    """The S3 record shape, as the folder watcher and POST /upload emit it."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="")}
    if action == "created":
        obj.update({k: v for k, v in (("size", size), ("eTag", etag), ("contentType", content_type)) if v is not None})
    return {
        "eventVersion": "2.0",
        "eventSource": source,
        "eventName": "s3:ObjectCreated:Put" if action == "created" else "s3:ObjectRemoved:Delete",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }
