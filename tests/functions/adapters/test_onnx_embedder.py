"""The ONNX Runtime embedder against the torch one: exported here from the
packaged MiniLM (nothing downloaded), fp32 and int8 give the same vectors
within tolerance, DOCLANE_EMBEDDER_BACKEND picks the runtime, a second start
reuses the export, and a missing onnxruntime falls back to torch.

Cost: one export (torch.onnx + int8 quantisation, ~15-40 s on a busy 2-core
machine) for the whole module, plus the torch model."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from doclane.functions.adapters import minilm, onnx_embedder
from doclane.functions.adapters.onnx_embedder import OnnxEmbedder
from doclane.functions.settings import load
from doclane.local.eval.cache import CachedEmbedder

pytestmark = pytest.mark.slow  # exports and loads the embedding model

TEXTS = [
    "Invoice number INV-2023-0042. Total due EUR 1,210.00 including VAT 21%, payable within 30 days.",
    "Either party may terminate this Agreement with ninety days written notice.",
    "Aspirin lowers the risk of a first heart attack in adults over fifty, a randomised trial found.",
    "The telescope resolved two moons orbiting the gas giant beyond the asteroid belt. " * 12,  # ~250 tokens
    "what did I pay for coffee",
]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def torch_vectors():
    return minilm.MiniLMEmbedder().embed(TEXTS)


def _settings(onnx_dir, backend: str):
    return load(embedder_backend=backend, onnx_dir=str(onnx_dir))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("backend, tolerance", [("onnx", 0.999), ("onnx-int8", 0.99)])
def test_onnx_vectors_match_torch(onnx_dir, torch_vectors, backend, tolerance):
    """int8 quantises activations per batch (one scale for the whole tensor),
    so a text's int8 vector moves a little with its batch: within the same
    0.99 as to torch, where fp32 is exact."""
    embedder = minilm.create(_settings(onnx_dir, backend))
    assert isinstance(embedder, OnnxEmbedder) and embedder.backend == backend
    assert (embedder.name, embedder.dimension, embedder.max_tokens) == ("all-MiniLM-L6-v2", 384, 256)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # normalised, as torch's
    assert _cosines(vectors, torch_vectors).min() >= tolerance
    alone = np.stack([embedder.embed([t])[0] for t in TEXTS])  # as a search query is embedded
    assert _cosines(alone, torch_vectors).min() >= tolerance
    assert _cosines(alone, vectors).min() >= (0.9999 if backend == "onnx" else tolerance)
    assert embedder.embed([]).shape == (0, 384)


def test_the_setting_switches_backends(onnx_dir):
    assert isinstance(minilm.create(_settings(onnx_dir, "torch")), minilm.MiniLMEmbedder)
    int8, fp32 = (minilm.create(_settings(onnx_dir, b)) for b in ("onnx-int8", "onnx"))
    assert (int8.onnx_file.name, fp32.onnx_file.name) == ("model-int8.onnx", "model.onnx")
    assert int8.onnx_file.parent == fp32.onnx_file.parent and int8.onnx_file.parent.parent == onnx_dir
    assert int8.onnx_file.stat().st_size < fp32.onnx_file.stat().st_size  # int8 weights


def test_a_second_start_reuses_the_export(onnx_dir):
    first = onnx_embedder.ensure_export(onnx_dir, minilm.model_path(), int8=True)
    written = first.stat().st_mtime_ns
    again = onnx_embedder.ensure_export(onnx_dir, minilm.model_path(), int8=True)
    assert again == first and again.stat().st_mtime_ns == written
    assert not list(first.parent.glob("*.tmp"))  # nothing half-written left behind


def test_without_onnxruntime_it_falls_back_to_torch(onnx_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="doclane.functions.adapters.minilm"):
        embedder = minilm.create(_settings(onnx_dir, "onnx-int8"))
    assert isinstance(embedder, minilm.MiniLMEmbedder)
    assert "onnxruntime is not installed" in caplog.text


def test_an_unknown_backend_is_refused():
    from doclane.functions.errors import ConfigError

    with pytest.raises(ConfigError, match="DOCLANE_EMBEDDER_BACKEND"):
        load(embedder_backend="tensorflow")


def test_each_backend_has_its_own_cache_file(onnx_dir, tmp_path):
    paths = {b: CachedEmbedder(minilm.create(_settings(onnx_dir, b)), tmp_path).path
             for b in ("torch", "onnx", "onnx-int8")}
    assert len(set(paths.values())) == 3
