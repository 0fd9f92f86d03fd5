"""The schema registry: event type -> pydantic model, version and schema.

The models are the registry; `events/schemas/*.json` are generated from them
(`doclane schemas export`) and committed, so that what was published can be
compared with what the code says now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from doclane.events import models as m

PREFIX = "io.doclane."
SCHEMA_DIR = Path(__file__).parent / "schemas"
# dataschema must be an absolute URI; a URN names the registered schema without
# tying events to a host. GET /schemas/{type} serves the document it names.
SCHEMA_URN = "urn:doclane:schema:"


@dataclass(frozen=True)
class EventSpec:
    name: str  # e.g. "document.uploaded"
    version: int
    model: type[BaseModel]
    description: str

    @property
    def type(self) -> str:
        return f"{PREFIX}{self.name}.v{self.version}"

    @property
    def dataschema(self) -> str:
        return SCHEMA_URN + self.type

    def json_schema(self) -> dict:
        schema = self.model.model_json_schema()
        schema["$id"] = self.dataschema
        schema["title"] = self.type
        schema["description"] = self.description
        return schema


class Registry:
    def __init__(self, specs: list[EventSpec]):
        self._by_type = {s.type: s for s in specs}
        if len(self._by_type) != len(specs):
            raise ValueError("two event specs share a type")

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(sorted(self._by_type.values(), key=lambda s: s.type))

    def __contains__(self, type_: str) -> bool:
        return type_ in self._by_type

    def get(self, type_: str) -> EventSpec:
        try:
            return self._by_type[type_]
        except KeyError:
            raise KeyError(f"unknown event type {type_!r}; known: {', '.join(sorted(self._by_type))}") from None

    def latest(self, name: str) -> EventSpec:
        versions = [s for s in self._by_type.values() if s.name == name]
        if not versions:
            raise KeyError(f"no event named {name!r}")
        return max(versions, key=lambda s: s.version)

    def type_of(self, name: str) -> str:
        """The current versioned type for a short name: 'document.indexed' -> 'io.doclane.document.indexed.v1'."""
        return self.latest(name).type

    def export(self, directory: Path = SCHEMA_DIR) -> list[Path]:
        """Write every schema. A schema already published there may only
        change compatibly: a breaking change needs a new version."""
        from doclane.events.compat import breaking_changes

        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for spec in self:
            path = directory / f"{spec.type}.json"
            if path.exists():
                problems = breaking_changes(json.loads(path.read_text()), spec.json_schema())
                if problems:
                    raise ValueError(f"{spec.type} would break its published schema ({'; '.join(problems)}): "
                                     f"add {spec.model.__name__[:-2]}V{spec.version + 1} as a new version instead")
            path.write_text(render_schema(spec.json_schema()))
            written.append(path)
        return written

    def committed(self, directory: Path = SCHEMA_DIR) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def render_schema(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


REGISTRY = Registry(
    [
        EventSpec("bucket.notification", 1, m.BucketNotificationV1,
                  "An object store's notification (S3/MinIO/Ceph record shape or the folder watcher's)."),
        EventSpec("document.uploaded", 1, m.DocumentUploadedV1,
                  "A new document was registered; its bytes are in the bucket."),
        EventSpec("document.classified", 1, m.DocumentClassifiedV1,
                  "The document was parsed and given a category."),
        EventSpec("document.extracted", 1, m.DocumentExtractedV1,
                  "The fields its category calls for were extracted."),
        EventSpec("document.indexed", 1, m.DocumentIndexedV1,
                  "The document is searchable."),
        EventSpec("document.failed", 1, m.DocumentFailedV1,
                  "A stage gave up on the document; reason says why."),
        EventSpec("document.deleted", 1, m.DocumentDeletedV1,
                  "The object was removed from the bucket; the document is gone from index and metadata."),
        EventSpec("document.corrected", 1, m.DocumentCorrectedV1,
                  "A person corrected the document's category or fields."),
        EventSpec("batch.uploaded", 1, m.BatchUploadedV1,
                  "Several documents were uploaded together."),
        EventSpec("batch.completed", 1, m.BatchCompletedV1,
                  "Every document of a batch is indexed or failed."),
    ]
)
