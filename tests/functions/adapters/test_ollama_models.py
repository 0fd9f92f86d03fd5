"""Ollama adapters through the real `ollama` client against a FAKE server
(fake_http.py) that emulates Ollama's documented API (/api/chat with a JSON
schema `format`, /api/embed, /api/tags, /api/show) with the sample responses
in tests/fixtures/ollama/ (see SOURCE.md there). No Ollama runs here: these
tests check the requests sent, the mapping of documented answers onto our
ports, and the retry / fallback policy; not what a real model answers."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from doclane.functions import categories as categories_mod
from doclane.functions.adapters.heuristic_extractor import HeuristicExtractor
from doclane.functions.adapters.ollama_models import (OllamaClassifier, OllamaConnection, OllamaEmbedder,
                                                      OllamaExtractor, Unreachable, normalise)
from doclane.functions.errors import ConfigError, Permanent, Retryable
from doclane.functions.ports import Classification, ParsedDocument
from tests.conftest import FIXTURES
from tests.functions.adapters.fake_http import FakeServer

OL = FIXTURES / "ollama"
INVOICE = ParsedDocument(markdown="", text=(
    "INVOICE  Invoice number INV-2023-0042  Invoice date 12/03/2023\nFrom: Acme Corp  Bill to: Globex Ltd\n"
    "Total due EUR 1,210.00  IBAN NL91 ABNA 0417 1643 00  billing@acme.example"))


def sample(name: str) -> dict:
    return json.loads((OL / name).read_text())


def chat_with(content: dict | str) -> dict:
    answer = sample("chat-classify.json")
    answer["message"]["content"] = content if isinstance(content, str) else json.dumps(content)
    return answer


def embed_answer(rec) -> tuple[int, dict]:
    """The documented sample vectors, one per input (cycled)."""
    vectors = sample("embed.json")["embeddings"]
    inputs = rec.json["input"]
    return 200, {**sample("embed.json"), "model": rec.json["model"],
                 "embeddings": [vectors[i % 2] for i in range(len(inputs))]}


def show_answer(rec) -> tuple[int, dict]:
    """llama3.2 is pulled (a chat model), all-minilm too (an embedding model), nothing else."""
    model = rec.json["model"]
    if model not in ("llama3.2", "all-minilm"):
        return 404, sample("error-404.json")
    return 200, {**sample("show.json"), **({"capabilities": ["embedding"]} if model == "all-minilm" else {})}


@pytest.fixture
def server():
    srv = FakeServer()
    srv.route("POST", "/api/chat", (200, sample("chat-classify.json")))
    srv.route("POST", "/api/embed", embed_answer)
    srv.route("GET", "/api/tags", (200, sample("tags.json")))
    srv.route("POST", "/api/show", show_answer)
    yield srv
    srv.close()


@pytest.fixture
def cats() -> categories_mod.Categories:
    return categories_mod.load()


def conn(url: str, **kw) -> OllamaConnection:
    kw.setdefault("timeout", 5)
    kw.setdefault("backoff", 0.01)
    return OllamaConnection(url, **kw)


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --------------------------------------------------------------------------- classifier
def test_classify_sends_the_category_schema_as_format_and_maps_the_answer(server, cats):
    result = OllamaClassifier(conn(server.url), cats).classify(INVOICE, "acme.pdf")
    assert result == Classification("invoice", 0.92, "ollama:llama3.2", {"invoice": 0.92},
                                     "It has an invoice number, a VAT line and a total due.")
    sent = server.find("POST", "/api/chat")[0].json
    assert (sent["model"], sent["stream"], sent["options"]) == ("llama3.2", False, {"temperature": 0})
    assert sent["format"] == {"type": "object", "properties": {
        "category": {"type": "string", "enum": cats.names},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"}}, "required": ["category", "confidence", "reason"]}
    assert "other" in sent["format"]["properties"]["category"]["enum"]
    system, user = sent["messages"]
    assert system["role"] == "system" and all(f"- {c.name}: {c.description}" in system["content"] for c in cats.items)
    assert user["role"] == "user" and user["content"].startswith("File name: acme.pdf") and "INV-2023-0042" in user["content"]


@pytest.mark.parametrize("content, category, confidence", [
    ({"category": "invoice", "confidence": 0.2, "reason": "maybe"}, "other", 0.8),  # below the threshold
    ({"category": "horoscope", "confidence": 0.9, "reason": "?"}, "other", 0.0),  # not a category
    ("I think it is an invoice", "other", 0.0),  # not JSON
    ({"category": "receipt", "confidence": 7, "reason": "paid"}, "receipt", 1.0),  # clamped
])
def test_unusable_or_unsure_answers_become_other(server, cats, content, category, confidence):
    server.route("POST", "/api/chat", (200, chat_with(content)))
    result = OllamaClassifier(conn(server.url), cats).classify(INVOICE, "x.pdf")
    assert (result.category, result.confidence) == (category, confidence)


def test_corrections_are_kept_and_shown_to_the_model(server, cats, tmp_path):
    store = tmp_path / "examples.jsonl"
    OllamaClassifier(conn(server.url), cats, store).learn("Kassenbon Bäckerei Müller Summe 4,20", "receipt")
    assert json.loads(store.read_text()) == {"category": "receipt", "text": "Kassenbon Bäckerei Müller Summe 4,20"}
    with pytest.raises(Permanent, match="unknown category"):
        OllamaClassifier(conn(server.url), cats, store).learn("x", "horoscope")
    OllamaClassifier(conn(server.url), cats, store).classify(INVOICE, "x.pdf")  # a new process reads the store
    system = server.find("POST", "/api/chat")[0].json["messages"][0]["content"]
    assert 'Example of receipt: "Kassenbon Bäckerei Müller Summe 4,20"' in system


# --------------------------------------------------------------------------- extractor
def test_extract_sends_the_category_json_schema_and_normalises_the_values(server, cats):
    server.route("POST", "/api/chat", (200, sample("chat-extract.json")))
    fields = OllamaExtractor(conn(server.url), cats).extract(INVOICE, "invoice")
    sent = server.find("POST", "/api/chat")[0].json
    assert sent["format"] == cats.get("invoice").json_schema()
    assert {k: f.value for k, f in fields.items()} == {
        "invoice_number": "INV-2023-0042", "date": "2023-03-12", "total": "1210.00", "currency": "EUR",
        "issuer": "Acme Corp", "recipient": "Globex Ltd", "iban": "NL91ABNA0417164300",
        "emails": ["billing@acme.example"]}  # "not stated" and "soon" (not a date) are dropped
    assert fields["invoice_number"].confidence == 0.9 and fields["invoice_number"].raw == "INV-2023-0042"
    assert fields["date"].confidence == 0.7 and fields["date"].raw == "12/03/2023"
    assert fields["iban"].confidence == 0.9, "found in the text, spaces aside"


def test_a_value_not_in_the_document_gets_a_low_confidence(server, cats):
    server.route("POST", "/api/chat", (200, chat_with({"invoice_number": "INV-9999", "issuer": "Acme Corp"})))
    fields = OllamaExtractor(conn(server.url), cats).extract(INVOICE, "invoice")
    assert (fields["invoice_number"].confidence, fields["issuer"].confidence) == (0.6, 0.9)


def test_normalise():
    assert normalise("amount", "4.904,94 €") == "4904.94" and normalise("amount", 12) == "12.00"
    assert normalise("date", "29 maart 2014") == "2014-03-29" and normalise("date", "2024-01-31") == "2024-01-31"
    assert normalise("currency", "Rs.") == "INR" and normalise("currency", "usd") == "USD"
    assert normalise("integer", "42") == 42 and normalise("string_list", "a") == ["a"]


# --------------------------------------------------------------------------- embedder
def test_embed_sends_the_texts_as_one_input_list_and_reads_the_dimension(server):
    embedder = OllamaEmbedder(conn(server.url, embed_model="all-minilm"))
    vectors = embedder.embed(["first", "second", "third"])
    sent = server.find("POST", "/api/embed")[0].json
    assert sent == {"model": "all-minilm", "input": ["first", "second", "third"]}
    assert vectors.shape == (3, 10) and vectors.dtype == np.float32 and embedder.dimension == 10
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert np.allclose(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])


def test_embed_dimension_is_read_lazily_and_checked_against_the_index(server):
    assert OllamaEmbedder(conn(server.url)).dimension == 10
    assert server.find("POST", "/api/embed"), "the dimension comes from a first answer"
    with pytest.raises(ConfigError, match="gives 10-dimensional embeddings but the index holds 384"):
        OllamaEmbedder(conn(server.url), expected_dimension=384).embed(["x"])


# --------------------------------------------------------------------------- failures and policy
def test_server_errors_are_retried_with_back_off(server, cats):
    calls = []

    def flaky(rec):
        calls.append(time.monotonic())
        return (503, {"error": "server busy"}) if len(calls) < 3 else (200, sample("chat-classify.json"))

    server.route("POST", "/api/chat", flaky)
    assert OllamaClassifier(conn(server.url, retries=2, backoff=0.05), cats).classify(INVOICE, "x.pdf").category == "invoice"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1, "the delay doubles"


def test_fail_policy_raises_retryable_after_bounded_attempts(server, cats):
    server.route("POST", "/api/chat", (500, {"error": "llama runner process has terminated"}))
    with pytest.raises(Unreachable, match="failed 3 times .*llama runner") as info:
        OllamaClassifier(conn(server.url, retries=2, fallback="fail"), cats).classify(INVOICE, "x.pdf")
    assert isinstance(info.value, Retryable) and len(server.find("POST", "/api/chat")) == 3


def test_timeouts_count_as_unreachable(server, cats):
    server.route("POST", "/api/chat", lambda rec: (time.sleep(0.6), (200, sample("chat-classify.json")))[1])
    with pytest.raises(Unreachable, match="ReadTimeout"):
        OllamaClassifier(conn(server.url, retries=0, timeout=0.2), cats).classify(INVOICE, "x.pdf")


def test_embedded_policy_answers_with_the_embedded_adapters_when_ollama_is_down(cats, caplog):
    down = conn(dead_url(), retries=1, fallback="embedded")

    class Stub:
        dimension = 10
        def classify(self, doc, filename):
            return Classification("letter", 0.5, "embedded")
        def embed(self, texts):
            return np.ones((len(texts), 10), np.float32)

    assert OllamaClassifier(down, cats, fallback=Stub).classify(INVOICE, "x.pdf").classifier == "embedded"
    fields = OllamaExtractor(down, cats, fallback=lambda: HeuristicExtractor(cats)).extract(INVOICE, "invoice")
    assert fields["invoice_number"].value == "INV-2023-0042", "the heuristic extractor answered"
    assert OllamaEmbedder(down, expected_dimension=10, fallback=Stub).embed(["a"]).shape == (1, 10)
    assert "DOCLANE_OLLAMA_FALLBACK=embedded" in caplog.text
    with pytest.raises(Unreachable, match="cannot stand in"):  # 10-dim fallback vectors in a 768-dim index: never
        OllamaEmbedder(down, expected_dimension=768, fallback=Stub).embed(["a"])


def test_fail_policy_on_connection_refused(cats):
    with pytest.raises(Unreachable, match="failed 2 times"):
        OllamaExtractor(conn(dead_url(), retries=1), cats, fallback=lambda: HeuristicExtractor(cats)).extract(
            INVOICE, "invoice")


def test_a_missing_model_is_a_config_error_not_a_retry(server):
    server.route("POST", "/api/embed", (404, sample("error-404.json")))
    with pytest.raises(ConfigError, match="run `ollama pull nomic-embed-text`"):
        OllamaEmbedder(conn(server.url)).embed(["x"])
    assert len(server.find("POST", "/api/embed")) == 1


def test_check_reports_missing_models_and_an_unreachable_server(server):
    assert conn(server.url, embed_model="all-minilm").check() == []
    problems = conn(server.url).check()
    assert problems == ["Ollama has no model 'nomic-embed-text' (it has: llama3.2:latest): "
                        "run `ollama pull nomic-embed-text`"]
    assert "unreachable" in conn(dead_url()).check()[0]
    server.route("POST", "/api/show", (200, sample("show.json")))
    assert conn(server.url).check() == ["Ollama model 'nomic-embed-text' cannot do embedding (it can: completion, tools)"]
