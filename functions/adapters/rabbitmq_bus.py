"""The event bus on RabbitMQ (pika), with the semantics of the embedded bus
(local/bus.py) and the topology of Knative's RabbitMQ broker
(rabbitmq_topology.py: a headers exchange, a quorum queue per trigger bound
by event type, delay queues for back-off, a dead-letter queue per trigger).

Messages are CloudEvents in binary mode (events/amqp.py), persistent, and
published with publisher confirms. A consumer acks only after the handler
succeeded (the binding decides); a retry is a confirmed copy in the delay
queue with `x-doclane-attempts`, then the ack; a dead letter is a confirmed
copy in the DLQ with `x-doclane-reason` and `x-doclane-attempts`, then the
ack. The attempt number is x-doclane-attempts + the quorum queue's
x-delivery-count (deliveries returned by a consumer that died) + 1.

Duplicate event ids: RabbitMQ has no de-duplication. With a `dedup` store
(the MetadataStore: PostgreSQL or SQLite, shared by every process) publish
skips an id recorded before and records an id once the broker confirmed it,
so a failed publish is never mistaken for a duplicate; two processes racing
on the same id may both publish. That window, and a crash between handling
and ack, are why delivery stays at-least-once: every handler is idempotent
(derived output ids, replacing index writes, history keyed by event id,
webhook deliveries recorded per event). Without a store, publish always
returns True.

Threads: pika connections are not thread-safe, so each thread has its own
connection (and consumer channels); ack and nack a delivery on the thread
that received it. A lost connection is reopened on the next call; a call
that fails twice raises Retryable. Deliveries of a lost connection are
redelivered by the broker, so `release_owner` has nothing to do.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pika
from pika.exceptions import AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker, ChannelWrongStateError
from cloudevents.http import CloudEvent

from doclane.events import amqp, codec
from doclane.events.bus import (BROKER, DeadLetter, Delivery, Trigger, dead_letter_exchange_name,
                                dead_letter_queue_name, delay_queue_name, exchange_name, queue_name,
                                retry_exchange_name)
from doclane.events.envelope import InvalidEvent, validate
from doclane.functions.adapters import rabbitmq_topology as topology
from doclane.functions.errors import ConfigError, Retryable

log = logging.getLogger("doclane.rabbitmq")

_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "x-doclane-")
_LOST = (AMQPConnectionError, ChannelWrongStateError)
_tags = itertools.count(1)


@dataclass
class _Held:  # a delivery handed out and not yet settled
    channel: Any
    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes


@dataclass
class _Consumer:
    channel: Any
    buffer: deque = field(default_factory=deque)


@dataclass
class _State:  # one thread's connection
    pid: int
    conn: Any
    publisher: Any = None
    admin: Any = None
    consumers: dict[str, _Consumer] = field(default_factory=dict)
    held: dict[str, _Held] = field(default_factory=dict)


class RabbitBus:
    def __init__(self, url: str, broker: str = BROKER, *, triggers: Sequence[Trigger] = (), dedup: Any = None,
                 prefetch: int = 1):
        self.url = url
        self.broker = broker
        self.prefetch = prefetch
        self._params = _parameters(url, broker)
        self._triggers = {t.name: t for t in triggers}
        self._dedup = dedup  # has seen(name, id) / mark_seen(name, id): the MetadataStore
        self._local = threading.local()
        self._delays_declared: set[str] = set()

    # ----------------------------------------------------------------- plumbing
    def _state(self) -> _State:
        st: _State | None = getattr(self._local, "state", None)
        if st is not None and (st.pid != os.getpid() or st.conn.is_closed):
            self._local.state = st = None  # forked child or lost connection: start afresh
        if st is None:
            try:
                st = _State(os.getpid(), pika.BlockingConnection(self._params))
            except AMQPConnectionError as exc:
                raise Retryable(f"RabbitMQ at {self._params.host}:{self._params.port} is unreachable: {exc!r}") from None
            self._local.state = st
        return st

    def _channel(self, st: _State, role: str):
        ch = getattr(st, role)
        if ch is None or ch.is_closed:
            ch = st.conn.channel()
            if role == "publisher":
                ch.confirm_delivery()  # basic_publish now returns once the broker took it, or raises
            setattr(st, role, ch)
        return ch

    def _run(self, op: Callable[[_State], Any]) -> Any:
        """Run `op` on this thread's connection, once more on a fresh one if
        the connection was lost; then give up with Retryable."""
        for attempt in (1, 2):
            st = self._state()
            try:
                return op(st)
            except _LOST as exc:
                self._local.state = None
                if attempt == 2:
                    raise Retryable(f"RabbitMQ connection lost: {exc!r}") from None

    def _publish(self, st: _State, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        try:
            self._channel(st, "publisher").basic_publish(exchange, routing_key, body, props)
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            raise Retryable(f"RabbitMQ refused the message on {exchange or routing_key}: {exc!r}") from None

    # ----------------------------------------------------------------- topology
    def declare(self, triggers: Sequence[Trigger]) -> None:
        self._triggers.update({t.name: t for t in triggers})
        self._run(lambda st: topology.declare(self._channel(st, "admin"), self.broker, triggers))

    def _delay_queue(self, st: _State, trigger: str, delay: float) -> str:
        name = delay_queue_name(trigger, delay, self.broker)
        if name not in self._delays_declared:  # a policy this process has not declared yet
            topology.declare_delay(self._channel(st, "admin"), self.broker, trigger, delay)
            self._delays_declared.add(name)
        return name

    def triggers(self) -> dict[str, Trigger]:
        return dict(self._triggers)

    def trigger(self, name: str) -> Trigger:
        t = self._triggers.get(name)
        if t is None:
            raise KeyError(f"no trigger named {name!r} is known to this bus (declare it, or pass triggers=)")
        return t

    # ----------------------------------------------------------------- publish
    def publish(self, event: CloudEvent) -> bool:
        return self.publish_many([event])[0]

    def publish_many(self, events: Sequence[CloudEvent]) -> list[bool]:
        for event in events:
            validate(event)  # refuse invalid events before anything is sent
        results = []
        for event in events:
            if self._dedup is not None and self._dedup.seen(self._dedup_name, event["id"]):
                results.append(False)
                continue
            msg = amqp.to_binary(event)
            props = pika.BasicProperties(content_type=msg.content_type, headers=dict(msg.headers), delivery_mode=2,
                                         message_id=event["id"], timestamp=int(time.time()), app_id="doclane")
            self._run(lambda st: self._publish(st, exchange_name(self.broker), "", msg.body, props))
            if self._dedup is not None:
                self._dedup.mark_seen(self._dedup_name, event["id"])  # only once the broker confirmed it
            results.append(True)
        return results

    @property
    def _dedup_name(self) -> str:
        return f"bus:{self.broker}"

    def enqueue_raw(self, trigger: str, body: bytes, *, content_type: str | None = None) -> None:
        """Put bytes that may not even be a CloudEvent on one trigger's queue,
        as a foreign producer could (tests of the dead-letter path)."""
        props = pika.BasicProperties(content_type=content_type, delivery_mode=2)
        self._run(lambda st: self._publish(st, retry_exchange_name(self.broker), trigger, body, props))

    # ----------------------------------------------------------------- consume
    def receive(self, trigger: str, *, max_messages: int = 1, wait_seconds: float = 1.0, owner: str = "") -> list[Delivery]:
        deadline = time.monotonic() + wait_seconds
        while True:
            out = self._run(lambda st: self._take(st, trigger, max_messages, deadline))
            if out or time.monotonic() >= deadline:
                return out

    def _take(self, st: _State, trigger: str, max_messages: int, deadline: float) -> list[Delivery]:
        consumer = st.consumers.get(trigger)
        if consumer is None or consumer.channel.is_closed:
            consumer = st.consumers[trigger] = self._consume(st, trigger, max_messages)
        if not consumer.buffer:
            # Pushed deliveries arrive asynchronously; a get answers "anything ready now?" at once.
            st.conn.process_data_events(time_limit=0)
            if not consumer.buffer:
                method, props, body = consumer.channel.basic_get(queue_name(trigger, self.broker))
                if method is not None:
                    consumer.buffer.append((method, props, body))
        if not consumer.buffer:
            st.conn.process_data_events(time_limit=min(max(deadline - time.monotonic(), 0), 0.5))
        out = []
        while consumer.buffer and len(out) < max_messages:
            delivery = self._delivery(st, trigger, consumer.channel, *consumer.buffer.popleft())
            if delivery is not None:
                out.append(delivery)
        return out

    def _consume(self, st: _State, trigger: str, max_messages: int) -> _Consumer:
        consumer = _Consumer(st.conn.channel())
        consumer.channel.basic_qos(prefetch_count=max(max_messages, self.prefetch))  # prefetch per function
        try:
            consumer.channel.basic_consume(queue_name(trigger, self.broker),
                                           lambda _ch, method, props, body: consumer.buffer.append((method, props, body)))
        except ChannelClosedByBroker as exc:
            raise KeyError(f"no queue for trigger {trigger!r} on broker {self.broker!r} ({exc.reply_text}); "
                           "declare the triggers first") from None
        return consumer

    def _delivery(self, st: _State, trigger: str, channel, method, props, body: bytes) -> Delivery | None:
        headers = props.headers or {}
        held = _Held(channel, method.delivery_tag, props, body)
        attempt = int(headers.get("x-doclane-attempts", 0)) + int(headers.get("x-delivery-count", 0)) + 1
        try:
            event = amqp.from_message(amqp.AmqpMessage(headers, props.content_type, body))
        except InvalidEvent as exc:  # no function can take it: straight to the DLQ, with the reason
            self._settle(st, trigger, held, f"InvalidEvent: {exc}", attempt, dead=True)
            return None
        tag = f"{trigger}:{next(_tags)}"
        st.held[tag] = held
        return Delivery(trigger, tag, codec.dumps(event), attempt)

    def ack(self, delivery: Delivery) -> None:
        held = self._held(delivery)
        if held is not None:
            self._settle_ack(held)

    def nack(self, delivery: Delivery, reason: str, *, retryable: bool) -> bool:
        t = self.trigger(delivery.trigger)
        dead = not retryable or delivery.attempt >= t.max_attempts
        held = self._held(delivery)
        if held is None:
            return False  # not settled here: the broker delivers it again
        self._run(lambda st: self._settle(st, delivery.trigger, held, reason, delivery.attempt, dead=dead))
        return dead

    def _held(self, delivery: Delivery) -> _Held | None:
        st: _State | None = getattr(self._local, "state", None)
        held = st.held.pop(delivery.tag, None) if st is not None else None
        if held is None or held.channel.is_closed:
            # The connection it came on is gone, so the broker delivers it again.
            log.warning("%s delivery %s was settled on a lost connection; it will be redelivered",
                        delivery.trigger, delivery.tag)
            return None
        return held

    def _settle(self, st: _State, trigger: str, held: _Held, reason: str, attempt: int, *, dead: bool) -> None:
        headers = {k: v for k, v in (held.properties.headers or {}).items() if not k.startswith(_BROKER_HEADERS)}
        headers["x-doclane-attempts"] = attempt
        if dead:
            headers.update({"x-doclane-reason": reason[:4000], "x-doclane-dead-at": int(time.time() * 1000)})
            exchange, key = dead_letter_exchange_name(self.broker), trigger
        else:
            delay = self.trigger(trigger).retry_delay(attempt)
            exchange, key = "", self._delay_queue(st, trigger, delay)
        props = pika.BasicProperties(content_type=held.properties.content_type, headers=headers, delivery_mode=2,
                                     message_id=held.properties.message_id, timestamp=held.properties.timestamp,
                                     app_id="doclane")
        self._publish(st, exchange, key, held.body, props)  # confirmed before the original goes
        self._settle_ack(held)

    @staticmethod
    def _settle_ack(held: _Held) -> None:
        try:
            held.channel.basic_ack(held.delivery_tag)
        except _LOST + (AMQPChannelError,) as exc:
            log.warning("ack failed (%r); the broker will deliver the message again", exc)

    def release_owner(self, owner: str) -> int:
        """Nothing to do: the broker requeues what a closed connection held."""
        return 0

    # ----------------------------------------------------------------- observe
    def _message_count(self, st: _State, queue: str) -> int:
        try:
            return self._channel(st, "admin").queue_declare(queue, passive=True).method.message_count
        except ChannelClosedByBroker:  # not declared (yet): nothing waits there
            return 0

    def ready_now(self, trigger: str) -> int:
        return self._run(lambda st: self._message_count(st, queue_name(trigger, self.broker)))

    def _delay_queues(self, trigger: str) -> list[str]:
        t = self._triggers.get(trigger)
        return [delay_queue_name(trigger, d, self.broker) for d in (topology.delays(t) if t else [])]

    def _count(self, st: _State, name: str) -> dict[str, int]:
        return {"ready": self._message_count(st, queue_name(name, self.broker)),
                "delayed": sum(self._message_count(st, q) for q in self._delay_queues(name)),
                "leased": sum(1 for tag in st.held if tag.startswith(name + ":")),
                "dead": self._message_count(st, dead_letter_queue_name(name, self.broker))}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per trigger: ready, delayed (waiting for a retry), leased (held by
        this process; other processes' in-flight deliveries are not visible
        without the management API) and dead."""
        return self._run(lambda st: {name: self._count(st, name) for name in self._triggers})

    def backlog(self, trigger: str) -> int:
        """Waiting, delayed, and (as far as this process knows) in progress."""
        c = self._run(lambda st: self._count(st, trigger))
        return c["ready"] + c["delayed"] + c["leased"]

    def dead_letters(self, trigger: str | None = None) -> list[DeadLetter]:
        names = [trigger] if trigger else list(self._triggers)
        return [dl for name in names for dl in self._run(lambda st: self._drain_dlq(st, name, None))[0]]

    def requeue_dead(self, trigger: str | None = None, event_ids: Sequence[str] | None = None) -> int:
        """Replay dead letters: back on their trigger's queue with a fresh attempt count."""
        names = [trigger] if trigger else list(self._triggers)
        return sum(self._run(lambda st: self._drain_dlq(st, name, set(event_ids or ()) or True))[1] for name in names)

    def _drain_dlq(self, st: _State, trigger: str, replay: set[str] | bool | None) -> tuple[list[DeadLetter], int]:
        """Read the DLQ on a channel of its own; what is not replayed goes back
        when the channel closes (a peek, not a consume)."""
        ch = st.conn.channel()
        letters, replayed = [], 0
        try:
            while True:
                try:
                    method, props, body = ch.basic_get(dead_letter_queue_name(trigger, self.broker))
                except ChannelClosedByBroker:
                    break  # no DLQ: nothing dead
                if method is None:
                    break
                dl = _dead_letter(trigger, props, body)
                if replay is True or (isinstance(replay, set) and dl.event_id in replay):
                    headers = {k: v for k, v in (props.headers or {}).items() if not k.startswith(_BROKER_HEADERS)}
                    self._publish(st, retry_exchange_name(self.broker), trigger, body, pika.BasicProperties(
                        content_type=props.content_type, headers=headers, delivery_mode=2, message_id=props.message_id))
                    ch.basic_ack(method.delivery_tag)
                    replayed += 1
                else:
                    letters.append(dl)
        finally:
            if ch.is_open:
                ch.close()
        return letters, replayed

    def close(self) -> None:
        st: _State | None = getattr(self._local, "state", None)
        self._local.state = None
        if st is None or st.pid != os.getpid():
            return
        try:
            for consumer in st.consumers.values():  # hand back what was pushed but never handed out
                for method, _, _ in consumer.buffer:
                    consumer.channel.basic_nack(method.delivery_tag, requeue=True)
            st.conn.close()
        except (AMQPConnectionError, AMQPChannelError, ChannelWrongStateError):
            pass  # closing is best effort: the broker requeues anything unacked


def _dead_letter(trigger: str, props: pika.BasicProperties, body: bytes) -> DeadLetter:
    headers = props.headers or {}
    death = (headers.get("x-death") or [{}])[0]
    try:
        event = amqp.from_message(amqp.AmqpMessage(headers, props.content_type, body))
        event_id, type_, subject, body = event["id"], event["type"], event.get("subject"), codec.dumps(event)
    except InvalidEvent:
        event_id, type_, subject = props.message_id, None, None
    at = headers.get("x-doclane-dead-at")
    return DeadLetter(
        trigger=trigger, event_id=event_id, type=type_, subject=subject,
        reason=str(headers.get("x-doclane-reason") or death.get("reason") or "dead-lettered by RabbitMQ"),
        attempts=int(headers.get("x-doclane-attempts") or headers.get("x-delivery-count") or 0) or int(death.get("count", 0)),
        body=bytes(body), at=at / 1000 if at else (props.timestamp or 0.0))


def _parameters(url: str, broker: str) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise ConfigError(f"DOCLANE_AMQP_URL={url!r} is not an AMQP URL ({exc}); e.g. amqp://user:pass@host:5672/%2F") from None
    if "heartbeat" not in url:
        # A handler may run for minutes without pumping the connection (a long
        # parse); a short heartbeat would make the broker drop it mid-work.
        params.heartbeat = 600
    if "blocked_connection_timeout" not in url:
        params.blocked_connection_timeout = 60  # a broker under memory alarm: fail, retry later
    params.client_properties = {"connection_name": f"doclane {broker} pid {os.getpid()}"}
    return params
