"""`doclane up` on the production systems that run here: RabbitMQ as the bus
(a broker name of its own: DOCLANE_BROKER), PostgreSQL for metadata (a fresh
database per run), Redis for live progress, and moto's S3 server on loopback
as the bucket. The invoices are put into the bucket with boto3 and MinIO's
AMQP target is played exactly as MinIO sends (its exchange re-declared,
one message per record, every message twice as after a retry), so the
documents come in through functions/adapters/minio_amqp.py. MinIO itself
cannot run here; moto stores objects but sends no notifications. The checks
every production bus passes are tests/e2e/production.py's PipelineChecks."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pika
import pytest

from doclane.events.bus import dead_letter_queue_name, exchange_name, queue_name
from doclane.functions import minio
from doclane.functions.runtime import STAGES, triggers
from tests.amqp_support import AMQP_URL, delete_broker, minio_publish, queue_exists, require_rabbitmq
from tests.e2e.production import PipelineChecks, database, pipeline  # noqa: F401  (database: a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory, database):
    require_rabbitmq()
    broker = f"e2e-{uuid.uuid4().hex[:8]}"
    target = minio.AmqpTarget(exchange=f"{broker}.minio", queue=f"{broker}.minio-notifications")

    def notify(doclane, note: dict) -> None:  # MinIO's AMQP target, played exactly
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            minio_publish(conn.channel(), target, note)
        finally:
            conn.close()

    env = {"DOCLANE_AMQP_URL": AMQP_URL, "DOCLANE_BROKER": broker,
           "DOCLANE_MINIO_AMQP_EXCHANGE": target.exchange, "DOCLANE_MINIO_AMQP_QUEUE": target.queue}
    try:
        with pipeline(tmp_path_factory.mktemp("e2e-rabbitmq"), database, env=env, notify=notify,
                      bus="RabbitMQ") as r:
            yield SimpleNamespace(**vars(r), broker=broker, target=target)
    finally:
        settings = SimpleNamespace(max_attempts=5, retry_backoff=1.0, parse_timeout=60.0)  # doclane up's defaults
        delete_broker(broker, triggers(settings), extra_queues=[target.queue, dead_letter_queue_name("minio", broker)])
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        conn.channel().exchange_delete(target.exchange)
        conn.close()


class TestRabbitMQPipeline(PipelineChecks):
    def test_the_rabbitmq_topology_is_in_place_and_nothing_was_dead_lettered(self, run):
        for stage in STAGES:
            assert queue_exists(queue_name(stage, run.broker)) and queue_exists(dead_letter_queue_name(stage, run.broker))
        assert queue_exists(run.target.queue)
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        conn.channel().exchange_declare(exchange_name(run.broker), passive=True)
        conn.close()
        queues = run.doclane.get("/stats")["queues"]
        assert set(STAGES) <= set(queues) and all(q["dead"] == 0 and q["ready"] == 0 for q in queues.values())
