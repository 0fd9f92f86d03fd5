"""Offline checks of the deployment manifests: schemas (upstream CRDs,
Kubernetes' own for core kinds) and the rules schemas cannot see. Each check
returns a list of problems ("where: what"), empty when all is well, so a test
can also show that a broken manifest is reported."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "infra" / "knative"
CRDS = ROOT / "tests" / "fixtures" / "crds"
K8S_VERSION = "1.32"  # Kubernetes schemas kubernetes-validate ships (offline)
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")  # CloudEvents attribute names
# Annotations that must sit on a Knative Service's revision template (not its metadata).
TEMPLATE_ANNOTATIONS = "autoscaling.knative.dev/"
OBJECT_META = {"name", "generateName", "annotations", "labels", "finalizers", "namespace"}
TRIGGER_SPEC = {"broker", "brokerRef", "filter", "filters", "subscriber", "delivery"}


def load_kustomization(folder: Path = KNATIVE) -> list[dict]:
    """Every document of every resource the kustomization names, in order."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = []
    for resource in kust["resources"]:
        for doc in yaml.safe_load_all((folder / resource).read_text()):
            if doc:
                docs.append(doc)
    return docs


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


@lru_cache(maxsize=None)
def crd_schema(api_version: str, kind: str) -> dict | None:
    path = CRDS / f"{api_version.replace('/', '_')}_{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def schema_problems(docs: Iterable[dict]) -> list[str]:
    problems = []
    for doc in docs:
        schema = crd_schema(doc.get("apiVersion", ""), doc.get("kind", ""))
        if schema is not None:
            validator = jsonschema.Draft202012Validator(schema)
            problems += [f"{name_of(doc)}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                         for e in validator.iter_errors(doc)]
        elif "." in doc.get("apiVersion", "").split("/")[0] and "k8s.io" not in doc["apiVersion"]:
            problems.append(f"{name_of(doc)}: no vendored schema for {doc['apiVersion']} {doc['kind']}")
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name_of(doc)}: {exc.message}")
    return problems


def _string_values(where: str, mapping: Any) -> list[str]:
    if mapping is None:
        return []
    return [f"{where}: {k} must be a quoted string, not {type(v).__name__} {v!r}"
            for k, v in mapping.items() if not isinstance(v, str)]


def knative_rule_problems(docs: list[dict]) -> list[str]:
    """What the CRD schemas do not say: annotation placement and quoting,
    Trigger attribute names, and eventing-rabbitmq's filter.attributes only."""
    problems = []
    brokers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Broker"}
    for doc in docs:
        where = name_of(doc)
        meta = doc.get("metadata", {})
        problems += _string_values(f"{where} metadata.annotations", meta.get("annotations"))
        problems += _string_values(f"{where} metadata.labels", meta.get("labels"))
        if doc["kind"] == "Service" and doc["apiVersion"].startswith("serving.knative.dev"):
            problems += _service_problems(where, doc)
        if doc["kind"] == "Trigger":
            problems += _trigger_problems(where, doc, brokers)
    return problems


def _service_problems(where: str, doc: dict) -> list[str]:
    problems = []
    if any(k.startswith(TEMPLATE_ANNOTATIONS) for k in (doc["metadata"].get("annotations") or {})):
        problems.append(f"{where}: autoscaling annotations belong on spec.template.metadata.annotations")
    template = doc["spec"]["template"]
    # The CRD keeps unknown fields here, so a misplaced field would pass silently.
    stray = set(template.get("metadata", {})) - OBJECT_META
    if stray:
        problems.append(f"{where}: spec.template.metadata has {', '.join(sorted(stray))}; "
                        "containerConcurrency and friends belong in spec.template.spec")
    annotations = template.get("metadata", {}).get("annotations") or {}
    problems += _string_values(f"{where} spec.template.metadata.annotations", annotations)
    if annotations.get("autoscaling.knative.dev/min-scale") != "0":
        problems.append(f"{where}: min-scale must be \"0\" (scale to zero)")
    for key in ("max-scale", "target"):
        if f"autoscaling.knative.dev/{key}" not in annotations:
            problems.append(f"{where}: no autoscaling.knative.dev/{key}")
    if not isinstance(template.get("spec", {}).get("containerConcurrency"), int):
        problems.append(f"{where}: spec.template.spec.containerConcurrency must be set (an integer)")
    return problems


def _trigger_problems(where: str, doc: dict, brokers: dict[str, dict]) -> list[str]:
    problems = []
    spec = doc["spec"]
    # Trigger.spec preserves unknown fields in the CRD: a misspelt key would pass it.
    stray = set(spec) - TRIGGER_SPEC
    if stray or "subscriber" not in spec:
        problems.append(f"{where}: spec keys {sorted(spec)}; expected broker, filter, subscriber, delivery")
    broker = brokers.get(spec.get("broker", ""))
    if broker is None:
        problems.append(f"{where}: broker {spec.get('broker')!r} is not in the manifests")
    rabbit = broker is not None and (broker["metadata"].get("annotations") or {}).get(
        "eventing.knative.dev/broker.class") == "RabbitMQBroker"
    if rabbit and set(spec) & {"filters"}:
        problems.append(f"{where}: a RabbitMQ broker reads only spec.filter.attributes, not spec.filters")
    attributes = (spec.get("filter") or {}).get("attributes") or {}
    if "type" not in attributes:
        problems.append(f"{where}: filter.attributes.type is missing")
    for name, value in attributes.items():
        if not ATTRIBUTE_NAME.match(name):
            problems.append(f"{where}: filter attribute name {name!r} is not ^[a-z][a-z0-9]*$")
        if not isinstance(value, str) or value == "":
            problems.append(f"{where}: filter attribute {name} must be an exact, non-empty string")
    delivery = spec.get("delivery") or {}
    for key in ("retry", "backoffPolicy", "backoffDelay", "deadLetterSink"):
        if key not in delivery:
            problems.append(f"{where}: delivery.{key} is missing")
    if delivery.get("backoffPolicy") not in (None, "exponential", "linear"):
        problems.append(f"{where}: delivery.backoffPolicy must be exponential or linear")
    return problems
