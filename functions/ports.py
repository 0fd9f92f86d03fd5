"""Ports: one small Protocol per outside system. Functions depend on these,
never on an adapter; `functions/context.py` picks the adapters from config.

| port          | embedded default (no server)        | production adapter           |
|---------------|-------------------------------------|------------------------------|
| ObjectStore   | adapters/folder_store.py            | adapters/s3_store.py (boto3) |
| MetadataStore | adapters/sqlite_metadata.py         | PostgreSQL (psycopg)         |
| SearchIndex   | adapters/embedded_index.py          | OpenSearch                   |
| Embedder      | adapters/minilm.py                  | Ollama embed                 |
| Parser        | adapters/docling_parser.py          | (same, Docling)              |
| Classifier    | adapters/embedded_classifier.py     | Ollama                       |
| Extractor     | adapters/heuristic_extractor.py     | Ollama                       |
| EventBus      | local/bus.py (SQLite queue)         | RabbitMQ (pika)              |
|               |                                     | Redis Streams (redis-py)     |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
from cloudevents.http import CloudEvent


# --------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str | None = None
    content_type: str | None = None


class ObjectStore(Protocol):
    bucket: str

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo: ...
    def head(self, key: str) -> ObjectInfo: ...  # raises NotFound
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> Iterable[ObjectInfo]: ...


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class ParsedDocument:
    """What every later stage reads: the text and Docling's document."""

    markdown: str
    text: str
    pages: int | None = None
    docling: dict | None = None  # DoclingDocument.export_to_dict(), when Docling parsed it
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. e-mail headers

    def to_json(self) -> dict:
        return {
            "markdown": self.markdown, "text": self.text, "pages": self.pages,
            "docling": self.docling, "title": self.title, "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "ParsedDocument":
        return cls(**{k: obj.get(k) for k in ("markdown", "text", "pages", "docling", "title")},
                   meta=obj.get("meta") or {})


class Parser(Protocol):
    def parse(self, data: bytes, filename: str, content_type: str | None = None) -> ParsedDocument:
        """Raises ParseError with a human reason (encrypted, broken, timed out, unsupported)."""
        ...


# --------------------------------------------------------------------------- models
class Embedder(Protocol):
    dimension: int
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 matrix, one row per text."""
        ...


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    classifier: str
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


class Classifier(Protocol):
    def classify(self, doc: ParsedDocument, filename: str) -> Classification: ...
    def learn(self, text: str, category: str) -> None:
        """Keep a user's correction as an example of `category`."""
        ...


@dataclass(frozen=True)
class Field_:
    value: Any
    confidence: float
    raw: str | None = None


class Extractor(Protocol):
    def extract(self, doc: ParsedDocument, category: str) -> dict[str, Field_]: ...


# --------------------------------------------------------------------------- search
@dataclass(frozen=True)
class Chunk:
    document_id: str
    ordinal: int
    text: str
    heading: str | None = None


@dataclass(frozen=True)
class IndexedDocument:
    document_id: str
    filename: str
    category: str
    fields: dict[str, Any]
    created_at: str  # ISO 8601


@dataclass(frozen=True)
class Hit:
    document_id: str
    filename: str
    category: str
    score: float
    snippet: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    total: int
    hits: list[Hit]
    facets: dict[str, dict[str, int]]


SEARCH_MODES = ("hybrid", "keyword", "semantic")


def check_search_args(mode: str, query_vector: np.ndarray | None) -> None:
    """What every SearchIndex refuses before it touches its store."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    if mode == "semantic" and query_vector is None:
        raise ValueError("semantic search needs a query vector")


class SearchIndex(Protocol):
    def upsert(self, doc: IndexedDocument, chunks: Sequence[Chunk], vectors: np.ndarray,
               passage_vectors: np.ndarray | None = None, text: str | None = None) -> None:
        """Replace everything indexed for doc.document_id (idempotent).
        `passage_vectors` (one per sentence, `chunking.passages`) and `text`
        (the whole document, for keyword scoring per document) serve an index
        that scores documents by them; others ignore them."""
        ...
    def delete(self, document_id: str) -> None: ...
    def update_fields(self, document_id: str, category: str, fields: dict[str, Any]) -> None: ...
    def search(
        self, query: str, query_vector: np.ndarray | None, *, mode: str = "hybrid",
        category: str | None = None, limit: int = 10, offset: int = 0,
    ) -> SearchResult: ...
    def count(self) -> int: ...


# --------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class DocumentRecord:
    document_id: str
    bucket: str
    key: str
    filename: str
    content_type: str | None
    size: int
    sha256: str
    status: str  # uploaded | classified | extracted | indexed | failed
    category: str | None = None
    category_confidence: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    batch_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class Webhook:
    """A subscription to events: an HTTP endpoint (http/https URL, signed
    Standard Webhooks deliveries) or e-mail recipients (a `mailto:` URL,
    functions/mailer.py). One model, so both share the API, the filters and
    the exactly-once delivery log."""

    id: str
    url: str
    secret: str  # Standard Webhooks secret, "whsec_..."; empty for e-mail
    event_types: tuple[str, ...] = ()  # short names ("document.indexed"); empty = all
    categories: tuple[str, ...] = ()  # only documents of these categories; empty = all

    @property
    def kind(self) -> str:
        return "email" if self.url.lower().startswith("mailto:") else "webhook"


class MetadataStore(Protocol):
    """Documents, their status and event history, webhooks and deliveries,
    batches, and the idempotency records of the functions."""

    def register(self, rec: DocumentRecord) -> tuple[DocumentRecord, bool]:
        """Insert if new; returns (record, created)."""
        ...
    def get(self, document_id: str) -> DocumentRecord | None: ...
    def find_by_sha256(self, sha256: str) -> DocumentRecord | None: ...
    def update(self, document_id: str, **changes: Any) -> DocumentRecord: ...
    def advance(self, document_id: str, status: str, **changes: Any) -> DocumentRecord:
        """`update` for a pipeline stage: never sets a document back (see SqlMetadata.advance)."""
        ...
    def delete(self, document_id: str) -> None: ...
    def list(self, *, status: str | None = None, category: str | None = None, since: str | datetime | None = None,
             until: str | datetime | None = None, limit: int = 100, offset: int = 0) -> list[DocumentRecord]:
        """Newest first; `since`/`until` (ISO 8601 or datetime) bound created_at, inclusive/exclusive."""
        ...
    def stats(self) -> dict[str, dict[str, int]]: ...
    def record_event(self, event: CloudEvent, *, stage: str | None = None, duration_ms: float | None = None) -> None: ...
    def history(self, document_id: str) -> list[dict[str, Any]]: ...
    # webhooks
    def add_webhook(self, hook: Webhook) -> None: ...  # same id again: replaced
    def webhooks(self) -> list[Webhook]: ...
    def remove_webhook(self, webhook_id: str) -> bool: ...
    def record_delivery(self, webhook_id: str, event_id: str, *, ok: bool, status: int | None, error: str | None,
                        attempt: int, permanent: bool = False) -> None: ...
    def delivered(self, webhook_id: str, event_id: str) -> bool: ...
    def settled(self, webhook_id: str, event_id: str) -> bool:
        """Delivered, or failed for good (`permanent`): either way never tried again."""
        ...
    def deliveries(self, event_id: str | None = None, *, webhook_id: str | None = None) -> list[dict[str, Any]]: ...
    # batches
    def add_batch(self, batch_id: str, document_ids: Sequence[str]) -> None: ...
    def batch(self, batch_id: str) -> dict[str, Any] | None: ...
    def complete_batch_once(self, batch_id: str) -> dict[str, Any] | None:
        """If every document of the batch is indexed or failed and the batch was
        not completed before, mark it completed and return its counts."""
        ...
