"""Embeddings on disk, keyed by model and text.

The key is the text itself (its SHA-256) plus the model's name, folder and
runtime (torch, onnx, onnx-int8: each has its own file):
whatever the chunker does, a chunk whose text is unchanged is never embedded
twice, and a changed chunker or model simply misses. One .npz per model;
written after each batch of misses, so an interrupted run keeps its work."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np


class CachedEmbedder:
    """An `Embedder` that answers from the cache and embeds only the misses."""

    def __init__(self, embedder, cache_dir: Path | None):
        self.inner = embedder
        self.name = embedder.name
        self.dimension = embedder.dimension
        self.max_tokens = getattr(embedder, "max_tokens", 256)
        self.misses = 0
        self.hits = 0
        self.backend = getattr(embedder, "backend", "torch")
        model_id = f"{embedder.name}|{Path(getattr(embedder, 'path', '')).name}|{self.max_tokens}"
        if self.backend != "torch":  # ONNX vectors differ slightly (int8: cosine ~0.995): never mix them
            model_id += f"|{self.backend}"
        tag = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        self.path = Path(cache_dir) / f"embeddings-{tag}.npz" if cache_dir else None
        self._vectors: dict[bytes, np.ndarray] = {}
        if self.path and self.path.is_file():
            with np.load(self.path) as stored:
                self._vectors = dict(zip((bytes(k) for k in stored["keys"]), stored["vectors"]))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            by_key = dict(zip(keys, texts))
            vectors = self.inner.embed([by_key[k] for k in missing])
            self._vectors.update(zip(missing, np.asarray(vectors, dtype=np.float32)))
            self.misses += len(missing)
            self._save()
        self.hits += len(keys) - len(missing)
        if not keys:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():  # another run may have added texts since we read it: keep them
            with np.load(self.path) as stored:
                for k, v in zip(stored["keys"], stored["vectors"]):
                    self._vectors.setdefault(bytes(k), v)
        tmp = self.path.with_suffix(".tmp.npz")
        keys = np.array([np.frombuffer(k, dtype=np.uint8) for k in self._vectors], dtype=np.uint8)
        np.savez(tmp, keys=keys, vectors=np.stack(list(self._vectors.values())))
        os.replace(tmp, self.path)  # never a half-written cache
