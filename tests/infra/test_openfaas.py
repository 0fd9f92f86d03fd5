"""stack.yml and stack.ce.yml: faas-cli's structure, environment substitution,
each function as an OpenFaaS Function resource valid against the faas-netes
CRD, the Community Edition's limits, and the template."""

import copy
import os
import re

import jsonschema
import pytest
import yaml

from doclane.events.registry import REGISTRY
from doclane.functions.runtime import all_functions
from tests.infra.manifests import ROOT, crd_schema

STACKS = {"pro": ROOT / "stack.yml", "ce": ROOT / "stack.ce.yml"}
PRO_ONLY_LABELS = ("com.openfaas.scale.zero", "com.openfaas.scale.zero-duration", "com.openfaas.scale.target",
                   "com.openfaas.scale.type", "com.openfaas.scale.target-proportion")
CE_MAX_REPLICAS = 5
CE_MAX_FUNCTIONS = 15
# faas-cli's stack.yml v1.0 function fields (its stack package), the ones doclane may use.
FUNCTION_KEYS = {"lang", "handler", "image", "build_args", "environment", "environment_file", "secrets", "labels",
                 "annotations", "limits", "requests", "constraints", "readonly_root_filesystem", "namespace",
                 "build_options", "skip_build"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def envsubst(text: str, env: dict[str, str]) -> str:
    """faas-cli's substitution: ${VAR} and ${VAR:-default}."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def load(edition: str, env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(envsubst(STACKS[edition].read_text(), env or {}))


def as_function_resource(name: str, fn: dict) -> dict:
    """What `faas-cli generate` makes of a stack entry: a Function resource."""
    spec = {"name": name, "image": fn["image"]}
    for key, field in (("environment", "environment"), ("labels", "labels"), ("annotations", "annotations"),
                       ("secrets", "secrets"), ("limits", "limits"), ("requests", "requests")):
        if key in fn:
            spec[field] = fn[key]
    return {"apiVersion": "openfaas.com/v1", "kind": "Function", "metadata": {"name": name, "namespace": "openfaas-fn"},
            "spec": spec}


def stack_problems(stack: dict, edition: str) -> list[str]:
    problems = []
    if stack.get("version") != 1.0 or stack.get("provider", {}).get("name") != "openfaas":
        problems.append("version must be 1.0 and provider.name openfaas")
    validator = jsonschema.Draft202012Validator(crd_schema("openfaas.com/v1", "Function"))
    for name, fn in stack["functions"].items():
        stray = set(fn) - FUNCTION_KEYS
        if stray:
            problems.append(f"{name}: unknown keys {sorted(stray)}")
        if "${" in yaml.safe_dump(fn):
            problems.append(f"{name}: unsubstituted variable")
        problems += [f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                     for e in validator.iter_errors(as_function_resource(name, fn))]
        for key, value in (fn.get("environment") or {}).items():
            if re.search(r"password|secret|token|key", key, re.I) or re.search(r"://[^/@]+:[^/@]+@", str(value)):
                problems.append(f"{name}: {key} looks like an inline secret; use secrets:")
        labels = fn.get("labels") or {}
        if edition == "ce":
            problems += [f"{name}: {label} is an OpenFaaS Pro label; CE rejects it" for label in PRO_ONLY_LABELS
                         if label in labels]
            if int(labels.get("com.openfaas.scale.max", 20)) > CE_MAX_REPLICAS:
                problems.append(f"{name}: CE scales to at most {CE_MAX_REPLICAS} replicas")
    if edition == "ce" and len(stack["functions"]) > CE_MAX_FUNCTIONS:
        problems.append(f"CE runs at most {CE_MAX_FUNCTIONS} functions")
    return problems


@pytest.mark.parametrize("edition", ["pro", "ce"])
def test_stack_is_valid(edition):
    assert stack_problems(load(edition), edition) == []


def test_environment_substitution():
    stack = load("pro", {"REGISTRY": "registry.example.com/team", "TAG": "1.2.3", "OPENFAAS_URL": "https://faas.example"})
    assert stack["provider"]["gateway"] == "https://faas.example"
    assert stack["functions"]["ingest"]["image"] == "registry.example.com/team/ingest:1.2.3"
    defaults = load("pro")
    assert defaults["functions"]["classify"]["image"] == "doclane/classify:latest"
    assert defaults["functions"]["ingest"]["environment"]["DOCLANE_S3_BUCKET"] == "documents"


def test_pro_scales_to_zero_and_ce_does_not():
    pro, ce = load("pro"), load("ce")
    for name in pro["functions"]:
        assert pro["functions"][name]["labels"]["com.openfaas.scale.zero"] == "true"
        assert "com.openfaas.scale.zero" not in ce["functions"][name]["labels"]


def test_ce_and_pro_differ_only_in_scaling_labels():
    pro, ce = load("pro"), load("ce")
    assert pro.keys() == ce.keys() and pro["functions"].keys() == ce["functions"].keys()
    for name, fn in pro["functions"].items():
        a, b = copy.deepcopy(fn), copy.deepcopy(ce["functions"][name])
        a.pop("labels"), b.pop("labels")
        assert a == b, name


def test_every_function_is_in_the_stack_with_its_topics():
    stack = load("pro")
    for fn in all_functions():
        entry = stack["functions"][fn.name]
        assert entry["annotations"]["topic"].split(",") == [REGISTRY.type_of(n) for n in fn.consumes]
        assert entry["build_args"]["DOCLANE_FUNCTION"] == fn.name
    assert "api" in stack["functions"]


def test_only_embedding_functions_carry_torch():
    stack = load("pro")
    extras = {name: set(filter(None, fn["build_args"]["DOCLANE_EXTRAS"].split(","))) for name, fn in stack["functions"].items()}
    assert {n for n, e in extras.items() if "embed" in e} == {"classify", "index", "api"}
    assert {n for n, e in extras.items() if "parse" in e} == {"classify"}


def test_ce_limits_are_enforced():
    stack = load("ce")
    stack["functions"]["classify"]["labels"]["com.openfaas.scale.zero"] = "true"
    stack["functions"]["index"]["labels"]["com.openfaas.scale.max"] = "20"
    problems = stack_problems(stack, "ce")
    assert any("classify" in p and "Pro label" in p for p in problems)
    assert any("index" in p and "at most 5" in p for p in problems)


def test_a_broken_stack_is_reported():
    stack = load("pro")
    stack["functions"]["ingest"]["labels"]["com.openfaas.scale.max"] = 10  # not a string
    stack["functions"]["notify"]["environment"]["DOCLANE_DATABASE_URL"] = "postgresql://u:pw@db/x"
    stack["functions"]["extract"]["limit"] = {"cpu": "1"}
    problems = stack_problems(stack, "pro")
    assert any(p.startswith("ingest: spec.labels") for p in problems)
    assert any(p.startswith("notify:") and "inline secret" in p for p in problems)
    assert any(p.startswith("extract: unknown keys") for p in problems)


def test_template_runs_the_watchdog_in_http_mode():
    template = ROOT / "template" / "doclane-python"
    dockerfile = (template / "Dockerfile").read_text()
    assert "of-watchdog" in dockerfile and 'mode="http"' in dockerfile
    assert yaml.safe_load((template / "template.yml").read_text())["language"] == "doclane-python"
    for name, fn in load("pro")["functions"].items():
        assert fn["lang"] == "doclane-python" and (ROOT / fn["handler"]).is_dir(), name
    for path in load("pro")["configuration"]["copy"]:
        assert (ROOT / path).exists(), path


def test_secrets_become_settings():
    """The template's entrypoint turns /var/openfaas/secrets/<name> into <NAME> (dashes to underscores);
    every secret must so name a setting doclane reads."""
    from doclane.functions.settings import Settings

    names = {f"DOCLANE_{n.upper()}" for n in Settings.model_fields} | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                                          "OLLAMA_HOST"}
    for fn in load("pro")["functions"].values():
        for secret in fn["secrets"]:
            assert secret.upper().replace("-", "_") in names, secret
    assert os.access(ROOT / "template" / "doclane-python" / "entrypoint.sh", os.X_OK)
