"""OpenSearchIndex through the real opensearch-py client against a FAKE
server (fake_http.py) that emulates OpenSearch's documented REST API with the
sample responses in tests/fixtures/opensearch/ (see SOURCE.md there). No
OpenSearch runs here: these tests check the requests the adapter sends
(template, pipelines, bulk NDJSON, hybrid query) against the documented
shapes and the mapping of documented responses onto our ports; they do not
prove how a real cluster ranks."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from doclane.functions.adapters.opensearch_index import INFRA_DIR, OpenSearchIndex
from doclane.functions.errors import ConfigError, Permanent, Retryable
from doclane.functions.ports import Chunk, IndexedDocument
from tests.conftest import FIXTURES
from tests.functions.adapters.fake_http import FakeServer

OS = FIXTURES / "opensearch"
INDEX = "doclane-chunks"
DIM = 4


def sample(name: str) -> dict:
    return json.loads((OS / name).read_text())


def mapping(dimension: int) -> dict:
    m = sample("mapping.json")
    m[INDEX]["mappings"]["properties"]["vector"]["dimension"] = dimension
    return m


@pytest.fixture
def server():
    srv = FakeServer()
    srv.route("GET", "/", (200, sample("root.json")))
    srv.route("PUT", f"/_index_template/{INDEX}", (200, sample("acknowledged.json")))
    srv.route("HEAD", f"/{INDEX}", (404, None))
    srv.route("PUT", f"/{INDEX}", (200, sample("create-index.json")))
    srv.route("GET", f"/{INDEX}/_mapping", (200, mapping(DIM)))
    srv.route("PUT", "/_search/pipeline/.+", (200, sample("acknowledged.json")))
    srv.route("POST", "/_bulk", (200, sample("bulk-response.json")))
    srv.route("POST", f"/{INDEX}/_(delete|update)_by_query", (200, sample("by-query-response.json")))
    srv.route("POST", f"/{INDEX}/_search", (200, sample("search-hybrid-response.json")))
    srv.route("POST", f"/{INDEX}/_count", (200, sample("count-response.json")))
    yield srv
    srv.close()


def make(server: FakeServer, **kw) -> OpenSearchIndex:
    return OpenSearchIndex(server.url, INDEX, DIM, timeout=5, **kw)


def doc(doc_id: str = "doc-1") -> IndexedDocument:
    return IndexedDocument(doc_id, "acme-invoice.pdf", "invoice", {"total": {"value": "1210.00", "confidence": 0.9}},
                           "2024-03-01T10:00:00+00:00")


# --------------------------------------------------------------------------- start-up
def test_start_applies_the_template_index_and_both_pipelines(server):
    index = make(server)
    index.ensure()
    index.ensure()  # once per process
    assert len(server.find("GET", "/")) == 1

    template = server.find("PUT", f"/_index_template/{INDEX}")[0].json
    file = json.loads((INFRA_DIR / "index-template.json").read_text())
    assert template["index_patterns"] == [INDEX]
    assert template["template"]["settings"] == file["template"]["settings"]
    assert template["template"]["settings"]["index"]["knn"] is True
    props = template["template"]["mappings"]["properties"]
    assert props["vector"] == {"type": "knn_vector", "dimension": DIM, "method": {
        "name": "hnsw", "space_type": "cosinesimil", "engine": "lucene", "parameters": {"m": 16, "ef_construction": 128}}}
    assert {props[f]["type"] for f in ("category", "filename", "document_id")} == {"keyword"}
    assert props["text"]["analyzer"] == "doclane_text" and props["fields"] == {"type": "object", "enabled": False}
    analyzer = template["template"]["settings"]["analysis"]["analyzer"]["doclane_text"]
    assert "doclane_stemmer" in analyzer["filter"]

    assert server.find("PUT", f"/{INDEX}"), "the index is created when missing"
    minmax = server.find("PUT", "/_search/pipeline/doclane-hybrid-minmax")[0].json
    assert minmax == json.loads((INFRA_DIR / "search-pipeline-minmax.json").read_text())
    processor = minmax["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"]["technique"] == "min_max"
    assert processor["combination"] == {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.5]}}
    rrf = server.find("PUT", "/_search/pipeline/doclane-hybrid-rrf")[0].json  # 2.19.1 has the score ranker
    assert rrf["phase_results_processors"][0]["score-ranker-processor"]["combination"]["technique"] == "rrf"
    assert index.version == (2, 19, 1) and index.pipeline == "doclane-hybrid-minmax"


def test_weights_follow_the_semantic_weight(server):
    make(server, semantic_weight=0.7).ensure()
    minmax = server.find("PUT", "/_search/pipeline/doclane-hybrid-minmax")[0].json
    assert minmax["phase_results_processors"][0]["normalization-processor"]["combination"]["parameters"] == {
        "weights": [0.3, 0.7]}


def test_rrf_only_where_the_cluster_has_the_score_ranker(server):
    root = sample("root.json")
    root["version"]["number"] = "2.15.0"
    server.route("GET", "/", (200, root))
    index = make(server, fusion="rrf")
    index.ensure()
    assert not server.find("PUT", "/_search/pipeline/doclane-hybrid-rrf")
    assert index.pipeline == "doclane-hybrid-minmax"

    root["version"]["number"] = "3.1.0"
    newer = make(server, fusion="rrf")
    newer.ensure()
    assert newer.pipeline == "doclane-hybrid-rrf"


def test_a_cluster_too_old_for_hybrid_search_is_a_config_error(server):
    root = sample("root.json")
    root["version"]["number"] = "2.11.0"
    server.route("GET", "/", (200, root))
    with pytest.raises(ConfigError, match="2.13 or newer"):
        make(server).ensure()


def test_an_index_of_another_dimension_is_a_config_error(server):
    server.route("HEAD", f"/{INDEX}", (200, None))
    server.route("GET", f"/{INDEX}/_mapping", (200, mapping(384)))
    with pytest.raises(ConfigError, match="384-dimensional vectors, the embedder gives 4"):
        make(server).ensure()
    assert not server.find("PUT", f"/{INDEX}"), "an existing index is not re-created"


def test_an_index_created_meanwhile_by_another_process_is_fine(server):
    server.route("PUT", f"/{INDEX}", (400, {"error": {"type": "resource_already_exists_exception",
                                                      "reason": f"index [{INDEX}/abc] already exists"}, "status": 400}))
    index = make(server)
    index.ensure()
    assert index.pipeline == "doclane-hybrid-minmax"


def test_a_rejected_template_is_a_config_error(server):
    server.route("PUT", f"/_index_template/{INDEX}", (400, sample("error-400.json")))
    with pytest.raises(ConfigError, match="mapper_parsing_exception"):
        make(server).ensure()
    server.route("PUT", f"/_index_template/{INDEX}", (200, sample("acknowledged.json")))
    server.route("PUT", f"/{INDEX}", (400, sample("error-400.json")))
    with pytest.raises(ConfigError, match="400 while applying the index template: mapper_parsing_exception"):
        make(server).ensure()


# --------------------------------------------------------------------------- writes
def test_upsert_bulk_indexes_chunks_with_deterministic_ids_then_drops_stale_ones(server):
    index = make(server)
    chunks = [Chunk("doc-1", 0, "INVOICE Acme", "Header"), Chunk("doc-1", 1, "Total due 1,210.00")]
    index.upsert(doc(), chunks, np.arange(8, dtype=np.float32).reshape(2, DIM))

    bulk = server.find("POST", "/_bulk")[0]
    assert bulk.args == {"refresh": "wait_for"}
    lines = bulk.ndjson
    assert lines[0] == {"index": {"_index": INDEX, "_id": "doc-1:0"}}
    assert lines[2] == {"index": {"_index": INDEX, "_id": "doc-1:1"}}
    assert lines[1] == {"document_id": "doc-1", "filename": "acme-invoice.pdf", "category": "invoice",
                        "fields": {"total": {"value": "1210.00", "confidence": 0.9}},
                        "created_at": "2024-03-01T10:00:00+00:00", "ordinal": 0, "text": "INVOICE Acme",
                        "heading": "Header", "vector": [0.0, 1.0, 2.0, 3.0]}
    assert lines[3]["vector"] == [4.0, 5.0, 6.0, 7.0] and bulk.body.endswith(b"\n")

    stale = server.find("POST", f"/{INDEX}/_delete_by_query")[0]
    assert stale.args == {"refresh": "true"}
    assert stale.json == {"query": {"bool": {"filter": [{"term": {"document_id": "doc-1"}},
                                                        {"range": {"ordinal": {"gt": 1}}}]}}}


def test_a_document_without_chunks_keeps_one_placeholder(server):
    make(server).upsert(doc(), [], np.zeros((0, DIM), np.float32))
    lines = server.find("POST", "/_bulk")[0].ndjson
    assert len(lines) == 2 and lines[0]["index"]["_id"] == "doc-1:0"
    assert lines[1]["text"] == "" and "vector" not in lines[1]


def test_vectors_of_the_wrong_width_never_reach_the_server(server):
    with pytest.raises(ConfigError, match="takes 4-dimensional vectors, got 3"):
        make(server).upsert(doc(), [Chunk("doc-1", 0, "x")], np.ones((1, 3), np.float32))
    assert not server.find("POST", "/_bulk")


def test_bulk_item_errors_are_translated(server):
    server.route("POST", "/_bulk", (200, sample("bulk-error-response.json")))
    chunks = [Chunk("doc-1", 0, "a"), Chunk("doc-1", 1, "b")]
    with pytest.raises(Permanent, match="1 chunk\\(s\\) of doc-1 not indexed: mapper_parsing_exception"):
        make(server).upsert(doc(), chunks, np.ones((2, DIM), np.float32))

    busy = sample("bulk-error-response.json")
    busy["items"][0]["index"].update(status=429, error={"type": "rejected_execution_exception", "reason": "queue full"})
    server.route("POST", "/_bulk", (200, busy))
    with pytest.raises(Retryable, match="rejected_execution_exception"):
        make(server).upsert(doc(), chunks, np.ones((2, DIM), np.float32))


def test_delete_update_and_count_requests(server):
    index = make(server)
    index.delete("doc-1")
    index.update_fields("doc-1", "receipt", {"total": {"value": "9.50", "confidence": 1.0}})
    assert index.count() == 3

    deleted, updated = (server.find("POST", f"/{INDEX}/_{op}_by_query")[0] for op in ("delete", "update"))
    assert deleted.json == {"query": {"term": {"document_id": "doc-1"}}} and deleted.args == {"refresh": "true"}
    assert updated.json["query"] == {"term": {"document_id": "doc-1"}}
    assert updated.json["script"]["params"] == {"category": "receipt", "fields": {"total": {"value": "9.50",
                                                                                            "confidence": 1.0}}}
    assert updated.json["script"]["lang"] == "painless"
    assert server.find("POST", f"/{INDEX}/_count")[0].json == {"query": {"term": {"ordinal": 0}}}


# --------------------------------------------------------------------------- search
def test_hybrid_search_sends_the_hybrid_query_through_the_pipeline(server):
    index = make(server)
    index.search("total due", np.array([1, 0, 0, 0], np.float32), mode="hybrid", category="invoice", limit=10)

    sent = server.find("POST", f"/{INDEX}/_search")[0]
    assert sent.args == {"search_pipeline": "doclane-hybrid-minmax"}
    body = sent.json
    keyword, semantic = body["query"]["hybrid"]["queries"]
    assert keyword == {"multi_match": {"query": "total due", "fields": ["text", "heading^2", "filename.text^3"]}}
    assert semantic == {"knn": {"vector": {"vector": [1.0, 0.0, 0.0, 0.0], "k": 100}}}
    assert body["post_filter"] == {"term": {"category": "invoice"}}, "the filter leaves the facets alone"
    assert body["aggs"]["categories"]["terms"]["field"] == "category"
    assert body["aggs"]["categories"]["aggs"]["documents"]["cardinality"]["field"] == "document_id"
    assert body["aggs"]["documents"]["cardinality"]["field"] == "document_id"
    highlight = body["highlight"]
    assert (highlight["pre_tags"], highlight["post_tags"], highlight["encoder"]) == (["<mark>"], ["</mark>"], "html")
    assert highlight["highlight_query"] == {"match": {"text": {"query": "total due"}}}
    assert body["_source"] == {"excludes": ["vector"]} and body["size"] >= 100


def test_keyword_and_semantic_modes_send_one_query_without_a_pipeline(server):
    index = make(server)
    index.search("total", None, mode="keyword")
    index.search("total", np.ones(DIM, np.float32), mode="semantic")
    keyword, semantic = server.find("POST", f"/{INDEX}/_search")
    assert keyword.args == {} and "multi_match" in keyword.json["query"]
    assert semantic.args == {} and semantic.json["query"]["knn"]["vector"]["k"] == 100
    assert "post_filter" not in keyword.json


def test_rrf_fusion_searches_through_the_rrf_pipeline(server):
    make(server, fusion="rrf").search("total", np.ones(DIM, np.float32))
    assert server.find("POST", f"/{INDEX}/_search")[0].args == {"search_pipeline": "doclane-hybrid-rrf"}


def test_chunk_hits_become_one_hit_per_document_with_facets_and_total(server):
    result = make(server).search("total", np.ones(DIM, np.float32))
    assert [h.document_id for h in result.hits] == ["inv-1", "rcpt-7", "inv-2"]
    first = result.hits[0]
    assert (first.filename, first.category, first.score) == ("acme-invoice.pdf", "invoice", 1.0)
    assert first.snippet == "<mark>Total</mark> due EUR 1,210.00 &lt;net 30&gt;", "the best chunk's highlight"
    assert first.fields == {"total": {"value": "1210.00", "confidence": 0.9}}
    assert result.hits[1].snippet == "RECEIPT Coffee Corner TOTAL 9.50", "no highlight: the chunk's opening words"
    assert result.facets == {"category": {"invoice": 2, "receipt": 1}}
    assert result.total == 3

    filtered = make(server).search("total", np.ones(DIM, np.float32), category="invoice")
    assert filtered.total == 2 and filtered.facets == result.facets
    page = make(server).search("total", np.ones(DIM, np.float32), limit=1, offset=1)
    assert [h.document_id for h in page.hits] == ["rcpt-7"] and page.total == 3


def test_nothing_to_search_asks_nothing(server):
    result = make(server).search("   ", None, mode="hybrid")
    assert (result.total, result.hits) == (0, []) and not server.requests
    with pytest.raises(ValueError, match="3 dimensions"):
        make(server).search("x", np.ones(3, np.float32), mode="semantic")


# --------------------------------------------------------------------------- errors
def test_overload_and_server_errors_are_retryable_bad_requests_permanent(server):
    index = make(server)
    index.ensure()
    server.route("POST", f"/{INDEX}/_search", (429, sample("error-429.json")))
    with pytest.raises(Retryable, match="429 .*rejected_execution_exception"):
        index.search("total", None, mode="keyword")
    server.route("POST", f"/{INDEX}/_search", (503, {"error": "unavailable", "status": 503}))
    before = len(server.requests)
    with pytest.raises(Retryable, match="503"):
        index.search("total", None, mode="keyword")
    assert len(server.requests) - before == 3, "the transport retried a 503 twice before giving up"
    server.route("POST", f"/{INDEX}/_search", (400, sample("error-400.json")))
    with pytest.raises(Permanent, match="mapper_parsing_exception"):
        index.search("total", None, mode="keyword")


def test_an_unreachable_cluster_is_retryable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    index = OpenSearchIndex(f"http://127.0.0.1:{port}", INDEX, DIM, timeout=2)
    with pytest.raises(Retryable, match="unreachable while reading the cluster version"):
        index.count()
    assert index.pipeline is None, "a later call tries the start-up again"
