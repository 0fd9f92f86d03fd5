"""Classifier quality on a folder of labelled documents.

The folder holds labels.tsv (a header; a filename column, a label column
named label/category/genre, an optional fold column) and the files, in
texts/ or beside labels.tsv. Two settings, both through `EmbeddedClassifier`
itself:

  zero-shot  categories made from the label names (or descriptions.tsv:
             label <TAB> description), nothing learnt
  few-shot   the same categories, plus every training document given to
             `learn()` as a user correction would be. With other folds than
             the training one, train there and score the others; with only
             the training fold, 5-fold stratified cross-validation on it.

Files are shown to the classifier as "document<suffix>": the classifier
reads category names in file names, and datasets often name files after
their label, which would leak the answer.

Two references run on the same folds, to say how far the design is from
what the data allows: TF-IDF + linear SVM, and the same with the document
embedding appended (scikit-learn)."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from doclane.functions.errors import ConfigError
from doclane.local.eval import metrics
from doclane.local.eval.cache import CachedEmbedder

FOLDS = 5
TEXT_SUFFIXES = {".txt", ".md", ".text", ""}


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


def evaluate(folder: Path, *, train_split: str = "train", cache_dir: Path | None = None, embedder=None,
             progress: Callable[[str], None] = print) -> dict:
    from doclane.functions import categories as categories_mod
    from doclane.functions.adapters import minilm
    from doclane.functions.adapters.embedded_classifier import PIECE_CHARS, EmbeddedClassifier, _head
    from doclane.functions.ports import ParsedDocument

    data = load(folder)
    labels = sorted(set(data.labels))
    embedder = CachedEmbedder(embedder or minilm.shared(), cache_dir)
    docs = [ParsedDocument(markdown=t, text=t) for t in data.texts]
    shown = ["document" + (Path(n).suffix or ".txt") for n in data.names]
    categories = categories_mod.parse({"threshold": 0.0, "categories": {
        label: {"description": data.descriptions.get(label, label.replace("-", " ").replace("_", " "))}
        for label in labels}}, origin="labels")
    # Embed every piece the classifier will ask for in one batched call.
    heads = [_head(d) for d in docs] + [t[:2 * PIECE_CHARS] for t in data.texts]
    embedder.embed([p for h in heads for p in (h[:PIECE_CHARS], h[PIECE_CHARS:]) if p.strip()])

    train, test, protocol = _splits(data, train_split)
    progress(f"{len(docs)} documents, {len(labels)} labels; few-shot: {protocol}")
    zero = EmbeddedClassifier(embedder, categories)
    everyone = sorted({i for ts in test for i in ts} if test else range(len(docs)))
    zero_pred = [zero.classify(docs[i], shown[i]).category for i in everyone]
    truth, few_pred, svm_pred, joint_pred = [], [], [], []
    for train_idx, test_idx in zip(train, test):
        clf = EmbeddedClassifier(embedder, categories)
        for i in train_idx:
            clf.learn(data.texts[i], data.labels[i])
        truth += [data.labels[i] for i in test_idx]
        few_pred += [clf.classify(docs[i], shown[i]).category for i in test_idx]
        svm_pred += _linear(data, train_idx, test_idx, None)
        joint_pred += _linear(data, train_idx, test_idx, embedder)
    ordered_truth = [data.labels[i] for i in everyone]
    few = {**metrics.classification(truth, few_pred, labels), "protocol": protocol}
    return {
        "dataset": str(folder), "accuracy": few["accuracy"], "macro_f1": few["macro_f1"],
        "zero_shot": metrics.classification(ordered_truth, zero_pred, labels), "few_shot": few,
        "references": {
            "tfidf_svm": _summary(metrics.classification(truth, svm_pred, labels)),
            "tfidf_embedding_svm": _summary(metrics.classification(truth, joint_pred, labels)),
        },
    }


def _splits(data: Labelled, train_split: str) -> tuple[list[list[int]], list[list[int]], str]:
    in_train = [i for i, f in enumerate(data.folds) if f is None or f == train_split]
    held_out = [i for i, f in enumerate(data.folds) if f is not None and f != train_split]
    if not in_train:
        raise ConfigError(f"no document is in fold {train_split!r}; folds here: {sorted(set(map(str, data.folds)))}")
    if held_out:
        return [in_train], [held_out], f"trained on fold {train_split!r} ({len(in_train)}), scored on the rest"
    from sklearn.model_selection import StratifiedKFold

    y = [data.labels[i] for i in in_train]
    if min(y.count(label) for label in set(y)) < 2:
        raise ConfigError("cross-validation needs at least two documents of every label")
    n = min(FOLDS, len(y) // 2)
    kfold = StratifiedKFold(n_splits=n, shuffle=True, random_state=0)
    train, test = [], []
    with warnings.catch_warnings():  # a label rarer than the folds lands in some of them only: fine
        warnings.simplefilter("ignore", UserWarning)
        split = list(kfold.split(np.zeros(len(y)), y))
    for tr, te in split:
        train.append([in_train[i] for i in tr])
        test.append([in_train[i] for i in te])
    return train, test, f"{n}-fold stratified cross-validation on fold {train_split!r} ({len(in_train)} documents)"


def _linear(data: Labelled, train_idx: list[int], test_idx: list[int], embedder) -> list[str]:
    """TF-IDF word 1-2-grams + linear SVM; with an embedder, the document's
    embedding (mean of its first two pieces) appended as dense features."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)
    x_train = vec.fit_transform([data.texts[i] for i in train_idx])
    x_test = vec.transform([data.texts[i] for i in test_idx])
    if embedder is not None:
        x_train = hstack([x_train, csr_matrix(_doc_vectors(data, train_idx, embedder))]).tocsr()
        x_test = hstack([x_test, csr_matrix(_doc_vectors(data, test_idx, embedder))]).tocsr()
    model = LinearSVC(C=1.0, class_weight="balanced").fit(x_train, [data.labels[i] for i in train_idx])
    return [str(p) for p in model.predict(x_test)]


def _doc_vectors(data: Labelled, idx: list[int], embedder) -> np.ndarray:
    from doclane.functions.adapters.embedded_classifier import PIECE_CHARS

    out = []
    for i in idx:
        head = data.texts[i][:2 * PIECE_CHARS]
        pieces = [p for p in (head[:PIECE_CHARS], head[PIECE_CHARS:]) if p.strip()] or [" "]
        v = embedder.embed(pieces).mean(axis=0)
        out.append(v / (np.linalg.norm(v) or 1.0))
    return np.asarray(out)


def _summary(figures: dict) -> dict:
    return {k: figures[k] for k in ("accuracy", "macro_f1", "documents")}


def render(report: dict) -> str:
    lines = [f"{report['dataset']}: few-shot by {report['few_shot']['protocol']}",
             f"{'setting':<26}{'accuracy':>9}{'macro-F1':>10}{'docs':>6}"]
    rows = [("zero-shot (names)", report["zero_shot"]), ("few-shot (learn)", report["few_shot"]),
            *((f"ref: {k}", v) for k, v in report["references"].items())]
    for name, m in rows:
        lines.append(f"{name:<26}{m['accuracy']:>9.3f}{m['macro_f1']:>10.3f}{m['documents']:>6}")
    few = report["few_shot"]
    width = max(len(label) for label in few["labels"])
    lines.append("few-shot confusion (rows: truth, columns: predicted, in this order)")
    for label, row in zip(few["labels"], few["confusion"]):
        lines.append(f"  {label:<{width}} " + " ".join(f"{n:>3}" for n in row))
    return "\n".join(lines)


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
