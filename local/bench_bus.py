"""Events per second through one function's bus binding, next to raw pika.

`bench(bus_factory, n)` publishes n events (one at a time: with RabbitMQ each
waits for its publisher confirm), then serves them through the real binding
(`functions.binding.handle_delivery`: receive one, decode, validate, a
trivial handler, ack) and prints both rates. `bench_raw_pika(url, n)` does
the same with bare pika on a queue declared like a trigger's (persistent
messages, confirms, prefetch 1, one ack each), so the two numbers show what
the binding costs. `python -m doclane.local.bench_bus --n 2000` runs them all.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from types import SimpleNamespace
from typing import Callable

from doclane.events.bus import Trigger
from doclane.events.envelope import new_event
from doclane.functions.binding import handle_delivery
from doclane.functions.runtime import Function

TRIGGER = Trigger("bench", ("io.doclane.document.uploaded.v1",), max_attempts=3)
FUNCTION = Function("bench", ("document.uploaded",), (), handle=lambda event, data, ctx: [])
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _event(i: int):
    data = {"document_id": f"d{i}", "bucket": "bench", "key": f"{i}.pdf", "filename": f"{i}.pdf", "size": 1000,
            "sha256": f"{i:064x}"}
    return new_event("document.uploaded", data, subject=f"d{i}", source="bench")


def _report(label: str, n: int, publish_s: float, consume_s: float) -> dict:
    figures = {"label": label, "n": n, "publish_per_s": n / publish_s, "consume_per_s": n / consume_s,
               "end_to_end_per_s": n / (publish_s + consume_s)}
    print(f"{label:<34} publish {figures['publish_per_s']:8.0f}/s   consume+ack {figures['consume_per_s']:8.0f}/s"
          f"   both {figures['end_to_end_per_s']:8.0f}/s   (n={n})", flush=True)
    return figures


def bench(bus_factory: Callable[[], object], n: int = 2000, *, label: str | None = None) -> dict:
    bus = bus_factory()
    bus.declare([TRIGGER])
    events = [_event(i) for i in range(n)]  # made before the clock starts
    ctx = SimpleNamespace(settings=None)  # the trivial handler touches no adapter
    try:
        t0 = time.perf_counter()
        for event in events:
            bus.publish(event)
        publish_s = time.perf_counter() - t0
        t0, settled = time.perf_counter(), 0
        while settled < n:
            deliveries = bus.receive(TRIGGER.name, max_messages=1, wait_seconds=5)
            if not deliveries:
                raise RuntimeError(f"only {settled} of {n} events came back")
            for delivery in deliveries:
                if handle_delivery(bus, FUNCTION, delivery, ctx, TRIGGER.max_attempts) != "ok":
                    raise RuntimeError("the trivial handler failed")
                settled += 1
        consume_s = time.perf_counter() - t0
    finally:
        bus.close()
    return _report(label or f"{type(bus).__name__} binding", n, publish_s, consume_s)


def bench_raw_pika(url: str, n: int = 2000, *, prefetch: int = 1) -> dict:
    import pika

    from doclane.functions.adapters import rabbitmq_topology as topology

    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    body = b'{"document_id":"d0","bucket":"bench","key":"0.pdf","filename":"0.pdf","size":1000}'
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments=topology.quorum_args("", queue))
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                     headers={"cloudEvents:type": TRIGGER.types[0]})
        t0 = time.perf_counter()
        for _ in range(n):
            ch.basic_publish("", queue, body, props)
        publish_s = time.perf_counter() - t0
        ch.basic_qos(prefetch_count=prefetch)
        t0, got = time.perf_counter(), 0
        for method, _, _ in ch.consume(queue, inactivity_timeout=5):
            if method is None:
                raise RuntimeError(f"only {got} of {n} messages came back")
            ch.basic_ack(method.delivery_tag)
            got += 1
            if got == n:
                break
        ch.cancel()
        consume_s = time.perf_counter() - t0
        ch.queue_delete(queue)
    finally:
        conn.close()
    return _report(f"raw pika (prefetch {prefetch})", n, publish_s, consume_s)


def bench_redis(url: str, n: int = 2000) -> dict:
    """`bench` on the Redis Streams bus, on a broker (key prefix) of its own whose keys are deleted after."""
    import redis

    from doclane.functions.adapters.redis_bus import RedisBus

    broker = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        return bench(lambda: RedisBus(url, broker), n, label="RedisBus binding")
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match="{" + broker + "}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


PING = Trigger("bench-ping", ("io.doclane.document.uploaded.v1",), max_attempts=3)
PONG = Trigger("bench-pong", ("io.doclane.document.deleted.v1",), max_attempts=3)


def _echo(bus_factory: Callable[[], object], n: int, ready) -> None:
    """The other process of `hop_latency`: answer every ping with a pong."""
    from doclane.events.envelope import derive

    bus = bus_factory()
    bus.declare([PING, PONG])
    ready.set()
    try:
        for _ in range(n):
            deliveries = []
            while not deliveries:
                deliveries = bus.receive(PING.name, wait_seconds=30)
            from doclane.events import codec

            ping = codec.loads(deliveries[0].body)
            data = {"document_id": ping.data["document_id"], "bucket": "bench", "key": ping.data["key"]}
            bus.publish(derive(ping, "document.deleted", data, source="bench"))
            bus.ack(deliveries[0])
    finally:
        bus.close()


def hop_latency(bus_factory: Callable[[], object], n: int = 200, *, label: str | None = None) -> dict:
    """Latency of one hop between two processes, the way a pipeline sees it:
    this process publishes a ping and waits; another process, idle in
    `receive`, takes it and publishes a pong; one hop = half the round trip.
    (`bench` measures throughput with the queue already full; this measures
    how fast an idle consumer notices new work.)"""
    import multiprocessing
    import statistics

    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    child = mp.Process(target=_echo, args=(bus_factory, n, ready), daemon=True)
    bus = bus_factory()
    bus.declare([PING, PONG])
    child.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the echo process did not start")
        time.sleep(0.2)  # let it reach receive() (its doorbell, if any, is registered there)
        rtts = []
        for i in range(n):
            t0 = time.perf_counter()
            bus.publish(_event(i))
            deliveries = []
            while not deliveries:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"no pong for ping {i}")
                deliveries = bus.receive(PONG.name, wait_seconds=5)
            rtts.append(time.perf_counter() - t0)
            bus.ack(deliveries[0])
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
        bus.close()
    hops = sorted(r / 2 * 1000 for r in rtts)
    figures = {"label": label or type(bus).__name__, "n": n, "hop_ms_p50": statistics.median(hops),
               "hop_ms_p95": hops[int(0.95 * (len(hops) - 1))], "hop_ms_max": hops[-1]}
    print(f"{figures['label']:<34} one hop between processes: p50 {figures['hop_ms_p50']:.3f} ms"
          f"   p95 {figures['hop_ms_p95']:.3f} ms   (n={n})", flush=True)
    return figures


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--redis-url", help="also the Redis Streams bus (e.g. redis://127.0.0.1:6379/0)")
    args = parser.parse_args(argv)
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus
    from doclane.functions.adapters import rabbitmq_topology as topology
    from doclane.local.bus import SqliteBus

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        out.append(bench(lambda: SqliteBus(f"{tmp}/bus.sqlite"), args.n, label="SqliteBus binding"))
        broker = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            out.append(bench(lambda: RabbitBus(args.amqp_url, broker), args.n, label="RabbitBus binding"))
        finally:
            import pika

            conn = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
            topology.delete(conn, broker, [TRIGGER])
            conn.close()
    out.append(bench_raw_pika(args.amqp_url, args.n, prefetch=1))
    out.append(bench_raw_pika(args.amqp_url, args.n, prefetch=100))
    if args.redis_url:
        out.append(bench_redis(args.redis_url, args.n))
    return out


if __name__ == "__main__":
    main()
