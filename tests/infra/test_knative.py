"""infra/knative validates offline: upstream CRD schemas, Kubernetes' schemas
for core kinds, and the rules the schemas cannot see. A broken manifest is
reported (the mutation tests show the suite fails on one)."""

import copy

import pytest
import yaml

from tests.infra.manifests import KNATIVE, knative_rule_problems, load_kustomization, schema_problems


@pytest.fixture(scope="module")
def docs():
    return load_kustomization()


def test_kustomization_names_every_manifest_in_the_folder():
    kust = yaml.safe_load((KNATIVE / "kustomization.yaml").read_text())
    on_disk = {p.name for p in KNATIVE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk
    assert kust["namespace"] == "doclane"


def test_every_kind_is_there(docs):
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "RabbitmqBrokerConfig", "Broker", "Service", "Trigger",
            "SinkBinding", "RabbitmqSource"} <= kinds


def test_every_manifest_validates_against_its_schema(docs):
    assert schema_problems(docs) == []


def test_knative_rules_hold(docs):
    assert knative_rule_problems(docs) == []


def test_the_broker_is_rabbitmq_with_quorum_queues(docs):
    broker = next(d for d in docs if d["kind"] == "Broker")
    config = next(d for d in docs if d["kind"] == "RabbitmqBrokerConfig")
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "RabbitMQBroker"
    assert broker["spec"]["config"]["name"] == config["metadata"]["name"]
    assert config["spec"]["queueType"] == "quorum"


def test_model_loading_functions_keep_a_pod_for_a_while(docs):
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for name in ("classify", "index", "api"):
        annotations = services[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"].endswith("m")


def test_no_secret_value_is_real(docs):
    for secret in (d for d in docs if d["kind"] == "Secret"):
        for key, value in secret.get("stringData", {}).items():
            if "password" in key.lower() or "secret" in key.lower() or "key" in key.lower() or "url" in key.lower():
                assert "REPLACE-ME" in value or key in ("uri",), f"{secret['metadata']['name']}.{key}"


def _service(docs, name):
    return next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)


def _trigger(docs):
    return next(d for d in docs if d["kind"] == "Trigger")


# Each mutation breaks one thing; the suite must report it.
def _unquoted_min_scale(docs):
    _service(docs, "ingest")["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = 0


def _annotation_on_service_metadata(docs):
    _service(docs, "classify")["metadata"]["annotations"] = {"autoscaling.knative.dev/min-scale": "0"}


def _concurrency_as_annotation(docs):
    spec = _service(docs, "index")["spec"]["template"]["spec"]
    del spec["containerConcurrency"]


def _concurrency_in_wrong_place(docs):
    _service(docs, "index")["spec"]["template"]["metadata"]["containerConcurrency"] = 2


def _bad_attribute_name(docs):
    _trigger(docs)["spec"]["filter"]["attributes"]["Event-Type"] = "x"


def _new_style_filters(docs):
    _trigger(docs)["spec"]["filters"] = [{"prefix": {"type": "io.doclane."}}]


def _typo_in_trigger(docs):
    _trigger(docs)["spec"]["subscribr"] = _trigger(docs)["spec"].pop("subscriber")


def _no_dead_letter(docs):
    del _trigger(docs)["spec"]["delivery"]["deadLetterSink"]


def _bad_queue_type(docs):
    next(d for d in docs if d["kind"] == "RabbitmqBrokerConfig")["spec"]["queueType"] = "stream"


def _configmap_number(docs):
    next(d for d in docs if d["kind"] == "ConfigMap")["data"]["DOCLANE_MAX_FILE_MB"] = 100


def _bad_container_field(docs):
    _service(docs, "api")["spec"]["template"]["spec"]["containers"][0]["port"] = 8080


@pytest.mark.parametrize("mutate", [
    _unquoted_min_scale, _annotation_on_service_metadata, _concurrency_as_annotation, _concurrency_in_wrong_place,
    _bad_attribute_name, _new_style_filters, _typo_in_trigger, _no_dead_letter, _bad_queue_type,
    _configmap_number, _bad_container_field,
])
def test_a_broken_manifest_is_reported(docs, mutate):
    broken = copy.deepcopy(docs)
    mutate(broken)
    assert schema_problems(broken) + knative_rule_problems(broken), mutate.__name__
