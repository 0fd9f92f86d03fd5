"""Split a parsed document into chunks that fit the embedding model.

With Docling's document at hand, Docling's `HybridChunker` splits along the
document's structure (sections, paragraphs, tables) and prefixes each chunk
with its heading path. Without it (or if it yields nothing), a token window
with overlap slides over the plain text. Both count tokens with the embedding
model's own tokenizer, loaded from a local folder (nothing is downloaded).

`max_tokens` is the model's sequence limit: two of it are kept free for the
[CLS] and [SEP] tokens the model adds, so the embedder never truncates a chunk.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import threading

from doclane.functions.ports import Chunk, ParsedDocument

SPECIAL_TOKENS = 2  # [CLS] ... [SEP], added by the embedder, not counted by tokenize()
MIN_PASSAGE_CHARS = 20  # shorter "sentences" (list markers, "Results.", page numbers) get no vector of their own
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")
OVERLAP_FRACTION = 8  # fallback windows overlap by 1/8 of their length

_lock = threading.Lock()


def chunk(doc: ParsedDocument, document_id: str, tokenizer_path: str | None = None,
          max_tokens: int = 256, chunk_tokens: int | None = None) -> list[Chunk]:
    """Chunks in reading order, numbered from 0. A document with any text gets
    at least one chunk; `Chunk.text` is what to embed and index (headings
    included), `Chunk.heading` the heading path ("Part > Section").

    `chunk_tokens` (default: `max_tokens`) is the size of a chunk's own text.
    Like HybridChunker's heading path, a window of plain text after the first
    carries the document's title as context ("Title\nwindow"), within
    `max_tokens` (so only when `chunk_tokens` leaves room for it): a passage
    that never names its subject still matches a query about it (SciFact,
    docs/QUALITY.md: semantic nDCG@10 .652 -> .680 on the held-out test
    qrels with 128-token windows and the title, but hybrid nDCG@10 fell
    .736 -> .722, so the pipeline's default stays 256 tokens)."""
    if tokenizer_path is None:
        from doclane.functions.adapters.minilm import model_path

        tokenizer_path = model_path()
    size = min(chunk_tokens or max_tokens, max_tokens)
    pieces: list[tuple[str, str | None]] = []
    if doc.docling and _has_structure(doc.docling):
        pieces = _docling_pieces(doc.docling, tokenizer_path, size)
    if not pieces and doc.text.strip():
        windows = _token_windows(doc.text, tokenizer_path, size)
        title = _title_context(doc.title, tokenizer_path, max_tokens - size)
        pieces = [(text if i == 0 or not title or text.startswith(title) else f"{title}\n{text}", None)
                  for i, text in enumerate(windows)]
    return [Chunk(document_id=document_id, ordinal=i, text=text, heading=heading)
            for i, (text, heading) in enumerate(pieces)]


def passages(chunks: list[Chunk], title: str | None = None) -> list[str]:
    """The passage view of a document: each sentence of its chunks once, with
    the document's title (else the chunk's heading path) in front, so that a
    sentence that never names its subject still carries it ("Title\nsentence").
    A search vector then matches the one sentence that says what a query says,
    not a 256-token average. Paragraphs split at blank lines, sentences at
    ., ! or ? before a capital, a digit or an opening bracket; the embedder
    truncates a sentence longer than its limit. SciFact (docs/QUALITY.md):
    semantic nDCG@10 .666 by chunks alone, .697 with the passages beside them."""
    out: list[str] = []
    seen: set[str] = set()
    title = " ".join((title or "").split())
    for c in chunks:
        context = title or (c.heading or "")
        text = c.text.strip()
        if context and text.startswith(context):
            text = text[len(context):]
        elif c.heading and text.startswith(c.heading):
            text = text[len(c.heading):]
        for paragraph in _PARAGRAPH.split(text):
            for sentence in _SENTENCE.split(paragraph):
                sentence = " ".join(sentence.split())
                if len(sentence) < MIN_PASSAGE_CHARS or sentence in seen:
                    continue
                seen.add(sentence)
                out.append(f"{context}\n{sentence}" if context else sentence)
    return out


def _title_context(title: str | None, tokenizer_path: str, room: int) -> str | None:
    """The title, if it fits in `room` tokens beside a window (a title that
    does not fit is left out rather than cut)."""
    title = " ".join((title or "").split())
    if not title or room <= 0:
        return None
    return title if count_tokens(title, tokenizer_path) - SPECIAL_TOKENS <= room else None


def count_tokens(text: str, tokenizer_path: str | None = None, max_tokens: int = 256) -> int:
    """Tokens as the embedding model sees them, [CLS] and [SEP] included."""
    if tokenizer_path is None:
        from doclane.functions.adapters.minilm import model_path

        tokenizer_path = model_path()
    return _chunker(tokenizer_path, max_tokens).tokenizer.count_tokens(text) + SPECIAL_TOKENS


# --------------------------------------------------------------------------- Docling
def _has_structure(docling: dict) -> bool:
    """Headings, lists or tables for HybridChunker to keep together. A flat run of
    text items (Docling's native PDF pipeline gives one per line) gains nothing
    from it but costs ~60 ms a page in token counting (measured: 4.6 s for 76
    pages against 0.1 s for token windows), so it takes the fallback."""
    if docling.get("tables"):
        return True
    return any(item.get("label") not in ("text", "paragraph") for item in docling.get("texts", []))


def _docling_pieces(docling: dict, tokenizer_path: str, max_tokens: int) -> list[tuple[str, str | None]]:
    from docling_core.types.doc import DoclingDocument

    document = DoclingDocument.model_validate(docling)
    chunker = _chunker(tokenizer_path, max_tokens)
    with _lock:  # HF fast tokenizers are not safe to share across threads mid-call
        pieces = []
        for part in chunker.chunk(dl_doc=document):
            text = chunker.contextualize(chunk=part).strip()
            if text:
                headings = getattr(part.meta, "headings", None) or []
                pieces.append((text, " > ".join(headings) or None))
    return pieces


@functools.lru_cache(maxsize=4)
def _chunker(tokenizer_path: str, max_tokens: int):
    """One chunker (and tokenizer) per process and setting: loading costs ~0.2 s."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer.from_pretrained(tokenizer_path, max_tokens=max_tokens - SPECIAL_TOKENS)
    return HybridChunker(tokenizer=tokenizer, merge_peers=True)


# --------------------------------------------------------------------------- fallback
def _token_windows(text: str, tokenizer_path: str, max_tokens: int) -> list[str]:
    """Slide a window of whole words over the text; slices of the original text
    (not detokenised pieces) keep its spelling, case and accents."""
    hf = _chunker(tokenizer_path, max_tokens).tokenizer.tokenizer
    limit = max_tokens - SPECIAL_TOKENS
    with _lock:
        enc = hf(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        word_ids = enc.word_ids()
    if not offsets:
        return [text.strip()] if text.strip() else []
    # A window may start only where a word starts: a slice starting mid-word would
    # be re-tokenised differently (and possibly longer) by the embedder.
    starts = [i for i in range(len(offsets)) if i == 0 or word_ids[i] != word_ids[i - 1]]
    overlap = max(1, limit // OVERLAP_FRACTION)
    windows, begin = [], 0
    while True:
        end = min(begin + limit, len(offsets))
        if end < len(offsets):  # end on a word boundary too, unless one word fills the window
            last_start = starts[bisect.bisect_right(starts, end) - 1]
            end = last_start if last_start > begin else end
        windows.append(text[offsets[begin][0]:offsets[end - 1][1]].strip())
        if end >= len(offsets):
            break
        target = max(end - overlap, begin + 1)
        at = bisect.bisect_left(starts, target)
        begin = starts[at] if at < len(starts) and starts[at] < end else end
    return [w for w in windows if w]
