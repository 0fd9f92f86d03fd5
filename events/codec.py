"""CloudEvent <-> bytes for the stores and the bus: structured JSON mode
(the CloudEvents JSON format). HTTP binary/structured mode goes through the
SDK's `from_http`/`to_binary` in functions/http.py."""

from __future__ import annotations

import base64
import json

from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict

from doclane.events.envelope import InvalidEvent, check_attributes


def dumps(event: CloudEvent) -> bytes:
    obj = to_dict(event)
    if isinstance(obj.get("data"), (bytes, bytearray)):  # binary data (an AMQP or HTTP body that is no JSON)
        obj["data_base64"] = base64.b64encode(obj.pop("data")).decode("ascii")
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def loads(body: bytes | str) -> CloudEvent:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("event must be a JSON object")
    # The SDK makes up a missing id and specversion; an event must bring its own.
    check_attributes({k: v for k, v in obj.items() if k not in ("data", "data_base64")})
    if "data_base64" in obj:  # the JSON format's binary data, which the SDK's from_dict leaves out
        obj = {**obj, "data": _base64(obj.pop("data_base64"))}
    try:
        return from_dict(obj)
    except Exception as exc:  # the SDK raises several types for bad envelopes
        raise InvalidEvent(f"not a CloudEvent: {exc}") from None


def _base64(value: object) -> bytes:
    try:
        return base64.b64decode(value, validate=True)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise InvalidEvent(f"data_base64 is not base64: {exc}") from None


def to_json_dict(event: CloudEvent) -> dict:
    return to_dict(event)
