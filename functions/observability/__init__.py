"""Metrics, traces and log context for one handled event (a "hop").

A hop is opened once per delivery, at the outermost layer that sees it: the
bus binding (functions/binding.py: it also knows the attempt and how the
delivery was settled) or, for HTTP transports, `runtime.invoke` itself. When
the binding has opened one, invoke joins it, so every transport is counted
once. The hop

- counts the event consumed, emitted events, failures by kind, retries and
  dead letters, times the handling and keeps an in-progress gauge (metrics);
- opens a span whose parent is the incoming event's traceparent and stamps
  the span's own traceparent on every event the handler emits (tracing);
- binds function, document_id, event_id, trace_id and span_id to every log
  line written meanwhile (logs).

With tracing off the hop still makes up a span id (8 random bytes) and puts
it in the outputs' traceparent and in the logs, so log lines link hop to hop
without a tracing backend.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Sequence

from cloudevents.http import CloudEvent

from doclane.events.envelope import InvalidEvent, trace_context
from doclane.functions.errors import Permanent, Retryable
from doclane.functions.observability import logs, metrics, tracing

_current: ContextVar["Hop | None"] = ContextVar("doclane_hop", default=None)


def failure_kind(exc: BaseException) -> str:
    """The `kind` label of doclane_events_failed_total: a small fixed set."""
    if isinstance(exc, InvalidEvent):
        return "invalid"
    if isinstance(exc, Permanent):
        return "permanent"
    if isinstance(exc, Retryable):
        return "retryable"
    return getattr(exc, "failure_kind", "error")  # e.g. the binding's "exhausted"


class Hop:
    def __init__(self, function: str, attempt: int | None = None):
        self.function = function
        self.attempt = attempt
        self.event_id: str | None = None
        self.document_id: str | None = None
        self.type = "unknown"
        self.trace_id: str | None = None
        self.span_id: str | None = None
        self.flags = "01"
        self._span: tracing.Span | None = None
        self._logs = None
        self._started: float | None = None
        self._failed = False

    def begin(self, event: CloudEvent) -> None:
        """The event is known (parsed, not yet validated: every attribute may be
        of the wrong type, and is then ignored here): start timing, tracing and
        log context."""
        self.event_id = _text(event.get("id"))
        self.type = metrics.type_label(event.get("type"))
        self.document_id = document_id = _text(event.get("subject"))
        metrics.EVENTS_CONSUMED.labels(self.function, self.type).inc()
        metrics.IN_PROGRESS.labels(self.function).inc()
        self._started = time.perf_counter()
        traceparent = _text(event.get("traceparent"))
        tracer = tracing.tracer()
        if tracer is not None:
            attributes = {"doclane.function": self.function, "cloudevents.event_id": self.event_id or "",
                          "cloudevents.event_type": _text(event.get("type")) or "",
                          "cloudevents.event_source": _text(event.get("source")) or ""}
            if document_id:
                attributes["doclane.document_id"] = document_id
            if self.attempt is not None:
                attributes["doclane.attempt"] = self.attempt
            self._span = tracing.Span(tracer, f"{self.function} {self.type}", traceparent,
                                      _text(event.get("tracestate")), attributes)
            self.trace_id, self.span_id = self._span.trace_id, self._span.span_id
        else:
            incoming = trace_context(traceparent)  # none usable: this hop starts a trace
            self.trace_id, self.flags = (incoming[0], incoming[2]) if incoming else (os.urandom(16).hex(), "01")
            self.span_id = os.urandom(8).hex()
        self._logs = logs.bound(function=self.function, document_id=document_id, event_id=self.event_id,
                                trace_id=self.trace_id, span_id=self.span_id)
        self._logs.__enter__()

    def emit(self, outputs: Sequence[CloudEvent]) -> None:
        """The events this hop caused: their traceparent names this hop's span."""
        if self._span is not None:
            headers = self._span.headers()
        elif self.trace_id:
            headers = {"traceparent": f"00-{self.trace_id}-{self.span_id}-{self.flags}"}
        else:
            headers = {}
        for out in outputs:
            for key, value in headers.items():
                out[key] = value
            metrics.EVENTS_EMITTED.labels(self.function, metrics.type_label(out.get("type"))).inc()
        if self.document_id is None:  # a bucket notification names no document; what ingest emits does
            subjects = {_text(out.get("subject")) for out in outputs} - {None}
            if len(subjects) == 1:
                self.document_id = subjects.pop()
                logs.add(document_id=self.document_id)
                if self._span is not None:
                    self._span.set_attribute("doclane.document_id", self.document_id)

    def fail(self, exc: BaseException) -> None:
        """Count a failure once, however many layers report it."""
        if self._failed:
            return
        self._failed = True
        kind = failure_kind(exc)
        metrics.EVENTS_FAILED.labels(self.function, self.type, kind).inc()
        if self._span is not None:
            self._span.record_failure(exc, kind)

    def settled(self, outcome: str) -> None:
        """How the bus settled the delivery: ok, retry or dead."""
        if outcome == "retry":
            metrics.RETRIES.labels(self.function).inc()
        elif outcome == "dead":
            metrics.DEAD_LETTERED.labels(self.function).inc()
        if self._span is not None:
            self._span.set_attribute("doclane.outcome", outcome)

    def end(self) -> None:
        if self._started is not None:
            metrics.HANDLER_SECONDS.labels(self.function).observe(time.perf_counter() - self._started)
            metrics.IN_PROGRESS.labels(self.function).dec()
        if self._logs is not None:
            self._logs.__exit__(None, None, None)
        if self._span is not None:
            self._span.end()


def current() -> Hop | None:
    return _current.get()


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


@contextmanager
def hop(function: str, event: CloudEvent | None = None, *, attempt: int | None = None) -> Iterator[Hop]:
    """Observe one handled event. Given the event, the hop begins at once;
    else call `begin` when the event is parsed. Inside a hop already open for
    the same function and event, yield that one (the binding opened it)."""
    open_ = _current.get()
    if (open_ is not None and event is not None and open_.function == function
            and open_.event_id == _text(event.get("id"))):
        try:
            yield open_
        except BaseException as exc:
            open_.fail(exc)
            raise
        return
    h = Hop(function, attempt)
    token = _current.set(h)
    try:
        if event is not None:
            h.begin(event)
        yield h
    except BaseException as exc:
        h.fail(exc)
        raise
    finally:
        _current.reset(token)
        h.end()
