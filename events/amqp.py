"""The CloudEvents AMQP binding, as pure functions over a frozen
`(headers, content_type, body)` value (AMQP 0-9-1: headers are the
application properties, content_type the basic property).

- Binary mode (what doclane sends): every attribute but `datacontenttype` is
  an application property named `cloudEvents:<attribute>`; `datacontenttype`
  is the message's content type; the data is the body.
- Structured mode (accepted on input): content type
  `application/cloudevents+json`, the whole event in the CloudEvents JSON
  format as the body.

Attribute values are sent as strings (their canonical form: AMQP 0-9-1
timestamps keep only whole seconds). On input, AMQP typed values are turned
back into strings and `cloudEvents_` (the binding's JMS-friendly spelling) is
accepted too. Anything that is not a CloudEvent raises InvalidEvent, never
something else, so a consumer can dead-letter it with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from cloudevents.http import CloudEvent

from doclane.events import codec
from doclane.events.envelope import InvalidEvent, check_attributes

PREFIX = "cloudEvents:"
_PREFIXES = (PREFIX, "cloudEvents_")
STRUCTURED = "application/cloudevents+json"
_REQUIRED = ("id", "source", "type", "specversion")


@dataclass(frozen=True)
class AmqpMessage:
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    body: bytes = b""


def to_binary(event: CloudEvent) -> AmqpMessage:
    attrs = event.get_attributes()
    headers = {PREFIX + name: _canonical(value) for name, value in attrs.items()
               if name != "datacontenttype" and value is not None}
    content_type = attrs.get("datacontenttype")
    data = event.get_data()
    if data is None:
        body = b""
    elif isinstance(data, bytes):
        body = data
    elif isinstance(data, str) and not _is_json(content_type):
        body = data.encode()
    else:
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        content_type = content_type or "application/json"
    return AmqpMessage(headers, content_type, body)


def to_structured(event: CloudEvent) -> AmqpMessage:
    return AmqpMessage({}, STRUCTURED, codec.dumps(event))


def is_structured(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == STRUCTURED


def from_message(message: AmqpMessage) -> CloudEvent:
    """The CloudEvent in a message of either mode."""
    ctype = (message.content_type or "").split(";")[0].strip().lower()
    if ctype == STRUCTURED:
        return codec.loads(message.body)
    if ctype.startswith("application/cloudevents-batch"):
        raise InvalidEvent("batched CloudEvents are not supported; send one event per message")
    attrs: dict[str, Any] = {}
    for name, value in (message.headers or {}).items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                attrs[name[len(prefix):].lower()] = _from_amqp(value)
    if not attrs:
        raise InvalidEvent("not a CloudEvent: no cloudEvents:* application properties and the content type is "
                           f"{message.content_type or 'missing'} (not {STRUCTURED})")
    missing = [a for a in _REQUIRED if not attrs.get(a)]
    if missing:
        raise InvalidEvent(f"not a CloudEvent: missing cloudEvents:{', cloudEvents:'.join(missing)}")
    if message.content_type:
        attrs["datacontenttype"] = message.content_type
    check_attributes(attrs)  # AMQP tables, decimals, floats: refused here, not crashed on later
    try:
        return CloudEvent(attrs, _data(message.body, message.content_type))
    except InvalidEvent:
        raise
    except Exception as exc:  # the SDK raises several types for bad attributes
        raise InvalidEvent(f"not a CloudEvent: {exc}") from None


def _data(body: bytes, content_type: str | None) -> Any:
    if not body:
        return None
    if _is_json(content_type):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"the body is not the JSON its content type {content_type!r} says: {exc}") from None
    return bytes(body)


def _is_json(content_type: str | None) -> bool:
    base = (content_type or "").split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or base == "text/json"


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _from_amqp(value: Any) -> Any:
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise InvalidEvent("a cloudEvents:* application property is not UTF-8 text") from None
    return value


def _rfc3339(value: datetime) -> str:
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
