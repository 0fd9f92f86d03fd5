"""Event payloads. Each class is one published, versioned event type.

Rules (checked by tests/events/test_compatibility.py against the committed
schemas in events/schemas/): a published version never loses a field, never
gains a required one and never changes a field's type. A breaking change is a
new class with the next version number.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Data(BaseModel):
    # Unknown fields from newer producers are tolerated (forward compatible);
    # values are frozen so handlers cannot mutate what they were given.
    model_config = ConfigDict(extra="allow", frozen=True)


class FieldValue(_Data):
    """One extracted field: its normalised value and how sure we are."""

    value: Any = Field(description="Normalised value: ISO date, decimal string, ISO currency code, text")
    confidence: float = Field(ge=0.0, le=1.0)
    raw: str | None = Field(default=None, description="The text the value was read from")


class BucketNotificationV1(_Data):
    """A bucket notification as the object store sent it (S3, MinIO, Ceph or
    the local folder watcher). The ingest function normalises it."""

    Records: list[dict[str, Any]] = Field(default_factory=list)
    EventName: str | None = None
    Key: str | None = None


class DocumentUploadedV1(_Data):
    document_id: str
    bucket: str
    key: str
    filename: str
    content_type: str | None = None
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    batch_id: str | None = None


class DocumentClassifiedV1(_Data):
    document_id: str
    filename: str
    category: str
    confidence: float = Field(ge=0.0, le=1.0)
    classifier: str = Field(description="Which classifier decided: embedded, ollama, user")
    parsed_key: str = Field(description="Artefact store key of the parsed document")
    pages: int | None = None
    batch_id: str | None = None


class DocumentExtractedV1(_Data):
    document_id: str
    filename: str
    category: str
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    parsed_key: str
    batch_id: str | None = None


class DocumentIndexedV1(_Data):
    document_id: str
    filename: str
    category: str
    chunks: int = Field(ge=0)
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    batch_id: str | None = None


class DocumentFailedV1(_Data):
    document_id: str
    stage: str
    reason: str
    error_type: str = "error"
    filename: str | None = None
    batch_id: str | None = None


class DocumentDeletedV1(_Data):
    document_id: str
    bucket: str
    key: str


class BatchUploadedV1(_Data):
    batch_id: str
    document_ids: list[str]


class BatchCompletedV1(_Data):
    batch_id: str
    total: int = Field(ge=0)
    indexed: int = Field(ge=0)
    failed: int = Field(ge=0)
    status: Literal["completed", "completed_with_failures"]


class DocumentCorrectedV1(_Data):
    """A person corrected the category or fields (PUT /documents/{id}/metadata)."""

    document_id: str
    category: str
    previous_category: str | None = None
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    by: str = "user"
