"""CloudEvent <-> bytes for the stores and the bus: structured JSON mode
(the CloudEvents JSON format). HTTP binary/structured mode goes through the
SDK's `from_http`/`to_binary` in functions/http.py."""

from __future__ import annotations

import json

from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict

from doclane.events.envelope import InvalidEvent


def dumps(event: CloudEvent) -> bytes:
    return json.dumps(to_dict(event), separators=(",", ":"), sort_keys=True).encode()


def loads(body: bytes | str) -> CloudEvent:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("event must be a JSON object")
    try:
        return from_dict(obj)
    except Exception as exc:  # the SDK raises several types for bad envelopes
        raise InvalidEvent(f"not a CloudEvent: {exc}") from None


def to_json_dict(event: CloudEvent) -> dict:
    return to_dict(event)
