"""Every function against the CloudEvents conformance suite's HTTP cases
(tests/fixtures/cloudevents-conformance, built into requests as the suite's
own tool does), in binary and structured mode, and the Knative broker's
request (`Prefer: reply`) answered with the next event, hop by hop through the
whole pipeline with the real embedded adapters."""

import json

import pytest
import yaml
from cloudevents.conversion import to_binary, to_structured

from doclane.events.envelope import new_event
from doclane.functions.context import Context
from doclane.functions.http import function_app
from doclane.functions.notifications import record_for
from doclane.functions.runtime import STAGES, load
from tests.conftest import FIXTURES

CASES_DIR = FIXTURES / "cloudevents-conformance" / "yaml"
ATTRIBUTES = ("specversion", "type", "time", "id", "source", "subject", "schemaurl", "datacontenttype",
              "datacontentencoding")


def load_cases() -> list[tuple[str, dict]]:
    cases = []
    for path in sorted(CASES_DIR.rglob("*.yaml")):
        for i, case in enumerate(yaml.safe_load_all(path.read_text())):
            if case:
                cases.append((f"{path.relative_to(CASES_DIR)}#{i}", case))
    return cases


def to_request(case: dict, mode: str) -> tuple[dict, bytes]:
    """pkg/http/http.go: EventToRequest, in Python."""
    attrs = {k: str(v).strip() for k, v in (case.get("ContextAttributes") or {}).items() if k != "Extensions"}
    extensions = {k: str(v).strip() for k, v in ((case.get("ContextAttributes") or {}).get("Extensions") or {}).items()}
    transport = {k: str(v).strip() for k, v in (case.get("TransportExtensions") or {}).items()}
    data = case.get("Data") or ""
    if mode == "structured":
        env = {k: attrs[k] for k in ATTRIBUTES if attrs.get(k)} | {k: v for k, v in extensions.items() if v}
        if data:
            env["data"] = json.loads(data)  # the tool cannot send non-JSON data structured either
        headers = {"Content-Type": "application/cloudevents+json; charset=UTF-8"} | transport
        return headers, json.dumps(env).encode()
    headers = {f"ce-{k}": attrs[k] for k in ATTRIBUTES if attrs.get(k) and k != "datacontenttype"}
    if attrs.get("datacontenttype"):
        headers["Content-Type"] = attrs["datacontenttype"]
    headers |= {f"ce-{k}": v for k, v in extensions.items() if v} | transport
    return headers, data.encode()


def _json_data(case: dict) -> bool:
    try:
        json.loads(case.get("Data") or "null")
        return True
    except ValueError:
        return False


CASES = [(name, case, mode) for name, case in load_cases() for mode in ("binary", "structured")
         if mode == "binary" or _json_data(case)]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    from doclane.functions.settings import load as load_settings

    root = tmp_path_factory.mktemp("conformance")
    settings = load_settings(data_dir=root / "data", inbox=root / "inbox")
    settings.inbox.mkdir(parents=True)
    (settings.inbox / "invoice.md").write_text(
        "# Invoice INV-2024-001\n\nDate: 12 March 2024\n\nBill to: Anna Example\n\nTotal due: EUR 1,234.56\n")
    c = Context(settings)
    yield c
    c.close()


@pytest.fixture(scope="module")
def clients(context):
    return {name: function_app(load(name), context).test_client() for name in STAGES}


def test_the_suite_has_cases_in_both_modes():
    assert len(load_cases()) >= 10
    assert {mode for _, _, mode in CASES} == {"binary", "structured"}


@pytest.mark.parametrize("function", STAGES)
@pytest.mark.parametrize("name,case,mode", CASES, ids=[f"{n}-{m}" for n, _, m in CASES])
def test_conformance_case_is_parsed_and_refused_cleanly(clients, function, name, case, mode):
    """The suite's events are of foreign types: a function must read the
    envelope (not answer 'Bad CloudEvent'), refuse it with 400 (never retried)
    and say why."""
    headers, body = to_request(case, mode)
    resp = clients[function].post("/", headers=headers, data=body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    problem = resp.get_json()
    assert problem["title"] == "Event refused", problem
    assert case["ContextAttributes"]["type"] in problem["detail"] or "specversion" in problem["detail"]


def _extensions(case_name: str = "v1.yaml#0") -> tuple[dict, dict]:
    case = dict(load_cases())[case_name]
    ext = {k: str(v).strip() for k, v in case["ContextAttributes"]["Extensions"].items()}
    return ext, {k: str(v) for k, v in case["TransportExtensions"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_broker_request_is_answered_with_the_next_event_through_the_pipeline(clients, mode):
    """Knative's broker POSTs with `Prefer: reply` and publishes a 200's body.
    Each hop carries the conformance case's extensions and transport headers."""
    extensions, transport = _extensions()
    event = new_event("bucket.notification", {"Records": [record_for("created", "inbox", "invoice.md", size=84)]},
                      subject=None, source="conformance")
    trace_id = event["traceparent"].split("-")[1]
    expected = ["io.doclane.document.uploaded.v1", "io.doclane.document.classified.v1",
                "io.doclane.document.extracted.v1", "io.doclane.document.indexed.v1"]
    for function, next_type in zip(STAGES, expected):
        for key, value in extensions.items():
            event[key] = value
        headers, body = (to_binary if mode == "binary" else to_structured)(event)
        resp = clients[function].post("/", headers={**dict(headers), **transport, "Prefer": "reply"}, data=body)
        assert resp.status_code == 200, (function, resp.get_data(as_text=True))
        assert resp.headers["ce-type"] == next_type and resp.headers["ce-specversion"] == "1.0"
        assert resp.headers["ce-traceparent"].split("-")[1] == trace_id  # one trace across hops
        from cloudevents.http import from_http

        event = from_http(dict(resp.headers), resp.get_data())
    resp = clients["notify"].post("/", headers={**dict(to_binary(event)[0]), "Prefer": "reply"},
                                  data=to_binary(event)[1])
    assert resp.status_code in (200, 202)  # notify: no webhooks here; batch.completed only for batches
