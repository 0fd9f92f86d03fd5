"""What a function is, which functions there are, and how one is invoked.
The bus binding (functions/binding.py) and the HTTP shim (functions/http.py)
both call `invoke`, so a function behaves the same on every platform."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from doclane.events.bus import Trigger
from doclane.events.envelope import InvalidEvent, validate
from doclane.events.registry import REGISTRY
from doclane.functions import observability

log = logging.getLogger("doclane.runtime")

Handler = Callable[[CloudEvent, BaseModel, "Context"], list[CloudEvent]]  # noqa: F821

# The stage functions, in pipeline order. Each module defines FUNCTION.
STAGES = ("ingest", "classify", "extract", "index", "notify")


@dataclass(frozen=True)
class Function:
    name: str
    consumes: tuple[str, ...]  # event names, e.g. "document.uploaded"
    emits: tuple[str, ...]
    handle: Handler
    # When the bus gives up on an event, does that fail the document? (A
    # webhook that never answers does not make a document fail.)
    fails_document: bool = True
    lease_seconds: float = 600.0

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(REGISTRY.type_of(n) for n in self.consumes)

    def accepts(self, type_: str) -> bool:
        return type_ in self.types


def load(name: str) -> Function:
    if name not in STAGES:
        raise KeyError(f"no function named {name!r}; functions: {', '.join(STAGES)}")
    return importlib.import_module(f"doclane.functions.{name}").FUNCTION


def all_functions() -> list[Function]:
    return [load(n) for n in STAGES]


def triggers(settings) -> list[Trigger]:
    return [
        Trigger(
            name=fn.name,
            types=fn.types,
            max_attempts=settings.max_attempts,
            backoff_seconds=settings.retry_backoff,
            lease_seconds=max(fn.lease_seconds, settings.parse_timeout * 2),
        )
        for fn in all_functions()
    ]


def invoke(fn: Function, event: CloudEvent, ctx) -> list[CloudEvent]:
    """Validate, handle, record. Raises InvalidEvent (never retry), Permanent
    (never retry), Retryable or anything else (retry). Observed as one hop
    (metrics, span, log ids), joining the binding's when it opened one."""
    with observability.hop(fn.name, event) as hop:
        return _invoke(fn, event, ctx, hop)


def _invoke(fn: Function, event: CloudEvent, ctx, hop: observability.Hop) -> list[CloudEvent]:
    data = validate(event)
    if not fn.accepts(event["type"]):
        raise InvalidEvent(f"function {fn.name} does not take {event['type']}; it takes {', '.join(fn.types)}")
    started = time.perf_counter()
    outputs = fn.handle(event, data, ctx) or []
    elapsed_ms = (time.perf_counter() - started) * 1000
    hop.emit(outputs)  # before recording: the history keeps the traceparent that was sent
    for out in outputs:
        validate(out)
        if out.get("subject"):
            ctx.metadata.record_event(out, stage=fn.name, duration_ms=round(elapsed_ms, 2))
    log.info("%s handled %s (%s) in %.0f ms -> %s", fn.name, event["type"], event.get("subject") or "-",
             elapsed_ms, [o["type"].split(".")[-2] for o in outputs])
    return outputs
