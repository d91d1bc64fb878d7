"""API requests of one pod kill on the Kubernetes target, 10 vs 1,000 pods in the namespace.

A pod kill is: delete the pod (grace 0), then wait through a watch until a replacement is
Ready. With the probes on, each kill is followed by one probe interval of the built-in
probes (the engine's and the SLOs' source): one pod listing, then one pod-proxy GET of
/metrics per api pod. Counted at kmock's emulator (every HTTP request the official client
sends), with the emulator's test controllers standing in for the ReplicaSet controller and
kubelet. Goal: the count does not grow with the namespace (within 20%), i.e. no polling
over pods.

Run: python benchmarks/bench_kube_requests.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kubernetes"))

from kube_controllers import DEPLOYMENTS, EmulatedCluster

from pytest_resilience.probes import BuiltinProbes
from pytest_resilience.targets.base import Pod
from pytest_resilience.targets.kubernetes import KubernetesTarget

API_REPLICAS = 3


def oldest(target: KubernetesTarget, cluster: EmulatedCluster) -> Pod:
    """The longest-running api pod: never the replacement of this bench's last kill.

    (Killing a fresh replacement before ``wait_ready`` has seen it replaced makes
    ``wait_ready`` wait for one replacement too many: see
    test_wait_ready_after_killing_a_replacement in tests/kubernetes/test_kubernetes_target.py.)
    """
    pods = {p.name: p for p in target.select("app=api")}
    objs = [o for o in cluster.pods_of("chaos-demo", "api") if o["metadata"]["name"] in pods]
    first = min(objs, key=lambda o: (o["metadata"]["creationTimestamp"], o["metadata"]["name"]))
    return pods[first["metadata"]["name"]]


def with_metrics_port(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    """The api template as deploy/k8s/api.yaml has it (port http 8080, prometheus.io/port),
    and pods that answer /metrics on it."""
    import kubernetes.client as kc

    kc.AppsV1Api(target.conn.api_client()).patch_namespaced_deployment(
        "api",
        "chaos-demo",
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/ports",
                "value": [{"name": "http", "containerPort": 8080}],
            },
            {
                "op": "add",
                "path": "/spec/template/metadata/annotations",
                "value": {"prometheus.io/port": "8080"},
            },
        ],
    )
    cluster.pod_http[("GET", "*", "8080", "/metrics")] = (200, "demo_db_pool_in_use 1\n")
    cluster.eventually(
        lambda: (cluster.obj(DEPLOYMENTS, "chaos-demo", "api") or {})["metadata"]["generation"] == 2
    )
    target.wait_ready("api", timeout=30)
    cluster.eventually(
        lambda: len(list(cluster.pods_of("chaos-demo", "api", terminating=True))) == API_REPLICAS
    )


def measure(total_pods: int, kills: int = 5) -> tuple[float, float, float, int, float]:
    """Mean requests per kill (kill+wait_replaced), per kill+wait_ready, seconds per kill,
    the most for one kill, and requests per kill with one probe interval after it."""
    with EmulatedCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.seed(replicas=API_REPLICAS, filler=total_pods - API_REPLICAS)
        target = KubernetesTarget(
            kubeconfig=str(cluster.kubeconfig(Path(tmp))), namespace="chaos-demo"
        )
        with_metrics_port(target, cluster)
        probes = BuiltinProbes(target, None, "api", max_age_s=0)
        try:
            counts, counts_ready, counts_probed, secs = [], [], [], []
            for _ in range(kills):
                victim = oldest(target, cluster)
                before = len(cluster.requests())
                started = time.perf_counter()
                target.kill_pod(victim)
                target.wait_replaced(victim, timeout=30)
                secs.append(time.perf_counter() - started)
                counts.append(len(cluster.requests()) - before)
                victim = oldest(target, cluster)
                before = len(cluster.requests())
                target.kill_pod(victim)
                target.wait_replaced(victim, timeout=30)
                target.wait_ready("api", timeout=30)
                counts_ready.append(len(cluster.requests()) - before)
                victim = oldest(target, cluster)
                before = len(cluster.requests())
                target.kill_pod(victim)
                target.wait_replaced(victim, timeout=30)
                scraped = probes.scrape()  # one probe interval: list + a GET per pod
                counts_probed.append(len(cluster.requests()) - before)
                assert len(scraped) >= API_REPLICAS - 1, scraped  # the probes really read
        finally:
            probes.close()
            target.close()
        return (
            sum(counts) / kills,
            sum(counts_ready) / kills,
            sum(secs) / kills,
            max(counts),
            sum(counts_probed) / kills,
        )


def main() -> None:
    small = measure(10)
    large = measure(1000)
    print(
        "pod kill (delete grace 0 + watch until a replacement is Ready), requests at the emulator"
    )
    print(
        f"{'pods in namespace':>18} {'req/kill':>9} {'max':>4} {'+wait_ready':>12} "
        f"{'+probes':>8} {'s/kill':>8}"
    )
    for n, (req, req_ready, s, top, req_probed) in ((10, small), (1000, large)):
        print(f"{n:>18} {req:>9.1f} {top:>4} {req_ready:>12.1f} {req_probed:>8.1f} {s:>8.3f}")
    print("(2 = delete + list that already shows the Ready replacement; 3 = delete + list + watch)")
    print(f"(+probes: one probe interval = 1 pod listing + {API_REPLICAS} pod-proxy GETs)")
    for what, i in (("kill", 0), ("kill + probes", 4)):
        ratio = large[i] / small[i]
        print(
            f"requests ratio 1000/10 pods, {what}: {ratio:.2f} (goal: within 0.8..1.2) -> "
            f"{'OK' if 0.8 <= ratio <= 1.2 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
