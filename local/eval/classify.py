"""Classifier quality on a folder of labelled documents.

The folder holds labels.tsv (a header; a filename column, a label column
named label/category/genre, an optional fold column) and the files, in
texts/ or beside labels.tsv. Two settings, both through `EmbeddedClassifier`
itself, with its default settings (nothing here is tuned, on any fold):

  zero-shot  categories made from the label names (or descriptions.tsv:
             label <TAB> description), nothing learnt
  few-shot   the same categories, plus every training document given to
             `learn()` as a user correction would be.

Few-shot is k-fold stratified cross-validation on the training fold (the
headline figures). When labels.tsv has other folds too, they are held out:
the classifier learns the whole training fold once and is scored on them,
and zero-shot is scored on them as well.

Files are shown to the classifier as "document<suffix>": the classifier
reads category names in file names, and datasets often name files after
their label, which would leak the answer.

References on the same folds say how far the design is from simple
baselines: TF-IDF + linear SVM, and the same with the document embedding
appended (scikit-learn). `ablation=True` reruns the cross-validation with
each feature block of the few-shot model switched off, and without the
model (similarity to the examples only)."""

from __future__ import annotations

import csv
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from doclane.functions.errors import ConfigError
from doclane.local.eval import metrics
from doclane.local.eval.cache import CachedEmbedder

FOLDS = 5
TEXT_SUFFIXES = {".txt", ".md", ".text", ""}
ABLATIONS = ("word", "char", "embedding", "form")


@dataclass(frozen=True)
class Labelled:
    names: list[str]  # file names as listed
    texts: list[str]
    labels: list[str]
    folds: list[str | None]
    descriptions: dict[str, str]


def load(folder: Path) -> Labelled:
    folder = Path(folder)
    table = folder / "labels.tsv"
    if not table.is_file():
        raise ConfigError(f"{table} is missing: a labelled folder has labels.tsv (filename, label[, fold]) "
                          "and the files in texts/")
    with table.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header = [h.strip().lower() for h in rows[0]]
    file_col = _column(header, ("file",), table) if any("file" in h for h in header) else 0
    label_col = _column(header, ("label", "category", "genre", "class"), table, not_=file_col)
    fold_col = next((i for i, h in enumerate(header) if h in ("fold", "split")), None)
    base = folder / "texts" if (folder / "texts").is_dir() else folder
    names, texts, labels, folds, missing = [], [], [], [], []
    for row in rows[1:]:
        if len(row) <= max(file_col, label_col):
            continue
        path = base / row[file_col]
        if not path.is_file():
            missing.append(row[file_col])
            continue
        names.append(row[file_col])
        texts.append(_read(path))
        labels.append(row[label_col].strip())
        folds.append(row[fold_col].strip() if fold_col is not None and len(row) > fold_col else None)
    if missing:
        raise ConfigError(f"{len(missing)} files listed in {table} are not in {base}, e.g. {missing[0]}")
    if len(set(labels)) < 2:
        raise ConfigError(f"{table} needs at least two labels, found {sorted(set(labels))}")
    return Labelled(names, texts, labels, folds, _descriptions(folder / "descriptions.tsv"))


def evaluate(folder: Path, *, train_split: str = "train", folds: int = FOLDS, seed: int = 0,
             cache_dir: Path | None = None, embedder=None, ablation: bool = False,
             progress: Callable[[str], None] = print) -> dict:
    from doclane.functions import categories as categories_mod
    from doclane.functions.adapters import minilm
    from doclane.functions.adapters.embedded_classifier import (EmbeddedClassifier, LinearConfig, document_pieces,
                                                                document_text)
    from doclane.functions.ports import ParsedDocument

    data = load(folder)
    labels = sorted(set(data.labels))
    embedder = CachedEmbedder(embedder or minilm.shared(), cache_dir)
    docs = [ParsedDocument(markdown=t, text=t) for t in data.texts]
    shown = ["document" + (Path(n).suffix or ".txt") for n in data.names]
    categories = categories_mod.parse({"threshold": 0.0, "categories": {
        label: {"description": data.descriptions.get(label, label.replace("-", " ").replace("_", " "))}
        for label in labels}}, origin="labels")
    # Embed every piece the classifier will ask for in one batched call (the
    # examples it learns are the same texts: `learn` reads them as classify does).
    pieces = [document_pieces(document_text(d)) for d in docs]
    started = time.monotonic()
    embedder.embed([p for ps in pieces for p in ps])
    progress(f"{len(docs)} documents, {len(labels)} labels; {sum(map(len, pieces))} pieces "
             f"({embedder.misses} embedded now, {time.monotonic() - started:.0f} s)")

    train, held_out = _split(data, train_split)
    cv_train, cv_test, protocol = _kfold(data, train, folds, seed, train_split)
    progress(f"few-shot: {protocol}" + (f"; then trained on all of it and scored on {len(held_out)} held-out documents"
                                        if held_out else ""))

    def few_shot(train_idx: list[int], test_idx: list[int], linear) -> list[str]:
        clf = EmbeddedClassifier(embedder, categories, linear=linear)
        for i in train_idx:
            clf.learn(data.texts[i], data.labels[i])
        return [clf.classify(docs[i], shown[i]).category for i in test_idx]

    def cross_validate(linear) -> dict:
        started = time.monotonic()
        truth, predicted = [], []
        for train_idx, test_idx in zip(cv_train, cv_test):
            truth += [data.labels[i] for i in test_idx]
            predicted += few_shot(train_idx, test_idx, linear)
        return {**metrics.classification(truth, predicted, labels), "seconds": round(time.monotonic() - started, 1)}

    zero = EmbeddedClassifier(embedder, categories)
    scored = sorted({i for ts in cv_test for i in ts})
    zero_shot = metrics.classification([data.labels[i] for i in scored],
                                       [zero.classify(docs[i], shown[i]).category for i in scored], labels)
    config = LinearConfig()
    few = {**cross_validate(config), "protocol": protocol}
    progress(f"few-shot: accuracy {few['accuracy']:.3f}, macro-F1 {few['macro_f1']:.3f} ({few['seconds']} s)")
    truth = [data.labels[i] for ts in cv_test for i in ts]
    vectors = _doc_vectors(embedder, pieces)
    references = {
        "tfidf_svm": _summary(metrics.classification(
            truth, [p for tr, te in zip(cv_train, cv_test) for p in _linear(data, tr, te, None)], labels)),
        "tfidf_embedding_svm": _summary(metrics.classification(
            truth, [p for tr, te in zip(cv_train, cv_test) for p in _linear(data, tr, te, vectors)], labels)),
    }
    report = {"dataset": str(folder), "accuracy": few["accuracy"], "macro_f1": few["macro_f1"],
              "zero_shot": zero_shot, "few_shot": few, "references": references,
              "settings": {"folds": len(cv_test), "seed": seed, "model": asdict(config)}}
    if held_out:
        truth = [data.labels[i] for i in held_out]
        report["held_out"] = {
            "documents": len(held_out),
            "zero_shot": metrics.classification(truth, [zero.classify(docs[i], shown[i]).category for i in held_out],
                                                labels),
            "few_shot": metrics.classification(truth, few_shot(train, held_out, config), labels),
        }
    if ablation:
        variants = {f"without {block}": replace(config, **{block: 0.0}) for block in ABLATIONS}
        variants["similarity only, no model"] = None  # kNN over the examples + zero-shot: the design before the model
        report["ablation"] = {}
        for name, linear in variants.items():
            report["ablation"][name] = _summary(cross_validate(linear))
            progress(f"ablation {name}: accuracy {report['ablation'][name]['accuracy']:.3f}, "
                     f"macro-F1 {report['ablation'][name]['macro_f1']:.3f}")
    return report


def _split(data: Labelled, train_split: str) -> tuple[list[int], list[int]]:
    in_train = [i for i, f in enumerate(data.folds) if f is None or f == train_split]
    held_out = [i for i, f in enumerate(data.folds) if f is not None and f != train_split]
    if not in_train:
        raise ConfigError(f"no document is in fold {train_split!r}; folds here: {sorted(set(map(str, data.folds)))}")
    return in_train, held_out


def _kfold(data: Labelled, in_train: list[int], folds: int, seed: int,
           train_split: str) -> tuple[list[list[int]], list[list[int]], str]:
    """Stratified k-fold over the training fold: each document is scored
    once, by a classifier that learnt the other folds. Another seed shuffles
    the documents into other folds (how much the figures owe to one split)."""
    from sklearn.model_selection import StratifiedKFold

    y = [data.labels[i] for i in in_train]
    if min(y.count(label) for label in set(y)) < 2:
        raise ConfigError("cross-validation needs at least two documents of every label in the training fold")
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, not {folds}")
    n = min(folds, len(y) // 2)
    kfold = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
    train, test = [], []
    with warnings.catch_warnings():  # a label rarer than the folds lands in some of them only: fine
        warnings.simplefilter("ignore", UserWarning)
        split = list(kfold.split(np.zeros(len(y)), y))
    for tr, te in split:
        train.append([in_train[i] for i in tr])
        test.append([in_train[i] for i in te])
    return train, test, (f"{n}-fold stratified cross-validation on fold {train_split!r} ({len(in_train)} documents, "
                         f"seed {seed})")


def _linear(data: Labelled, train_idx: list[int], test_idx: list[int], vectors: np.ndarray | None) -> list[str]:
    """Reference: TF-IDF word 1-2-grams + linear SVM; with vectors, the
    document embedding (the classifier's own) appended as dense features."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)
    x_train = vec.fit_transform([data.texts[i] for i in train_idx])
    x_test = vec.transform([data.texts[i] for i in test_idx])
    if vectors is not None:
        x_train = hstack([x_train, csr_matrix(vectors[train_idx])]).tocsr()
        x_test = hstack([x_test, csr_matrix(vectors[test_idx])]).tocsr()
    model = LinearSVC(C=1.0, class_weight="balanced").fit(x_train, [data.labels[i] for i in train_idx])
    return [str(p) for p in model.predict(x_test)]


def _doc_vectors(embedder, pieces: list[list[str]]) -> np.ndarray:
    """The classifier's document vector: the unit mean of its pieces' embeddings."""
    out = []
    for ps in pieces:
        v = embedder.embed(ps or [" "]).mean(axis=0)
        out.append(v / (np.linalg.norm(v) or 1.0))
    return np.asarray(out)


def _summary(figures: dict) -> dict:
    return {k: figures[k] for k in ("accuracy", "macro_f1", "documents")}


def render(report: dict) -> str:
    few = report["few_shot"]
    lines = [f"{report['dataset']}: few-shot by {few['protocol']}",
             f"{'setting':<52}{'accuracy':>9}{'macro-F1':>10}{'docs':>6}"]
    rows = [("zero-shot (label names)", report["zero_shot"]), ("few-shot (learn), cross-validated", few),
            *((f"reference: {k}", v) for k, v in report["references"].items()),
            *((f"ablation: {k}", v) for k, v in report.get("ablation", {}).items())]
    if "held_out" in report:
        rows += [(f"held-out {k}", report["held_out"][k]) for k in ("zero_shot", "few_shot")]
    for name, m in rows:
        lines.append(f"{name:<52}{m['accuracy']:>9.3f}{m['macro_f1']:>10.3f}{m['documents']:>6}")
    lines += _confusion("few-shot, cross-validated", few)
    if "held_out" in report:
        lines += _confusion("few-shot, held out", report["held_out"]["few_shot"])
    return "\n".join(lines)


def _confusion(title: str, m: dict) -> list[str]:
    width = max(len(label) for label in m["labels"])
    lines = [f"{title}: confusion (rows: truth, columns: predicted, in this order)"]
    for label, row in zip(m["labels"], m["confusion"]):
        lines.append(f"  {label:<{width}} " + " ".join(f"{n:>3}" for n in row))
    return lines


def _column(header: list[str], wanted: tuple[str, ...], table: Path, not_: int | None = None) -> int:
    """The first column named exactly as wanted, else the first whose name contains it."""
    for exact in (True, False):
        for i, h in enumerate(header):
            if i != not_ and any((w == h) if exact else (w in h) for w in wanted):
                return i
    raise ConfigError(f"{table}: no column named like {'/'.join(wanted)} in the header {header}")


def _descriptions(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {r[0].strip(): r[1].strip() for r in csv.reader(fh, delimiter="\t") if len(r) >= 2}


def _read(path: Path) -> str:
    from doclane.functions.adapters.docling_parser import decode_text

    if path.suffix.lower() in TEXT_SUFFIXES:
        return decode_text(path.read_bytes())
    from doclane.functions.adapters.docling_parser import parse_bytes

    return parse_bytes(path.read_bytes(), path.name).text
