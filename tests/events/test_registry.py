import json

import pytest

from doclane.events import codec
from doclane.events.compat import breaking_changes
from doclane.events.envelope import InvalidEvent, derive, new_event, validate
from doclane.events.registry import REGISTRY, SCHEMA_DIR, render_schema

REQUIRED_TYPES = ["document.uploaded", "document.classified", "document.extracted", "document.indexed",
                  "document.failed", "document.deleted", "batch.uploaded", "batch.completed"]

UPLOADED = {"document_id": "d1", "bucket": "inbox", "key": "a.pdf", "filename": "a.pdf", "size": 3,
            "sha256": "0" * 64}


def test_every_required_type_is_registered_and_versioned():
    for name in REQUIRED_TYPES:
        assert REGISTRY.type_of(name) == f"io.doclane.{name}.v1"


def test_committed_schemas_match_the_models():
    """Fails when a model changed and `make schemas` was not run."""
    committed = REGISTRY.committed()
    assert set(committed) == {s.type for s in REGISTRY}, "run `doclane schemas export` and commit events/schemas/"
    for spec in REGISTRY:
        on_disk = (SCHEMA_DIR / f"{spec.type}.json").read_text()
        assert on_disk == render_schema(spec.json_schema()), f"{spec.type} drifted: run `doclane schemas export`"


def test_no_published_schema_is_broken_by_its_model():
    for type_, published in REGISTRY.committed().items():
        assert breaking_changes(published, REGISTRY.get(type_).json_schema()) == [], type_


def test_compatibility_check_catches_breaking_changes():
    old = REGISTRY.get("io.doclane.document.uploaded.v1").json_schema()
    removed = json.loads(json.dumps(old))
    del removed["properties"]["filename"]
    assert any("filename: removed" in p for p in breaking_changes(old, removed))
    required = json.loads(json.dumps(old))
    required["required"].append("content_type")
    assert any("content_type: became required" in p for p in breaking_changes(old, required))
    retyped = json.loads(json.dumps(old))
    retyped["properties"]["size"] = {"type": "string"}
    assert any("size: type" in p for p in breaking_changes(old, retyped))
    added_optional = json.loads(json.dumps(old))
    added_optional["properties"]["pages"] = {"type": "integer"}
    assert breaking_changes(old, added_optional) == []


def test_export_refuses_a_breaking_change(tmp_path):
    REGISTRY.export(tmp_path)
    path = tmp_path / "io.doclane.document.uploaded.v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["legacy"] = {"type": "string"}  # published, but the model has no such field
    path.write_text(json.dumps(schema))
    with pytest.raises(ValueError, match="legacy: removed"):
        REGISTRY.export(tmp_path)


def test_new_event_has_all_cloudevents_attributes():
    ev = new_event("document.uploaded", UPLOADED, subject="d1", source="ingest")
    attrs = ev.get_attributes()
    assert attrs["type"] == "io.doclane.document.uploaded.v1"
    assert attrs["source"] == "/doclane/ingest"
    assert attrs["subject"] == "d1" and attrs["id"] and attrs["time"].endswith("Z")
    assert attrs["datacontenttype"] == "application/json"
    assert attrs["dataschema"] == "urn:doclane:schema:io.doclane.document.uploaded.v1"
    assert attrs["traceparent"].startswith("00-") and len(attrs["traceparent"]) == 55


def test_derive_keeps_the_trace_and_is_deterministic():
    parent = new_event("document.uploaded", UPLOADED, subject="d1", source="ingest")
    data = {"document_id": "d1", "stage": "classify", "reason": "x"}
    a = derive(parent, "document.failed", data, source="classify")
    b = derive(parent, "document.failed", data, source="classify")
    assert a["id"] == b["id"] != parent["id"]
    assert a["traceparent"].split("-")[1] == parent["traceparent"].split("-")[1]
    assert a["traceparent"].split("-")[2] != parent["traceparent"].split("-")[2]
    assert a["subject"] == "d1"


def test_invalid_data_is_refused_with_a_clear_error():
    with pytest.raises(InvalidEvent, match="sha256"):
        new_event("document.uploaded", {**UPLOADED, "sha256": "nothex"}, subject="d1", source="x")
    with pytest.raises(InvalidEvent, match="size"):
        new_event("document.uploaded", {**UPLOADED, "size": -1}, subject="d1", source="x")


def test_validate_refuses_unknown_types_and_wrong_schema():
    ev = new_event("document.uploaded", UPLOADED, subject="d1", source="ingest")
    obj = codec.to_json_dict(ev)
    with pytest.raises(InvalidEvent, match="unknown event type"):
        validate(codec.loads(json.dumps({**obj, "type": "io.doclane.nope.v1"})))
    with pytest.raises(InvalidEvent, match="dataschema"):
        validate(codec.loads(json.dumps({**obj, "dataschema": "urn:doclane:schema:other"})))
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        codec.loads(b'{"specversion": "1.0", "id":')


def test_codec_round_trip():
    ev = new_event("document.uploaded", UPLOADED, subject="d1", source="ingest")
    back = codec.loads(codec.dumps(ev))
    assert back.get_attributes() == ev.get_attributes()
    assert back.get_data() == ev.get_data()
