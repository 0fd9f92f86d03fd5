"""The measures, from well-kept libraries: pytrec_eval (trec_eval's own C
code) for retrieval, scikit-learn for classification. Only the glue is ours."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Run = Mapping[str, Sequence[str]]  # query id -> document ids, best first
Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> relevance


def retrieval(run: Run, qrels: Qrels) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10, averaged over every judged query.

    trec_eval orders a run by score, so ranks become scores (n, n-1, ...) and
    our order is kept exactly; MRR@10 is trec_eval's reciprocal rank over the
    first ten. A judged query with no results counts as 0 (trec_eval would
    leave it out and so flatter the mean)."""
    import pytrec_eval

    qrels = {q: {d: int(r) for d, r in rels.items()} for q, rels in qrels.items() if rels}
    full = {q: _scored(run.get(q, ())[:100]) for q in qrels}
    top10 = {q: _scored(run.get(q, ())[:10]) for q in qrels}
    deep = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(
        {q: r for q, r in full.items() if r})
    shallow = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({q: r for q, r in top10.items() if r})
    n = len(qrels) or 1
    return {
        "ndcg@10": sum(m["ndcg_cut_10"] for m in deep.values()) / n,
        "recall@100": sum(m["recall_100"] for m in deep.values()) / n,
        "mrr@10": sum(m["recip_rank"] for m in shallow.values()) / n,
        "queries": len(qrels),
    }


def _scored(ranked: Sequence[str]) -> dict[str, float]:
    return {d: float(len(ranked) - i) for i, d in enumerate(ranked)}


def classification(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 over the true labels, and the confusion matrix
    (rows: truth, columns: prediction, both in `labels` order)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if not truth:
        raise ValueError("no documents to score")
    present = sorted(set(truth))
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "documents": len(truth),
        "labels": list(labels),
        "confusion": confusion_matrix(truth, predicted, labels=list(labels)).tolist(),
    }


def percentiles(seconds: Sequence[float], points: Sequence[int] = (50, 95)) -> dict[str, float]:
    """Latency percentiles in milliseconds, e.g. {"p50_ms": 3.1, "p95_ms": 7.9}."""
    if not seconds:
        return {f"p{p}_ms": float("nan") for p in points}
    values = np.percentile(np.asarray(seconds) * 1000.0, list(points))
    return {f"p{p}_ms": round(float(v), 3) for p, v in zip(points, values)}
