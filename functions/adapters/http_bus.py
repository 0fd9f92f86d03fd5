"""A publish-only event bus: each event is POSTed to a broker's HTTP ingress
(DOCLANE_BUS=http), for Knative.

Why: on Knative the broker pushes events to the functions through Triggers,
and a function's next event is its HTTP reply (functions/http.py), so the
stage functions need no bus. But some events are published by no reply: the
api's own (batch.uploaded from POST /batch-upload, document.uploaded from
POST /reprocess and the dashboard's retry, document.classified from a
corrected category) and the bucket notifications MinIO's webhook brings to
POST /notifications/minio. On a SQLite bus inside the pod they never left
it. Here they go to the broker ingress the SinkBinding injects as K_SINK
(infra/knative/services.yaml), or to DOCLANE_BROKER_URL (which wins when both
are set: it is the explicit choice).

On the wire: the CloudEvents HTTP binding's binary content mode (the SDK's
`to_binary`): every attribute a `ce-` header (`ce-traceparent` among them),
the JSON data the body, Content-Type the event's datacontenttype. The
traceparent is also sent as the W3C `traceparent` header, so the broker's
own spans join the event's trace.

Delivery: any 2xx means the broker took the event (Knative answers 202).
A connection error, a timeout, a 5xx, 408 or 429 is retried with
exponential back-off, `attempts` times at most, then BrokerUnavailable
(Retryable: the api answers 503, a bus-publishing stage function's event is
retried). Any other 4xx is BrokerRefused (Permanent: the api answers 502)
with the broker's answer: sending it again would be refused again.

De-duplication: none here, and the broker has none either; a retry after a
timeout may even hand the broker an event it already took. So publish()
returns True for every event the broker accepted ("sent"; never "dropped as
a duplicate", as the other buses may answer). Event ids are deterministic
(events/envelope.py `derive`, reprocess's per-pass ids), and everything
downstream is idempotent on them: the metadata store records an event id
once, notify delivers an event id once per subscription, the index replaces
a document's chunks.

Consuming is not this bus's business: receive, ack, nack, backlog,
dead_letters and requeue_dead raise PublishOnly, which says where that
happens instead: Knative's Triggers push events to the functions, and dead
letters go to each Trigger's deadLetterSink (notify's /deadletter). The
observers cope: the API's /metrics shows no backlog with this bus
(local/gateway.py), /stats and the dashboard show queues only for a bus
with `counts`, and `doclane reprocess --dead-letters` / POST /reprocess
with dead_letters answer this error before sending anything.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from doclane.events.bus import DeadLetter, Delivery, Trigger
from doclane.events.envelope import validate
from doclane.functions.errors import ConfigError, Permanent, Retryable

log = logging.getLogger("doclane.http_bus")

_RETRY_STATUSES = frozenset({408, 429})  # besides every 5xx: the broker may take it on a later attempt
_MAX_DETAIL = 300  # characters of the broker's answer quoted in an error


class BrokerUnavailable(Retryable):
    """The broker ingress did not take the event within the attempts
    (unreachable, timing out, or answering 5xx/408/429)."""


class BrokerRefused(Permanent):
    """The broker ingress refused the event with a 4xx: sending it again would not help."""


class PublishOnly(ConfigError):
    """An operation a publish-only bus cannot do (consuming, counting, dead letters)."""


class HttpBus:
    """EventBus (events/bus.py) whose only working operation is publish."""

    def __init__(self, url: str, *, timeout: float = 10.0, attempts: int = 3, backoff: float = 0.25,
                 max_backoff: float = 5.0, client: httpx.Client | None = None):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = url
        self.attempts, self.backoff, self.max_backoff = attempts, backoff, max_backoff
        # One client, so connections to the ingress are kept alive; httpx.Client is thread-safe
        # (the api serves several requests at once).
        self._client = client or httpx.Client(timeout=timeout)

    @classmethod
    def from_settings(cls, settings) -> "HttpBus":
        url = settings.broker_ingress
        if not url:
            raise ConfigError("DOCLANE_BUS=http needs K_SINK (Knative's SinkBinding sets it) or DOCLANE_BROKER_URL")
        return cls(url)

    # ------------------------------------------------------------------ publish
    def declare(self, triggers: Sequence[Trigger]) -> None:
        """Nothing to create: the Broker and its Triggers are Kubernetes
        resources (infra/knative), applied with the deployment."""

    def publish(self, event: CloudEvent) -> bool:
        """Send one event; True once the broker accepted it (see the module
        docstring: never False, the broker keeps no ids)."""
        validate(event)  # refuse an invalid event before anything is sent, as every bus does
        self._post(event)
        return True

    def publish_many(self, events: Sequence[CloudEvent]) -> list[bool]:
        for event in events:
            validate(event)  # all or nothing as far as validity goes
        for event in events:
            self._post(event)
        return [True] * len(events)

    def _post(self, event: CloudEvent) -> None:
        headers, body = to_binary(event)
        headers = dict(headers)
        if event.get("traceparent"):  # W3C trace context for the broker's own spans
            headers["traceparent"] = str(event["traceparent"])
            if event.get("tracestate"):
                headers["tracestate"] = str(event["tracestate"])
        why = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                time.sleep(self._delay(attempt))
            try:
                resp = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:  # connection refused or reset, timeouts, a broken answer
                why = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return
                why = f"HTTP {resp.status_code}: {_answer(resp)}"
                if resp.status_code < 500 and resp.status_code not in _RETRY_STATUSES:
                    raise BrokerRefused(f"the broker at {self.url} refused event {event['id']} ({event['type']}): "
                                        f"{why}")
            log.warning("publishing %s (%s) to %s, attempt %d of %d: %s", event["id"], event["type"], self.url,
                        attempt, self.attempts, why)
        raise BrokerUnavailable(f"the broker at {self.url} did not take event {event['id']} ({event['type']}) "
                                f"in {self.attempts} attempts; last: {why}")

    def _delay(self, attempt: int) -> float:
        """Before attempt 2, 3, ...: backoff, doubling, at most max_backoff."""
        return min(self.backoff * 2 ** (attempt - 2), self.max_backoff)

    # ------------------------------------------------------------- not supported
    def receive(self, trigger: str, *, max_messages: int = 1, wait_seconds: float = 1.0,
                owner: str = "") -> list[Delivery]:
        raise _publish_only("receive events")

    def ack(self, delivery: Delivery) -> None:
        raise _publish_only("acknowledge deliveries")

    def nack(self, delivery: Delivery, reason: str, *, retryable: bool) -> bool:
        raise _publish_only("retry or dead-letter deliveries")

    def backlog(self, trigger: str) -> int:
        raise _publish_only("count a trigger's backlog")

    def ready_now(self, trigger: str) -> int:  # what `doclane up`'s supervisor asks
        raise _publish_only("count a trigger's backlog")

    def dead_letters(self, trigger: str | None = None) -> list[DeadLetter]:
        raise _publish_only("list dead letters")

    def requeue_dead(self, trigger: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        raise _publish_only("replay dead letters")

    def close(self) -> None:
        self._client.close()


def _publish_only(what: str) -> PublishOnly:
    return PublishOnly(
        f"DOCLANE_BUS=http only publishes (to the broker ingress) and cannot {what}: Knative pushes events to "
        "functions through Triggers; dead letters go to the Trigger's deadLetterSink (the notify Service's "
        "/deadletter, which fails the document), and a failed document is sent again with "
        "`doclane reprocess --failed` or POST /reprocess {\"status\": \"failed\"}")


def _answer(resp: httpx.Response) -> str:
    text = " ".join(resp.text.split())
    return (text[:_MAX_DETAIL] + "...") if len(text) > _MAX_DETAIL else (text or resp.reason_phrase)
