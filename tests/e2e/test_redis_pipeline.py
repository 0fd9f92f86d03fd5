"""`doclane up` with Redis Streams as the bus (DOCLANE_BUS=redis, a broker name
of its own: DOCLANE_BROKER, its keys deleted after) and no RabbitMQ at all:
PostgreSQL for metadata, Redis for the bus and live progress, and moto's S3
server on loopback as the bucket. The invoices are put into the bucket with
boto3 and MinIO's webhook target is played (each notification POSTed twice
with the Bearer token, as after a retry). The checks are those every
production bus passes (tests/e2e/production.py's PipelineChecks, which the
RabbitMQ run passes too), and what Redis holds once it is over."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import httpx
import pytest
import redis

from doclane.events.bus import dead_letter_queue_name, queue_name, retry_queue_name
from doclane.functions.minio_webhook import PATH
from doclane.functions.runtime import STAGES
from tests.e2e.production import INVOICES, REDIS_URL, PipelineChecks, database, pipeline  # noqa: F401  (database: a fixture)
from tests.redis_support import delete_broker, require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "minio-webhook-token-for-the-redis-test"


@pytest.fixture(scope="module")
def run(tmp_path_factory, database):
    require_redis()
    broker = f"e2e-{uuid.uuid4().hex[:8]}"

    def notify(doclane, note: dict) -> None:  # MinIO's webhook target
        resp = httpx.post(doclane.url + PATH, json=note, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert resp.status_code == 200, resp.text

    env = {"DOCLANE_BUS": "redis", "DOCLANE_BROKER": broker, "DOCLANE_MINIO_WEBHOOK_TOKEN": TOKEN,
           "DOCLANE_AMQP_URL": ""}  # nothing of RabbitMQ, even if the caller's environment names it
    try:
        with pipeline(tmp_path_factory.mktemp("e2e-redis"), database, env=env, notify=notify,
                      bus="Redis Streams") as r:
            yield SimpleNamespace(**vars(r), broker=broker)
    finally:
        delete_broker(broker)


class TestRedisPipeline(PipelineChecks):
    def test_every_stream_is_drained_and_nothing_was_dead_lettered(self, run):
        idle = {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        deadline = time.monotonic() + 60  # notify may still be sending the last webhook
        while True:
            queues = run.doclane.get("/stats")["queues"]
            if all(q == idle for q in queues.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(STAGES) <= set(queues) and all(q == idle for q in queues.values()), queues
        client = redis.Redis.from_url(REDIS_URL)
        tag = "{" + run.broker + "}"
        try:
            for stage in STAGES:
                (group,) = client.xinfo_groups(queue_name(stage, tag))  # one consumer group per trigger
                assert group["name"] == stage.encode()
                assert group["pending"] == 0 and group["lag"] == 0, group  # every delivery acked
                assert client.zcard(retry_queue_name(stage, tag)) == 0
                assert client.xlen(dead_letter_queue_name(stage, tag)) == 0
            # one bucket.notification per invoice, though MinIO sent each twice (ids de-duplicated)
            assert client.xlen(queue_name("ingest", tag)) == len(INVOICES)
        finally:
            client.close()
