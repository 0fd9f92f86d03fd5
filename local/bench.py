"""`doclane bench`: speed figures, each beside the floor it could reach.

  a  end-to-end docs/s through `doclane up` vs one sequential loop (bench_pipeline.py)
  b  events/s through one function's bus binding (SQLite; RabbitMQ vs raw pika and Redis
     Streams when DOCLANE_AMQP_URL / DOCLANE_REDIS_URL are set) (bench_bus.py)
  c  embedding chunks/s per MiniLM backend (torch, ONNX fp32, ONNX int8) vs raw sentence-transformers encode
  d  search latency p50/p95/p99 per mode at two index sizes (synthetic chunks)
  e  cold start of a scaled-to-zero pipeline vs a warm one (with a)
  f  peak memory of every function process (with a)

Medians of --repeat runs for b, c, d; a/e/f run the pipeline once (it is the
expensive one). --quick shrinks every size so the whole run takes a minute
or two; --only picks sections.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click
import numpy as np

SECTIONS = "abcdef"


def run(only: str = SECTIONS, *, quick: bool = False, repeat: int | None = None, corpus_dir: Path | None = None,
        docs: int | None = None, progress: Callable[[str], None] = print) -> dict:
    repeat = repeat or (1 if quick else 3)
    report: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick,
                    "repeat": repeat, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="doclane-bench-") as tmp:
        scratch = Path(tmp)
        if set(only) & set("aef"):
            from doclane.local import bench_pipeline

            progress("a/e/f: pipeline through doclane up, then the sequential floor")
            report["pipeline"] = bench_pipeline.pipeline(corpus_dir, docs or (3 if quick else 20), scratch, progress)
        if "b" in only:
            progress("b: event bus")
            report["bus"] = bus(200 if quick else 2000, repeat, scratch)
        if "c" in only:
            progress("c: embedding")
            report["embedding"] = embedding(32 if quick else 256, repeat)
        if "d" in only:
            progress("d: search latency")
            report["search"] = search((1_000, 5_000) if quick else (10_000, 50_000), 20 if quick else 100,
                                      repeat, scratch)
    return report


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# --------------------------------------------------------------------------- b
def bus(n: int, repeat: int, scratch: Path) -> dict:
    from doclane.local import bench_bus
    from doclane.local.bus import SqliteBus

    out = {}
    runs = [bench_bus.bench(lambda i=i: SqliteBus(scratch / f"bus-{i}.sqlite"), n, label="SqliteBus binding")
            for i in range(repeat)]
    out["sqlite_binding"] = _bus_figures(runs)
    # An idle consumer in another process noticing new work: doorbells vs polling.
    from functools import partial

    hops = {}
    for name, bells in (("sqlite_hop", True), ("sqlite_hop_polling", False)):
        hops[name] = [bench_bus.hop_latency(partial(SqliteBus, scratch / f"hop-{name}-{i}.sqlite", doorbells=bells),
                                            max(50, min(n // 10, 300)), label=f"SqliteBus hop ({'doorbell' if bells else 'polling'})")
                      for i in range(repeat)]
        out[name] = {"n": hops[name][0]["n"], **{k: _median(hops[name], k) for k in ("hop_ms_p50", "hop_ms_p95")}}
    url = os.environ.get("DOCLANE_AMQP_URL")
    if url:
        import uuid

        import pika

        from doclane.functions.adapters import rabbitmq_topology as topology
        from doclane.functions.adapters.rabbitmq_bus import RabbitBus

        broker = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            out["rabbitmq_binding"] = _bus_figures(
                [bench_bus.bench(lambda: RabbitBus(url, broker), n, label="RabbitBus binding") for _ in range(repeat)])
        finally:
            conn = pika.BlockingConnection(pika.URLParameters(url))
            topology.delete(conn, broker, [bench_bus.TRIGGER])
            conn.close()
        out["raw_pika"] = _bus_figures([bench_bus.bench_raw_pika(url, n) for _ in range(repeat)])
        out["ratio_raw_over_binding"] = out["raw_pika"]["end_to_end_per_s"] / out["rabbitmq_binding"]["end_to_end_per_s"]
    else:
        out["rabbitmq"] = "skipped: DOCLANE_AMQP_URL is not set"
    redis_url = os.environ.get("DOCLANE_REDIS_URL")
    if redis_url:
        out["redis_binding"] = _bus_figures([bench_bus.bench_redis(redis_url, n) for _ in range(repeat)])
    else:
        out["redis"] = "skipped: DOCLANE_REDIS_URL is not set"
    return out


def _bus_figures(runs: list[dict]) -> dict:
    both = _median(runs, "end_to_end_per_s")
    return {"n": runs[0]["n"], "publish_per_s": _median(runs, "publish_per_s"),
            "consume_per_s": _median(runs, "consume_per_s"), "end_to_end_per_s": both, "ms_per_hop": 1000 / both}


# --------------------------------------------------------------------------- c
def embedding(n: int, repeat: int) -> dict:
    """Chunk-sized texts (~200 wordpieces) through each MiniLM backend's
    `embed` (torch = MiniLMEmbedder, onnx and onnx-int8 = OnnxEmbedder, the
    ONNX files exported first if the data dir has none), and through the
    torch model's SentenceTransformer.encode with its defaults. The backends
    take turns within each repeat, so a change in the machine's load hits
    them alike; chunks per CPU-second (all of the process's threads) is
    beside the wall-clock figure because it hardly moves with that load."""
    from doclane.functions.adapters import minilm
    from doclane.functions.settings import load
    from doclane.local.bench_pipeline import synthetic_document

    settings = load()
    texts = [synthetic_document(i, words=150).decode() for i in range(n)]
    embedders = {b: minilm.create(settings.model_copy(update={"embedder_backend": b}))
                 for b in ("torch", "onnx", "onnx-int8")}
    embedders = {b: e for b, e in embedders.items() if getattr(e, "backend", "torch") == b}  # fell back: skip
    torch_model = embedders["torch"].model
    runners = {**{b: e.embed for b, e in embedders.items()},
               "raw_encode": lambda t: torch_model.encode(t, show_progress_bar=False)}
    for run_ in runners.values():
        run_(texts[:8])  # first call pays lazy initialisation
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeat):
        for name, run_ in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run_(texts)
            wall[name].append(n / (time.perf_counter() - t0))
            cpu[name].append(n / max(time.process_time() - c0, 1e-9))
    figures = {k: {"per_s": statistics.median(wall[k]), "per_cpu_s": statistics.median(cpu[k])} for k in runners}
    default = settings.embedder_backend if settings.embedder_backend in embedders else "torch"
    ours, raw = figures[default]["per_s"], figures["raw_encode"]["per_s"]
    return {"chunks": n, "batch_size": embedders["torch"].batch_size, "threads": getattr(embedders.get("onnx"), "threads", None),
            "default_backend": default, "backends": figures, "embedder_per_s": ours, "raw_encode_per_s": raw,
            "ratio_raw_over_embedder": raw / ours,
            "speedup_over_torch": {b: figures[b]["per_s"] / figures["torch"]["per_s"] for b in embedders}}


# --------------------------------------------------------------------------- d
PASSAGES_PER_CHUNK = 5


def search(sizes: tuple[int, ...], queries: int, repeat: int, scratch: Path) -> dict:
    """Synthetic chunks (120 words of a 5,000-word vocabulary, random unit
    vectors), 5 per document, each document with 5 passage vectors per chunk
    as the index function embeds its sentences (SciFact: 5.3), grown to each
    size in turn; per mode the latency of EmbeddedIndex.search with its
    defaults (limit 10; the query vector is given, so embedding the query is
    not in it: see section c)."""
    from doclane.functions.adapters.embedded_index import MODES, EmbeddedIndex
    from doclane.functions.ports import Chunk, IndexedDocument

    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}{chr(97 + i % 26)}" for i in range(5_000)])
    index = EmbeddedIndex(scratch / "search-bench.sqlite")
    out, have = {}, 0
    for size in sizes:
        t0 = time.perf_counter()
        while have < size:
            doc_id = f"d{have // 5}"
            chunks = [Chunk(doc_id, j, " ".join(rng.choice(vocab, 120))) for j in range(5)]
            vectors = rng.standard_normal((5, 384)).astype(np.float32)
            passages = rng.standard_normal((5 * PASSAGES_PER_CHUNK, 384)).astype(np.float32)
            index.upsert(IndexedDocument(doc_id, f"{doc_id}.txt", "report", {}, "2024-01-01T00:00:00+00:00"),
                         chunks, vectors, passage_vectors=passages)
            have += 5
        build = time.perf_counter() - t0
        qs = [(" ".join(rng.choice(vocab, 4)), rng.standard_normal(384).astype(np.float32)) for _ in range(queries)]
        index.search(*qs[0], mode="semantic")  # loads the vector matrix, as the first search after a write does
        figures = {}
        for mode in MODES:
            runs = []
            for _ in range(repeat):
                times = []
                for text, vector in qs:
                    t0 = time.perf_counter()
                    index.search(text, vector, mode=mode, limit=10)
                    times.append(time.perf_counter() - t0)
                runs.append(np.percentile(np.array(times) * 1000, [50, 95, 99]))
            p = np.median(np.array(runs), axis=0)
            figures[mode] = {"p50_ms": float(p[0]), "p95_ms": float(p[1]), "p99_ms": float(p[2])}
        out[str(size)] = {"chunks": size, "passages": size * PASSAGES_PER_CHUNK, "build_s": round(build, 2),
                          "queries": queries, "modes": figures}
    index.close()
    return out


# --------------------------------------------------------------------------- output
def render(r: dict) -> str:
    m = r["machine"]
    lines = [f"doclane bench, {r['date']}, {m['cpus']} CPUs, load {m['load_average']}, "
             f"median of {r['repeat']} run(s){' (quick)' if r['quick'] else ''}"]
    if "pipeline" in r:
        p = r["pipeline"]
        up, floor, cold = p["up"], p["floor"], p["up"]["cold_start"]
        lines += ["", "(a) end to end", f"  doclane up          {up['docs_per_s']:7.2f} docs/s  ({up['documents']} docs, "
                  f"{up['seconds']:.1f} s, {up['failed']} failed)",
                  f"  sequential floor    {floor['docs_per_s']:7.2f} docs/s  ({floor['seconds']:.1f} s)   "
                  f"floor/up = {p['ratio_floor_over_up']:.2f}x",
                  "(e) cold start (file in the inbox -> indexed)",
                  f"  first document (nothing running)   {cold['first_document_s']:6.2f} s",
                  f"  warm document                      {cold['warm_document_s']:6.2f} s",
                  f"  after scale to zero                {cold['after_scale_to_zero_s']:6.2f} s   "
                  f"= {cold['after_scale_to_zero_s'] / cold['warm_document_s']:.1f}x warm",
                  "(f) peak memory (VmHWM)"]
        lines += [f"  {role:<36}{mb:8.0f} MB" for role, mb in up["peak_memory_mb"].items()]
    if "bus" in r:
        lines += ["", "(b) event bus: publish, then receive+decode+handle+ack (one function's binding)"]
        for name, b in r["bus"].items():
            if isinstance(b, dict) and "hop_ms_p50" in b:
                lines.append(f"  {name:<18}  one hop to an idle consumer in another process: p50 {b['hop_ms_p50']:.3f} ms, "
                             f"p95 {b['hop_ms_p95']:.3f} ms (n={b['n']})")
            elif isinstance(b, dict):
                lines.append(f"  {name:<18}{b['end_to_end_per_s']:9.0f} events/s  ({b['ms_per_hop']:.3f} ms/hop; "
                             f"publish {b['publish_per_s']:.0f}/s, consume {b['consume_per_s']:.0f}/s, n={b['n']})")
            elif isinstance(b, float):
                lines.append(f"  raw pika / RabbitBus binding = {b:.2f}x")
            else:
                lines.append(f"  {name}: {b}")
    if "embedding" in r:
        e = r["embedding"]
        lines += ["", f"(c) embedding ({e['chunks']} chunks, batch {e['batch_size']}; default backend "
                  f"{e['default_backend']})", f"  {'':<32}{'chunks/s':>9}{'per CPU-s':>11}{'vs torch':>10}"]
        for name, f in e["backends"].items():
            label = "raw SentenceTransformer.encode" if name == "raw_encode" else f"embed, {name}"
            speedup = e["speedup_over_torch"].get(name)
            lines.append(f"  {label:<32}{f['per_s']:9.1f}{f['per_cpu_s']:11.1f}"
                         + (f"{speedup:9.2f}x" if speedup else ""))
    if "search" in r:
        lines += ["", f"(d) search latency, ms (EmbeddedIndex.search with its defaults, limit 10; "
                      f"{PASSAGES_PER_CHUNK} passage vectors per chunk)",
                  f"  {'chunks':>7} {'mode':<9}{'p50':>8}{'p95':>8}{'p99':>8}"]
        for s in r["search"].values():
            for mode, f in s["modes"].items():
                lines.append(f"  {s['chunks']:>7} {mode:<9}{f['p50_ms']:8.2f}{f['p95_ms']:8.2f}{f['p99_ms']:8.2f}")
    return "\n".join(lines)


def plots(r: dict, folder: Path) -> list[Path]:
    """bench-throughput.png and bench-latency.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    bars = []  # (title, [(label, value)])
    if "pipeline" in r:
        p = r["pipeline"]
        bars.append(("end to end, docs/s", [("doclane up", p["up"]["docs_per_s"]), ("floor", p["floor"]["docs_per_s"])]))
    if "bus" in r:
        bars.append(("event bus, events/s", [(k.replace("_", "\n"), v["end_to_end_per_s"])
                                             for k, v in r["bus"].items()
                                             if isinstance(v, dict) and "end_to_end_per_s" in v]))  # not the hops
    if "embedding" in r:
        e = r["embedding"]
        bars.append(("embedding, chunks/s", [(k.replace("raw_encode", "raw ST\nencode"), f["per_s"])
                                             for k, f in e["backends"].items()]))
    if bars:
        fig, axes = plt.subplots(1, len(bars), figsize=(4 * len(bars), 3.5), squeeze=False)
        for ax, (title, items) in zip(axes[0], bars):
            ax.bar([k for k, _ in items], [v for _, v in items], color=["#3a7", "#999", "#37a", "#a73"][:len(items)])
            ax.set_title(title)
        fig.suptitle(f"doclane bench {r['date'][:10]}, {r['machine']['cpus']} CPUs")
        fig.tight_layout()
        written.append(folder / "bench-throughput.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    if "search" in r or "pipeline" in r:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        if "search" in r:
            for mode in ("keyword", "semantic", "hybrid"):
                sizes = [s["chunks"] for s in r["search"].values()]
                axes[0].plot(sizes, [s["modes"][mode]["p95_ms"] for s in r["search"].values()], marker="o", label=mode)
            axes[0].set_xticks(sizes, [f"{s // 1000}k" if s >= 1000 else str(s) for s in sizes])
            axes[0].set(title="search p95 latency", xlabel="chunks", ylabel="ms")
            axes[0].legend()
        if "pipeline" in r:
            c = r["pipeline"]["up"]["cold_start"]
            axes[1].bar(["first", "warm", "after\nscale to zero"],
                        [c["first_document_s"], c["warm_document_s"], c["after_scale_to_zero_s"]], color="#37a")
            axes[1].set(title="one document, inbox -> indexed", ylabel="s")
        fig.tight_layout()
        written.append(folder / "bench-latency.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


@click.command("bench")
@click.option("--only", default=SECTIONS, help="Sections to run, e.g. a,c (default: all of a-f)")
@click.option("--quick", is_flag=True, help="Small sizes, one run each: a minute or two")
@click.option("--repeat", type=int, help="Runs per figure, their median reported [3, quick 1]")
@click.option("--corpus", "corpus_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Files for (a), topped up with synthetic Markdown documents [synthetic only]")
@click.option("--docs", type=click.IntRange(1), help="Documents in (a)'s corpus [20, quick 3]")
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False, path_type=Path), help="Write PNG plots here")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the tables")
def bench(only, quick, repeat, corpus_dir, docs, plot_dir, as_json):
    """Throughput, latency, cold start and memory, beside their floors."""
    chosen = "".join(c for c in only.lower() if c in SECTIONS)
    if not chosen:
        raise click.UsageError(f"--only takes letters of {SECTIONS}, e.g. a,c")
    say = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    # bench_bus prints its own lines: with --json they go to stderr, stdout stays one JSON object
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = run(chosen, quick=quick, repeat=repeat, corpus_dir=corpus_dir, docs=docs, progress=say)
    if plot_dir:
        report["plots"] = [str(p) for p in plots(report, plot_dir)]
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
