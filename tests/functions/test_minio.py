"""The pure MinIO helpers: event ids that make MinIO's retries idempotent,
and the Bearer token check."""

from __future__ import annotations

import copy
import json

import pytest

from doclane.functions import minio, notifications
from tests.conftest import FIXTURES

CURRENT = json.loads((FIXTURES / "minio-notifications" / "04_nats_examples-2025-minio-v7-userMetadata.json").read_text())


def test_the_same_record_always_gives_the_same_event_id():
    first = minio.notification_events(CURRENT, source="minio-webhook")
    again = minio.notification_events(copy.deepcopy(CURRENT), source="minio-amqp")
    assert len(first) == 1 and first[0]["id"] == again[0]["id"]
    assert first[0]["source"] == "/doclane/minio-webhook"


@pytest.mark.parametrize("field, value", [("eTag", "0" * 32), ("sequencer", "18504C4ADA8EBF59"), ("key", "other.txt")])
def test_a_new_version_of_the_object_gives_a_new_id(field, value):
    changed = copy.deepcopy(CURRENT)
    changed["Records"][0]["s3"]["object"][field] = value
    assert minio.notification_events(changed, source="t")[0]["id"] != minio.notification_events(CURRENT, source="t")[0]["id"]


def test_a_payload_with_several_records_gives_one_event_each_and_skips_non_object_records():
    payload = copy.deepcopy(CURRENT)
    second = copy.deepcopy(payload["Records"][0])
    second["s3"]["object"]["key"] = "Q1+report%2Fdraft.pdf"
    replication = copy.deepcopy(payload["Records"][0])
    replication["eventName"] = "s3:Replication:OperationFailedReplication"
    payload["Records"] += [second, replication]
    events = minio.notification_events(payload, source="t")
    assert len(events) == 2
    assert [notifications.parse(e.data)[0].key for e in events] == ["test.txt", "Q1 report/draft.pdf"]


def test_one_bad_record_refuses_the_whole_payload():
    payload = copy.deepcopy(CURRENT)
    payload["Records"].append({"eventName": "s3:ObjectCreated:Put", "s3": {}})
    with pytest.raises(notifications.NotNotification):
        minio.notification_events(payload, source="t")


@pytest.mark.parametrize("header, ok", [
    ("Bearer tok en", False), ("Bearer tok", True), ("bearer tok", True), ("Bearer  tok ", True),
    ("Bearer", False), ("tok", False), (None, False), ("Bearer toke", False),
])
def test_token_matches(header, ok):
    assert minio.token_matches(header, "tok") is ok
