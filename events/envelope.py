"""CloudEvents 1.0 envelopes for doclane's events.

Every event doclane emits is made here, so every one carries a versioned
`type`, `source`, a unique `id` (the idempotency key), `subject` (the document
id), `time`, `datacontenttype`, `dataschema` and the W3C `traceparent`
extension, carried from hop to hop.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from cloudevents.http import CloudEvent
from pydantic import BaseModel, ValidationError

from doclane.events.registry import REGISTRY

SOURCE_PREFIX = "/doclane/"
# Output ids are derived from the input id, so a handler that runs twice for
# the same input (redelivery after a crash) emits the same event ids and the
# bus can drop the repeat.
_ID_NAMESPACE = uuid.UUID("0b7f7c4e-3c1e-4f55-9a53-6f1e0c0a9d10")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REQUIRED = ("id", "source", "type", "specversion")
_STRING_ATTRIBUTES = frozenset({*_REQUIRED, "subject", "time", "datacontenttype", "dataschema"})
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,64}$")


class InvalidEvent(ValueError):
    """The event breaks the CloudEvents spec or its registered schema. Never
    retried: it goes to the dead-letter path with this message as the reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_traceparent(trace_id: str | None = None) -> str:
    trace_id = trace_id or os.urandom(16).hex()
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"


def trace_context(traceparent: Any) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a W3C traceparent; None when the
    value is not one (missing, malformed, not even a string)."""
    match = _TRACEPARENT.match(traceparent) if isinstance(traceparent, str) else None
    return match.groups() if match else None  # type: ignore[return-value]


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span: the next hop of the same document."""
    match = _TRACEPARENT.match(parent or "")
    return new_traceparent(match.group(1) if match else None)


def new_event(
    name_or_type: str,
    data: BaseModel | dict[str, Any],
    *,
    subject: str | None,
    source: str,
    id: str | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """Make and validate an event of a registered type ('document.uploaded' or
    its versioned type)."""
    type_ = name_or_type if name_or_type in REGISTRY else REGISTRY.type_of(name_or_type)
    spec = REGISTRY.get(type_)
    payload = data if isinstance(data, spec.model) else _validate_data(spec, data, type_)
    attributes = {
        "type": type_,
        "source": source if source.startswith("/") or ":" in source else SOURCE_PREFIX + source,
        "id": id or str(uuid.uuid4()),
        "time": _now(),
        "datacontenttype": "application/json",
        "dataschema": spec.dataschema,
        "traceparent": traceparent or new_traceparent(),
    }
    if subject:
        attributes["subject"] = subject
    return CloudEvent(attributes, payload.model_dump(mode="json", exclude_none=True))


def derive(
    parent: CloudEvent,
    name_or_type: str,
    data: BaseModel | dict[str, Any],
    *,
    source: str,
    subject: str | None = None,
    key: str = "",
) -> CloudEvent:
    """The next event caused by `parent`: deterministic id, same trace."""
    type_ = name_or_type if name_or_type in REGISTRY else REGISTRY.type_of(name_or_type)
    event_id = str(uuid.uuid5(_ID_NAMESPACE, f"{parent['id']}|{type_}|{key}"))
    return new_event(
        type_,
        data,
        subject=subject if subject is not None else parent.get("subject"),
        source=source,
        id=event_id,
        traceparent=child_traceparent(parent.get("traceparent")),
    )


def _validate_data(spec, data: Any, type_: str) -> BaseModel:
    try:
        return spec.model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(data)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InvalidEvent(f"{type_} data does not match its schema: {problems}") from None


def check_attributes(attrs: dict[str, Any]) -> None:
    """The CloudEvents type system, which the SDK does not enforce on input:
    the context attributes are strings (`time` an RFC 3339 timestamp) and an
    extension is a string, integer or boolean named [a-z0-9]+. A JSON number
    as `id` or an object as `type` is refused here, not crashed on later."""
    missing = [a for a in _REQUIRED if not attrs.get(a)]
    if missing:
        raise InvalidEvent(f"missing CloudEvents attribute(s): {', '.join(missing)}")
    for name, value in attrs.items():
        if value is None:
            continue
        if name in _STRING_ATTRIBUTES:
            if not isinstance(value, str):
                raise InvalidEvent(f"CloudEvents attribute {name!r} must be a string, not {type(value).__name__}")
        elif not _EXTENSION_NAME.match(str(name)):
            raise InvalidEvent(f"extension attribute name {str(name)[:40]!r} is not lower-case letters and digits")
        elif isinstance(value, float) or not isinstance(value, (str, int, bool)):
            raise InvalidEvent(f"extension attribute {name!r} must be a string, integer or boolean, "
                               f"not {type(value).__name__}")
    if attrs.get("time"):
        try:
            datetime.fromisoformat(str(attrs["time"]).replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidEvent(f"CloudEvents attribute 'time' {str(attrs['time'])[:40]!r} is not an RFC 3339 "
                               "timestamp") from None


def validate(event: CloudEvent) -> BaseModel:
    """Check an incoming or outgoing event and return its typed data."""
    attrs = event.get_attributes()
    check_attributes(attrs)
    if attrs.get("specversion") != "1.0":
        raise InvalidEvent(f"specversion {attrs.get('specversion')!r} is not supported; send 1.0")
    type_ = attrs["type"]
    if type_ not in REGISTRY:
        raise InvalidEvent(f"unknown event type {type_!r}; see GET /schemas for the registered types")
    spec = REGISTRY.get(type_)
    ct = attrs.get("datacontenttype")
    if ct and "json" not in ct:
        raise InvalidEvent(f"{type_} data must be JSON, not {ct!r}")
    schema = attrs.get("dataschema")
    if schema and schema != spec.dataschema:
        raise InvalidEvent(f"dataschema {schema!r} does not match {type_} (expected {spec.dataschema})")
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        raise InvalidEvent(f"{type_} data is not a JSON object")
    return _validate_data(spec, data, type_)


def event_data(event: CloudEvent, model: type[BaseModel]) -> BaseModel:
    """Typed data of an event already known to be of `model`'s type."""
    data = validate(event)
    if not isinstance(data, model):
        raise InvalidEvent(f"{event['type']} is not {model.__name__}")
    return data
