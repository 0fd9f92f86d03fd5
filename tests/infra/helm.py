"""Render infra/helm/doclane with the real helm binary (installed into the
venv by `make helm`), and the rules of its objects that no schema states:
each KEDA ScaledObject watches the queue the RabbitMQ bus declares for its
function and targets a Deployment that exists; pods run as uid 10001,
non-root, read-only; probes hit /healthz on a port the container names;
every reference (Secret, ConfigMap, TriggerAuthentication, volume) resolves.
Like manifests.py, each check returns a list of problems, empty when all is
well, so the tests can also show that a broken object is reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import yaml

from doclane.events.bus import queue_name
from doclane.functions.runtime import STAGES
from tests.infra.manifests import ROOT, name_of

CHART = ROOT / "infra" / "helm" / "doclane"
# What a user must give (the chart refuses to render without them).
REQUIRED = {"secrets": {"amqpUrl": "amqp://doclane:REPLACE-ME@rabbitmq.rabbitmq:5672/%2F",
                        "databaseUrl": "postgresql://doclane:REPLACE-ME@postgres.db:5432/doclane",
                        "opensearchUrl": "https://doclane:REPLACE-ME@opensearch.opensearch:9200"}}
UID = 10001


def helm_binary() -> str | None:
    """The venv's helm (make helm), else one on PATH."""
    venv = Path(sys.executable).parent / "helm"
    return str(venv) if venv.is_file() else shutil.which("helm")


def helm(*args: str) -> subprocess.CompletedProcess:
    binary = helm_binary()
    assert binary, "no helm: run `make helm`"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def render(values: dict | None = None, *args: str, release: str = "doclane", namespace: str = "doclane") -> list[dict]:
    """`helm template` with these values; the documents it renders."""
    out = _template(values, *args, release=release, namespace=namespace)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_error(values: dict | None = None, *args: str) -> str:
    """The error of a `helm template` that must fail."""
    out = _template(values, *args, release="doclane", namespace="doclane")
    assert out.returncode != 0, "helm template rendered values it should refuse"
    return out.stderr


def _template(values: dict | None, *args: str, release: str, namespace: str) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        return helm("template", release, str(CHART), "--namespace", namespace, "--values", f.name, *args)


def of_kind(docs: Iterable[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def component(doc: dict) -> str | None:
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def scaling_problems(docs: list[dict], *, broker: str, targets: set[str] | None = None,
                     secrets: dict[str, set[str]] | None = None) -> list[str]:
    """KEDA objects: one ScaledObject per stage function on the rabbitmq
    scaler in QueueLength mode, watching `queue_name(function, broker)`,
    targeting a Deployment in `targets` (default: the rendered ones), its
    TriggerAuthentication rendered and pointing at a Secret key that exists
    (`secrets`: Secret name -> keys, for Secrets made outside the chart)."""
    problems = []
    targets = set(of_kind(docs, "Deployment")) if targets is None else targets
    keys = {name: set((s.get("stringData") or {}) | (s.get("data") or {})) for name, s in of_kind(docs, "Secret").items()}
    keys |= secrets or {}
    auths = of_kind(docs, "TriggerAuthentication")
    for name, auth in auths.items():
        refs = auth["spec"].get("secretTargetRef") or []
        if [r.get("parameter") for r in refs] != ["host"]:
            problems.append(f"TriggerAuthentication/{name}: give the rabbitmq scaler exactly its host (the AMQP URL)")
        for ref in refs:
            if ref["key"] not in keys.get(ref["name"], set()):
                problems.append(f"TriggerAuthentication/{name}: Secret {ref['name']} has no key {ref['key']}")
    scaled = of_kind(docs, "ScaledObject")
    seen = sorted(component(d) or "?" for d in scaled.values())
    if seen != sorted(STAGES):
        problems.append(f"ScaledObjects for {seen}, expected one per function {sorted(STAGES)}")
    for name, so in scaled.items():
        where, spec, fn = f"ScaledObject/{name}", so["spec"], component(so)
        ref = spec["scaleTargetRef"]
        if ref.get("kind", "Deployment") != "Deployment" or ref["name"] not in targets:
            problems.append(f"{where}: targets {ref.get('kind', 'Deployment')}/{ref['name']}, not one of {sorted(targets)}")
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            problems.append(f"{where}: minReplicaCount above maxReplicaCount")
        triggers = spec["triggers"]
        if [t["type"] for t in triggers] != ["rabbitmq"]:
            problems.append(f"{where}: expected one rabbitmq trigger, got {[t['type'] for t in triggers]}")
            continue
        meta = triggers[0]["metadata"]
        if meta.get("queueName") != queue_name(fn or "?", broker):
            problems.append(f"{where}: queueName {meta.get('queueName')!r}, but the bus declares "
                            f"{queue_name(fn or '?', broker)!r} for {fn}")
        value = meta.get("value")
        if meta.get("mode") != "QueueLength" or not (isinstance(value, str) and value.isdigit() and int(value) >= 1):
            problems.append(f"{where}: mode must be QueueLength with an integer value >= 1, got {meta}")
        if meta.get("protocol") not in ("amqp", "auto") or "host" in meta:
            problems.append(f"{where}: the AMQP URL comes from the TriggerAuthentication, over amqp")
        if (triggers[0].get("authenticationRef") or {}).get("name") not in auths:
            problems.append(f"{where}: authenticationRef names no rendered TriggerAuthentication")
    return problems


def workload_problems(docs: list[dict], *, secrets: Iterable[str] = ()) -> list[str]:
    """Deployments and Services: security, probes, references."""
    problems = []
    config_maps, secret_names = set(of_kind(docs, "ConfigMap")), set(of_kind(docs, "Secret")) | set(secrets)
    accounts = set(of_kind(docs, "ServiceAccount"))
    for name, dep in of_kind(docs, "Deployment").items():
        where, pod = f"Deployment/{name}", dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in dep["spec"]["selector"]["matchLabels"].items()):
            problems.append(f"{where}: the selector does not match the pod's labels")
        sc = pod.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") and sc.get("runAsUser") == UID and sc.get("runAsGroup") == UID):
            problems.append(f"{where}: the pod must run as uid/gid {UID}, non-root")
        if pod.get("serviceAccountName") not in accounts or pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: a ServiceAccount of the chart, without a mounted token")
        volumes = {v["name"] for v in pod.get("volumes") or []}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            cw = f"{where} container {c['name']}"
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False or csc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{cw}: no privilege escalation, every capability dropped")
            if not csc.get("readOnlyRootFilesystem"):
                problems.append(f"{cw}: read-only root filesystem")
            for mount in c.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    problems.append(f"{cw}: mounts {mount['name']}, which the pod does not have")
            for src in c.get("envFrom") or []:
                ref = src.get("configMapRef") or src.get("secretRef")
                known = config_maps if "configMapRef" in src else secret_names
                if ref["name"] not in known:
                    problems.append(f"{cw}: envFrom {ref['name']} is not rendered (nor given)")
            if not {"requests", "limits"} <= set(c.get("resources") or {}):
                problems.append(f"{cw}: resources need requests and limits")
            if c in pod["containers"]:
                problems += _probe_problems(cw, c)
    for name, svc in of_kind(docs, "Service").items():
        pods = [d for d in of_kind(docs, "Deployment").values()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())]
        if len(pods) != 1:
            problems.append(f"Service/{name}: its selector matches {len(pods)} Deployments")
            continue
        ports = {p.get("name") for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            if port["targetPort"] not in ports:
                problems.append(f"Service/{name}: targetPort {port['targetPort']} is not a named container port")
    return problems


def _probe_problems(where: str, container: dict) -> list[str]:
    problems = []
    ports = {p.get("name") for p in container.get("ports") or []}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (container.get(kind) or {}).get("httpGet") or {}
        if get.get("path") != "/healthz" or get.get("port") not in ports:
            problems.append(f"{where}: {kind} must GET /healthz on a named port of the container")
    return problems


def autoscaled(docs: list[dict]) -> set[str]:
    """Names of the Deployments an HPA or ScaledObject scales."""
    return {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")}


def describe(docs: list[dict]) -> list[str]:
    return sorted(name_of(d) for d in docs)
