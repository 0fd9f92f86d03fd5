"""`doclane eval search|classify|extract` on tiny datasets built here, through
the real embedder, index, classifier, parser and extractor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from doclane.local.cli import main
from doclane.local.eval import extract, metrics

pytestmark = pytest.mark.slow

DOCS = {
    "d1": ("Cats", "Cats purr, sleep in the sun and chase mice through the garden."),
    "d2": ("Rockets", "Rockets burn fuel to lift satellites into orbit around the earth."),
    "d3": ("Bread", "Bakers knead dough, let it rise and bake bread in hot ovens."),
}
QUERIES = {"q1": "cats chasing mice", "q2": "rocket fuel orbit", "q3": "baking bread dough"}


def _cli(*args: str) -> dict:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n"
                                               for k, (t, x) in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": x}) + "\n" for k, x in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    return root


def test_search_on_a_toy_that_every_mode_gets_right(tmp_path):
    dataset, cache = _beir(tmp_path / "beir"), tmp_path / "cache"
    report = _cli("eval", "search", "--dataset", str(dataset), "--cache-dir", str(cache), "--json")
    assert set(report["modes"]) == {"keyword", "semantic", "hybrid"}
    for mode, m in report["modes"].items():
        assert (m["ndcg@10"], m["recall@100"], m["mrr@10"], m["queries"]) == (1.0, 1.0, 1.0, 3), mode
        assert 0 < m["p50_ms"] <= m["p95_ms"]
    ix = report["index"]
    # every chunk and every passage (a sentence with the title in front) embedded once
    assert ix["documents"] == 3 and ix["chunks"] >= 3 and ix["passages"] >= 3
    assert ix["embedded"] == ix["chunks"] + ix["passages"]
    again = _cli("eval", "search", "--dataset", str(dataset), "--cache-dir", str(cache), "--json", "--mode", "keyword")
    assert list(again["modes"]) == ["keyword"]
    assert again["index"]["embedded"] == 0 and again["index"]["from_cache"] == ix["chunks"] + ix["passages"]
    # the index's options reach the index, e.g. keyword feedback (RM3); the toy stays right with it
    expanded = _cli("eval", "search", "--dataset", str(dataset), "--cache-dir", str(cache), "--json",
                    "--mode", "keyword", "--expand-docs", "2")
    # the effective options: the pipeline's settings, then the command's
    assert expanded["index"]["options"]["expand_docs"] == 2 and expanded["index"]["options"]["prf_docs"] == 2
    assert report["index"]["options"]["expand_docs"] == 0
    assert expanded["modes"]["keyword"]["ndcg@10"] == 1.0


def test_search_names_what_a_beir_folder_lacks(tmp_path):
    dataset = _beir(tmp_path / "beir")
    result = CliRunner().invoke(main, ["eval", "search", "--dataset", str(dataset), "--split", "dev"])
    assert result.exit_code == 2
    assert "qrels/dev.tsv is missing" in result.output and "splits here: test" in result.output


def test_retrieval_metrics_match_trec_eval_by_hand():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"z": 1}}
    run = {"q1": ["x", "a"], "q2": ["b", "c"], "q3": []}  # q3 found nothing: it counts as 0
    m = metrics.retrieval(run, qrels)
    assert m["ndcg@10"] == pytest.approx((1 / 1.5849625 + 1.0 + 0.0) / 3, abs=1e-6)
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["recall@100"] == pytest.approx(2 / 3)


TEXTS = {
    "cooking": ["Whisk the eggs with sugar, fold in the flour and bake the cake for forty minutes.",
                "Simmer the tomato sauce with garlic and basil, then pour it over the boiled pasta.",
                "Roast the chicken with rosemary and lemon; baste it with butter every twenty minutes.",
                "Knead the dough, let it rise for an hour, shape the loaves and bake until golden."],
    "astronomy": ["The telescope resolved two moons orbiting the gas giant beyond the asteroid belt.",
                  "A supernova in a distant galaxy outshone billions of stars for several weeks.",
                  "Astronomers measured the redshift of the quasar to estimate its distance in light years.",
                  "The comet's tail points away from the sun because of the solar wind and radiation."],
}


def _labelled(root: Path, folds: dict[int, str] | None = None) -> Path:
    (root / "texts").mkdir(parents=True)
    rows = ["filename\tlabel\tfold"]
    for label, texts in TEXTS.items():
        for i, text in enumerate(texts):
            # named after the label on purpose: the eval must not let the file name leak it
            (root / "texts" / f"{label}_{i}.txt").write_text(text)
            rows.append(f"{label}_{i}.txt\t{label}\t{(folds or {}).get(i, 'train')}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_classify_cross_validates_on_the_train_fold(tmp_path):
    report = _cli("eval", "classify", "--dataset", str(_labelled(tmp_path / "set")), "--cache-dir",
                  str(tmp_path / "cache"), "--json")
    few, zero = report["few_shot"], report["zero_shot"]
    assert "cross-validation" in few["protocol"] and few["documents"] == zero["documents"] == 8
    assert few["labels"] == ["astronomy", "cooking"]
    assert sum(map(sum, few["confusion"])) == 8
    assert report["accuracy"] == few["accuracy"] >= 0.75 and 0 < report["macro_f1"] <= 1
    assert set(report["references"]) == {"tfidf_svm", "tfidf_embedding_svm"}


def test_classify_cross_validates_the_train_fold_and_scores_the_held_out_one(tmp_path):
    dataset = _labelled(tmp_path / "set", folds={3: "test"})
    report = _cli("eval", "classify", "--dataset", str(dataset), "--cache-dir", str(tmp_path / "cache"), "--json")
    assert "cross-validation on fold 'train' (6 documents" in report["few_shot"]["protocol"]
    assert report["few_shot"]["documents"] == report["zero_shot"]["documents"] == 6  # the held-out two are not in it
    held = report["held_out"]
    assert held["documents"] == held["few_shot"]["documents"] == held["zero_shot"]["documents"] == 2
    assert held["few_shot"]["accuracy"] == 1.0  # one cooking text, one astronomy text, after learning three of each


def test_classify_ablation_folds_and_seed(tmp_path):
    report = _cli("eval", "classify", "--dataset", str(_labelled(tmp_path / "set")), "--cache-dir",
                  str(tmp_path / "cache"), "--json", "--ablation", "--folds", "2", "--seed", "3")
    assert report["settings"]["folds"] == 2 and report["settings"]["seed"] == 3
    assert "2-fold" in report["few_shot"]["protocol"] and "seed 3" in report["few_shot"]["protocol"]
    assert set(report["ablation"]) == {"without word", "without char", "without embedding", "without form",
                                       "similarity only, no model"}
    assert all(a["documents"] == 8 for a in report["ablation"].values())


def test_extract_gets_a_real_invoice_right(tmp_path, fixtures):
    for suffix in (".pdf", ".json"):
        shutil.copy(fixtures / "invoices" / f"AzureInterior{suffix}", tmp_path / f"AzureInterior{suffix}")
    report = _cli("eval", "extract", "--dataset", str(tmp_path), "--json")
    assert report["documents"] == 1 and report["overall"] == 1.0
    assert {k: (f["right"], f["judged"]) for k, f in report["fields"].items()} == {
        "invoice_number": (1, 1), "date": (1, 1), "amount": (1, 1), "currency": (1, 1)}


@pytest.mark.parametrize("field, a, b", [
    ("date", "28/11/2022", "2022-11-28"), ("amount", "4.904,94", 4904.94), ("currency", "€", "EUR"),
    ("currency", "$", "USD"), ("invoice_number", "#BLR 1", "blr1"),
])
def test_normalisation_makes_local_formats_comparable(field, a, b):
    assert extract.normalise(field, a) == extract.normalise(field, b) is not None


def test_search_refuses_a_passage_weight_outside_0_1(tmp_path):
    result = CliRunner().invoke(main, ["eval", "search", "--dataset", str(_beir(tmp_path / "beir")),
                                       "--passage-weight", "1.5"])
    assert result.exit_code == 2 and "--passage-weight" in result.output
