"""Prometheus metrics: what every function exports at GET /metrics.

Counters and histograms are recorded where the work happens (the hop of
`observability.hop`, the webhook sender, the parse and embed calls); gauges
that describe shared state (documents by status, each trigger's backlog) are
read at scrape time by custom collectors, from the metadata store and the
bus, so they are right whichever process changed them.

Under `doclane up` the function processes have no HTTP port: they run in
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one file per
process, set by the runtime before it starts them) and the gateway's /metrics
adds those files to its own in-memory metrics. Every label has a bounded set
of values (function names, registered event types, fixed outcomes): never a
document id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from doclane.events.registry import REGISTRY as EVENT_TYPES

log = logging.getLogger("doclane.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Handlers range from milliseconds (notify) to minutes (a large PDF's parse).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STATUSES = ("uploaded", "classified", "extracted", "indexed", "failed")  # ports.DocumentRecord.status
WEBHOOK_OUTCOMES = ("delivered", "refused", "unreachable", "blocked")

EVENTS_CONSUMED = Counter("doclane_events_consumed", "Events a function took to handle, by event type.",
                          ["function", "type"])
EVENTS_EMITTED = Counter("doclane_events_emitted", "Events a function emitted, by event type.", ["function", "type"])
EVENTS_FAILED = Counter(
    "doclane_events_failed",
    "Handlings that failed, by kind: invalid (bad event), permanent, retryable, error (unexpected), "
    "exhausted (its workers kept dying).",
    ["function", "type", "kind"])
RETRIES = Counter("doclane_retries", "Deliveries put back on the bus for another attempt.", ["function"])
DEAD_LETTERED = Counter("doclane_dead_lettered", "Deliveries the bus gave up on (dead-lettered).", ["function"])
HANDLER_SECONDS = Histogram("doclane_handler_duration_seconds",
                            "Time to handle one event: validation, handler, recording and settling.",
                            ["function"], buckets=DURATION_BUCKETS)
IN_PROGRESS = Gauge("doclane_handlers_in_progress", "Events being handled now.", ["function"],
                    multiprocess_mode="livesum")
WEBHOOK_DELIVERIES = Counter(
    "doclane_webhook_deliveries",
    "Webhook calls by outcome: delivered (2xx), refused (another status), unreachable (no answer), "
    "blocked (the URL is not allowed).",
    ["outcome"])
PARSE_SECONDS = Histogram("doclane_parse_duration_seconds", "Time to parse one document (Docling).",
                          buckets=DURATION_BUCKETS)
EMBED_SECONDS = Histogram("doclane_embed_duration_seconds", "Time to embed one document's chunks.",
                          buckets=DURATION_BUCKETS)


def type_label(type_: str | None) -> str:
    """The short name of a registered event type; anything else is 'unknown'
    (a sender must not be able to mint label values)."""
    if isinstance(type_, str) and type_ in EVENT_TYPES:
        return EVENT_TYPES.get(type_).name
    return "unknown"


def webhook_delivered(outcome: str) -> None:
    if outcome not in WEBHOOK_OUTCOMES:
        raise ValueError(f"webhook outcome {outcome!r} is not one of {WEBHOOK_OUTCOMES}")
    WEBHOOK_DELIVERIES.labels(outcome).inc()


# ------------------------------------------------------------ multiprocess mode
def prepare_multiprocess(directory: os.PathLike | str) -> str:
    """Empty `directory` and name it in PROMETHEUS_MULTIPROC_DIR, which the
    function processes started afterwards inherit. Files of an earlier run
    would add its counts to this one's, hence the cleaning. This process keeps
    its own metrics in memory (the choice is made when prometheus-client is
    imported); `collectors` adds both up."""
    path = os.fspath(directory)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    os.environ[MULTIPROC_ENV] = path
    return path


def end_multiprocess(directory: str) -> None:
    """Stop handing `directory` to processes started from now on (the run is
    over; a later one cleans it)."""
    if os.environ.get(MULTIPROC_ENV) == directory:
        del os.environ[MULTIPROC_ENV]


def process_exited(pid: int) -> None:
    """A function process ended (or died): drop its live gauges (in-progress
    handlings), keep its counters. Nothing to do outside multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        mark_process_dead(pid, path)


def _records_to_files() -> bool:
    """This process writes its samples to PROMETHEUS_MULTIPROC_DIR (it was
    started with the variable set), rather than keeping them in memory."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


# ------------------------------------------------------------ scrape-time gauges
class DocumentsCollector:
    """doclane_documents{status}: read from the metadata store at scrape time."""

    def __init__(self, context):
        self.context = context

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.context.metadata.stats()["status"]
        except Exception as exc:  # a scrape must not fail because the store is away; the gap shows it
            log.warning("documents by status unavailable for /metrics: %s", exc)
            return
        family = GaugeMetricFamily("doclane_documents", "Documents by status (from the metadata store).",
                                   labels=["status"])
        for status in sorted(set(STATUSES) | set(counts)):
            family.add_metric([status], counts.get(status, 0))
        yield family


class BacklogCollector:
    """doclane_queue_backlog{trigger}: deliveries waiting or in progress on the
    configured bus (the embedded bus counts its rows; RabbitMQ answers a
    passive queue declare with its message count)."""

    def __init__(self, context, triggers: Iterable[str]):
        self.context = context
        self.triggers = tuple(triggers)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("doclane_queue_backlog", "Deliveries waiting or in progress, per trigger.",
                                   labels=["trigger"])
        try:
            for trigger in self.triggers:
                family.add_metric([trigger], self.context.bus.backlog(trigger))
        except Exception as exc:  # the bus is away: no backlog this scrape, rather than a failed scrape
            log.warning("queue backlog unavailable for /metrics: %s", exc)
            return
        yield family


class _Merged:
    """Families from several sources as one: samples with the same name and
    labels are added (counters and histograms of the gateway and of the
    function processes that did the same kind of work)."""

    def __init__(self, sources: list[Any]):
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for source in self.sources:
            for metric in source.collect():
                seen = families.get(metric.name)
                if seen is None:
                    families[metric.name] = metric
                    continue
                index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(seen.samples)}
                for sample in metric.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in index and not sample.name.endswith("_created"):  # a timestamp: keep the first
                        old = seen.samples[index[key]]
                        seen.samples[index[key]] = old._replace(value=old.value + sample.value)
                    elif key not in index:
                        seen.samples.append(sample)
        yield from families.values()


class _Declarations:
    """Every doclane_* family this code defines, without samples: a labelled
    counter nobody has touched yet (no dead letter so far, say) is then still
    declared (HELP/TYPE), whichever processes wrote samples, so dashboards and
    alerts can tell "zero so far" from "not exported"."""

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name.startswith("doclane_"):
                yield Metric(family.name, family.documentation, family.type, family.unit)


def collectors(context=None, *, documents: bool = False, backlog: bool = False,
               triggers: Iterable[str] = (), multiprocess_dir: str | None = None) -> _Merged:
    """Everything one /metrics answer shows."""
    sources: list[Any] = []
    directories = {d for d in (multiprocess_dir, os.environ.get(MULTIPROC_ENV) if _records_to_files() else None) if d}
    if not _records_to_files():
        sources.append(REGISTRY)  # this process's own samples (and process_*, python_* about it)
    sources += [MultiProcessCollector(None, path=d) for d in sorted(directories) if os.path.isdir(d)]
    if context is not None and documents:
        sources.append(DocumentsCollector(context))
    if context is not None and backlog:
        sources.append(BacklogCollector(context, triggers))
    sources.append(_Declarations())  # last: families with samples keep theirs
    return _Merged(sources)


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (OpenMetrics when the scraper asks for it).
    What the app adds is set in app.config["doclane.metrics"]: documents and
    backlog (the API and `doclane up`'s gateway), multiprocess_dir (`doclane up`)."""
    from doclane.functions.runtime import STAGES

    options = current_app.config.get("doclane.metrics", {})
    merged = collectors(current_app.config.get("doclane.ctx"), documents=options.get("documents", False),
                        backlog=options.get("backlog", False), triggers=options.get("triggers", STAGES),
                        multiprocess_dir=options.get("multiprocess_dir"))
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    return Response(encoder(merged), status=200, content_type=content_type)
