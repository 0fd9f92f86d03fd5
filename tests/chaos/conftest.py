"""Fixtures of the chaos scenarios, and their report: one line per scenario
(documents in, indexed, failed, duplicated, lost) in pytest's terminal
summary, and the same numbers as properties in the JUnit XML."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from tests.chaos.invariants import RESULTS, Tally

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not RESULTS:
        return
    terminalreporter.section("chaos: documents after each fault")
    terminalreporter.write_line(Tally.HEADER)
    for tally in RESULTS:
        terminalreporter.write_line(tally.line())


@pytest.fixture
def report(record_property):
    """Hand the scenario's tally to the JUnit XML as well (after `check`)."""

    def record(tally: Tally) -> None:
        for name in ("docs_in", "indexed", "failed", "duplicated", "lost", "seconds"):
            record_property(f"chaos_{name}", getattr(tally, name))

    return record


@pytest.fixture
def database():
    """A fresh PostgreSQL database for one scenario, dropped after (the server
    is shared). Unreachable: skip on a laptop, fail in CI."""
    import psycopg

    from tests.conftest import require

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        require(False, f"PostgreSQL at {PG_URL} is unreachable ({exc})")
    name = f"doclane_chaos_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield SimpleNamespace(url=PG_URL.rsplit("/", 1)[0] + "/" + name, admin_url=PG_URL, name=name)
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=30) as admin:  # a new session: PG was restarted
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def broker():
    """A RabbitMQ broker name of the scenario's own; its queues and exchanges
    (MinIO's too) are deleted after."""
    import pika

    from doclane.events.bus import dead_letter_queue_name
    from doclane.functions.runtime import triggers
    from tests.amqp_support import AMQP_URL, delete_broker, require_rabbitmq

    require_rabbitmq()
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    yield name
    settings = SimpleNamespace(max_attempts=5, retry_backoff=1.0, parse_timeout=60.0)  # doclane up's defaults
    delete_broker(name, triggers(settings), extra_queues=[f"{name}.minio-notifications",
                                                          dead_letter_queue_name("minio", name)])
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    conn.channel().exchange_delete(f"{name}.minio")
    conn.close()


@pytest.fixture
def production(tmp_path, broker, database, moto):
    """`doclane up` as in production, on this machine's services: files in an
    S3 bucket (moto's server) announced the way MinIO's AMQP target does,
    RabbitMQ as the bus (a broker of its own), PostgreSQL for metadata (a
    database of its own), signed webhooks to a receiver on loopback.
    `put(*paths)` uploads files and sends their notifications."""
    import pika

    from doclane.functions import minio
    from tests.amqp_support import AMQP_URL, minio_publish
    from tests.chaos.invariants import CHAOS_ENV
    from tests.e2e.harness import Doclane, Receiver, minio_record

    bucket = moto.bucket(f"chaos-{uuid.uuid4().hex[:8]}")
    target = minio.AmqpTarget(exchange=f"{broker}.minio", queue=f"{broker}.minio-notifications")
    s3 = moto.client()

    def put(*paths) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))  # a new one: RabbitMQ may have restarted
        try:
            for path in paths:
                key = f"in/{path.name}"
                etag = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())["ETag"].strip('"')
                minio_publish(conn.channel(), target, minio_record(bucket, key, etag=etag, size=path.stat().st_size))
        finally:
            conn.close()

    receiver = Receiver()
    doclane = Doclane(tmp_path / "run", webhook=receiver.url, env={
        **CHAOS_ENV, **moto.env, "DOCLANE_S3_BUCKET": bucket, "DOCLANE_AMQP_URL": AMQP_URL,
        "DOCLANE_BROKER": broker, "DOCLANE_DATABASE_URL": database.url,
        "DOCLANE_MINIO_AMQP_EXCHANGE": target.exchange, "DOCLANE_MINIO_AMQP_QUEUE": target.queue},
        quiet=False)  # the console's progress reads both stores too: it must ride out their outages
    try:
        yield SimpleNamespace(doclane=doclane.start(), receiver=receiver, broker=broker, database=database, put=put)
    finally:
        doclane.stop()
        receiver.close()
