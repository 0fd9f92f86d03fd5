"""Categories from config: name, description, examples, keywords and the
extraction schema of each. The schema doubles as the JSON Schema for
`PUT /documents/{id}/metadata` and for an LLM's structured output."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from doclane.functions.errors import ConfigError

DEFAULT_FILE = Path(__file__).parent / "categories.yaml"
FIELD_TYPES = {"string", "date", "amount", "currency", "email", "iban", "vat_id", "party", "integer", "string_list"}
OTHER = "other"

_JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "party": {"type": "string"},
    "date": {"type": "string", "format": "date"},
    "amount": {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"},
    "currency": {"type": "string", "pattern": r"^[A-Z]{3}$"},
    "email": {"type": "string", "format": "email"},
    "iban": {"type": "string", "pattern": r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$"},
    "vat_id": {"type": "string"},
    "integer": {"type": "integer"},
    "string_list": {"type": "array", "items": {"type": "string"}},
}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    keywords: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of this category's fields (values, not confidences)."""
        props = {f.name: {**_JSON_TYPES[f.type], "description": f.description} for f in self.fields}
        return {
            "type": "object",
            "properties": props,
            "required": [f.name for f in self.fields if f.required],
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class Categories:
    threshold: float
    items: tuple[Category, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.items]

    def get(self, name: str) -> Category:
        for c in self.items:
            if c.name == name:
                return c
        raise KeyError(f"unknown category {name!r}; known: {', '.join(self.names)}")


def parse(obj: Any, origin: str = "categories") -> Categories:
    if not isinstance(obj, dict) or not isinstance(obj.get("categories"), dict) or not obj["categories"]:
        raise ConfigError(f"{origin}: expected a mapping with a non-empty 'categories:' section")
    items = []
    for name, spec in obj["categories"].items():
        spec = spec or {}
        fields = []
        for fname, fspec in (spec.get("fields") or {}).items():
            fspec = fspec or {}
            ftype = fspec.get("type", "string")
            if ftype not in FIELD_TYPES:
                raise ConfigError(f"{origin}: category {name!r} field {fname!r} has type {ftype!r}; use one of {sorted(FIELD_TYPES)}")
            fields.append(FieldSpec(fname, ftype, fspec.get("description", ""), bool(fspec.get("required", False))))
        items.append(Category(
            name=str(name),
            description=str(spec.get("description") or name),
            keywords=tuple(str(k).lower() for k in spec.get("keywords") or ()),
            examples=tuple(str(e) for e in spec.get("examples") or ()),
            fields=tuple(fields),
        ))
    if OTHER not in {c.name for c in items}:
        items.append(Category(OTHER, "Anything that fits no other category."))
    threshold = float(obj.get("threshold", 0.35))
    if not 0 <= threshold <= 1:
        raise ConfigError(f"{origin}: threshold must be between 0 and 1, not {threshold}")
    return Categories(threshold, tuple(items))


@lru_cache(maxsize=8)
def load(path: str | None = None) -> Categories:
    path = path or os.environ.get("DOCLANE_CATEGORIES") or str(DEFAULT_FILE)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"categories file {path} does not exist: set DOCLANE_CATEGORIES to a YAML file like functions/categories.yaml")
    try:
        obj = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"categories file {path} is not valid YAML: {exc}") from None
    return parse(obj, origin=str(p))
