"""The pipeline half of `doclane bench`: (a) docs/s through `doclane up`
against the same work in one sequential loop, (e) cold start of scaled-to-zero
functions, (f) peak memory of every function process.

One `doclane up` runs as a child process in a scratch folder, with a short
idle time so its functions scale to zero during the run. In order:

  1. one document into the empty system: every function starts cold
  2. one more at once: the same path, warm
  3. the corpus at once: docs/s, clock from the drop to the last indexed
  4. wait until every function process has exited, then one document:
     the cold start of a scaled-to-zero pipeline

Times run from the file landing in the inbox (so they include the folder
watcher's settle time, as a user sees it) to `indexed` in the metadata store.
A sampler reads each process's VmHWM (the kernel's peak resident set) all along.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

WORDS = ("invoice report contract meeting budget customer payment delivery order project quarter revenue "
         "policy risk audit supplier schedule review summary analysis market product service team plan "
         "agreement account balance travel expense claim approval request support ticket release").split()


def synthetic_document(seed: int, words: int = 300) -> bytes:
    """A unique Markdown document (unique bytes: the pipeline skips duplicates)."""
    rng = np.random.default_rng(seed)
    paras = [" ".join(rng.choice(WORDS, size=60)).capitalize() + "." for _ in range(max(1, words // 60))]
    return (f"# Report {seed}\n\n" + "\n\n".join(paras) + f"\n\nReference {seed:08d}.\n").encode()


def corpus(folder: Path | None, size: int) -> list[tuple[str, bytes]]:
    """The files of `folder` (sorted), topped up with synthetic documents to `size`."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in
                   (".pdf", ".docx", ".html", ".md", ".txt", ".eml")) if folder else []
    docs = [(p.name, p.read_bytes()) for p in files][:size]
    docs += [(f"report-{i:03d}.md", synthetic_document(i)) for i in range(len(docs), size)]
    return docs


# --------------------------------------------------------------------------- the floor
def sequential_floor(docs: list[tuple[str, bytes]], scratch: Path) -> dict:
    """Parse, classify, extract, chunk, embed and index each document in turn,
    in this process, with the adapters the functions use; models loaded (and
    one document run) before the clock starts."""
    from doclane.functions import categories
    from doclane.functions import index as index_function
    from doclane.functions.adapters import minilm
    from doclane.functions.adapters.docling_parser import DoclingParser
    from doclane.functions.adapters.embedded_classifier import EmbeddedClassifier
    from doclane.functions.adapters.embedded_index import EmbeddedIndex
    from doclane.functions.adapters.heuristic_extractor import HeuristicExtractor
    from doclane.functions.ports import IndexedDocument
    from doclane.functions.settings import load as load_settings

    embedder = minilm.shared()
    cats = categories.load()
    classifier, extractor = EmbeddedClassifier(embedder, cats), HeuristicExtractor(cats)
    index = EmbeddedIndex(scratch / "floor-index.sqlite")
    settings = load_settings()  # as the index function chunks and embeds (chunk size, passages)

    def one(i: int, name: str, data: bytes) -> None:
        parsed = parser.parse(data, name)
        category = classifier.classify(parsed, name).category
        fields = {k: f.value for k, f in extractor.extract(parsed, category).items()}
        chunks, vectors, passage_vectors = index_function.embed(parsed, f"d{i}", embedder, settings)
        index.upsert(IndexedDocument(f"d{i}", name, category, fields, "2024-01-01T00:00:00+00:00"),
                     chunks, vectors, passage_vectors=passage_vectors, text=parsed.text)

    with DoclingParser() as parser:
        one(-1, "warm-up.md", synthetic_document(10_000))
        t0 = time.perf_counter()
        for i, (name, data) in enumerate(docs):
            one(i, name, data)
        seconds = time.perf_counter() - t0
    index.close()
    return {"documents": len(docs), "seconds": round(seconds, 3), "docs_per_s": len(docs) / seconds}


# --------------------------------------------------------------------------- doclane up
class _PeakMemory(threading.Thread):
    """Peak RSS (VmHWM) per process of the `up` tree, by role."""

    def __init__(self, root_pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.every, self.peaks_mb = root_pid, every, {}
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.halt.wait(self.every):
            try:
                root = psutil.Process(self.root)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for p in procs:
                try:
                    role = _role(p, root)
                    peak = _hwm_mb(p)
                except psutil.Error:
                    continue
                self.peaks_mb[role] = max(self.peaks_mb.get(role, 0.0), peak)


def _role(p, root) -> str:
    if p.pid == root.pid:
        return "up (gateway, watcher, supervisor)"
    cmd = p.cmdline()
    if "doclane.local.worker" in cmd:
        return cmd[cmd.index("doclane.local.worker") + 1]
    parent = p.parent()
    if parent is not None and "doclane.local.worker" in parent.cmdline():
        pc = parent.cmdline()
        return f"{pc[pc.index('doclane.local.worker') + 1]}: parser worker"
    return p.name()


def _hwm_mb(p) -> float:
    try:
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return p.memory_info().rss / 2**20  # not Linux: the current RSS, sampled


def through_up(docs: list[tuple[str, bytes]], scratch: Path, *, idle_seconds: float = 20.0,
               timeout: float = 600.0, progress: Callable[[str], None] = print) -> dict:
    from doclane.functions.adapters.metadata import open_metadata

    data, inbox = scratch / "up-data", scratch / "up-inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "DOCLANE_IDLE_SECONDS": str(idle_seconds), "DOCLANE_LOG_LEVEL": "WARNING"}
    for name in ("DOCLANE_AMQP_URL", "DOCLANE_DATABASE_URL", "DOCLANE_S3_ENDPOINT_URL", "DOCLANE_S3_BUCKET",
                 "DOCLANE_OPENSEARCH_URL", "OLLAMA_HOST", "DOCLANE_WEBHOOK_URLS"):
        env.pop(name, None)  # the embedded defaults: the figures must not depend on what else is set
    log = (scratch / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "doclane.local.cli", "--data-dir", str(data), "up", "--inbox",
                             str(inbox), "--port", str(port), "--quiet"], env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = _PeakMemory(proc.pid)
    sampler.start()
    try:
        _wait(lambda: (data / "metadata.sqlite").exists() or proc.poll() is not None, 60, "doclane up to start")
        if proc.poll() is not None:
            raise RuntimeError(f"doclane up exited with {proc.returncode}; see {scratch / 'up.log'}")
        metadata = open_metadata(str(data / "metadata.sqlite"))
        done = lambda: sum(n for s, n in metadata.stats()["status"].items() if s in ("indexed", "failed"))  # noqa: E731

        def drop(batch: list[tuple[str, bytes]]) -> float:
            target = done() + len(batch)
            t0 = time.perf_counter()
            for name, content in batch:
                tmp = inbox / f".{name}.part"  # hidden until complete: the watcher ignores it
                tmp.write_bytes(content)
                os.replace(tmp, inbox / name)
            _wait(lambda: done() >= target, timeout, f"{len(batch)} documents to be indexed")
            return time.perf_counter() - t0

        first_cold = drop([("cold-1.md", synthetic_document(20_001))])
        warm = drop([("warm-1.md", synthetic_document(20_002))])
        progress(f"  up: first document {first_cold:.1f} s (cold), next {warm:.1f} s (warm); corpus of {len(docs)}")
        corpus_s = drop(docs)
        _wait(lambda: not _workers(proc.pid), idle_seconds + 60, "the functions to scale to zero")
        zero_cold = drop([("cold-2.md", synthetic_document(20_003))])
        failed = metadata.stats()["status"].get("failed", 0)
    finally:
        sampler.halt.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {
        "documents": len(docs), "failed": failed, "seconds": round(corpus_s, 3), "docs_per_s": len(docs) / corpus_s,
        "cold_start": {"first_document_s": round(first_cold, 3), "warm_document_s": round(warm, 3),
                       "after_scale_to_zero_s": round(zero_cold, 3), "idle_seconds": idle_seconds},
        "peak_memory_mb": {k: round(v, 1) for k, v in sorted(sampler.peaks_mb.items())},
    }


def _workers(pid: int) -> list:
    import psutil

    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    workers = []
    for p in children:
        try:
            if "doclane.local.worker" in p.cmdline():
                workers.append(p)
        except psutil.Error:  # one that exited (a zombie until reaped) is no worker; the others still are
            continue
    return workers


def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    """A free port whose successor (the WebSocket port) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two adjacent free ports")


def pipeline(corpus_dir: Path | None, size: int, scratch: Path, progress: Callable[[str], None] = print) -> dict:
    docs = corpus(corpus_dir, size)
    up = through_up(docs, scratch, progress=progress)
    progress(f"  up: {up['docs_per_s']:.2f} docs/s; now the sequential floor")
    floor = sequential_floor(docs, scratch)
    shutil.rmtree(scratch / "up-inbox", ignore_errors=True)
    return {"up": up, "floor": floor, "ratio_floor_over_up": floor["docs_per_s"] / up["docs_per_s"]}
