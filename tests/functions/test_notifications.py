import json

import pytest

from doclane.functions import notifications as n

SAMPLES = sorted((__import__("pathlib").Path(__file__).parents[1] / "fixtures" / "minio-notifications").glob("*.json"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_minio_sample_parses(path):
    objs = n.parse(json.loads(path.read_text()))
    assert len(objs) == 1
    assert objs[0].action == "created" and objs[0].bucket and objs[0].key and objs[0].size > 0


def test_url_escaped_keys_are_decoded():
    rec = n.record_for("created", "docs", "a folder/année 1+1.pdf", size=3)
    assert rec["s3"]["object"]["key"] == "a+folder%2Fann%C3%A9e+1%2B1.pdf"
    assert n.parse({"Records": [rec]})[0].key == "a folder/année 1+1.pdf"


def test_removed_records_have_no_size():
    rec = {"eventName": "s3:ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "x%2Fy.pdf"}}}
    (obj,) = n.parse({"EventName": "s3:ObjectRemoved:Delete", "Key": "b/x/y.pdf", "Records": [rec]})
    assert (obj.action, obj.key, obj.size) == ("removed", "x/y.pdf", None)


def test_test_event_is_ignored():
    assert n.parse({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}) == []


def test_aws_s3_record_without_prefix_and_ceph():
    aws = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b"}, "object": {"key": "r%C3%A9sum%C3%A9.docx", "size": 9, "eTag": "e"}}}]}
    assert n.parse(aws)[0].key == "résumé.docx"
    ceph = {"Records": [{"eventSource": "ceph:s3", "eventName": "ObjectCreated:CompleteMultipartUpload",
                         "s3": {"bucket": {"name": "b"}, "object": {"key": "big.pdf", "size": 99}}}]}
    assert n.parse(ceph)[0].action == "created"


def test_other_events_are_skipped_and_garbage_refused():
    assert n.parse({"Records": [{"eventName": "s3:ObjectAccessed:Get", "s3": {}}]}) == []
    for bad in ([], {"Records": "x"}, {"nope": 1}, {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {}}]}):
        with pytest.raises(n.NotNotification):
            n.parse(bad)
