"""The event graph, derived twice: from the Knative manifests (Triggers: type
-> Service) and from the code (functions.runtime: consumes/emits). They must
agree, and every event a function emits must be consumed or declared terminal."""

import pytest

from doclane.events.registry import REGISTRY
from doclane.functions.runtime import all_functions
from doclane.functions.sources import FOREIGN_TYPES
from tests.infra.manifests import load_kustomization

# Event types a function may emit that no function consumes (end of the line).
TERMINAL: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def docs():
    return load_kustomization()


def manifest_edges(docs) -> set[tuple[str, str]]:
    return {(t["spec"]["filter"]["attributes"]["type"], t["spec"]["subscriber"]["ref"]["name"])
            for t in docs if t["kind"] == "Trigger"}


def code_edges() -> set[tuple[str, str]]:
    edges = set()
    for fn in all_functions():
        for name in fn.consumes:
            edges.add((REGISTRY.type_of(name), fn.name))
        # a foreign type normalised into one the function takes (functions/sources.py)
        edges |= {(foreign, fn.name) for foreign, name in FOREIGN_TYPES.items() if name in fn.consumes}
    return edges


def test_triggers_and_code_agree(docs):
    assert manifest_edges(docs) == code_edges()


def test_every_emitted_event_is_consumed_or_terminal(docs):
    consumed = {type_ for type_, _ in manifest_edges(docs)}
    for fn in all_functions():
        for name in fn.emits:
            type_ = REGISTRY.type_of(name)
            assert type_ in consumed or type_ in TERMINAL, f"{fn.name} emits {type_}: no Trigger takes it"


def test_every_subscriber_and_sink_exists(docs):
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    brokers = {d["metadata"]["name"] for d in docs if d["kind"] == "Broker"}
    assert {fn.name for fn in all_functions()} | {"api"} == services
    for doc in docs:
        spec = doc.get("spec") or {}
        refs = [spec.get("subscriber"), spec.get("sink"), (spec.get("delivery") or {}).get("deadLetterSink")]
        for ref in filter(None, refs):
            target = ref["ref"]
            assert target["name"] in (services if target["kind"] == "Service" else brokers), doc["metadata"]["name"]


def test_the_foreign_source_reaches_the_broker(docs):
    source = next(d for d in docs if d["kind"] == "RabbitmqSource")
    assert source["spec"]["sink"]["ref"]["kind"] == "Broker"


def test_a_missing_trigger_breaks_the_agreement(docs):
    broken = [d for d in docs if not (d["kind"] == "Trigger" and d["metadata"]["name"] == "index-document-deleted")]
    assert manifest_edges(broken) != code_edges()
