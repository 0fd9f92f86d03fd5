"""CustomResourceDefinitions as JSON Schemas, for validating manifests offline.

The vendored schemas in tests/fixtures/crds/ were made from the upstream CRD
YAMLs (see SOURCE.md there) by this module:

  python -m tests.infra.crds <folder of the upstream CRD YAMLs> tests/fixtures/crds

The conversion follows what the API server does with a structural schema and
kubectl's strict field validation (the default since Kubernetes 1.27):
an object that lists its properties refuses unknown fields unless it says
`x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string` takes an
integer or a string; `nullable` adds null.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "example") or key.startswith("x-kubernetes-"):
            continue
        if key == "format" and value not in ("date-time", "uri", "email"):
            continue  # int32, int64, byte... are type refinements JSON Schema does not know
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key == "nullable":
            continue
        else:
            out[key] = to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def convert(crd: dict) -> dict[str, dict]:
    """{"<group>/<version>/<Kind>": JSON Schema} for every served version."""
    spec = crd["spec"]
    kind = spec["names"]["kind"]
    schemas = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = to_json_schema(version["schema"]["openAPIV3Schema"])
        # Every object has these, whether or not the CRD's schema lists them.
        for field, type_ in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
            schema.setdefault("properties", {}).setdefault(field, {"type": type_})
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schemas[f"{spec['group']}/{version['name']}/{kind}"] = schema
    return schemas


def main(src: str, dest: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            for key, schema in convert(doc).items():
                name = key.replace("/", "_") + ".json"
                (out / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"{path.name} -> {name}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
