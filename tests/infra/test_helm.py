"""infra/helm/doclane renders with the real helm and validates offline:
Kubernetes' schemas for the core kinds (kubernetes-validate, strict), KEDA's
ScaledObject/TriggerAuthentication CRD schemas (tests/fixtures/crds), and the
rules in tests/infra/helm.py; with the default values and with others (HPA,
an existing Secret, fixed replicas). Bad values are refused with a message."""

from __future__ import annotations

import copy

import pytest
import yaml

from doclane.events.bus import queue_name
from doclane.functions.runtime import STAGES, triggers
from doclane.functions.settings import Settings
from tests.amqp_support import AMQP_URL, delete_broker, queue_exists, require_rabbitmq, unique_broker
from tests.conftest import require
from tests.infra.helm import (CHART, REQUIRED, autoscaled, component, helm, helm_binary, of_kind, render,
                              render_error, scaling_problems, workload_problems)
from tests.infra.manifests import schema_problems

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", autouse=True)
def _helm():
    require(helm_binary() is not None, "helm is not installed: run `make helm`")


@pytest.fixture(scope="module")
def default():
    return render(REQUIRED)


def merged(*overrides: dict) -> dict:
    out = copy.deepcopy(REQUIRED)
    for o in overrides:
        _merge(out, o)
    return out


def _merge(into: dict, more: dict) -> None:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def workers(docs):
    return {component(d): d for d in of_kind(docs, "Deployment").values() if component(d) in STAGES}


def test_helm_lint_passes(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(REQUIRED))
    out = helm("lint", "--strict", "--values", str(values), str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_default_render_has_every_part(default):
    kinds = sorted(d["kind"] for d in default)
    assert kinds == sorted(["ServiceAccount", "Secret", "ConfigMap", "Service", "TriggerAuthentication"]
                           + ["Deployment"] * 6 + ["ScaledObject"] * 5)
    assert set(workers(default)) == set(STAGES)
    assert "doclane-api" in of_kind(default, "Deployment") and "doclane-api" in of_kind(default, "Service")


def test_the_default_render_validates_against_the_schemas(default):
    assert schema_problems(default) == []


def test_the_default_render_keeps_the_rules(default):
    assert workload_problems(default) == []
    assert scaling_problems(default, broker="doclane") == []


def test_workers_consume_their_function_and_autoscalers_own_the_replicas(default):
    for fn, dep in workers(default).items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["command"][:3] == ["doclane", "worker", fn] and c["image"] == f"doclane/{fn}:0.1.0"
        assert "replicas" not in dep["spec"], f"{fn}: KEDA sets the replicas; an upgrade must not reset them"
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert autoscaled(default) == {d["metadata"]["name"] for d in workers(default).values()}
    api = of_kind(default, "Deployment")["doclane-api"]["spec"]["template"]["spec"]
    assert api["initContainers"][0]["command"] == ["doclane", "declare"]  # queues exist before anything publishes


def test_classify_scales_on_its_uploaded_backlog_as_the_design_says(default):
    (so,) = [d for d in of_kind(default, "ScaledObject").values() if component(d) == "classify"]
    # classify's trigger takes document.uploaded: its queue is that backlog
    assert next(t for t in triggers(Settings()) if t.name == "classify").types == ("io.doclane.document.uploaded.v1",)
    assert so["spec"]["minReplicaCount"] == 2 and so["spec"]["maxReplicaCount"] == 10
    assert so["spec"]["triggers"][0]["metadata"] == {
        "protocol": "amqp", "queueName": "doclane.classify", "mode": "QueueLength", "value": "30",
        "activationValue": "0"}


def test_the_environment_is_valid_doclane_settings(default):
    """ConfigMap + Secret, as the pods get them: every variable is a setting
    doclane knows, and together they load."""
    env = dict(of_kind(default, "ConfigMap")["doclane-config"]["data"])
    env |= of_kind(default, "Secret")["doclane-secrets"]["stringData"]
    known = {f"DOCLANE_{n.upper()}" for n in Settings.model_fields} | {"OLLAMA_HOST", "AWS_REGION",
                                                                        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(env) <= known, set(env) - known
    settings = Settings(**{k.removeprefix("DOCLANE_").lower(): v for k, v in env.items() if k.startswith("DOCLANE_")})
    assert settings.amqp_url and settings.database_url and settings.s3 and settings.opensearch_url
    assert len(env["DOCLANE_SESSION_SECRET"]) >= 32  # generated: shared by every api replica


def test_hpa_with_an_existing_secret_and_an_external_queue_metric():
    values = merged({"secrets": {"existingSecret": "doclane-prod", "amqpUrl": "", "databaseUrl": "",
                                 "opensearchUrl": ""},
                     "autoscaling": {"mode": "hpa", "hpa": {"externalMetric": "rabbitmq_queue_messages_ready"}},
                     "config": {"broker": "docs-prod", "ollamaHost": "http://ollama.ollama:11434",
                                "env": {"DOCLANE_PARSE_TIMEOUT": 120}},
                     "workers": {"index": {"autoscaling": {"minReplicas": 0, "maxReplicas": 4, "targetBacklog": 12}}}})
    docs = render(values)
    assert not of_kind(docs, "Secret") and not of_kind(docs, "ScaledObject")
    assert schema_problems(docs) == []
    assert workload_problems(docs, secrets=["doclane-prod"]) == []
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {d["metadata"]["name"] for d in workers(docs).values()}
    for hpa in hpas.values():
        fn, spec = component(hpa), hpa["spec"]
        assert spec["minReplicas"] >= 1  # an HPA cannot scale to zero
        (metric,) = spec["metrics"]
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"queue": queue_name(fn, "docs-prod")}
    index = next(h for h in hpas.values() if component(h) == "index")["spec"]
    assert (index["minReplicas"], index["maxReplicas"]) == (1, 4)
    assert index["metrics"][0]["external"]["target"] == {"type": "AverageValue", "averageValue": "12"}
    assert of_kind(docs, "ConfigMap")["doclane-config"]["data"]["DOCLANE_PARSE_TIMEOUT"] == "120"


def test_keda_with_an_existing_secret_uses_its_amqp_key():
    docs = render(merged({"secrets": {"existingSecret": "doclane-prod"}}), release="docs", namespace="prod")
    assert not of_kind(docs, "Secret")
    (auth,) = of_kind(docs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "doclane-prod", "key": "DOCLANE_AMQP_URL"}]
    assert scaling_problems(docs, broker="doclane", secrets={"doclane-prod": {"DOCLANE_AMQP_URL"}}) == []
    assert schema_problems(docs) == [] and workload_problems(docs, secrets=["doclane-prod"]) == []


def test_fixed_replicas_without_an_autoscaler_and_an_api_hpa():
    docs = render(merged({"autoscaling": {"mode": "none"}, "api": {"autoscaling": {"enabled": True}},
                          "workers": {"notify": {"replicas": 3}}, "image": {"registry": "reg.example/doclane",
                                                                            "tag": "1.2.3"}}))
    assert not of_kind(docs, "ScaledObject") and not of_kind(docs, "TriggerAuthentication")
    assert {component(d): d["spec"]["replicas"] for d in workers(docs).values()} == {
        "ingest": 1, "classify": 2, "extract": 1, "index": 1, "notify": 3}
    assert autoscaled(docs) == {"doclane-api"} and "replicas" not in of_kind(docs, "Deployment")["doclane-api"]["spec"]
    assert workers(docs)["index"]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/doclane/index:1.2.3"
    assert schema_problems(docs) == [] and workload_problems(docs) == []


@pytest.mark.parametrize(("values", "says"), [
    ({}, "secrets.amqpUrl is required"),
    (merged({"autoscaling": {"mode": "knative"}}), "value must be one of 'keda', 'hpa', 'none'"),
    (merged({"workers": {"classify": {"autoscaling": {"minReplicas": 20}}}}), "minReplicas (20) is above maxReplicas (10)"),
    (merged({"workers": {"classify": {"autoscaling": {"maxReplica": 3}}}}), "additional properties 'maxReplica'"),
    (merged({"secrets": {"databaseUrl": "mysql://x"}}), "/secrets/databaseUrl"),
    (merged({"worker": {}}), "additional properties 'worker'"),
])
def test_bad_values_are_refused_with_a_reason(values, says):
    assert says in render_error(values)


def test_the_scaled_queues_are_the_ones_the_rabbitmq_bus_declares():
    """Render for a broker of its own, let the real bus declare its topology,
    and find every queue a ScaledObject watches on the RabbitMQ server."""
    require_rabbitmq()
    from doclane.functions.adapters.rabbitmq_bus import RabbitBus

    broker = unique_broker("helm")
    settings = Settings(amqp_url=AMQP_URL, broker=broker)
    docs = render(merged({"config": {"broker": broker}}))
    bus = RabbitBus(AMQP_URL, broker, triggers=triggers(settings))
    try:
        bus.declare(triggers(settings))
        watched = [so["spec"]["triggers"][0]["metadata"]["queueName"] for so in of_kind(docs, "ScaledObject").values()]
        assert len(watched) == len(STAGES) and all(queue_exists(q) for q in watched), watched
    finally:
        bus.close()
        delete_broker(broker, triggers(settings))


# Each mutation breaks one thing; the checks must report it.
def _wrong_queue(docs):
    next(iter(of_kind(docs, "ScaledObject").values()))["spec"]["triggers"][0]["metadata"]["queueName"] = "classify"


def _unquoted_value(docs):
    next(iter(of_kind(docs, "ScaledObject").values()))["spec"]["triggers"][0]["metadata"]["value"] = 30


def _misspelt_scaledobject_field(docs):
    so = next(iter(of_kind(docs, "ScaledObject").values()))["spec"]
    so["maxReplicas"] = so.pop("maxReplicaCount")


def _missing_target(docs):
    next(iter(of_kind(docs, "ScaledObject").values()))["spec"]["scaleTargetRef"]["name"] = "nobody"


def _missing_auth_key(docs):
    next(iter(of_kind(docs, "TriggerAuthentication").values()))["spec"]["secretTargetRef"][0]["key"] = "AMQP"


def _root_pod(docs):
    of_kind(docs, "Deployment")["doclane-api"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0


def _writable_root(docs):
    workers(docs)["index"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


def _probe_elsewhere(docs):
    workers(docs)["notify"]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = "/"


def _bad_container_field(docs):
    workers(docs)["ingest"]["spec"]["template"]["spec"]["containers"][0]["commands"] = ["x"]


def _dangling_config(docs):
    del docs[[d["kind"] for d in docs].index("ConfigMap")]


@pytest.mark.parametrize("mutate", [_wrong_queue, _unquoted_value, _misspelt_scaledobject_field, _missing_target,
                                    _missing_auth_key, _root_pod, _writable_root, _probe_elsewhere,
                                    _bad_container_field, _dangling_config])
def test_a_broken_render_is_reported(default, mutate):
    broken = copy.deepcopy(default)
    mutate(broken)
    assert schema_problems(broken) + workload_problems(broken) + scaling_problems(broken, broker="doclane"), \
        mutate.__name__


def test_every_pod_is_found_by_the_annotation_scrape_job(default):
    """The pods carry the annotations infra/prometheus/prometheus.yml's
    `doclane-annotated` job keeps and rewrites: scrape "true" (its keep
    regex), the port of the container's `http` port (which serves /metrics
    beside /healthz) and the path. Off by value, for a PodMonitor set-up."""
    from pathlib import Path

    job = next(j for j in yaml.safe_load((Path(CHART).parents[1] / "prometheus" / "prometheus.yml").read_text())
               ["scrape_configs"] if j["job_name"] == "doclane-annotated")
    sources = {label: rule for rule in job["relabel_configs"] for label in rule["source_labels"]}
    keep = sources["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep["action"] == "keep"
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" in sources
    assert sources["__meta_kubernetes_pod_annotation_prometheus_io_path"]["target_label"] == "__metrics_path__"
    deployments = of_kind(default, "Deployment")
    assert set(workers(default)) == set(STAGES) and "doclane-api" in deployments
    for name, d in deployments.items():
        template = d["spec"]["template"]
        notes = template["metadata"]["annotations"]
        http = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}["http"]
        assert notes["prometheus.io/scrape"] == keep["regex"] == "true", name
        assert notes["prometheus.io/port"] == str(http), name
        assert notes["prometheus.io/path"] == "/metrics", name
    off = render(merged({"metrics": {"scrapeAnnotations": False}}))
    assert not any(k.startswith("prometheus.io/") for d in of_kind(off, "Deployment").values()
                   for k in d["spec"]["template"]["metadata"]["annotations"])
