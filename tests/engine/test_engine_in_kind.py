"""The engine in the kind cluster: deploy/engine/alertmanager.yaml and the workflow step that
deploys it with the engine, after the chaos scenarios, and proves the path end to end.

The step posts one kube-prometheus ``KubePodCrashLooping`` for a real api pod to a real
Alertmanager (configured by deploy/engine/alertmanager-receiver.yaml itself, as a ConfigMap made
from that file), which routes it to the engine; the crash-loop playbook must replace the pod.
Here: the manifest against the Kubernetes schemas and against what the step creates (the
ConfigMap, the engine's token Secret, where credentials_file reads it); the step's order and
contents in both kind workflows; and the same path on this machine, with Debian's Alertmanager
running the receiver config (only the engine's address and the token file's path changed),
deploy/engine/smoke-alert.py posting exactly as the workflow runs it, and its ``acted`` check
on the real postmortem. deploy/engine is not deploy/k8s: the engine's ClusterRole has no
namespace, and the workflows apply deploy/engine only after the scenarios.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import Engine
from pytest_resilience.prometheus.alertmanager import ManagedAlertmanager

ROOT = Path(__file__).resolve().parents[2]
ENGINE_DIR = ROOT / "deploy" / "engine"
ENGINE_YAML = ENGINE_DIR / "engine.yaml"
ALERTMANAGER_YAML = ENGINE_DIR / "alertmanager.yaml"
RECEIVER_YAML = ENGINE_DIR / "alertmanager-receiver.yaml"
SMOKE = ENGINE_DIR / "smoke-alert.py"
WORKFLOWS = [ROOT / ".github" / "workflows" / n for n in ("chaos.yml", "weekly-resilience.yml")]
SAMPLE = ROOT / "tests" / "payloads" / "alertmanager-0.25-kube-pod-crashlooping-firing.body"
K8S_VERSION = (
    "1.31.0"  # kind v0.24's default node image, as tests/kubernetes/test_kubernetes_deploy.py
)
STEP = "Engine in the cluster"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _container(path: Path) -> dict[str, Any]:
    (container,) = _one(path, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"])


def _steps(path: Path) -> list[dict[str, Any]]:
    (job,) = yaml.safe_load(path.read_text())["jobs"].values()
    return list(job["steps"])


def _engine_step(path: Path) -> tuple[int, dict[str, Any]]:
    (found,) = [(i, s) for i, s in enumerate(_steps(path)) if s.get("name", "").startswith(STEP)]
    return found


def _script(path: Path) -> str:
    """The step's shell script on one line: continuations joined, whitespace runs one space."""
    return " ".join(re.sub(r"\\\n", " ", _engine_step(path)[1]["run"]).split())


# -- the manifest -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc", _docs(ALERTMANAGER_YAML), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_the_alertmanager_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert doc["metadata"]["namespace"] == "chaos-demo"  # where the engine acts


def test_alertmanager_runs_as_its_image_says_with_one_replica_and_its_readiness() -> None:
    deployment = _one(ALERTMANAGER_YAML, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    container = _container(ALERTMANAGER_YAML)
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", container["image"]), container
    assert container.get("imagePullPolicy") == "IfNotPresent"  # the copy kind load put there
    flags = _flags(container)
    assert {"config.file", "storage.path"} <= set(flags)  # the image's own CMD, repointed
    assert flags.get("cluster.listen-address") == ""  # alone: no peers to wait for
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert flags["storage.path"] in mounts and not mounts[flags["storage.path"]].get("readOnly")
    (port,) = container["ports"]
    assert port["containerPort"] == 9093
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/-/ready", port["name"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)  # image USER is a name
    service = _one(ALERTMANAGER_YAML, "Service")
    assert service["spec"]["selector"].items() <= pod_labels(ALERTMANAGER_YAML).items(), (
        "the Service selects the Deployment's pods"
    )
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (9093, port["name"])
    ]


def pod_labels(path: Path) -> dict[str, str]:
    return _one(path, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_alertmanager_reads_the_receiver_config_and_the_engines_token(workflow: Path) -> None:
    """The ConfigMap the step makes from alertmanager-receiver.yaml is the file --config.file
    names; the Secret the step makes is the engine's, mounted where credentials_file reads."""
    script = _script(workflow)
    container = _container(ALERTMANAGER_YAML)
    volumes = {v["name"]: v for v in _one(ALERTMANAGER_YAML, "Deployment")["spec"]["template"][
        "spec"]["volumes"]}  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    # the config: one source, the receiver file, under the key --config.file reads
    made = re.search(r"kubectl -n \$ns create configmap (\S+) --from-file=([\w.-]+)=(\S+)", script)
    assert made, "the step creates the ConfigMap with --from-file"
    name, key, source = made.groups()
    assert source == str(RECEIVER_YAML.relative_to(ROOT))
    (config,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == name]
    assert _flags(container)["config.file"] == f"{mounts[config]}/{key}"
    assert "alertmanager.yml" not in {
        d.get("metadata", {}).get("name") for d in _docs(ALERTMANAGER_YAML)
    }, "no second copy of the config in the manifest"
    # the token: the engine's Secret, where the receiver's credentials_file says
    made = re.search(r"create secret generic (\S+) --from-literal=(\w+)=", script)
    assert made, "the step creates the webhook token Secret"
    secret, secret_key = made.groups()
    (engine_env,) = [
        e for e in _container(ENGINE_YAML)["env"] if e["name"] == _flags(
            _container(ENGINE_YAML))["token-env"]
    ]  # fmt: skip
    assert engine_env["valueFrom"]["secretKeyRef"] == {"name": secret, "key": secret_key}
    (token,) = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == secret]
    receiver = yaml.safe_load(RECEIVER_YAML.read_text())
    (webhook,) = [w for r in receiver["receivers"] for w in r.get("webhook_configs", [])]
    credentials = webhook["http_config"]["authorization"]["credentials_file"]
    assert credentials == f"{mounts[token]}/{secret_key}"


def test_the_smoke_alert_goes_to_the_alertmanager_service() -> None:
    service = _one(ALERTMANAGER_YAML, "Service")
    meta, (port,) = service["metadata"], service["spec"]["ports"]
    text = SMOKE.read_text()
    assert f'default="http://{meta["name"]}.{meta["namespace"]}.svc:{port["port"]}"' in text


def test_the_smoke_alert_carries_the_labels_kube_prometheus_gives_it() -> None:
    """The labels are the real sample's (less what only a scrape adds: instance, uid ...)."""
    sample = json.loads(
        "".join(line for line in SAMPLE.read_text().splitlines() if not line.startswith("#"))
    )
    (real,) = sample["alerts"]
    smoke = _load_smoke()
    posted = smoke.alert("shop", real["labels"]["pod"], real["labels"]["container"])
    assert {"alertname", "namespace", "pod", "container", "job", "severity"} <= set(
        posted["labels"]
    )
    assert posted["labels"].items() <= real["labels"].items()
    assert posted["annotations"] == real["annotations"]
    assert set(posted) == {"labels", "annotations", "startsAt"}  # postableAlert, still firing


def _load_smoke():
    import importlib.util

    spec = importlib.util.spec_from_file_location("smoke_alert", SMOKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the workflow step --------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_the_engine_is_deployed_after_the_scenarios_and_before_the_cleanup(
    workflow: Path,
) -> None:
    steps = _steps(workflow)
    at, step = _engine_step(workflow)
    scenarios = [i for i, s in enumerate(steps) if "pytest -m chaos scenarios/ -rs" in
                 " ".join(s.get("run", "").split())]  # fmt: skip
    cleanup = [i for i, s in enumerate(steps) if "--chaos-cleanup" in s.get("run", "")]
    assert scenarios and cleanup
    assert scenarios[-1] < at < cleanup[0]
    assert "if" not in step  # only after the scenarios passed: nothing of theirs still running
    assert not any("deploy/engine" in s.get("run", "") for s in steps[:at]), (
        "the engine must not be in the cluster while the scenarios run"
    )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_the_step_deploys_posts_a_crashloop_and_waits_for_the_pod_replaced(
    workflow: Path,
) -> None:
    script = _script(workflow)
    engine = _one(ENGINE_YAML, "Deployment")["metadata"]["name"]
    alertmanager = _one(ALERTMANAGER_YAML, "Deployment")["metadata"]["name"]
    assert "kubectl apply -f deploy/engine/engine.yaml" in script
    assert "kubectl apply -f deploy/engine/alertmanager.yaml" in script
    (rollout,) = re.findall(r"for d in ([\w -]+); do kubectl -n \$ns rollout status", script)
    assert {engine, alertmanager, "api"} <= set(rollout.split())
    # the alert: posted from inside the cluster, through Alertmanager, by the smoke script
    post = f"kubectl -n $ns exec -i deploy/{engine} -- python - post --namespace $ns --pod"
    assert post in script and f"< {SMOKE.relative_to(ROOT)}" in script
    assert _load_smoke().ALERTNAME == "KubePodCrashLooping"
    # the poll: incidents of the store engine.yaml writes, with a deadline
    store = _flags(_container(ENGINE_YAML))["store"]
    assert f"store={store}" in script
    assert 'incidents --store "$store" --format json' in script
    assert 'select(.alert == "KubePodCrashLooping")' in script
    assert f'python {SMOKE.relative_to(ROOT)} acted --pod "$pod"' in script
    assert re.search(r"deadline=\$\(\(SECONDS \+ \d+\)\)", script)
    assert "exit 1" in script and "sleep" in script
    assert re.search(r"kubectl -n \$ns get pod \"\$pod\" --ignore-not-found", script)
    assert 'postmortem --store "$store" "$incident"' in script
    assert '>> "$GITHUB_STEP_SUMMARY"' in script
    assert "set -euo pipefail" in script
    syntax = subprocess.run(
        ["bash", "-n"], input=_engine_step(workflow)[1]["run"], capture_output=True, text=True
    )
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_a_failure_dumps_the_engine_and_alertmanager_logs(workflow: Path) -> None:
    steps = _steps(workflow)
    at, _ = _engine_step(workflow)
    dumps = [s for s in steps[at + 1 :] if s.get("if") == "failure()"]
    text = " ".join(" ".join(s.get("run", "").split()) for s in dumps)
    for name in (
        _one(p, "Deployment")["metadata"]["name"] for p in (ENGINE_YAML, ALERTMANAGER_YAML)
    ):
        assert f"kubectl -n chaos-demo logs deployment/{name}" in text, name


def test_both_kind_workflows_run_the_same_engine_step() -> None:
    chaos, weekly = (_engine_step(w)[1] for w in WORKFLOWS)
    assert chaos == weekly


# -- the same path on this machine --------------------------------------------------------------


class ReceiverAlertmanager(ManagedAlertmanager):
    """Debian's Alertmanager running deploy/engine/alertmanager-receiver.yaml as the cluster's
    does; only the engine's in-cluster address and the mounted token's path are this
    machine's."""

    def __init__(self, engine_url: str, token: str) -> None:
        super().__init__(engine_url)
        self._engine_url, self._token = engine_url, token

    def _prepare(self, workdir: Path) -> None:
        (workdir / "data").mkdir()
        receiver = yaml.safe_load(RECEIVER_YAML.read_text())
        (webhook,) = [w for r in receiver["receivers"] for w in r.get("webhook_configs", [])]
        text = RECEIVER_YAML.read_text()
        credentials = webhook["http_config"]["authorization"]["credentials_file"]
        for old, new in (
            (webhook["url"], self._engine_url),
            (credentials, str(workdir / "token")),
        ):
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        (workdir / "token").write_text(self._token)
        (workdir / "alertmanager.yml").write_text(text)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest_resilience.engine", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def _acted(postmortem: str, pod: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE), "acted", "--pod", pod],
        input=postmortem,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_receiver_config_routes_the_smoke_alert_to_the_engine_which_replaces_the_pod(
    tmp_path: Path,
) -> None:
    if shutil.which("prometheus-alertmanager") is None:
        reason = "prometheus-alertmanager not on PATH (Debian package prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)
    token = "smoke-" + os.urandom(8).hex()
    target = ProcTarget({"api": (2, {"v1": SLEEP}, "v1")})
    store = tmp_path / "engine.sqlite"
    engine = Engine(
        target,
        playbooks_dir=fast_playbooks(tmp_path / "books"),
        store_path=store,
        listen="127.0.0.1:0",
        webhook_token=token,
    ).start()
    try:
        pod = next(p for p in target.pods() if p.workload == "api").name
        with ReceiverAlertmanager(f"{engine.webhook_url}/alerts", token) as am:
            # as the workflow runs it: the script on stdin of `python -`
            with SMOKE.open() as script:
                posted = subprocess.run(
                    [sys.executable, "-", "post", "--alertmanager", am.url,
                     "--namespace", "default", "--pod", pod],
                    stdin=script, capture_output=True, text=True, timeout=30,
                )  # fmt: skip
            assert posted.returncode == 0, posted.stderr
            held = [a["labels"] for a in am.alerts()]
            assert [(a["alertname"], a["pod"]) for a in held] == [("KubePodCrashLooping", pod)]
            # group_wait (10s in the receiver config), then restart_pod and its verify
            wait_for(
                lambda: any(a.detail == f"replaced pod {pod}" for a in engine.actions()),
                timeout=90,
                what=f"the engine replacing {pod} (Alertmanager routed the alert there)",
            )
        assert pod not in {p.name for p in target.pods()}
        listed = _cli("incidents", f"--store={store}", "--format=json")
        assert listed.returncode == 0, listed.stderr
        (incident,) = [i for i in json.loads(listed.stdout) if i["alert"] == "KubePodCrashLooping"]
        postmortem = _cli("postmortem", f"--store={store}", incident["id"], "--format=json")
        assert postmortem.returncode == 0, postmortem.stderr
        yes = _acted(postmortem.stdout, pod)
        assert yes.returncode == 0, yes.stderr
        assert "replaced pod" in yes.stdout
        no = _acted(postmortem.stdout, "api-other-pod")
        assert no.returncode == 1 and "not 'api-other-pod'" in no.stderr
        assert _acted("not json", pod).returncode == 2
        # the token from credentials_file is what let it in: without it, refused
        anonymous = urllib.request.Request(
            f"{engine.webhook_url}/alerts", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=10)
        assert refused.value.code == 401
    finally:
        engine.close()
        target.close()
