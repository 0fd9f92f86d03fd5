"""Context picks adapters from configuration alone: the embedded defaults,
or OpenSearch and Ollama when their settings are present (built lazily, no
network at construction)."""

from __future__ import annotations

import os

import pytest

from doclane.functions.context import Context
from doclane.functions.errors import ConfigError
from doclane.functions.settings import load


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for var in list(os.environ):
        if var.startswith("DOCLANE_") or var == "OLLAMA_HOST":
            monkeypatch.delenv(var)


class _Embedder:
    name, dimension = "stub", 8


def test_opensearch_and_ollama_are_used_when_configured(tmp_path):
    from doclane.functions.adapters.ollama_models import OllamaClassifier, OllamaEmbedder, OllamaExtractor
    from doclane.functions.adapters.opensearch_index import OpenSearchIndex

    settings = load(data_dir=tmp_path, opensearch_url="http://127.0.0.1:9", opensearch_index="docs-test",
                    ollama_host="http://127.0.0.1:9", ollama_model="qwen2.5", ollama_fallback="embedded")
    ctx = Context(settings, embedder=_Embedder())
    assert isinstance(ctx.index, OpenSearchIndex)
    assert (ctx.index.index, ctx.index.dimension, ctx.index.url) == ("docs-test", 8, "http://127.0.0.1:9")
    assert isinstance(ctx.classifier, OllamaClassifier) and ctx.classifier.name == "ollama:qwen2.5"
    assert isinstance(ctx.extractor, OllamaExtractor) and ctx.ollama.fallback == "embedded"

    ollama_embeds = Context(load(data_dir=tmp_path, ollama_host="http://127.0.0.1:9", embedder="ollama",
                                 ollama_embed_model="mxbai-embed-large"))
    assert isinstance(ollama_embeds.embedder, OllamaEmbedder)
    assert ollama_embeds.embedder.name == "ollama:mxbai-embed-large"


def test_embedded_defaults_and_a_clear_error_for_an_ollama_embedder_without_a_host(tmp_path):
    from doclane.functions.adapters.embedded_index import EmbeddedIndex
    from doclane.functions.adapters.heuristic_extractor import HeuristicExtractor

    ctx = Context(load(data_dir=tmp_path))
    assert isinstance(ctx.index, EmbeddedIndex) and isinstance(ctx.extractor, HeuristicExtractor)
    with pytest.raises(ConfigError, match="DOCLANE_EMBEDDER=ollama needs OLLAMA_HOST"):
        Context(load(data_dir=tmp_path, embedder="ollama")).embedder
