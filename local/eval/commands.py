"""`doclane eval search|classify|extract`: each prints a table, or with
--json one JSON object with the same figures (for scripts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

DATASET = click.option("--dataset", "dataset", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
                       help="The dataset folder")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table")
CACHE = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Embedding cache and scratch index [<data dir>/eval-cache]")


def _cache_dir(ctx: click.Context, given: Path | None) -> Path:
    if given:
        return given
    from doclane.functions.settings import load

    return load(data_dir=(ctx.find_root().obj or {}).get("data_dir")).data_dir / "eval-cache"


def _emit(report: dict, render, as_json: bool) -> None:
    click.echo(json.dumps(report, indent=2, ensure_ascii=False, default=str) if as_json else render(report))


def _progress(as_json: bool):
    return lambda line: click.echo(line, err=True) if as_json else click.echo(line)


@click.group("eval")
def eval_group():
    """Quality on real data: search (BEIR), classify (labels.tsv), extract (invoice2data)."""


@eval_group.command("search")
@DATASET
@click.option("--split", default="test", show_default=True, help="qrels/<split>.tsv")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["keyword", "semantic", "hybrid"]),
              help="Repeatable; default: all three")
@click.option("--limit-queries", type=int, help="Only the first N judged queries")
@click.option("--fusion", type=click.Choice(["minmax", "zscore", "rrf"]), help="Hybrid fusion [the index's default]")
@click.option("--semantic-weight", type=float, help="Min-max/z-score fusion weight of the semantic side [0.5]")
@click.option("--prf-docs", type=click.IntRange(0), help="Pseudo-relevance feedback from the N top documents [2; 0: off]")
@click.option("--prf-weight", type=click.FloatRange(0), help="How far feedback moves the query vector [0.5]")
@click.option("--passage-weight", type=click.FloatRange(0, 1),
              help="The sentence vectors' share of a document's semantic score [0.6; 0: chunks only]")
@click.option("--expand-docs", type=click.IntRange(0), help="Keyword feedback (RM3) from the N top keyword documents [0: off]")
@CACHE
@AS_JSON
@click.pass_context
def search_cmd(ctx, dataset, split, modes, limit_queries, fusion, semantic_weight, prf_docs, prf_weight,
               passage_weight, expand_docs, cache_dir, as_json):
    """nDCG@10, Recall@100, MRR@10 and latency per search mode."""
    from doclane.local.eval import search

    options = {k: v for k, v in (("fusion", fusion), ("semantic_weight", semantic_weight), ("prf_docs", prf_docs),
                                 ("prf_weight", prf_weight), ("passage_weight", passage_weight),
                                 ("expand_docs", expand_docs)) if v is not None}
    report = search.evaluate(dataset, split=split, modes=modes or search.MODES, cache_dir=_cache_dir(ctx, cache_dir),
                             limit_queries=limit_queries, progress=_progress(as_json), **options)
    _emit(report, search.render, as_json)


@eval_group.command("classify")
@DATASET
@click.option("--train-split", default="train", show_default=True, help="The fold whose documents are examples")
@click.option("--folds", default=5, show_default=True, help="k of the stratified k-fold cross-validation")
@click.option("--seed", default=0, show_default=True, help="Shuffles the documents into the folds")
@click.option("--ablation", is_flag=True, help="Also cross-validate with each feature block of the model off")
@CACHE
@AS_JSON
@click.pass_context
def classify_cmd(ctx, dataset, train_split, folds, seed, ablation, cache_dir, as_json):
    """Accuracy, macro-F1 and confusion matrix, zero-shot and few-shot."""
    from doclane.local.eval import classify

    report = classify.evaluate(dataset, train_split=train_split, folds=folds, seed=seed, ablation=ablation,
                               cache_dir=_cache_dir(ctx, cache_dir), progress=_progress(as_json))
    _emit(report, classify.render, as_json)


@eval_group.command("extract")
@DATASET
@AS_JSON
def extract_cmd(dataset, as_json):
    """Per-field exact match (normalised) of invoice number, date, amount, currency."""
    from doclane.local.eval import extract

    report = extract.evaluate(dataset, progress=_progress(as_json))
    _emit(report, extract.render, as_json)
    sys.stdout.flush()
