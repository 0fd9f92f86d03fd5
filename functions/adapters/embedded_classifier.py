"""Classifier without a generative model: a linear model trained on the
user's examples, over zero-shot evidence (embedding similarity to each
category's description and shipped examples, keywords, the file's type).

Why this mix: zero-shot similarity to a description alone is weak (about .3
accuracy on a genre set here) and kNN over one embedding per example reaches
about .8 with poor recall on small categories. What a document *is* (a
letter, an essay, a report) shows in its words, its character n-grams and
its form (length, line layout, punctuation, pronouns) at least as much as in
its topic, which is all one pooled MiniLM vector keeps. So once at least two
categories have `MIN_EXAMPLES` learnt examples, a linear SVM (class_weight
balanced: small categories count as much as big ones) over TF-IDF word
1-2-grams, char 3-5-grams, the document embedding and form features decides
among the learnt categories; the zero-shot evidence decides how much of the
probability goes to them at all, and alone decides the categories nobody
taught yet. docs/QUALITY.md has the figures and an ablation.

Examples: `learn()` appends a line {"category", "text"} to the examples store
(JSON lines; the Ollama classifier reads and writes the same file) and does
nothing else, so the API process that records a correction never loads a
model. `classify()` notices a changed store (its stat), rereads it and refits,
embedding only examples it has not seen; the fitted state (model, example
vectors) is pickled next to the store, so another process, or this one after a
restart, loads it instead of refitting. The store is the truth; the model
file is a cache keyed by the store's content and the settings.

The document is read whole (up to `MAX_TEXT_CHARS`): its embedding is the mean
of up to `MAX_PIECES` pieces spread over it, one embed call per document.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import pickle
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from doclane.functions import categories as categories_mod
from doclane.functions.errors import Permanent
from doclane.functions.ports import Classification, Embedder, ParsedDocument

log = logging.getLogger(__name__)

PIECE_CHARS = 1000  # ~ one 256-wordpiece chunk of prose
MAX_PIECES = 32  # pieces embedded per document, spread evenly over a longer one
MAX_TEXT_CHARS = 100_000  # what a document is read to, and what an example keeps
MIN_EXAMPLES = 2  # examples a category needs before the linear model learns it
MODEL_FORMAT = 1  # of the pickled state next to the store; a change refits
EMAIL_EXTENSIONS = {".eml", ".msg", ".mbox", ".emlx"}
SALUTATION = re.compile(r"^\s*(?:dear|geachte|sehr\s+geehrte|madame|monsieur|cher|ch[èe]re|liebe|beste)\b[^\n]{0,60}[,:]?\s*$",
                        re.IGNORECASE | re.MULTILINE)
CLOSING = re.compile(r"^\s*(?:yours\s+(?:sincerely|faithfully|truly)|sincerely|(?:kind|best|warm)\s+regards|met\s+vriendelijke"
                     r"|mit\s+freundlichen|cordialement)\b", re.IGNORECASE | re.MULTILINE)
MAIL_HEADER = re.compile(r"^(from|to|cc|subject|date|sent|message-id|reply-to)\s*:", re.IGNORECASE | re.MULTILINE)
WORD = re.compile(r"[^\W\d_]+")
SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class LinearConfig:
    """The few-shot model's feature blocks (weight 0 drops one; the eval's
    ablation does) and its SVM. Each text block is L2-normalised per document
    and the embedding is a unit vector. The form features keep their own
    units (shares, rates per sentence or ten words, logarithms of lengths:
    most between 0 and a few), centred on the examples' mean and divided by
    the square root of their number. Standardising them instead would, with a
    handful of short examples, blow tiny differences up into strong features."""

    word: float = 0.5  # TF-IDF word 1-2-grams
    char: float = 1.0  # TF-IDF char 3-5-grams within word boundaries
    embedding: float = 1.0  # the document's mean piece embedding
    form: float = 4.0  # `form_features`: length, layout, punctuation, pronouns
    c: float = 1.0  # LinearSVC's C
    temperature: float = 0.15  # softmax over SVM margins: the lowest log-loss on cross-validated margins (QUALITY.md)
    word_features: int = 20_000
    char_features: int = 50_000

    def __post_init__(self) -> None:
        if min(self.word, self.char, self.embedding, self.form) < 0 or not any(
                (self.word, self.char, self.embedding, self.form)):
            raise ValueError("LinearConfig: weights must be >= 0 and at least one above 0")


class LinearModel:
    """Linear SVM (one-vs-rest, class_weight balanced) over the blocks of
    `LinearConfig`. Immutable once fitted: safe to share between threads."""

    def __init__(self, config: LinearConfig):
        self.config = config
        self.word = self.char = self.svm = None
        self.form_center: np.ndarray | None = None
        self.classes: list[str] = []

    def fit(self, texts: Sequence[str], vectors: np.ndarray, labels: Sequence[str]) -> "LinearModel":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        cfg = self.config
        # A term seen in one example only cannot generalise; with few examples keep everything.
        min_df = 2 if len(texts) >= 10 else 1
        if cfg.word:
            self.word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df,
                                        max_features=cfg.word_features, dtype=np.float32)
        if cfg.char:
            self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=min_df,
                                        max_features=cfg.char_features, dtype=np.float32)
        blocks = []
        for attr in ("word", "char"):
            vectorizer = getattr(self, attr)
            if vectorizer is not None:
                try:
                    blocks.append(vectorizer.fit_transform(texts))
                except ValueError:  # "empty vocabulary": no such terms in these examples; do without
                    setattr(self, attr, None)
        forms = np.array([form_features(t) for t in texts])
        if cfg.form:
            self.form_center = forms.mean(axis=0)
        x = self._stack(blocks, vectors, forms)
        self.svm = LinearSVC(C=cfg.c, class_weight="balanced").fit(x, list(labels))
        self.classes = [str(c) for c in self.svm.classes_]
        return self

    def probabilities(self, text: str, vector: np.ndarray) -> dict[str, float]:
        blocks = [v.transform([text]) for v in (self.word, self.char) if v is not None]
        x = self._stack(blocks, vector[None, :], form_features(text)[None, :])
        margins = np.asarray(self.svm.decision_function(x), dtype=np.float64).ravel()
        if len(self.classes) == 2:  # one margin, for classes[1]
            margins = np.array([-margins[0], margins[0]])
        z = margins / self.config.temperature
        p = np.exp(z - z.max())
        return dict(zip(self.classes, (p / p.sum()).tolist()))

    def _stack(self, tfidf: list, vectors: np.ndarray, forms: np.ndarray):
        from scipy.sparse import csr_matrix, hstack

        cfg = self.config
        weights = [w for w, v in ((cfg.word, self.word), (cfg.char, self.char)) if v is not None]
        parts = [w * x for w, x in zip(weights, tfidf)]
        if cfg.embedding:
            parts.append(csr_matrix(cfg.embedding * np.asarray(vectors, dtype=np.float32)))
        if self.form_center is not None:
            parts.append(csr_matrix(cfg.form * (forms - self.form_center) / math.sqrt(forms.shape[1])))
        if not parts:
            raise ValueError("no feature block is left: the examples have no terms and the other blocks are off")
        return hstack(parts).tocsr()


@dataclass(frozen=True)
class _Learned:
    """What the store taught: labels and document vectors of the examples (for
    the kNN evidence) and the linear model, when there are enough of them."""

    key: object  # the store's stat (or the in-memory count) this was built from
    digest: str  # of the examples themselves
    labels: tuple[str, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    model: LinearModel | None = None


class EmbeddedClassifier:
    """The `Classifier` port on any `Embedder`."""

    name = "embedded"

    def __init__(self, embedder: Embedder, categories: categories_mod.Categories | None = None,
                 examples_store: str | Path | None = None, *, temperature: float = 0.04,
                 keyword_weight: float = 1.5, file_weight: float = 2.5,
                 linear: LinearConfig | None = LinearConfig(), min_examples: int = MIN_EXAMPLES):
        self.embedder = embedder
        self.categories = categories or categories_mod.load()
        self.store = Path(examples_store) if examples_store else None
        self.model_path = self.store.with_name(self.store.stem + ".model.pkl") if self.store else None
        self.temperature = temperature
        self.keyword_weight = keyword_weight
        self.file_weight = file_weight
        self.linear = linear
        self.min_examples = max(1, min_examples)
        self.names = self.categories.names
        self._lock = threading.Lock()
        self._keywords = {c.name: [_keyword_rx(k) for k in c.keywords] for c in self.categories.items}
        self._memory: list[tuple[str, str]] = []  # examples learnt without a store
        self._vectors: dict[bytes, np.ndarray] = {}  # document vectors of examples, by text digest
        self._state = _Learned(key=object(), digest="", vectors=np.zeros((0, embedder.dimension), np.float32))

        seeds = [(c.name, t) for c in self.categories.items if c.name != categories_mod.OTHER
                 for t in (c.description, *c.examples)]
        seed_vecs = (self.embedder.embed([t for _, t in seeds]) if seeds
                     else np.zeros((0, embedder.dimension), np.float32))
        self._seed_labels = np.array([n for n, _ in seeds])
        self._seed_vecs = seed_vecs
        self._protos = {str(n): _unit(seed_vecs[self._seed_labels == n].mean(axis=0)) for n in set(self._seed_labels)}

    # ------------------------------------------------------------------ port
    def classify(self, doc: ParsedDocument, filename: str) -> Classification:
        text = document_text(doc)
        head = text[:2 * PIECE_CHARS]
        file_ev = self._file_evidence(doc, filename, head)
        if len(re.findall(r"[^\W\d_]{2,}", head)) < 3 and not any(file_ev.values()):
            return Classification(categories_mod.OTHER, 1.0, self.name, {categories_mod.OTHER: 1.0},
                                  "too little text to classify")
        vec = _unit(self.embedder.embed(document_pieces(text) or [filename]).mean(axis=0))
        learned = self.learned()
        sims = self._similarities(vec, learned)
        kw_hits = {n: [k.pattern for k in rxs if k.search(head.lower())] for n, rxs in self._keywords.items()}

        logits = {n: sims[n] / self.temperature
                  + self.keyword_weight * _saturate(len(kw_hits.get(n, ())))
                  + self.file_weight * file_ev.get(n, 0.0) for n in sims}
        top = max(logits.values())
        exp = {n: math.exp(v - top) for n, v in logits.items()}
        probs = {n: v / sum(exp.values()) for n, v in exp.items()}
        taught: dict[str, float] = {}
        if learned.model is not None:
            # The zero-shot evidence says how likely a taught category is at
            # all; the model shares that mass out among the taught ones.
            taught = learned.model.probabilities(text, vec)
            mass = sum(probs.get(n, 0.0) for n in taught)
            probs.update({n: mass * p for n, p in taught.items()})
        best = max(probs, key=probs.get)
        model_says = (f"few-shot model {taught[best]:.2f} among {len(taught)} taught categories; "
                      if best in taught else "")
        # Softmax only ranks: a text unlike every category (noise, another
        # language) still gets a winner. Damp it by how similar it truly is.
        evidence = max(_ramp(sims[best], 0.2, 0.4), _saturate(len(kw_hits.get(best, ()))), file_ev.get(best, 0.0))
        confidence = round(probs[best] * evidence, 4)
        scores = {n: round(p * evidence, 4) for n, p in probs.items()}
        reason = (model_says + f"similarity {sims[best]:.2f}"
                  + (f"; keywords: {', '.join(_plain(k) for k in kw_hits[best][:5])}" if kw_hits.get(best) else "")
                  + ("; file type / structure" if file_ev.get(best) else ""))
        if confidence < self.categories.threshold and best != categories_mod.OTHER:
            scores.setdefault(categories_mod.OTHER, round(1 - confidence, 4))
            return Classification(categories_mod.OTHER, round(1 - confidence, 4), self.name, scores,
                                  f"best guess {best} ({confidence:.2f}) is below the threshold "
                                  f"{self.categories.threshold:.2f}: {reason}")
        return Classification(best, confidence, self.name, scores, reason)

    def learn(self, text: str, category: str) -> None:
        """Keep the example; the next `classify` (in any process reading the
        same store) refits. Nothing is embedded here."""
        if category not in self.names:
            raise Permanent(f"cannot learn unknown category {category!r}; known: {', '.join(self.names)}")
        text = text.strip()[:MAX_TEXT_CHARS]  # as `document_text` reads a document: the same pieces
        if not text:
            return
        with self._lock:
            if self.store is None:
                self._memory.append((category, text))
            else:
                _append_line(self.store, json.dumps({"category": category, "text": text}, ensure_ascii=False))

    def learned(self) -> _Learned:
        """The state for the store as it is now: unchanged, loaded from the
        model file, or refitted (only the examples not seen before are embedded)."""
        key = self._store_key()
        if self._state.key == key:
            return self._state
        with self._lock:
            if self._state.key != key:
                examples = self._examples()
                digest = _digest(examples)
                state = self._state if digest == self._state.digest else (self._load(digest)
                                                                            or self._fit(examples, digest))
                self._state = _Learned(key, digest, state.labels, state.vectors, state.model)
            return self._state

    # ------------------------------------------------------------------ learning
    def _fit(self, examples: list[tuple[str, str]], digest: str) -> _Learned:
        started = time.monotonic()
        labels = [c for c, _ in examples]
        texts = [t for _, t in examples]
        vectors = self._example_vectors(texts)
        counts = Counter(labels)
        taught = [i for i, c in enumerate(labels) if counts[c] >= self.min_examples]
        model = None
        if self.linear is not None and len({labels[i] for i in taught}) >= 2:
            try:
                model = LinearModel(self.linear).fit([texts[i] for i in taught], vectors[taught],
                                                     [labels[i] for i in taught])
                log.info("few-shot model fitted on %d examples of %d categories in %.1f s", len(taught),
                         len(model.classes), time.monotonic() - started)
            except ImportError:
                log.warning("scikit-learn is not installed (pip install 'doclane[classify]'): "
                            "classifying by similarity to the examples only")
            except ValueError as exc:
                log.warning("no few-shot model from these examples (%s): classifying by similarity to them", exc)
        state = _Learned(None, digest, tuple(labels), vectors, model)
        if self.model_path is not None and examples:
            self._save(state, texts)
        return state

    def _example_vectors(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        missing = [(k, t) for k, t in dict(zip(keys, texts)).items() if k not in self._vectors]
        if missing:  # one embed call for every new example's pieces
            pieces = [document_pieces(t) for _, t in missing]
            flat = self.embedder.embed([p for ps in pieces for p in ps])
            start = 0
            for (k, _), ps in zip(missing, pieces):
                self._vectors[k] = _unit(flat[start:start + len(ps)].mean(axis=0))
                start += len(ps)
        if not keys:
            return np.zeros((0, self.embedder.dimension), np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def _settings(self) -> dict:
        return {"format": MODEL_FORMAT, "embedder": f"{self.embedder.name}/{self.embedder.dimension}",
                "linear": asdict(self.linear) if self.linear else None, "min_examples": self.min_examples,
                "sklearn": _version("scikit-learn"), "pieces": (PIECE_CHARS, MAX_PIECES, MAX_TEXT_CHARS)}

    def _save(self, state: _Learned, texts: list[str]) -> None:
        """Atomically: a reader sees the old file or the new one. Concurrent
        writers (two replicas refitting) each write a complete, valid state."""
        payload = {"settings": self._settings(), "digest": state.digest, "labels": state.labels,
                   "vectors": state.vectors, "model": state.model,
                   "keys": [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]}
        tmp = self.model_path.with_name(f"{self.model_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with tmp.open("wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.model_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not keep the fitted classifier in %s (%s): it is refitted after a restart",
                        self.model_path, exc)

    def _load(self, digest: str) -> _Learned | None:
        """The saved state when it was fitted on these examples with these
        settings. Otherwise its example vectors still save embedding them again.
        The file is this service's own (in its data dir): unpickling it is as
        trusted as the code."""
        if self.model_path is None or not self.model_path.is_file():
            return None
        try:
            with self.model_path.open("rb") as fh:
                saved = pickle.load(fh)
            settings = saved["settings"]
        except Exception as exc:  # noqa: BLE001 - a cache: any failure means "refit"
            log.warning("%s is unreadable (%s); refitting", self.model_path, exc)
            return None
        if settings.get("embedder") != self._settings()["embedder"]:
            return None
        for k, v in zip(saved.get("keys", ()), saved.get("vectors", ())):
            self._vectors.setdefault(k, v)
        if saved.get("digest") == digest and settings == self._settings():
            return _Learned(None, digest, tuple(saved["labels"]), saved["vectors"], saved["model"])
        return None

    def _store_key(self) -> object:
        if self.store is None:
            return ("memory", len(self._memory))
        try:
            st = self.store.stat()
        except FileNotFoundError:
            return ("missing",)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _examples(self) -> list[tuple[str, str]]:
        if self.store is None:
            return list(self._memory)
        try:
            raw = self.store.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        # Only whole lines: a line being appended right now is read next time.
        for n, line in enumerate(raw[:raw.rfind(b"\n") + 1].decode("utf-8", "replace").splitlines(), 1):
            try:
                obj = json.loads(line)
                if obj["category"] in self.names and str(obj["text"]).strip():
                    out.append((obj["category"], str(obj["text"])[:MAX_TEXT_CHARS]))
            except (ValueError, KeyError, TypeError):
                log.warning("%s line %d is not an example record; skipped", self.store, n)
        return out

    # ------------------------------------------------------------------ evidence
    def _similarities(self, vec: np.ndarray, learned: _Learned) -> dict[str, float]:
        """Per category: half mean-prototype, half nearest shipped example; a
        learned example (the user's own documents) wins when it is closer."""
        sims: dict[str, float] = {}
        seed = self._seed_vecs @ vec
        for name, proto in self._protos.items():
            sims[name] = 0.5 * float(proto @ vec) + 0.5 * float(seed[self._seed_labels == name].max())
        if learned.labels:
            near_all = learned.vectors @ vec
            labels = np.array(learned.labels)
            for name in set(learned.labels):
                near = np.sort(near_all[labels == name])[::-1][:3]
                # kNN score: the nearest counts most, agreeing neighbours add a little.
                score = float(near[0]) + 0.05 * float(np.sum(near[1:] > near[0] - 0.1))
                sims[name] = max(sims.get(name, -1.0), score)
        return sims

    def _file_evidence(self, doc: ParsedDocument, filename: str, head: str) -> dict[str, float]:
        """What the container says: an .eml is an e-mail; so is a parse that
        found mail headers, or a text that opens with a header block."""
        ev: dict[str, float] = {}
        meta = {str(k).lower() for k in (doc.meta or {})}
        headers = {m.group(1).lower() for m in MAIL_HEADER.finditer("\n".join(head.splitlines()[:20]))}
        if Path(filename or "").suffix.lower() in EMAIL_EXTENSIONS or {"from", "subject"} <= meta:
            ev["email"] = 1.0
        elif len(headers) >= 2:
            ev["email"] = min(1.0, len(headers) / 3)
        elif SALUTATION.search("\n".join(head.splitlines()[:15])):  # a letter opens with a greeting...
            ev["letter"] = 0.6 + 0.4 * bool(CLOSING.search(doc.text or ""))  # ...and closes with a sign-off
        stem = Path(filename or "").stem.lower()
        for c in self.categories.items:
            words = [c.name, *(k for k in c.keywords if re.fullmatch(r"[^\W\d_]{4,}", k))]
            if c.name != categories_mod.OTHER and any(w in stem for w in words):
                ev[c.name] = max(ev.get(c.name, 0.0), 0.5)
        return ev


# ---------------------------------------------------------------------- text
def document_text(doc: ParsedDocument) -> str:
    """What the classifier reads: the title (unless the text opens with it)
    and the text, up to `MAX_TEXT_CHARS`."""
    text = (doc.text or doc.markdown or "").strip()
    title = (doc.title or "").strip()
    full = f"{title}\n{text}" if title and not text.startswith(title) else text
    return full[:MAX_TEXT_CHARS]


def split_pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """Consecutive pieces of at most `size` characters, cut at whitespace
    where there is some in the second half of the window."""
    out, start, n = [], 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            spaces = [m.start() for m in SPACE.finditer(text, start + size // 2, end)]
            if spaces:
                end = spaces[-1]
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


def document_pieces(text: str) -> list[str]:
    """What is embedded of a document: all its pieces, or `MAX_PIECES` spread
    evenly from the first to the last (a long text's middle is as telling as
    its opening, and the cost per document stays bounded)."""
    pieces = split_pieces(text)
    if len(pieces) <= MAX_PIECES:
        return pieces
    return [pieces[int(i)] for i in np.linspace(0, len(pieces) - 1, MAX_PIECES).round()]


def form_features(text: str) -> np.ndarray:
    """The document's form, independent of its topic: size, line layout,
    letter case, digits, quotes, pronouns, sentence and word length,
    punctuation and vocabulary richness. Genres differ here (an essay's
    indented lines, a story's dialogue and "he/she", a report's length and
    digits) where their subjects do not."""
    n = max(len(text), 1)
    lines = text.splitlines() or [""]
    filled = [line for line in lines if line.strip()]
    nf = max(len(filled), 1)
    lower = [w.lower() for w in WORD.findall(text)]
    nw = max(len(lower), 1)
    sentences = max(len(re.findall(r"[.!?](?:\s|$)", text)), 1)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()] or [""]
    opening = lower[:1000]

    def rate(words: set[str]) -> float:
        return sum(w in words for w in lower) / nw * 10

    return np.array([
        math.log1p(len(text)),
        math.log1p(len(filled)),
        math.log1p(sum(len(line) for line in filled) / nf),  # line length: hard-wrapped or not
        sum(1 for line in filled if line[:1].isspace()) / nf,  # indented lines
        (len(lines) - len(filled)) / len(lines),  # blank lines
        sum(c.isupper() for c in text) / n,
        sum(c.isdigit() for c in text) / n,
        sum(c in "\"“”" for c in text) / n * 10,
        rate({"i", "me", "my"}),
        rate({"you", "your"}),
        nw / sentences / 20,
        sum(map(len, lower)) / nw / 5,
        text.count("?") / sentences,
        text.count("!") / sentences,
        len(set(opening)) / max(len(opening), 1),  # type/token ratio of the first 1,000 words
        text.count(",") / sentences,
        sum(c in "()[]" for c in text) / n * 10,
        sum(c in ":;" for c in text) / n * 10,
        sum(1 for line in filled if len(line.strip()) < 40) / nf,  # short lines: headings, lists, verse
        math.log1p(sum(map(len, paragraphs)) / len(paragraphs)),
        rate({"we", "our", "us"}),
        rate({"he", "she", "his", "her", "him"}),
    ], dtype=np.float64)


# ---------------------------------------------------------------------- helpers
def _append_line(path: Path, line: str) -> None:
    """One whole record per call, under an exclusive lock (the API and the
    CLI may learn at once); a line a crash left unfinished is ended first so
    that it costs only itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0, os.SEEK_END)
            unfinished = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
            fh.write((b"\n" if unfinished else b"") + line.encode("utf-8") + b"\n")
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(examples: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for category, text in examples:
        h.update(category.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
    return h.hexdigest()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _keyword_rx(keyword: str) -> re.Pattern[str]:
    # Word boundaries only where the keyword starts/ends with a word character: "from:" and "@" match as they are.
    left = r"\b" if re.match(r"\w", keyword) else ""
    right = r"\b" if re.search(r"\w$", keyword) else ""
    return re.compile(left + re.escape(keyword) + right)


def _plain(pattern: str) -> str:
    return pattern.replace(r"\b", "").replace("\\", "")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n else v.astype(np.float32)


def _saturate(hits: int) -> float:
    """Keyword evidence: one hit counts, each further hit adds less (1 -> .49, 3 -> .86)."""
    return 1.0 - math.exp(-hits / 1.5)


def _ramp(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))
