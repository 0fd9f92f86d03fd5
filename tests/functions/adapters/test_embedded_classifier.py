"""EmbeddedClassifier with the real MiniLM embedder: the six invoices, small
letters, e-mails, contracts and reports, noise, and learning from a correction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doclane.functions.adapters.embedded_classifier import EmbeddedClassifier
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
    assert after.category == "other" and after.confidence > 0.8, after
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


def test_one_embed_call_per_document(embedder):
    class Counting:
        dimension, name, calls = embedder.dimension, embedder.name, 0

        def embed(self, texts):
            Counting.calls += 1
            assert len(texts) <= 2  # the title and beginning, not the whole document
            return embedder.embed(texts)

    clf = EmbeddedClassifier(embedder)  # category vectors are embedded once, here
    clf.embedder = Counting()
    clf.classify(doc(REPORT * 50), "long.txt")
    assert Counting.calls == 1
