"""MinIO's webhook target on the ingest function's own app (and the gateway),
with the embedded bus: every published MinIO payload sample is accepted and
lands on the ingest queue once, however often MinIO retries it."""

from __future__ import annotations

import json

import pytest

from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.minio_webhook import PATH
from doclane.functions.runtime import load, triggers
from doclane.local.gateway import create_app
from tests.conftest import FIXTURES

TOKEN = "s3cr3t-token-for-minio"
SAMPLES = sorted((FIXTURES / "minio-notifications").glob("*.json"))
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def context(settings):
    c = Context(settings.model_copy(update={"minio_webhook_token": TOKEN}))
    c.bus.declare(triggers(c.settings))
    yield c
    c.close()


@pytest.fixture
def client(context):
    return function_app(load("ingest"), context).test_client()


def queued(context) -> list[dict]:
    deliveries = context.bus.receive("ingest", max_messages=50, wait_seconds=0)
    return [json.loads(d.body) for d in deliveries]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_minio_sample_is_published_once(client, context, sample):
    body = sample.read_bytes()
    first = client.post(PATH, data=body, headers={**AUTH, "Content-Type": "application/json"})
    again = client.post(PATH, data=body, headers={**AUTH, "Content-Type": "application/json"})  # MinIO's retry
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"records": 1, "published": 1, "duplicates": 0}
    assert again.status_code == 200 and again.get_json()["duplicates"] == 1
    events = queued(context)
    assert len(events) == 1
    assert events[0]["type"] == "io.doclane.bucket.notification.v1"
    assert events[0]["data"]["Records"] == json.loads(body)["Records"]


def test_a_test_event_is_answered_and_ignored(client, context):
    resp = client.post(PATH, json={"Event": "s3:TestEvent", "Records": []}, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["records"] == 0
    assert queued(context) == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_without_the_right_token_nothing_is_published(client, context, headers):
    resp = client.post(PATH, data=SAMPLES[0].read_bytes(), headers={**headers, "Content-Type": "application/json"})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.content_type == "application/problem+json"
    assert queued(context) == []


def test_without_a_configured_token_it_refuses_with_what_to_set(settings):
    c = Context(settings)
    resp = function_app(load("ingest"), c).test_client().post(PATH, data=SAMPLES[0].read_bytes(), headers=AUTH)
    assert resp.status_code == 503
    assert "DOCLANE_MINIO_WEBHOOK_TOKEN" in resp.get_json()["detail"]
    c.close()


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"Records": "x"}', b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}'])
def test_a_body_that_is_no_notification_is_a_400(client, context, body):
    resp = client.post(PATH, data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert queued(context) == []


class _DownBus:
    def publish(self, event):
        raise ConnectionError("broker unreachable")


def test_when_the_bus_is_down_minio_is_told_to_retry(settings):
    c = Context(settings.model_copy(update={"minio_webhook_token": TOKEN}), bus=_DownBus())
    resp = function_app(load("ingest"), c).test_client().post(PATH, data=SAMPLES[-1].read_bytes(), headers=AUTH)
    assert resp.status_code == 503 and "broker unreachable" in resp.get_json()["detail"]


def test_the_gateway_serves_the_same_endpoint(context):
    resp = create_app(context).test_client().post(PATH, data=SAMPLES[-1].read_bytes(),
                                                  headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.get_json()["published"] == 1
    assert len(queued(context)) == 1
