"""EmbeddedClassifier with the real MiniLM embedder: the six invoices, small
letters, e-mails, contracts and reports, noise, and learning from a correction;
the few-shot model on small synthetic sets: it learns from examples, refits
when the store changes (in another instance too, through the model file),
falls back to similarity and zero-shot, and sends noise to "other"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import numpy as np

from doclane.functions import categories as categories_mod
from doclane.functions.adapters.embedded_classifier import (MAX_PIECES, PIECE_CHARS, EmbeddedClassifier, LinearConfig,
                                                            _append_line, form_features, split_pieces)
from doclane.functions.errors import Permanent
from doclane.functions.ports import ParsedDocument

INVOICES = Path(__file__).parent.parent.parent / "fixtures" / "invoices"

LETTER = ("Acme Ltd\n12 High Street\nLondon\n18 April 2014\n\nDear Ms Smith,\n\nThank you for your letter of 3 March "
          "about the late delivery. We are sorry for the delay and have sent a replacement today.\n\n"
          "Yours sincerely,\nJohn Brown\nCustomer Services Manager")
EMAIL = ("From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: lunch\nDate: Tue, 14 Mar 2023 09:12:00 +0100\n\n"
         "Hi Bob, shall we have lunch at noon? Alice")
CONTRACT = ("LEASE AGREEMENT. This lease is made between John Doe (the Landlord) and Jane Roe (the Tenant). The term of "
            "the lease is 12 months from the effective date. Either party may terminate with 60 days notice. "
            "This lease is governed by the laws of the State of New York.")
REPORT = ("Evaluation of Water Quality in Rural Wells. Abstract. We sampled 120 wells in three districts. "
          "1 Introduction. 2 Methodology. 3 Results: Table 2 shows nitrate levels by region. 4 Conclusion.")
# Meeting minutes: no category fits them well; out of the box they are a weak "report".
MINUTES = ("Minutes of the board meeting of 3 May. Present: A. Jansen, B. Smit. Decisions: the budget for next year "
           "was approved.")
MINUTES_2 = "Minutes of the committee meeting, 12 June. Attendees: C. de Vries, D. Bakker. Agreed: the new hiring plan."
QUOTE = "Quotation Q-2291. Painting of the living room, 3 days of work, materials included. Valid for 30 days."
QUOTE_2 = "Quotation Q-3310 for roof repairs: 2 days of work, materials and VAT included. This offer is valid for 30 days."


@pytest.fixture(scope="module")
def embedder():
    from doclane.functions.adapters.minilm import shared

    return shared()


@pytest.fixture(scope="module")
def classifier(embedder) -> EmbeddedClassifier:
    return EmbeddedClassifier(embedder)


def doc(text: str, **kw) -> ParsedDocument:
    return ParsedDocument(markdown=text, text=text, **kw)


def pdf_text(path: Path) -> str:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in pdf)
    finally:
        pdf.close()


@pytest.mark.parametrize("name", sorted(p.stem for p in INVOICES.glob("*.pdf")))
def test_invoices_are_invoices(classifier, name):
    # A neutral filename: the text alone must carry the decision.
    result = classifier.classify(doc(pdf_text(INVOICES / f"{name}.pdf")), "scan-0001.pdf")
    assert result.category == "invoice", result
    assert result.confidence >= 0.5 and result.classifier == "embedded"
    assert result.scores["invoice"] == max(result.scores.values())


@pytest.mark.parametrize("text,category", [(LETTER, "letter"), (EMAIL, "email"), (CONTRACT, "contract"),
                                           (REPORT, "report")])
def test_small_texts(classifier, text, category):
    result = classifier.classify(doc(text), "document.txt")
    assert result.category == category, result
    assert 0.35 <= result.confidence <= 1 and result.reason


def test_mail_headers_in_meta_make_an_email_of_a_plain_body(classifier):
    body = "Hi Bob, can we move our meeting to 3pm? Thanks, Alice"
    result = classifier.classify(doc(body, meta={"From": "alice@example.com", "Subject": "meeting"}), "message")
    assert result.category == "email" and result.confidence > 0.9
    assert classifier.classify(doc(body), "message.eml").category == "email"


@pytest.mark.parametrize("text", ["qwzx plorf vintak snorgle blerp quib zzzt kraw fnord gleeb wubba",
                                  "Preheat the oven to 180 degrees. Mix flour, sugar and eggs, bake for 25 minutes.",
                                  "", "  \n 12 \n"])
def test_noise_and_empty_text_are_other(classifier, text):
    result = classifier.classify(doc(text), "file.bin")
    assert result.category == "other", result
    assert result.reason


def test_learn_changes_a_borderline_outcome_and_persists(embedder, tmp_path):
    store = tmp_path / "examples.jsonl"
    learner = EmbeddedClassifier(embedder, examples_store=store)
    before = learner.classify(doc(MINUTES), "minutes.txt")
    assert before.category == "report" and before.confidence < 0.6, before  # borderline

    learner.learn(MINUTES_2, "other")  # the user says: minutes are not reports
    after = learner.classify(doc(MINUTES), "minutes.txt")
    assert after.category == "other" and after.confidence > 0.6, after  # 0.69 with the int8 ONNX embedder
    assert after.scores["report"] < before.confidence

    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert records == [{"category": "other", "text": MINUTES_2}]
    # A fresh classifier reads the store: the correction survives a restart.
    assert EmbeddedClassifier(embedder, examples_store=store).classify(doc(MINUTES), "m.txt").category == "other"


def test_learn_without_a_store_still_learns(embedder):
    learner = EmbeddedClassifier(embedder)
    assert learner.classify(doc(QUOTE), "q.txt").category == "other"
    learner.learn(QUOTE_2, "invoice")
    assert learner.classify(doc(QUOTE), "q.txt").category == "invoice"


def test_learn_rejects_unknown_category(classifier):
    with pytest.raises(Permanent, match="unknown category 'memo'"):
        classifier.learn("text", "memo")


def test_corrupt_store_lines_are_skipped(embedder, tmp_path):
    store = tmp_path / "examples.jsonl"
    store.write_text('not json\n{"category": "nope", "text": "x"}\n' + json.dumps({"category": "invoice", "text": QUOTE_2}) + "\n")
    assert EmbeddedClassifier(embedder, examples_store=store).classify(doc(QUOTE), "q.txt").category == "invoice"


class Counting:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.dimension, self.calls = inner, inner.name, inner.dimension, []

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


def test_one_embed_call_per_document_spread_over_all_of_it(embedder):
    clf = EmbeddedClassifier(embedder)  # category vectors are embedded once, here
    clf.embedder = counting = Counting(embedder)
    clf.classify(doc(REPORT * 400 + " The closing remarks thank the district water boards."), "long.txt")
    (pieces,) = counting.calls
    assert len(pieces) == MAX_PIECES and all(len(p) <= PIECE_CHARS for p in pieces)
    assert "closing remarks" in pieces[-1]  # the end of a long document counts, not only its opening


# ---------------------------------------------------------------- few-shot model, on small synthetic sets
TOPICS = categories_mod.parse({"threshold": 0.35, "categories": {
    "recipe": {"description": "A cooking recipe: ingredients, quantities and steps to prepare a dish."},
    "astronomy": {"description": "Astronomy: stars, planets, galaxies, telescopes and observations of the sky."},
    "sports": {"description": "A sports report: a football match, the teams, players, goals and the league table."},
}}, origin="test")
RECIPES = ["Whisk the eggs with sugar, fold in the flour and bake the cake for forty minutes at 180 degrees.",
           "Simmer the tomato sauce with garlic and basil for twenty minutes, then pour it over the boiled pasta.",
           "Roast the chicken with rosemary and lemon; baste it with butter every twenty minutes until golden.",
           "Knead the dough, let it rise for an hour, shape two loaves and bake them until they sound hollow."]
SKY = ["The telescope resolved two moons orbiting the gas giant beyond the asteroid belt last night.",
       "A supernova in a distant galaxy outshone billions of stars for several weeks, astronomers reported.",
       "Astronomers measured the redshift of the quasar to estimate its distance in billions of light years.",
       "The comet's tail points away from the sun because the solar wind pushes its dust and gas outwards."]
MATCH = "The striker scored twice in the second half as the home team beat the league leaders 3-1 on Saturday."


def taught(clf: EmbeddedClassifier, per_category: int = 3) -> EmbeddedClassifier:
    for text in RECIPES[:per_category]:
        clf.learn(text, "recipe")
    for text in SKY[:per_category]:
        clf.learn(text, "astronomy")
    return clf


def test_the_model_learns_from_examples(embedder):
    clf = taught(EmbeddedClassifier(embedder, TOPICS))
    state = clf.learned()
    assert state.model is not None and sorted(state.model.classes) == ["astronomy", "recipe"]
    for text, category in ((RECIPES[3], "recipe"), (SKY[3], "astronomy")):
        result = clf.classify(doc(text), "document.txt")
        assert result.category == category, result
        assert result.reason.startswith("few-shot model") and result.confidence >= TOPICS.threshold
        assert result.scores[category] == max(result.scores.values())


def test_too_few_examples_fall_back_to_similarity_and_untaught_categories_to_zero_shot(embedder):
    one_each = taught(EmbeddedClassifier(embedder, TOPICS), per_category=1)
    assert one_each.learned().model is None  # one example per category: no model yet, kNN and zero-shot
    assert one_each.classify(doc(RECIPES[3]), "document.txt").category == "recipe"
    assert one_each.classify(doc(SKY[3]), "document.txt").category == "astronomy"

    clf = taught(EmbeddedClassifier(embedder, TOPICS))
    result = clf.classify(doc(MATCH), "document.txt")  # nobody taught "sports": its description decides
    assert result.category == "sports" and not result.reason.startswith("few-shot"), result


def test_noise_is_other_below_the_threshold_even_with_a_model(embedder):
    clf = taught(EmbeddedClassifier(embedder, TOPICS))
    assert clf.learned().model is not None
    result = clf.classify(doc("qwzx plorf vintak snorgle blerp quib zzzt kraw fnord gleeb wubba"), "file.bin")
    assert result.category == "other" and "below the threshold 0.35" in result.reason, result
    relaxed = EmbeddedClassifier(embedder, categories_mod.Categories(0.0, TOPICS.items))
    taught(relaxed)
    assert relaxed.classify(doc("qwzx plorf vintak snorgle blerp quib zzzt"), "file.bin").category != "other"


def test_a_changed_store_is_refitted_and_the_model_is_shared_through_its_file(embedder, tmp_path):
    store = tmp_path / "examples.jsonl"
    api = EmbeddedClassifier(embedder, TOPICS, examples_store=store)  # the process that records corrections
    worker = EmbeddedClassifier(embedder, TOPICS, examples_store=store)  # the classify function
    assert worker.learned().model is None
    taught(api)
    assert not worker.model_path.exists()  # learn() only appends: nothing is fitted or embedded there
    assert worker.classify(doc(RECIPES[3]), "document.txt").category == "recipe"
    assert worker.learned().model is not None and worker.model_path.is_file()

    restarted = EmbeddedClassifier(embedder, TOPICS, examples_store=store)
    restarted.embedder = counting = Counting(embedder)
    assert restarted.classify(doc(SKY[3]), "document.txt").category == "astronomy"
    assert len(counting.calls) == 1  # the document only: the examples' state came from the file

    api.learn(RECIPES[3], "recipe")
    counting.calls.clear()
    restarted.classify(doc(SKY[3]), "document.txt")
    assert sorted(counting.calls) == sorted([[RECIPES[3]], split_pieces(SKY[3])])  # only the new example is embedded
    assert restarted.learned().labels.count("recipe") == 4


def test_a_broken_model_file_or_other_settings_mean_a_refit(embedder, tmp_path):
    store = tmp_path / "examples.jsonl"
    clf = taught(EmbeddedClassifier(embedder, TOPICS, examples_store=store))
    assert clf.learned().model is not None
    clf.model_path.write_bytes(b"not a pickle")
    again = EmbeddedClassifier(embedder, TOPICS, examples_store=store)
    assert again.classify(doc(RECIPES[3]), "document.txt").category == "recipe"
    assert again.learned().model is not None
    other = EmbeddedClassifier(embedder, TOPICS, examples_store=store, linear=LinearConfig(form=0.0))
    assert other.learned().model.config.form == 0.0


def test_without_scikit_learn_the_examples_still_count(embedder, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.svm", None)  # as in an image built without the classify extra
    clf = taught(EmbeddedClassifier(embedder, TOPICS))
    assert clf.learned().model is None and "scikit-learn is not installed" in caplog.text
    assert clf.classify(doc(RECIPES[3]), "document.txt").category == "recipe"


def test_an_unfinished_line_costs_only_itself(embedder, tmp_path):
    store = tmp_path / "examples.jsonl"
    clf = taught(EmbeddedClassifier(embedder, TOPICS, examples_store=store), per_category=2)
    with store.open("a") as fh:
        fh.write('{"category": "recipe", "text": "half a rec')  # a crash in the middle of a write
    assert clf.learned().labels.count("recipe") == 2  # the unfinished line is not read...
    clf.learn(RECIPES[2], "recipe")  # ...and the next record starts on its own line
    lines = store.read_text().splitlines()
    assert json.loads(lines[-1]) == {"category": "recipe", "text": RECIPES[2]}
    assert clf.learned().labels.count("recipe") == 3


def _append_many(path: str, worker: int) -> None:
    for n in range(40):
        _append_line(Path(path), json.dumps({"category": "recipe", "text": f"{worker}-{n} " + "x" * 20_000}))


def test_processes_appending_at_once_write_whole_lines(tmp_path):
    import multiprocessing

    store = tmp_path / "examples.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(store), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = [json.loads(line) for line in store.read_text().splitlines()]  # every line is whole JSON
    assert sorted(r["text"].split()[0] for r in records) == sorted(f"{w}-{n}" for w in range(4) for n in range(40))


def test_threads_learning_and_classifying_at_once(embedder, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    clf = taught(EmbeddedClassifier(embedder, TOPICS, examples_store=tmp_path / "examples.jsonl"), per_category=2)

    def work(i: int) -> str:
        clf.learn(RECIPES[i % 4] if i % 2 else SKY[i % 4], "recipe" if i % 2 else "astronomy")
        return clf.classify(doc(RECIPES[3] if i % 2 else SKY[3]), "document.txt").category

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(work, range(8)))
    assert answers == ["astronomy", "recipe"] * 4
    assert len(clf.learned().labels) == 12


def test_form_features_see_layout_not_topic():
    prose = "The committee met on Monday. It discussed the budget, the roads and the schools. " * 20
    indented = "\n".join("      " + line for line in prose.split(". "))
    a, b = form_features(prose), form_features(indented)
    assert a.shape == b.shape == (len(a),) and np.all(np.isfinite(a))
    assert a[3] == 0 and b[3] == 1  # the share of indented lines
    assert form_features("").shape == a.shape  # an empty text has a form too
