"""infra/keda: KEDA autoscaling for doclane's OpenFaaS functions (Deployments
named after the function in openfaas-fn). It is the Helm chart's scaling
template rendered with infra/keda/values.yaml, so the committed file must be
what infra/keda/render.sh makes now; it validates offline against KEDA's CRD
schemas and the chart's scaling rules, against stack.yml's function names
and the faas-cli secret that holds the AMQP URL."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from doclane.functions.runtime import STAGES
from tests.conftest import require
from tests.infra.helm import component, helm_binary, of_kind, scaling_problems
from tests.infra.manifests import ROOT, load_kustomization, schema_problems

KEDA = ROOT / "infra" / "keda"


@pytest.fixture(scope="module")
def docs():
    return load_kustomization(KEDA)


def test_the_kustomization_applies_the_rendered_file_to_openfaas_fn():
    kust = yaml.safe_load((KEDA / "kustomization.yaml").read_text())
    assert kust["namespace"] == "openfaas-fn" and kust["resources"] == ["scaledobjects.yaml"]


def test_the_committed_render_is_current():
    require(helm_binary() is not None, "helm is not installed: run `make helm`")
    out = subprocess.run(["sh", str(KEDA / "render.sh"), helm_binary()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (KEDA / "scaledobjects.yaml").read_text(), "stale: run `make keda`"


def test_it_validates_against_keda_schemas(docs):
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    assert schema_problems(docs) == []


def test_each_openfaas_function_scales_on_its_queue(docs):
    stack = yaml.safe_load((ROOT / "stack.yml").read_text())
    functions = set(stack["functions"])
    # the AMQP URL is the faas-cli secret every function mounts (stack.yml)
    assert all("doclane-amqp-url" in stack["functions"][fn]["secrets"] for fn in STAGES)
    assert scaling_problems(docs, broker="doclane", targets=functions,
                            secrets={"doclane-amqp-url": {"doclane-amqp-url"}}) == []
    targets = {component(so): so["spec"]["scaleTargetRef"]["name"] for so in of_kind(docs, "ScaledObject").values()}
    assert targets == {fn: fn for fn in STAGES}  # OpenFaaS names a function's Deployment after it
    assert all("namespace" not in d["metadata"] for d in docs)  # kustomize sets openfaas-fn
