"""infra/prometheus and infra/grafana, checked against the code and a real run.

- The Grafana dashboard is well formed and every metric its PromQL uses is
  exported: by the code's registry, and by a real `doclane up` /metrics after
  a pipeline run (function processes added up by the gateway).
- prometheus.yml: a structural schema of our own (Prometheus' configuration
  reference, for the parts we use) and cross-checks with the manifests; then
  with Debian's Prometheus binaries (`make test` installs them):
  `promtool check config`, the real relabelling engine on synthetic
  Kubernetes pods (Debian's build has no Kubernetes discovery, so the pods
  come from file discovery with the same __meta_* labels), and the real
  server scraping `doclane up` and evaluating every dashboard query.
- The same run proves traces (OTLP/HTTP from every function process) and
  JSON logs (the function processes' log files) end to end.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from doclane.functions.observability import metrics
from doclane.functions.runtime import STAGES
from tests.conftest import require
from tests.e2e.harness import API_KEY, AUTH, Doclane, Receiver, free_port
from tests.otlp_support import OtlpReceiver

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "doclane-pipeline.json"
PROMETHEUS_YML = ROOT / "infra" / "prometheus" / "prometheus.yml"
FIXTURES = ROOT / "tests" / "fixtures"

PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "rate", "irate", "increase",
                "histogram_quantile", "on", "ignoring", "and", "or", "unless", "offset"}
# Metrics that a finished healthy run need not have a sample of: nothing was
# dead-lettered, and no function process is alive to be handling anything
# (they scaled to zero; the supervisor dropped their live gauges).
MAY_BE_EMPTY = {"doclane_dead_lettered_total", "doclane_handlers_in_progress"}


# ---------------------------------------------------------------- the dashboard
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def queries(board: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) if p["type"] != "row" for t in p["targets"]]


def label_names() -> set[str]:
    """Every label name doclane's metrics use, and Prometheus' own (le, job, instance)."""
    names = {"le", "job", "instance", "status", "trigger"}  # the last two: the scrape-time gauges'
    for collector in (metrics.EVENTS_CONSUMED, metrics.EVENTS_EMITTED, metrics.EVENTS_FAILED, metrics.RETRIES,
                      metrics.DEAD_LETTERED, metrics.HANDLER_SECONDS, metrics.IN_PROGRESS,
                      metrics.WEBHOOK_DELIVERIES, metrics.PARSE_SECONDS, metrics.EMBED_SECONDS):
        names |= set(collector._labelnames)
    return names


def metric_names(expr: str, labels: set[str]) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not
    functions, keywords or label names, outside matchers and ranges."""
    bare = re.sub(r"\{[^}]*\}", " ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r'"[^"]*"', " ", bare)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare) if t not in PROMQL_WORDS | labels}


def exported(text: str) -> tuple[set[str], set[str]]:
    """(names a query may select, names that have a sample) in an exposition."""
    declared, sampled = set(), set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count", "")}.get(family.type, ("",))
        declared |= {family.name + s for s in suffixes}
        sampled |= {s.name for s in family.samples}
    return declared | sampled, sampled


def dashboard_metrics() -> set[str]:
    labels = label_names()
    return {name for _, expr in queries(dashboard()) for name in metric_names(expr, labels)}


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "doclane_" in variables["job"]["definition"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for selector in re.finditer(r"doclane_\w+", target["expr"]):  # scoped to the chosen jobs
                assert target["expr"][selector.end():].startswith('{job=~"$job"}'), target["expr"]


def test_the_dashboard_shows_what_an_operator_asks_first():
    exprs = " ".join(expr for _, expr in queries(dashboard()))
    for needed in ("rate(doclane_events_consumed_total",  # throughput per stage
                   "histogram_quantile(0.5, sum by (function, le) (rate(doclane_handler_duration_seconds_bucket",
                   "histogram_quantile(0.95, sum by (function, le) (rate(doclane_handler_duration_seconds_bucket",
                   "doclane_queue_backlog", "doclane_events_failed_total", "doclane_dead_lettered_total",
                   "doclane_retries_total", "doclane_webhook_deliveries_total", "doclane_documents"):
        assert needed in exprs, needed


def test_every_dashboard_metric_is_declared_by_the_code():
    selectable, _ = exported(generate_latest(metrics.collectors()).decode())
    scrape_time = {"doclane_documents", "doclane_queue_backlog"}  # read at scrape time, by the API
    used = dashboard_metrics()
    assert used and all(name.startswith("doclane_") for name in used), used
    assert used - selectable - scrape_time == set()


# -------------------------------------------------------------- prometheus.yml
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|[smhdwy]))+$"}
LABEL = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
SCHEMA = {  # Prometheus' configuration reference, for the parts doclane's file uses
    "type": "object", "additionalProperties": False, "required": ["scrape_configs"],
    "properties": {
        "global": {"type": "object", "additionalProperties": False, "properties": {
            "scrape_interval": DURATION, "scrape_timeout": DURATION, "evaluation_interval": DURATION,
            "external_labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "scrape_configs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["job_name"],
            "properties": {
                "job_name": {"type": "string", "minLength": 1},
                "metrics_path": {"type": "string", "pattern": "^/"},
                "scheme": {"enum": ["http", "https"]},
                "scrape_interval": DURATION, "scrape_timeout": DURATION, "honor_labels": {"type": "boolean"},
                "authorization": {"type": "object", "additionalProperties": False, "properties": {
                    "type": {"type": "string"}, "credentials": {"type": "string"},
                    "credentials_file": {"type": "string", "pattern": "^/"}},
                    "oneOf": [{"required": ["credentials"]}, {"required": ["credentials_file"]}]},
                "static_configs": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["targets"], "properties": {
                        "targets": {"type": "array", "items": {"type": "string", "pattern": r"^[^\s/:]+:[0-9]+$"}},
                        "labels": {"type": "object", "propertyNames": LABEL,
                                   "additionalProperties": {"type": "string"}}}}},
                "kubernetes_sd_configs": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["role"], "properties": {
                        "role": {"enum": ["node", "service", "pod", "endpoints", "endpointslice", "ingress"]},
                        "namespaces": {"type": "object", "additionalProperties": False, "properties": {
                            "names": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "own_namespace": {"type": "boolean"}}}}}},
                "relabel_configs": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "source_labels": {"type": "array", "items": LABEL},
                        "separator": {"type": "string"},
                        "regex": {"type": "string"},
                        "target_label": {"type": "string"},
                        "replacement": {"type": "string"},
                        "modulus": {"type": "integer"},
                        "action": {"enum": ["replace", "keep", "drop", "keepequal", "dropequal", "hashmod",
                                            "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase"]}},
                    "allOf": [
                        {"if": {"not": {"required": ["action"]}}, "then": {"required": ["target_label"]}},
                        {"if": {"properties": {"action": {"const": "replace"}}, "required": ["action"]},
                         "then": {"required": ["target_label"]}},
                        {"if": {"properties": {"action": {"enum": ["keep", "drop"]}}, "required": ["action"]},
                         "then": {"required": ["source_labels"]}}]}},
            },
            "oneOf": [{"required": ["static_configs"]}, {"required": ["kubernetes_sd_configs"]}],
        }},
    },
}


def config() -> dict:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


def jobs() -> dict[str, dict]:
    return {job["job_name"]: job for job in config()["scrape_configs"]}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|[smhdwy])", duration))


def keep_regex(job: dict, label: str) -> str:
    return next(r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
                and r["source_labels"] == [label])


def test_the_prometheus_config_matches_the_schema():
    doc = config()
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    names = [job["job_name"] for job in doc["scrape_configs"]]
    assert len(names) == len(set(names))
    g = doc["global"]
    assert seconds(g["scrape_timeout"]) <= seconds(g["scrape_interval"])
    for job in doc["scrape_configs"]:
        for rule in job.get("relabel_configs", []):
            re.compile(f"^(?:{rule.get('regex', '(.*)')})$")  # Prometheus anchors its RE2 regexes


def test_the_prometheus_config_finds_what_the_manifests_deploy():
    by_name = jobs()
    stage_regex = "|".join(STAGES)
    knative_docs = [d for d in yaml.safe_load_all((ROOT / "infra/knative/services.yaml").read_text()) if d]
    knative_services = {d["metadata"]["name"] for d in knative_docs if d["kind"] == "Service"}
    namespace = yaml.safe_load((ROOT / "infra/knative/kustomization.yaml").read_text())["namespace"]
    openfaas = {name for stack in ("stack.yml", "stack.ce.yml")
                for name in yaml.safe_load((ROOT / stack).read_text())["functions"]}
    for platform, label, deployed, ns in (
            ("knative", "__meta_kubernetes_pod_label_serving_knative_dev_service", knative_services, namespace),
            ("openfaas", "__meta_kubernetes_pod_label_faas_function", openfaas, "openfaas-fn")):
        functions, api = by_name[f"doclane-{platform}-functions"], by_name[f"doclane-{platform}-api"]
        assert keep_regex(functions, label) == stage_regex and keep_regex(api, label) == "api"
        assert set(STAGES) | {"api"} <= deployed
        for job in (functions, api):
            assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [ns]
        # the API answers /metrics only with a key; the stages' endpoint is open
        assert "authorization" in api and "authorization" not in functions
    assert "authorization" in by_name["doclane-up"]
    # a target label named like one of doclane's metric labels would rename it (exported_function)
    ours = label_names() - {"job", "instance", "le"}
    for job in by_name.values():
        for rule in job.get("relabel_configs", []):
            assert rule.get("target_label") not in ours, (job["job_name"], rule)


def _binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (`make test` installs Debian's prometheus package)")
    return path


def _without_kubernetes_discovery(doc: dict, targets_file: Path | None = None) -> dict:
    """Debian's Prometheus is built without Kubernetes discovery: the same jobs
    with file discovery (or a placeholder target) instead, relabelling unchanged."""
    doc = copy.deepcopy(doc)
    for job in doc["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            if targets_file is None:
                job["static_configs"] = [{"targets": ["pod.invalid:8080"]}]
            else:
                job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
    return doc


def _with_credentials(doc: dict, path: Path) -> dict:
    for job in doc["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(path)
    return doc


def test_promtool_accepts_the_config(tmp_path):
    promtool = _binary("promtool")
    key = tmp_path / "api-key"
    key.write_text("a-key")
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(_with_credentials(_without_kubernetes_discovery(config()), key)))
    out = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


class Prometheus:
    """The real Prometheus server on loopback, with a config of the test's."""

    def __init__(self, doc: dict, root: Path):
        binary = _binary("prometheus")
        root.mkdir(parents=True, exist_ok=True)
        (root / "prometheus.yml").write_text(yaml.safe_dump(doc))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(root / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (root / "prometheus.log").read_text()
            try:
                if httpx.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not get ready in 60 s"
            time.sleep(0.2)

    def api(self, path: str, **params) -> dict:
        body = httpx.get(self.url + "/api/v1/" + path, params=params, timeout=30).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _pod(address: str, name: str, **meta: str) -> dict:
    return {"targets": [address], "labels": {"__meta_kubernetes_pod_name": name,
                                              **{f"__meta_kubernetes_pod_{k}": v for k, v in meta.items()}}}


def test_the_relabelling_keeps_the_right_pods_and_ports(tmp_path):
    """Synthetic pods as Kubernetes discovery describes them, through the real
    relabelling engine: which targets each job keeps, at which address and path."""
    knative = "label_serving_knative_dev_service"
    pods = [
        _pod("10.0.0.1:8080", "classify-00001-a", **{knative: "classify", "container_port_name": "user-port"}),
        _pod("10.0.0.1:8012", "classify-00001-a", **{knative: "classify", "container_port_name": "queue-port"}),
        _pod("10.0.0.1:9091", "classify-00001-a", **{knative: "classify", "container_port_name": "http-usermetric"}),
        _pod("10.0.0.2:8080", "api-00001-b", **{knative: "api", "container_port_name": "user-port"}),
        _pod("10.0.0.3:8080", "ingest-6d9f-c", label_faas_function="ingest", container_port_number="8080"),
        _pod("10.0.0.3:8081", "ingest-6d9f-c", label_faas_function="ingest", container_port_number="8081"),
        _pod("10.0.0.4:8080", "api-7c1e-d", label_faas_function="api", container_port_number="8080"),
        _pod("10.0.0.5:8080", "figlet-1-e", label_faas_function="figlet", container_port_number="8080"),
        _pod("10.0.0.6:80", "classify-worker-f", annotation_prometheus_io_scrape="true",
             annotation_prometheus_io_port="8080", annotation_prometheus_io_path="/metrics",
             label_app_kubernetes_io_name="classify-worker"),
        _pod("10.0.0.7:80", "unrelated-g", label_app_kubernetes_io_name="redis"),
        _pod("10.0.0.8:8080", "notify-00001-h", annotation_prometheus_io_scrape="true",
             **{knative: "notify", "container_port_name": "user-port"}),
    ]
    targets = tmp_path / "pods.json"
    targets.write_text(json.dumps(pods))
    key = tmp_path / "api-key"
    key.write_text("a-key")
    doc = _with_credentials(_without_kubernetes_discovery(config(), targets), key)
    doc["global"]["scrape_interval"] = "1h"  # nothing to scrape: only the relabelling is looked at
    doc["global"]["scrape_timeout"] = "10s"
    doc["scrape_configs"] = [j for j in doc["scrape_configs"] if "file_sd_configs" in j]
    server = Prometheus(doc, tmp_path / "prometheus")
    try:
        deadline = time.monotonic() + 60
        while True:
            data = server.api("targets", state="any")
            if len(data["activeTargets"]) + len(data["droppedTargets"]) >= len(pods) * len(doc["scrape_configs"]):
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.5)
    finally:
        server.stop()
    kept = {(t["scrapePool"], t["scrapeUrl"], t["labels"].get("service"), t["labels"].get("pod"))
            for t in data["activeTargets"]}
    assert kept == {
        ("doclane-knative-functions", "http://10.0.0.1:8080/metrics", "classify", "classify-00001-a"),
        ("doclane-knative-functions", "http://10.0.0.8:8080/metrics", "notify", "notify-00001-h"),
        ("doclane-knative-api", "http://10.0.0.2:8080/metrics", "api", "api-00001-b"),
        ("doclane-openfaas-functions", "http://10.0.0.3:8080/metrics", "ingest", "ingest-6d9f-c"),
        ("doclane-openfaas-api", "http://10.0.0.4:8080/metrics", "api", "api-7c1e-d"),
        ("doclane-annotated", "http://10.0.0.6:8080/metrics", "classify-worker", "classify-worker-f"),
    }


# ------------------------------------------------- a real run: metrics, traces, logs
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`doclane up` with JSON logs and OTLP export, a webhook receiver that fails
    once (a retry), a real Prometheus scraping it every second (when installed),
    a text and an encrypted PDF (one document fails)."""
    root = tmp_path_factory.mktemp("monitoring")
    otlp = OtlpReceiver()
    receiver = Receiver(fail_first=1)
    doclane = Doclane(root, webhook=receiver.url, env={
        "DOCLANE_LOG_FORMAT": "json", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_SERVICE_NAME": "doclane-e2e", "OTEL_BSP_SCHEDULE_DELAY": "200", "DOCLANE_IDLE_SECONDS": "5",
    }).start()
    prometheus = None
    if shutil.which("prometheus"):
        key = root / "api-key"
        key.write_text(API_KEY)
        job = copy.deepcopy(jobs()["doclane-up"])
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{doclane.port}"]
        job["authorization"]["credentials_file"] = str(key)
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        prometheus = Prometheus({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                                 "scrape_configs": [job]}, root / "prometheus")
    try:
        (root / "letter.txt").write_text("Dear Ms Smith,\n\nThank you for your letter of 3 March about the "
                                         "garden fence.\n\nYours sincerely,\nJohn Brown")
        doclane.drop(root / "letter.txt", FIXTURES / "docs" / "password.pdf")
        doclane.wait_done(2)
        deadline = time.monotonic() + 120  # the retried webhook: notify's second attempt
        while not receiver.events("document.indexed") and time.monotonic() < deadline:
            time.sleep(0.5)
        text = httpx.get(doclane.url + "/metrics", headers=AUTH, timeout=30).text
        yield {"doclane": doclane, "metrics": text, "otlp": otlp, "prometheus": prometheus, "receiver": receiver}
    finally:
        doclane.stop()
        if prometheus is not None:
            prometheus.stop()
        receiver.close()
        otlp.close()


def value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.e2e
@pytest.mark.slow
def test_after_a_pipeline_run_every_dashboard_metric_is_exported(run):
    text = run["metrics"]
    selectable, sampled = exported(text)
    used = dashboard_metrics()
    assert used - selectable == set(), "the dashboard selects metrics /metrics does not export"
    assert used - sampled - MAY_BE_EMPTY == set(), "this run should have produced a sample of each"
    # these come from the function processes only: the gateway handled no event itself
    for stage in STAGES:
        assert value(text, "doclane_events_consumed_total", function=stage) >= 1, stage
        assert value(text, "doclane_handler_duration_seconds_count", function=stage) >= 1, stage
    assert value(text, "doclane_documents", status="indexed") == 1
    assert value(text, "doclane_documents", status="failed") == 1
    assert value(text, "doclane_retries_total", function="notify") >= 1  # the webhook that failed once
    assert value(text, "doclane_events_failed_total", function="notify", kind="retryable") >= 1
    assert value(text, "doclane_webhook_deliveries_total", outcome="refused") >= 1
    assert value(text, "doclane_webhook_deliveries_total", outcome="delivered") >= 2
    assert value(text, "doclane_parse_duration_seconds_count") >= 2 and value(
        text, "doclane_embed_duration_seconds_count") >= 1
    assert set(STAGES) == {s.labels["trigger"] for f in text_string_to_metric_families(text)
                           for s in f.samples if s.name == "doclane_queue_backlog"}


@pytest.mark.e2e
@pytest.mark.slow
def test_prometheus_scrapes_doclane_up_and_every_dashboard_query_answers(run):
    server = run["prometheus"]
    _binary("prometheus")
    deadline = time.monotonic() + 60
    while not server.query('max by (status) (doclane_documents{status="indexed"}) == 1'):
        assert time.monotonic() < deadline, "Prometheus never scraped the finished run"
        time.sleep(0.5)
    time.sleep(3)  # a few more scrapes, so every range holds two samples
    labels = label_names()
    for title, expr in queries(dashboard()):
        promql = expr.replace("$__rate_interval", "5m").replace("$job", "doclane-up")
        result = server.query(promql)
        if metric_names(expr, labels) <= MAY_BE_EMPTY:
            continue
        assert result, f"{title}: {promql} has no series"
    stages = {r["metric"]["function"] for r in server.query("sum by (function) (doclane_events_consumed_total)")}
    assert stages == set(STAGES)


@pytest.mark.e2e
@pytest.mark.slow
def test_every_function_process_exports_its_spans_into_one_trace(run):
    otlp = run["otlp"]
    deadline = time.monotonic() + 90
    while True:
        spans = [s for resource, s in otlp.spans() if resource.get("service.name") == "doclane-e2e"]
        attrs = [{a.key: a.value.string_value or a.value.int_value for a in s.attributes} for s in spans]
        letter = {a.get("doclane.document_id") for a in attrs if a.get("doclane.function") == "extract"}
        by_function = {}
        for span, a in zip(spans, attrs):
            if a.get("doclane.document_id") in letter and a.get("doclane.outcome") == "ok":
                by_function[a["doclane.function"]] = span
        if set(by_function) == set(STAGES):
            break
        assert time.monotonic() < deadline, f"spans of {sorted(by_function)} only"
        time.sleep(0.5)
    chain = [by_function[name] for name in STAGES]
    assert len({s.trace_id for s in chain}) == 1
    for parent, child in zip(chain, chain[1:]):
        assert child.parent_span_id == parent.span_id, child.name


@pytest.mark.e2e
@pytest.mark.slow
def test_function_processes_log_json_lines_with_the_hops_ids(run):
    logs = run["doclane"].data / "logs"
    handled = []
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry["logger"] == "doclane.runtime":
                    handled.append(entry)
    assert {e["function"] for e in handled} >= set(STAGES)
    for entry in handled:
        assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"]) and re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])
        assert entry["event_id"] and entry["level"] == "INFO"
    indexed = [e for e in handled if e["function"] == "index"]
    assert indexed and all(e["document_id"] for e in indexed)
