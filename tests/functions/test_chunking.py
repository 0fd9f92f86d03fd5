"""Chunking real parsed documents with the MiniLM tokenizer: structure-aware
chunks with heading paths where Docling found structure, token windows
otherwise, and never a chunk longer than the model accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from doclane.functions.adapters.docling_parser import DoclingParser
from doclane.functions.chunking import chunk, count_tokens
from doclane.functions.ports import ParsedDocument

DOCS = Path(__file__).parent.parent / "fixtures" / "docs"


@pytest.fixture(scope="module")
def parse():
    parser = DoclingParser(isolate=False)
    return lambda name: parser.parse((DOCS / name).read_bytes(), name)


def _words(n: int) -> str:
    vocabulary = ["invoice", "amount", "Rotterdam", "twenty", "delivery", "käse", "2023-05-05", "€4.904,94"]
    return " ".join(f"{vocabulary[i % len(vocabulary)]}{i}" for i in range(n))


def test_headings_become_the_heading_path_and_prefix_the_text(parse):
    chunks = chunk(parse("fake-html.html"), "doc-1")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(c.document_id == "doc-1" for c in chunks)
    table_chunk = next(c for c in chunks if "Row 2, Cell 1" in c.text)
    assert table_chunk.heading == "My First Heading > My Second Heading > A Third Heading"
    assert table_chunk.text.startswith("My First Heading\nMy Second Heading\nA Third Heading")


@pytest.mark.parametrize("name", ["simple.docx", "fake-power-point.pptx", "stanley-cups.xlsx",
                                  "fake-email-attachment.eml", "fake-text-utf-16.txt", "fake-memo.pdf"])
def test_every_format_gives_chunks_within_the_limit(parse, name):
    chunks = chunk(parse(name), "doc", max_tokens=64)
    assert chunks
    assert all(count_tokens(c.text) <= 64 for c in chunks)


def test_pdf_text_is_covered_by_the_chunks(parse):
    doc = parse("fake-memo.pdf")
    joined = " ".join(c.text for c in chunk(doc, "memo", max_tokens=48))
    for phrase in ("May 5, 2023", "20,000 bottles of water", "January 23"):
        assert phrase in joined


def test_long_text_without_docling_is_windowed_with_overlap():
    text = _words(1500)
    chunks = chunk(ParsedDocument(markdown=text, text=text), "long", max_tokens=128)
    assert len(chunks) > 5
    assert all(c.heading is None for c in chunks)
    assert all(count_tokens(c.text) <= 128 for c in chunks)
    for first, second in zip(chunks, chunks[1:]):
        assert first.text.split()[-1] in second.text  # consecutive windows overlap
    assert chunks[0].text.startswith("invoice0 ")
    assert chunks[-1].text.endswith("twenty1499")  # nothing lost at the end
    assert "€4.904,941495 " in chunks[-1].text and "käse1493" in chunks[-1].text  # original spelling


def test_windows_after_the_first_carry_the_title_within_the_limit():
    text = "Troponin after infarction\n\n" + _words(600)
    doc = ParsedDocument(markdown=text, text=text, title="Troponin after infarction")
    chunks = chunk(doc, "long", max_tokens=256, chunk_tokens=96)
    assert len(chunks) > 3
    assert chunks[0].text.startswith("Troponin after infarction\n\ninvoice0")  # the title once, as written
    assert all(c.text.startswith("Troponin after infarction\n") for c in chunks[1:])
    assert all(count_tokens(c.text) <= 256 for c in chunks)
    own = [c.text.removeprefix("Troponin after infarction\n") for c in chunks[1:]]
    assert all(count_tokens(t) <= 96 for t in own)  # the chunk's own text keeps its size
    # a title too long to fit beside a window is left out, not cut
    long_title = " ".join(["interminable"] * 200)
    no_room = chunk(ParsedDocument(markdown=text, text=text, title=long_title), "t", max_tokens=128, chunk_tokens=96)
    assert not any("interminable" in c.text for c in no_room)
    assert all(count_tokens(c.text) <= 128 for c in no_room)


def test_a_single_endless_word_still_fits():
    text = "x" * 5000
    chunks = chunk(ParsedDocument(markdown=text, text=text), "blob", max_tokens=32)
    assert chunks and all(count_tokens(c.text) <= 32 for c in chunks)


def test_docling_document_without_chunks_falls_back_to_text(parse):
    doc = parse("fake-memo.pdf")
    emptied = dict(doc.docling, texts=[], body=dict(doc.docling["body"], children=[]))
    chunks = chunk(ParsedDocument(markdown=doc.markdown, text=doc.text, docling=emptied), "memo")
    assert chunks and "20,000 bottles" in chunks[0].text


def test_no_text_gives_no_chunks():
    assert chunk(ParsedDocument(markdown="", text="   "), "empty") == []


def test_passages_are_the_sentences_with_the_title_in_front():
    from doclane.functions.chunking import passages
    from doclane.functions.ports import Chunk

    title = "Troponin after infarction"
    chunks = [Chunk("d", 0, f"{title}\n\nTroponin rises within hours. It stays high for days (Smith et al.). Ok."),
              Chunk("d", 1, "It stays high for days (Smith et al.). 2 of 3 patients had a second event!\n\n"
                            "A new paragraph without a full stop")]
    assert passages(chunks, title) == [
        f"{title}\nTroponin rises within hours.",
        f"{title}\nIt stays high for days (Smith et al.).",  # once, though two overlapping chunks hold it
        f"{title}\n2 of 3 patients had a second event!",
        f"{title}\nA new paragraph without a full stop",
    ]  # "Ok." is too short to stand alone
    # no title: the chunk's heading path is the context; its text does not repeat it
    headed = [Chunk("d", 0, "Payment\nTotal due within 30 days of the invoice date.", heading="Payment")]
    assert passages(headed, None) == ["Payment\nTotal due within 30 days of the invoice date."]
    assert passages([Chunk("d", 0, "Plain sentence with no context at all.")]) == [
        "Plain sentence with no context at all."]
    assert passages([]) == []


def test_the_index_function_embeds_passages_unless_they_are_off():
    """functions/index.py `embed`: one batch, chunk vectors then passage
    vectors; DOCLANE_SEARCH_PASSAGES=false leaves the passages out."""
    import numpy as np

    from doclane.functions import index
    from doclane.functions.settings import Settings

    class Counting:  # an embedder that records its batches
        max_tokens, dimension = 256, 3

        def __init__(self):
            self.batches = []

        def embed(self, texts):
            self.batches.append(list(texts))
            return np.ones((len(texts), 3), np.float32)

    text = "Troponin after infarction\n\nTroponin rises within hours. It stays high for days."
    doc = ParsedDocument(markdown=text, text=text, title="Troponin after infarction")
    on = Counting()
    chunks, vectors, passages = index.embed(doc, "d", on, Settings())
    assert len(on.batches) == 1 and len(chunks) == len(vectors) == 1 and len(passages) == 2
    assert on.batches[0][1:] == ["Troponin after infarction\nTroponin rises within hours.",
                                 "Troponin after infarction\nIt stays high for days."]
    off = Counting()
    chunks, vectors, passages = index.embed(doc, "d", off, Settings(search_passages=False))
    assert len(chunks) == len(vectors) == 1 and passages.shape == (0, 3) and len(off.batches[0]) == 1
