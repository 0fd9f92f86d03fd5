"""The event bus port, and the pure helpers that name its parts.

Topology (the same on every bus, modelled on Knative's RabbitMQ broker): one
broker; one queue per trigger (a function), filled with the events whose
type the trigger names (exact match); failed deliveries are retried with
exponential back-off up to `max_attempts`, then dead-lettered with the
reason. Consumers pull, handle, then ack: at-least-once delivery, made
effectively-once by deterministic output ids and idempotent handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from cloudevents.http import CloudEvent

BROKER = "doclane"


@dataclass(frozen=True)
class Trigger:
    name: str  # the function it feeds
    types: tuple[str, ...]  # versioned CloudEvents types, exact match
    max_attempts: int = 5
    backoff_seconds: float = 1.0  # first retry delay; doubles each attempt
    max_backoff_seconds: float = 300.0
    lease_seconds: float = 600.0  # a delivery not acked by then is redelivered

    def retry_delay(self, attempt: int) -> float:
        return min(self.backoff_seconds * 2 ** max(attempt - 1, 0), self.max_backoff_seconds)


@dataclass(frozen=True)
class Delivery:
    trigger: str
    tag: str  # bus-specific handle for ack/nack
    body: bytes  # the event in CloudEvents JSON (structured) format
    attempt: int  # 1 on first delivery


@dataclass(frozen=True)
class DeadLetter:
    trigger: str
    event_id: str | None
    type: str | None
    subject: str | None
    reason: str
    attempts: int
    body: bytes
    at: float


class EventBus(Protocol):
    def declare(self, triggers: Sequence[Trigger]) -> None:
        """Create the topology; idempotent."""
        ...

    def publish(self, event: CloudEvent) -> bool:
        """Validate and route to every trigger that wants the type. Returns
        False when an event with this id was published before (dropped)."""
        ...

    def receive(self, trigger: str, *, max_messages: int = 1, wait_seconds: float = 1.0, owner: str = "") -> list[Delivery]: ...

    def ack(self, delivery: Delivery) -> None: ...

    def nack(self, delivery: Delivery, reason: str, *, retryable: bool) -> bool:
        """Retry later with back-off, or dead-letter. Returns True if dead-lettered."""
        ...

    def backlog(self, trigger: str) -> int:
        """Deliveries waiting or in progress for the trigger."""
        ...

    def dead_letters(self, trigger: str | None = None) -> list[DeadLetter]:
        """What was dead-lettered (of one trigger, or all), without consuming it."""
        ...

    def requeue_dead(self, trigger: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        """Put dead letters (of one trigger or all; only `event_ids` if given)
        back on their trigger's queue with a fresh attempt count, and off the
        dead-letter queue; returns how many. Not a publish: the events' ids were
        published before, so publish() would drop them as duplicates."""
        ...

    def close(self) -> None: ...


# Pure naming helpers: every bus derives its names from these.
def queue_name(trigger: str, broker: str = BROKER) -> str:
    return f"{broker}.{trigger}"


def dead_letter_queue_name(trigger: str, broker: str = BROKER) -> str:
    return f"{broker}.{trigger}.dlq"


def retry_queue_name(trigger: str, broker: str = BROKER) -> str:
    return f"{broker}.{trigger}.retry"


def delay_queue_name(trigger: str, delay_seconds: float, broker: str = BROKER) -> str:
    """One queue per back-off step: a queue-wide TTL keeps expiry in FIFO
    order (per-message TTLs would wait behind a longer one at the head)."""
    return f"{retry_queue_name(trigger, broker)}.{round(delay_seconds * 1000)}ms"


def exchange_name(broker: str = BROKER) -> str:
    return f"{broker}.broker"


def dead_letter_exchange_name(broker: str = BROKER) -> str:
    return f"{broker}.dlx"


def retry_exchange_name(broker: str = BROKER) -> str:
    """Where expired delayed messages go back to their trigger's queue (by name)."""
    return f"{broker}.retry"
