"""The kind path of both workflows: every image on the nodes before the cluster is used,
the whole scenarios/ set, and the list of what kind skips, printed.

A kind node pulls from the internet unless the image is already in its containerd
(``kind load docker-image``) and the pod's pull policy lets it use that copy (a pinned
tag: IfNotPresent; ``:latest`` means Always). A pull at fault time (the network block's
ephemeral container) makes a chaos run depend on Docker Hub's rate limit, so every image
the manifests and the target use is pulled or built once, loaded, and only then applied.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
#: the demo (applied as a directory before the scenarios) and the engine with its Alertmanager
#: (applied file by file after them): every image of deploy/ is on the nodes before its apply
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) + sorted(
    (ROOT / "deploy" / "engine").glob("*.yaml")
)
DEMO_IMAGE = "pytest-resilience-demo:ci"


def images_of(path: Path) -> set[str]:
    images: set[str] = set()
    for doc in yaml.safe_load_all(path.read_text()):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            images.add(c["image"])
    return images


def manifest_images() -> set[str]:
    return set().union(*(images_of(path) for path in MANIFESTS))


def applies(run: str, path: Path) -> bool:
    """Whether a step's script applies the manifest (the file itself or its directory)."""
    rel = path.relative_to(ROOT)
    for line in run.replace("\\\n", " ").splitlines():
        words = line.split()
        if words[:2] == ["kubectl", "apply"] and "-f" in words:
            given = words[words.index("-f") + 1]
            if given in (str(rel), f"{rel.parent}/", str(rel.parent)):
                return True
    return False


def net_image() -> str:
    """The ephemeral container image the Kubernetes target uses by default."""
    from pytest_resilience.targets.kubernetes import KubernetesTarget

    return str(inspect.signature(KubernetesTarget.__init__).parameters["net_image"].default)


def steps(path: Path) -> list[dict[str, Any]]:
    (job,) = yaml.safe_load(path.read_text())["jobs"].values()
    return list(job["steps"])


def index_of(all_steps: list[dict[str, Any]], needle: str) -> int:
    found = [i for i, s in enumerate(all_steps) if needle in " ".join(s.get("run", "").split())]
    assert found, f"no step runs {needle!r}"
    return found[0]


def test_every_image_has_a_pinned_tag_the_node_can_reuse() -> None:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                tag = c["image"].rsplit(":", 1)[-1] if ":" in c["image"] else "latest"
                assert tag != "latest", f"{path.name}: {c['image']} would be pulled (Always)"
                assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent", c["image"]
    assert ":" in net_image() and not net_image().endswith(":latest")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_image_is_loaded_before_the_cluster_is_used(path: Path) -> None:
    all_steps = steps(path)
    apply_at = index_of(all_steps, "kubectl apply -f deploy/k8s/")
    pytest_at = index_of(all_steps, "pytest -m chaos scenarios/ -rs")
    build_at = index_of(all_steps, f"docker build -f deploy/Dockerfile.demo -t {DEMO_IMAGE} .")
    assert build_at < apply_at
    loaded: set[str] = set()
    pulled: set[str] = set()
    for s in all_steps[:apply_at]:
        for line in s.get("run", "").replace("\\\n", " ").splitlines():  # continuations
            words = line.split()
            if words[:3] == ["kind", "load", "docker-image"]:
                loaded |= {w for w in words[3:] if not w.startswith("-") and w != "chaos"}
            if words[:2] == ["docker", "pull"]:
                pulled |= {w for w in words[2:] if not w.startswith("-")}
        assert "$" not in " ".join(loaded), "images are named literally, so this test can see them"
    wanted = manifest_images() | {net_image()}
    assert wanted <= loaded, f"not loaded into the nodes: {sorted(wanted - loaded)}"
    assert wanted - {DEMO_IMAGE} <= pulled, f"not pulled first: {sorted(wanted - pulled)}"
    assert apply_at < pytest_at
    # and each manifest that has images is applied only after they are loaded
    load_at = max(
        i
        for i, s in enumerate(all_steps)
        if "kind load docker-image" in s.get("run", "") and "docker pull" in s.get("run", "")
    )
    for path in MANIFESTS:
        applied = [i for i, s in enumerate(all_steps) if applies(s.get("run", ""), path)]
        if images_of(path):
            assert applied, f"{path.relative_to(ROOT)} has images but no step applies it"
            assert load_at < applied[0], f"{path.name} applied before its images are loaded"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_prints_what_runs_on_kind_and_what_is_skipped(path: Path) -> None:
    all_steps = steps(path)
    listing = index_of(all_steps, "pytest --collect-only -q -m chaos scenarios/")
    skipped = index_of(all_steps, "--setup-plan")
    run_at = index_of(all_steps, "pytest -m chaos scenarios/ -rs")
    assert listing < run_at and skipped < run_at
    text = " ".join(all_steps[skipped]["run"].split())
    for part in ("-m chaos scenarios/", "--chaos-target=kubernetes", "-rs", "SKIPPED"):
        assert part in text, part
    run = " ".join(all_steps[run_at]["run"].split())
    assert "-rs" in run  # the run's summary names every skip with its reason too
    assert " -k " not in run and "--deselect" not in run  # the whole set, no cherry-picking


METRICS_SERVER_IMAGE = "registry.k8s.io/metrics-server/metrics-server:v0.7.2"
HPA_MANIFEST = ROOT / "deploy" / "k8s" / "autoscaling" / "api-hpa.yaml"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_metrics_server_is_installed_for_kind_before_the_scenarios(path: Path) -> None:
    """The HPA's CPU metric on kind: metrics-server pinned to the release whose image was
    loaded, with --kubelet-insecure-tls (kind's kubelets serve self-signed certificates),
    rolled out and serving the api pods' CPU before the scenarios; the HPA manifest, which
    the high-load scenario applies for its own duration, checked by the API server there."""
    all_steps = steps(path)
    at = index_of(all_steps, "metrics-server/releases/download/v0.7.2/components.yaml")
    run = all_steps[at]["run"]
    text = " ".join(run.replace("\\\n", " ").split())
    assert "kubectl apply -f https://github.com/kubernetes-sigs/metrics-server/releases/" in text
    assert '"value":"--kubelet-insecure-tls"' in text
    assert "rollout status deployment/metrics-server" in text
    assert "top pods -l app=api" in text  # the metrics API answers before anything needs it
    assert "kubectl apply --dry-run=server -f deploy/k8s/autoscaling/api-hpa.yaml" in text
    loaded_at = index_of(all_steps, f"docker pull {METRICS_SERVER_IMAGE}")
    load = " ".join(all_steps[loaded_at]["run"].replace("\\\n", " ").split())
    assert METRICS_SERVER_IMAGE in load.split("kind load docker-image", 2)[-1]
    assert loaded_at < at < index_of(all_steps, "pytest -m chaos scenarios/ -rs")
    assert index_of(all_steps, "kubectl apply -f deploy/k8s/") < at  # the api pods exist


def test_the_hpa_manifest_is_valid_kubernetes_and_not_applied_with_the_demo() -> None:
    """deploy/k8s/ is applied as a directory (not recursively): the HPA sits one level
    down, so only the high-load scenario puts the api under it. The manifest and the object
    the target creates from it match the schema of kind's Kubernetes."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from pytest_resilience.targets.hpa_spec import AutoscalerSpec

    assert HPA_MANIFEST.parent != ROOT / "deploy" / "k8s"
    for path in WORKFLOWS:
        assert not any(
            "-R" in s.get("run", "").split() or "--recursive" in s.get("run", "")
            for s in steps(path)
            if "kubectl apply" in s.get("run", "")
        )
    (doc,) = [d for d in yaml.safe_load_all(HPA_MANIFEST.read_text()) if d]
    kubernetes_validate.validate(doc, "1.31.0", strict=True)
    spec = AutoscalerSpec.from_manifest(HPA_MANIFEST)
    created = spec.to_object(namespace="chaos-demo", labels={"app": "api"})
    kubernetes_validate.validate(created, "1.31.0", strict=True)
    assert created["spec"] == {**doc["spec"], "behavior": created["spec"]["behavior"]}
