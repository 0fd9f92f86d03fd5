"""Bucket notifications -> object events. Pure functions over the JSON that
S3, MinIO (old and current shapes), Ceph RGW or the folder watcher send.

MinIO URL-query-escapes `s3.object.key` ('+' is a space, '%2F' a slash);
AWS S3 does the same. ObjectRemoved records carry no size or eTag.
`s3:TestEvent` (sent when a notification is configured) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_to_bytes


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
    s3 = _object(rec.get("s3"), "s3")
    bucket = _object(s3.get("bucket"), "s3.bucket").get("name")
    obj = _object(s3.get("object"), "s3.object")
    key = obj.get("key")
    if not bucket or not key or not isinstance(bucket, str) or not isinstance(key, str):
        raise NotNotification(f"{name} record without bucket name or object key (both strings)")
    meta = obj.get("userMetadata") or obj.get("userDefined") or {}
    meta = meta if isinstance(meta, dict) else {}
    size = obj.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, str))
                             or not str(size).isdigit()):
        raise NotNotification(f"{name} record: s3.object.size {str(size)[:40]!r} is not a whole number")
    return ObjectEvent(
        action=action,
        bucket=bucket,
        key=_unquote_key(key),
        size=int(size) if size is not None and action == "created" else None,
        etag=_text(obj.get("eTag") or obj.get("etag")),
        content_type=_text(obj.get("contentType") or meta.get("content-type") or meta.get("Content-Type")),
        metadata={str(k).lower(): str(v) for k, v in meta.items()},
        event_name=name,
        sequencer=_text(obj.get("sequencer")),
    )


def _unquote_key(key: str) -> str:
    """unquote_plus, except that bytes which are not UTF-8 (a file name on
    Linux may be any bytes) come back as lone surrogates, as the os module
    gives them, not as U+FFFD: the key still names the object, and ingest
    refuses it by name (functions/limits.py)."""
    raw = key.replace("+", " ").encode("utf-8", "surrogatepass")  # a JSON "\ud800" is a str, not UTF-8
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _object(value: Any, where: str) -> dict:
    """A part of the record that must be a JSON object (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NotNotification(f"'{where}' must be a JSON object")
    return value


def _text(value: Any) -> str | None:
    """An optional string field; anything else (a number, a list) is dropped, not trusted."""
    return value if isinstance(value, str) and value else None


def record_for(action: Literal["created", "removed"], bucket: str, key: str, *, size: int | None = None,
               etag: str | None = None, content_type: str | None = None, source: str = "doclane:folder") -> dict:
    """The S3 record shape, as the folder watcher and POST /upload emit it."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key.encode("utf-8", "surrogateescape"), safe="")}
    if action == "created":
        obj.update({k: v for k, v in (("size", size), ("eTag", etag), ("contentType", content_type)) if v is not None})
    return {
        "eventVersion": "2.0",
        "eventSource": source,
        "eventName": "s3:ObjectCreated:Put" if action == "created" else "s3:ObjectRemoved:Delete",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }
