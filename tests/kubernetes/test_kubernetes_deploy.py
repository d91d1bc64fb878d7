"""The kind path CI runs: manifests against the Kubernetes JSON schemas (kubernetes-validate),
workflows against the GitHub workflow schema (check-jsonschema's vendored copy), and the
cross-references between them (ports, labels, image tag, paths)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
K8S_VERSION = "1.31.0"  # kind v0.24's default node image

kubernetes_validate = pytest.importorskip("kubernetes_validate")


def docs() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_everything_lives_in_chaos_demo() -> None:
    for doc in docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "chaos-demo", doc["metadata"]["name"]


def test_demo_api_deployment() -> None:
    api = find("Deployment", "api")
    assert api["spec"]["replicas"] == 3
    (c,) = api["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert c["image"] == "pytest-resilience-demo:ci" and c["imagePullPolicy"] == "IfNotPresent"
    pdb = find("PodDisruptionBudget", "api")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pdb["spec"]["minAvailable"] < api["spec"]["replicas"]  # a drain can make progress


def test_every_service_selects_a_deployment() -> None:
    labels = [
        d["spec"]["template"]["metadata"]["labels"] for d in docs() if d["kind"] == "Deployment"
    ]
    for svc in (d for d in docs() if d["kind"] == "Service"):
        assert any(svc["spec"]["selector"].items() <= lab.items() for lab in labels), svc


def test_toxiproxy_proxies_point_at_services() -> None:
    dep = find("Deployment", "toxiproxy")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "ghcr.io/shopify/toxiproxy:"
    )
    proxies = json.loads(find("ConfigMap", "toxiproxy")["data"]["toxiproxy.json"])
    services = {d["metadata"]["name"]: d for d in docs() if d["kind"] == "Service"}
    assert {p["name"] for p in proxies} == {"postgres", "redis"}
    for proxy in proxies:
        host, port = proxy["upstream"].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
        listen = int(proxy["listen"].rsplit(":", 1)[1])
        assert listen in {p["port"] for p in services["toxiproxy"]["spec"]["ports"]}


def test_kind_config_publishes_the_node_ports() -> None:
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert (kind["apiVersion"], kind["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    roles = [n["role"] for n in kind["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    mappings = {m["hostPort"]: m["containerPort"] for m in kind["nodes"][0]["extraPortMappings"]}
    node_ports = {
        p["port"]: p["nodePort"]
        for d in docs()
        if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"
        for p in d["spec"]["ports"]
    }
    assert mappings == {8474: node_ports[8474], 9090: node_ports[9090], 8080: node_ports[8080]}
    assert all(30000 <= p <= 32767 for p in mappings.values())


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_the_kind_path(path: Path) -> None:
    wf = yaml.safe_load(path.read_text())
    (job,) = wf["jobs"].values()
    uses = [s.get("uses", "") for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    kind_step = next(s for s in job["steps"] if s.get("uses", "").startswith("helm/kind-action@"))
    assert (ROOT / kind_step["with"]["config"]).exists()
    assert kind_step["with"]["cluster_name"] == "chaos"  # -> context kind-chaos
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert "docker build -f deploy/Dockerfile.demo -t pytest-resilience-demo:ci ." in runs
    assert "kind load docker-image pytest-resilience-demo:ci --name chaos" in runs
    assert "kubectl apply -f deploy/k8s/" in runs
    command = " ".join(runs.split())
    for part in (
        "pytest -m chaos scenarios/",
        "--chaos-target=kubernetes",
        "--kube-context kind-chaos",
        "--chaos-namespace chaos-demo",
        "--html=report.html --self-contained-html",
        "--resilience-report=resilience.html",
    ):
        assert part in command, part


def test_triggers() -> None:
    chaos = yaml.safe_load((ROOT / ".github/workflows/chaos.yml").read_text())
    weekly = yaml.safe_load((ROOT / ".github/workflows/weekly-resilience.yml").read_text())
    assert {"push", "pull_request"} <= set(chaos[True])  # YAML 1.1 reads the key `on` as True
    assert "workflow_dispatch" in weekly[True] and weekly[True]["schedule"][0]["cron"]
    steps = weekly["jobs"]["resilience"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "resilience-history"


def test_dockerfile_runs_the_demo_api() -> None:
    text = (ROOT / "deploy" / "Dockerfile.demo").read_text()
    assert (
        text.splitlines()[2].startswith("FROM python:3.11-slim") or "FROM python:3.11-slim" in text
    )
    assert 'ENTRYPOINT ["python", "-m", "pytest_resilience.demo.api"]' in text
    assert importlib.util.find_spec("pytest_resilience.demo.api") is not None
    assert "pip install ." in text
