"""deploy/: the Kubernetes base validates against the Kubernetes schemas, passes the checkov
security linter with no failed check, and agrees with itself, the compose file, the
Dockerfile and the gateway (drain time, ports, probes, the metric the HPA scales on)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from app.metrics import Metrics
from tests.servers import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
# Custom resources: no schema in kubernetes-validate; checked by hand below.
CRDS = {"ServiceMonitor", "ScaledObject"}
CHECKOV = Path(os.environ.get("SPEECHGATE_CHECKOV", ROOT / ".venv-tools" / "bin" / "checkov"))


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> dict[str, list[dict[str, Any]]]:
    kustomization = load(K8S / "kustomization.yaml")[0]
    files = [*kustomization["resources"], "secret.example.yaml", "keda/scaledobject.yaml"]
    return {name: load(K8S / name) for name in files}


def by_kind(kind: str, name: str = "speechgate") -> dict[str, Any]:
    for docs in manifests().values():
        for doc in docs:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind}/{name} in deploy/k8s")


def test_every_manifest_is_valid_for_kubernetes() -> None:
    seen: list[str] = []
    for name, docs in manifests().items():
        for doc in docs:
            seen.append(doc["kind"])
            assert doc["metadata"].get("namespace") == "speechgate" or \
                doc["kind"] == "Namespace", (name, doc["metadata"])
            if doc["kind"] in CRDS:
                continue
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "ServiceMonitor", "StatefulSet", "NetworkPolicy", "Secret", "ScaledObject"):
        assert kind in seen, kind


def test_checkov_finds_nothing() -> None:
    assert CHECKOV.exists(), (f"{CHECKOV} is missing: `make test` installs checkov in its own "
                              "virtualenv (.venv-tools), or set SPEECHGATE_CHECKOV")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(DEPLOY), "--framework", "kubernetes", "dockerfile",
         "--skip-download", "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    checked = {r["check_type"]: r["summary"] for r in reports}
    assert set(checked) == {"kubernetes", "dockerfile"}, checked
    for report in reports:
        failed = report["results"]["failed_checks"]
        assert not failed, [(f["check_id"], f["check_name"], f["file_path"]) for f in failed]
        assert report["summary"]["passed"] > 0 and report["summary"]["parsing_errors"] == 0
        # Every skip says why, in the manifest (checkov.io/skipN: CHECK=reason).
        for skipped in report["results"]["skipped_checks"]:
            reason = skipped["check_result"].get("suppress_comment") or ""
            assert len(reason) > 20, skipped["check_id"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_rolling_updates_drain_before_the_pod_goes() -> None:
    deployment = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    env = _env(gateway)
    pause = int(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env["SPEECHGATE_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"  # 503 while draining
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    port = gateway["ports"][0]["containerPort"]
    assert env["SPEECHGATE_PORT"] == str(port)
    # One worker per CPU of the limit.
    assert int(env["SPEECHGATE_WORKERS"]) == int(gateway["resources"]["limits"]["cpu"])
    assert by_kind("PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]
    monitor = by_kind("ServiceMonitor")
    assert monitor["spec"]["selector"] == deployment["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_autoscaling_uses_a_metric_the_gateway_exports() -> None:
    exported = Metrics().render().decode()
    hpa = by_kind("HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert f"# TYPE {metric} gauge" in exported
    keda = by_kind("ScaledObject")
    assert metric in keda["spec"]["triggers"][0]["metadata"]["query"]
    assert keda["spec"]["triggers"][0]["metadata"]["threshold"] == \
        hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]


def test_compose_runs_what_kubernetes_runs() -> None:
    compose = load(DEPLOY / "compose.yaml")[0]
    service = compose["services"]["gateway"]
    (gateway,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert service["image"] == gateway["image"]
    assert service["command"] == gateway["args"]
    k8s_env = _env(gateway)
    for name in ("SPEECHGATE_PORT", "SPEECHGATE_WORKERS", "SPEECHGATE_DRAIN_SECONDS",
                 "SPEECHGATE_HOST"):
        assert str(service["environment"][name]) == k8s_env[name], name
    secret_keys = set(by_kind("Secret", "speechgate-secrets")["stringData"])
    assert secret_keys <= set(service["environment"]), secret_keys - set(service["environment"])
    assert service["ports"][0].endswith(":" + k8s_env["SPEECHGATE_PORT"])
    assert service["read_only"] is True
    grace = int(str(service["stop_grace_period"]).rstrip("s"))
    assert grace >= float(k8s_env["SPEECHGATE_DRAIN_SECONDS"]) + 5
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {k8s_env['SPEECHGATE_PORT']}" in dockerfile
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert dockerfile.count("FROM ") >= 2  # multi-stage


def test_the_dashboard_plots_only_metrics_the_gateway_exports() -> None:
    import re

    exported = Metrics().render().decode()
    families = set(re.findall(r"^# TYPE (\S+) (\S+)", exported, re.M))
    names: set[str] = set()
    for name, kind in families:
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {m for panel in dashboard["panels"] for target in panel["targets"]
            for m in re.findall(r"\b(speechgate_\w+)", target["expr"])}
    assert used and used <= names, used - names
    for wanted in ("speechgate_active_sessions", "speechgate_first_result_seconds_bucket",
                   "speechgate_final_after_end_seconds_bucket",
                   "speechgate_upstream_errors_total", "speechgate_admission_refusals_total",
                   "speechgate_drain_sessions_remaining"):
        assert wanted in used, wanted
