"""OpenTelemetry tracing: one span per handled event, its parent the span
that emitted the event (W3C TraceContext in the CloudEvents `traceparent`
extension), so a document's hops ingest -> ... -> notify form one trace
across processes, buses and platforms.

On when the standard OTLP variables say where to send spans
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTLP over
HTTP/protobuf), off otherwise (and with OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none). Off, the SDK is not even imported: a hop then
only makes up a span id for its logs and outputs (functions/observability).
Other OTEL_* variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, ...) work as the SDK
documents them.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

log = logging.getLogger("doclane.tracing")

_UNSET: Any = object()
_tracer: Any = _UNSET  # an opentelemetry Tracer, None when tracing is off, _UNSET until first asked
_provider: Any = None  # the SDK TracerProvider behind it
_lock = threading.Lock()


def tracer():
    """The tracer of this process, or None when tracing is off. Decided once,
    from the environment, on first use (so every entry point gets it)."""
    global _tracer, _provider
    if _tracer is _UNSET:
        with _lock:
            if _tracer is _UNSET:
                _provider = _from_environment()
                _tracer = _provider.get_tracer("doclane") if _provider is not None else None
    return _tracer


def use(provider) -> None:
    """Trace with `provider` (an SDK TracerProvider; tests hand in one with an
    in-memory exporter), or turn tracing off with None."""
    global _tracer, _provider
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer("doclane") if provider is not None else None


def reset() -> None:
    """Decide again from the environment on the next use."""
    global _tracer, _provider
    with _lock:
        _tracer, _provider = _UNSET, None


def flush(timeout_seconds: float = 10.0) -> bool:
    """Export the spans still buffered (the batch processor sends every few
    seconds and at exit). True when there was nothing to do or it worked."""
    provider = _provider
    return provider.force_flush(int(timeout_seconds * 1000)) if provider is not None else True


def enabled_by_environment(env=os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _from_environment():
    if not enabled_by_environment():
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        # Refusing loudly beats sending HTTP to a gRPC port; the pipeline runs on untraced.
        log.error("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: doclane exports OTLP over HTTP "
                  "(http/protobuf; a collector's port 4318). Tracing is off.", protocol)
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, wins over this default (the SDK's env detector).
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "doclane"})
    # shutdown_on_exit: a function process that exits when idle flushes its spans first.
    provider = TracerProvider(resource=resource, shutdown_on_exit=True)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing: OTLP/HTTP export to %s", os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return provider


class Span:
    """An SDK span made current for the hop, and its W3C ids."""

    def __init__(self, tracer_, name: str, traceparent: str | None, tracestate: str | None,
                 attributes: dict[str, Any]):
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._propagator = TraceContextTextMapPropagator()
        carrier = {"traceparent": traceparent} if traceparent else {}
        if tracestate:
            carrier["tracestate"] = tracestate
        parent = self._propagator.extract(carrier)  # an invalid or missing traceparent: a new trace
        self.span = tracer_.start_span(name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes)
        self._context = trace.set_span_in_context(self.span)
        self._token = context.attach(self._context)  # libraries traced inside the handler nest under it
        ids = self.span.get_span_context()
        self.trace_id = trace.format_trace_id(ids.trace_id)
        self.span_id = trace.format_span_id(ids.span_id)

    def headers(self) -> dict[str, str]:
        """traceparent (and tracestate) naming this span as the parent."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._context)
        return carrier

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def record_failure(self, exc: BaseException, kind: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.record_exception(exc)
        self.span.set_attribute("doclane.failure", kind)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))

    def end(self) -> None:
        from opentelemetry import context

        context.detach(self._token)
        self.span.end()
