"""Is a new schema of an event type still compatible with the published one?

Consumers written against the published schema must keep working, and events
already on the bus must stay valid. So a new schema may add optional fields
and widen types, but may not:
  - remove or rename a field,
  - make a field required that was optional (or add a required field),
  - change a field's type or narrow its enum or format,
  - forbid extra properties that were allowed.
A breaking change needs a new event version (a new model, `.v2`).
"""

from __future__ import annotations

from typing import Any


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root.get("$defs", {}).get(ref.split("/")[-1], {})
    return schema


def _types(schema: dict, root: dict) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        out: set[str] = set()
        for s in schema["anyOf"]:
            out |= _types(s, root)
        return out
    t = schema.get("type")
    if t is None:
        return {"any"}
    return set(t) if isinstance(t, list) else {t}


def breaking_changes(old: dict, new: dict, path: str = "", old_root: dict | None = None,
                     new_root: dict | None = None) -> list[str]:
    old_root = old_root or old
    new_root = new_root or new
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    problems: list[str] = []
    where = path or "(root)"
    old_t, new_t = _types(old, old_root), _types(new, new_root)
    if "any" not in new_t and not old_t <= new_t:
        problems.append(f"{where}: type {sorted(old_t)} became {sorted(new_t)}")
    if "enum" in new and set(old.get("enum", new["enum"])) - set(new["enum"]):
        problems.append(f"{where}: enum lost {sorted(set(old['enum']) - set(new['enum']))}")
    for key in ("format", "pattern"):
        if key in new and new.get(key) != old.get(key):
            problems.append(f"{where}: {key} changed from {old.get(key)!r} to {new[key]!r}")
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties", True) is False:
        problems.append(f"{where}: extra properties are no longer allowed")
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{path + '.' if path else ''}{name}: removed")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{path + '.' if path else ''}{name}: became required")
    for name in old_props.keys() & new_props.keys():
        problems += breaking_changes(old_props[name], new_props[name], f"{path + '.' if path else ''}{name}",
                                     old_root, new_root)
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        problems += breaking_changes(old["items"], new["items"], f"{where}[]", old_root, new_root)
    if isinstance(old.get("additionalProperties"), dict) and isinstance(new.get("additionalProperties"), dict):
        problems += breaking_changes(old["additionalProperties"], new["additionalProperties"], f"{where}{{}}",
                                     old_root, new_root)
    return problems
