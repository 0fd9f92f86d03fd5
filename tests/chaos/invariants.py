"""What every chaos scenario checks once the fault is over, the same way for
each, and the one-line tally it reports (conftest.py prints the table).

After a fault the pipeline must settle by itself, and then:
- every document dropped ends `indexed`, or `failed` with a reason (lost: 0);
  the corpus holds valid files only, and the faults are shorter than the
  retries, so here every document must end indexed;
- an indexed document has one document.indexed in its history, its chunks
  once in the index, and exactly one search hit for its own words
  (duplicated: 0);
- every webhook-id the receiver accepted, it accepted once; every finished
  document got its signed webhook;
- nothing is stuck: no document in a non-terminal status, no message
  waiting, delayed or in flight on any trigger (RabbitMQ: no un-acked
  delivery either).
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

FIXTURES = Path(__file__).parents[1] / "fixtures"
# A few real files (text PDFs, a DOCX) beside the generated ones: small, and
# quick to parse, so the scenarios stay short.
REAL_FILES = (FIXTURES / "docs" / "minimal-document.pdf", FIXTURES / "invoices" / "coolblue1.pdf",
              FIXTURES / "docs" / "simple.docx")
TERMINAL = ("indexed", "failed")
# Every scenario's `doclane up`: one process per function, so a cold start
# (Docling, MiniLM) is paid once per function on a busy machine.
CHAOS_ENV = {"DOCLANE_MAX_PROCESSES": "1"}

RESULTS: list["Tally"] = []  # every scenario's tally, for the terminal summary


@dataclass
class Tally:
    scenario: str
    recovery: str  # how the system got over the fault
    docs_in: int
    indexed: int = 0
    failed: int = 0
    duplicated: int = 0
    lost: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic, repr=False)

    HEADER = f"{'scenario':<28} {'in':>4} {'indexed':>8} {'failed':>7} {'duplicated':>10} {'lost':>5} {'time':>7}  recovery"

    def line(self) -> str:
        return (f"{self.scenario:<28} {self.docs_in:>4} {self.indexed:>8} {self.failed:>7} {self.duplicated:>10} "
                f"{self.lost:>5} {self.seconds:>6.1f}s  {self.recovery}")


# --------------------------------------------------------------------------- documents
@dataclass
class Corpus:
    """The files a scenario drops: filename -> a word only that file contains
    (None for the real fixtures), to find each document by search."""

    files: list[Path]
    words: dict[str, str | None]

    @property
    def names(self) -> set[str]:
        return set(self.words)

    def halves(self) -> tuple[list[Path], list[Path]]:
        """The files in two parts, one before the fault and one after, each
        with some of the real files (slower to parse: documents stay in flight)."""
        return self.files[::2], self.files[1::2]


_KINDS = (
    ("md", "# Field report {n}\n\nInspection of site {n} found the {word} pump in good order.\n\n"
           "## Findings\n\n- valves replaced: {n}\n- next visit in {n} weeks\n"),
    ("html", "<html><head><title>Memo {n}</title></head><body><h1>Memo {n}</h1>"
             "<p>Please review the {word} schedule before the meeting on day {n}.</p></body></html>\n"),
    ("txt", "Minutes of meeting {n}\n\nAttendees discussed the {word} budget and agreed on {n} actions.\n"),
)


def corpus(folder: Path, generated: int, real: bool = True) -> Corpus:
    """`generated` small Markdown/HTML/text files with unique bytes and a
    unique word each, plus (with `real`) the few real fixtures."""
    folder.mkdir(parents=True, exist_ok=True)
    run = secrets.token_hex(3)
    files, words = [], {}
    for i in range(generated):
        ext, template = _KINDS[i % len(_KINDS)]
        word = f"zq{run}x{i:03d}"
        path = folder / f"chaos-{i:03d}.{ext}"
        path.write_text(template.format(n=i, word=word))
        files.append(path)
        words[path.name] = word
    if real:
        for src in REAL_FILES:
            shutil.copyfile(src, folder / src.name)
            files.append(folder / src.name)
            words[src.name] = None
    return Corpus(files, words)


# --------------------------------------------------------------------------- observing doclane
def try_get(doclane, path: str, **params) -> dict | None:
    """GET from doclane's API, None while it cannot answer (a store is down)."""
    try:
        resp = httpx.get(doclane.url + path, params=params, headers=doclane.headers, timeout=30)
    except httpx.TransportError:
        return None
    return resp.json() if resp.status_code == 200 else None


def statuses(doclane) -> dict[str, str] | None:
    """filename -> status, None while the metadata store cannot answer."""
    docs = try_get(doclane, "/documents", limit=500)
    return None if docs is None else {d["filename"]: d["status"] for d in docs["documents"]}


def progress(doclane) -> tuple[int, int]:
    """(documents indexed, documents registered and not yet terminal)."""
    s = statuses(doclane) or {}
    return sum(1 for v in s.values() if v == "indexed"), sum(1 for v in s.values() if v not in TERMINAL)


def start_mid_run(put: Callable[..., None], doclane, files: list[Path], timeout: float = 300) -> int:
    """Bring the run to the moment a fault should land: send the first file
    and wait until it is indexed (every function is warm, its models
    loaded), then send the others at once. The fault that follows lands
    while they are on their way, however fast the pipeline is. Returns how
    many of `files` were not terminal (or not registered yet) just after."""
    put(files[0])
    deadline = time.monotonic() + timeout
    while progress(doclane)[0] < 1:
        if time.monotonic() > deadline:
            raise AssertionError(f"{files[0].name} not indexed within {timeout:.0f}s:\n" + doclane.logs())
        time.sleep(0.1)
    put(*files[1:])
    s = statuses(doclane) or {}
    return sum(1 for path in files if s.get(path.name) not in TERMINAL)


def backlog(doclane) -> dict[str, dict[str, int]] | None:
    """Per trigger: messages waiting, delayed or in flight (non-zero only)."""
    stats = try_get(doclane, "/stats")
    if stats is None:
        return None
    return {name: busy for name, q in stats.get("queues", {}).items()
            if (busy := {k: q.get(k, 0) for k in ("ready", "delayed", "leased") if q.get(k, 0)})}


def settle(doclane, corpus: Corpus, timeout: float, idle: Callable[[], dict] | None = None) -> bool:
    """Wait until every document is terminal and nothing is queued or in
    flight (doclane's own counts, and `idle()` for what only the broker
    knows), twice in a row. False when that did not happen in time."""
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline and doclane.proc.poll() is None:
        s = statuses(doclane)
        quiet = (s is not None and corpus.names <= set(s) and all(v in TERMINAL for v in s.values())
                 and backlog(doclane) == {} and not (idle and idle()))
        calm = calm + 1 if quiet else 0
        if calm >= 2:
            return True
        time.sleep(0.5)
    return False


# --------------------------------------------------------------------------- the invariants
def check(doclane, receiver, corpus: Corpus, tally: Tally, *, settle_timeout: float = 300,
          idle: Callable[[], dict] | None = None) -> Tally:
    """Settle, then check everything the module doc promises; fill `tally`
    (counts and a readable list of problems) and register it for the report."""
    settled = settle(doclane, corpus, settle_timeout, idle)
    problems = tally.problems
    if doclane.proc.poll() is not None:
        raise AssertionError(f"doclane up died with {doclane.proc.returncode}:\n{doclane.logs()}")
    if not settled:
        problems.append(f"did not settle within {settle_timeout:.0f}s: backlog {backlog(doclane)}, "
                        f"broker {idle() if idle else '-'}")
    time.sleep(0.5)  # a webhook answered in the last instant is recorded by now

    listed = doclane.get("/documents", limit=500)["documents"]
    docs = {d["filename"]: d for d in listed}
    counts = Counter(d["filename"] for d in listed)
    for name, n in counts.items():
        if n > 1:
            tally.duplicated += n - 1
            problems.append(f"{name} is registered {n} times")
    for name in sorted(set(docs) - corpus.names):
        problems.append(f"{name} was never dropped but is a document")

    accepted = Counter(r["headers"]["webhook-id"] for r in receiver.received)
    for hook_id, n in accepted.items():
        if n > 1:
            tally.duplicated += n - 1
            problems.append(f"webhook {hook_id} was accepted {n} times")
    hooks_by_subject: dict[tuple[str, str], int] = Counter(
        (r["event"].get("subject"), r["event"]["type"].split(".")[-2]) for r in receiver.received)
    if receiver.rejected:
        problems.append(f"{len(receiver.rejected)} webhooks had bad signatures: {receiver.rejected[:3]}")

    index = _index_chunks(doclane.data / "index.sqlite")
    for name in sorted(corpus.names):
        doc = docs.get(name)
        if doc is None:
            tally.lost += 1
            problems.append(f"{name}: lost (never registered)")
            continue
        status, doc_id = doc["status"], doc["document_id"]
        if status not in TERMINAL:
            tally.lost += 1
            problems.append(f"{name}: stuck in {status!r}")
            continue
        if status == "failed":
            tally.failed += 1
            # every file of the corpus is valid: a short fault must not fail it (retries outlast it)
            problems.append(f"{name}: failed ({doc.get('error') or 'without a reason'})")
            if hooks_by_subject.get((doc_id, "failed"), 0) != 1:
                problems.append(f"{name}: {hooks_by_subject.get((doc_id, 'failed'), 0)} document.failed webhooks")
            continue
        tally.indexed += 1
        view = doclane.get(f"/documents/{doc_id}")
        indexed = [e for e in view["events"] if e["type"].endswith(".document.indexed.v1")]
        if len(indexed) != 1:
            if len(indexed) > 1:
                tally.duplicated += 1
            problems.append(f"{name}: {len(indexed)} document.indexed events in its history")
        chunks, ordinals = index.get(doc_id, (0, 0))
        expected = indexed[-1]["data"]["chunks"] if indexed else None
        if chunks != ordinals or (expected is not None and chunks != expected):
            tally.duplicated += 1
            problems.append(f"{name}: {chunks} chunks ({ordinals} distinct) in the index, the event says {expected}")
        if chunks == 0:
            tally.lost += 1
            problems.append(f"{name}: indexed, but not in the index")
        if hooks_by_subject.get((doc_id, "indexed"), 0) != 1:
            problems.append(f"{name}: {hooks_by_subject.get((doc_id, 'indexed'), 0)} document.indexed webhooks accepted")
        word = corpus.words[name]
        if word:
            hits = [r["document_id"] for r in doclane.get("/search", q=word, mode="keyword", limit=10)["results"]]
            if hits.count(doc_id) > 1:
                tally.duplicated += 1
            if hits != [doc_id]:
                problems.append(f"{name}: search for its word found {hits}, expected only {doc_id}")
    extra = set(index) - {d["document_id"] for d in listed if d["status"] == "indexed"}
    if extra:
        problems.append(f"{len(extra)} documents in the index are not indexed in the metadata store")
    tally.seconds = time.monotonic() - tally.started
    RESULTS.append(tally)
    return tally


def _index_chunks(path: Path) -> dict[str, tuple[int, int]]:
    """document_id -> (chunks, distinct ordinals) in the embedded index."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {doc: (n, distinct) for doc, n, distinct in db.execute(
            "SELECT document_id, count(*), count(DISTINCT ordinal) FROM chunks GROUP BY document_id")}
    finally:
        db.close()


def verdict(tally: Tally) -> str:
    """The assertion message: the tally line, the problems, doclane's logs after."""
    return tally.line() + "\n" + "\n".join(f"  - {p}" for p in tally.problems)
