"""KubernetesTarget reaching pods from outside the cluster, through the API server only.

Metrics and admin hooks go through the pod proxy subresource
(``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH``), the log through the log subresource
(``tailLines``). The real API server joins the port to the pod IP as given (a named port is
not resolved for pods), so the target resolves it itself: the ``prometheus.io/port``
annotation deploy/k8s/api.yaml declares, or a named container port.
"""

from __future__ import annotations

import pytest
from kube_controllers import DEPLOYMENTS, EmulatedCluster

from pytest_resilience.capabilities import missing, offered
from pytest_resilience.errors import TargetError
from pytest_resilience.probes import BuiltinProbes
from pytest_resilience.targets.base import PodAdmin, PodLogs, PodMetrics, Releases
from pytest_resilience.targets.kubernetes import KubernetesTarget

NS = "chaos-demo"
METRICS = "# TYPE demo_db_pool_in_use gauge\ndemo_db_pool_in_use 3\n"


def _as_in_deploy_k8s(
    target: KubernetesTarget, cluster: EmulatedCluster, *, annotated: bool = True
) -> None:
    """The api template as deploy/k8s/api.yaml declares it: port ``http`` 8080 and the
    ``prometheus.io/port`` annotation (here 9102, so the two ways are told apart); back
    once only the new pods are left (the old ones Terminating are listed too)."""
    import kubernetes.client as kc

    patch = [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/ports",
            "value": [{"name": "http", "containerPort": 8080}],
        }
    ]
    if annotated:
        patch.append(
            {
                "op": "add",
                "path": "/spec/template/metadata/annotations",
                "value": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
            }
        )
    kc.AppsV1Api(target.conn.api_client()).patch_namespaced_deployment("api", NS, patch)
    cluster.eventually(lambda: cluster.obj(DEPLOYMENTS, NS, "api")["metadata"]["generation"] == 2)
    target.wait_ready("api", timeout=20)
    cluster.eventually(
        lambda: (
            [
                bool(p["spec"]["containers"][0].get("ports"))
                for p in cluster.pods_of(NS, "api", terminating=True)
            ]
            == [True] * 3
        )
    )


def _proxied(cluster: EmulatedCluster) -> list[str]:
    return [r.path for r in cluster.requests() if (r.subresource or "").startswith("proxy")]


def test_the_target_offers_pod_metrics_admin_logs_and_releases() -> None:
    assert {"pod_metrics", "pod_admin", "pod_logs", "releases"} <= offered(KubernetesTarget)
    assert not {"pod_metrics", "pod_admin", "pod_logs", "releases"} & set(missing(KubernetesTarget))


def test_scrape_pod_goes_through_the_pod_proxy_on_the_annotated_port(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _as_in_deploy_k8s(target, cluster)
    assert isinstance(target, PodMetrics)
    cluster.pod_http[("GET", "*", "9102", "/metrics")] = (200, METRICS)
    pods = target.select("app=api")
    before = len(cluster.requests())
    texts = [target.scrape_pod(p, timeout=5) for p in pods]
    assert texts == [METRICS] * 3
    # one request per pod per scrape: the port came with the listing, no pod read
    assert len(cluster.requests()) - before == 3
    assert sorted(_proxied(cluster)) == sorted(
        f"/api/v1/namespaces/{NS}/pods/{p.name}:9102/proxy/metrics" for p in pods
    )
    assert target.metrics_address(pods[0]) is None  # nothing on this machine reaches it


def test_a_pod_that_does_not_answer_scrapes_as_none(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _as_in_deploy_k8s(target, cluster)
    pod = target.select("app=api")[0]
    assert target.scrape_pod(pod, timeout=5) is None  # the API server's 503: dial refused


def test_without_the_annotation_the_named_http_port_is_resolved_to_its_number(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _as_in_deploy_k8s(target, cluster, annotated=False)
    cluster.pod_http[("GET", "*", "8080", "/metrics")] = (200, METRICS)
    pod = target.select("app=api")[0]
    assert target.scrape_pod(pod, timeout=5) == METRICS
    assert _proxied(cluster)[-1].endswith(f"/pods/{pod.name}:8080/proxy/metrics")


def test_post_admin_through_the_pod_proxy_keeps_the_query(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _as_in_deploy_k8s(target, cluster)
    assert isinstance(target, PodAdmin)
    pod = target.select("app=api")[0]
    cluster.pod_http[("POST", pod.name, "8080", "/admin/pool/resize")] = (200, '{"max": 20}')
    assert target.post_admin(pod, "/admin/pool/resize?max=20", timeout=5) == b'{"max": 20}'
    (req,) = [r for r in cluster.requests() if r.method == "POST" and r.subresource]
    assert req.path == f"/api/v1/namespaces/{NS}/pods/{pod.name}:8080/proxy/admin/pool/resize"
    assert req.query == {"max": "20"}


def test_post_admin_failures_say_which_pod_and_what_it_answered(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _as_in_deploy_k8s(target, cluster)
    pod = target.select("app=api")[0]
    cluster.pod_http[("POST", "*", "8080", "/admin/gc")] = (500, "gc failed: no heap")
    with pytest.raises(TargetError, match=rf"{pod.name}.*admin/gc.*500.*gc failed: no heap"):
        target.post_admin(pod, "/admin/gc", timeout=5)
    with pytest.raises(TargetError, match=r"admin/cache/warm.*503.*connection refused"):
        target.post_admin(pod, "/admin/cache/warm", timeout=5)


def test_post_admin_on_a_pod_declaring_no_port_is_a_clear_error(
    target: KubernetesTarget,
) -> None:
    pod = target.select("app=api")[0]  # the seeded template declares no container port
    with pytest.raises(TargetError, match=r"declares no port.*pytest-resilience/admin-port"):
        target.post_admin(pod, "/admin/gc", timeout=5)


def test_post_admin_in_a_dry_run_sends_nothing(
    kubeconfig: object, cluster: EmulatedCluster
) -> None:
    t = KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NS, dry_run=True)
    try:
        _as_in_deploy_k8s_dry(cluster)
        pod = t.select("app=api")[0]
        assert t.post_admin(pod, "/admin/gc", timeout=5) == b""
        assert _proxied(cluster) == []
        assert any("admin/gc" in call for call in t.dry_run_calls)
    finally:
        t.close()


def _as_in_deploy_k8s_dry(cluster: EmulatedCluster) -> None:
    """The dry-run target cannot change the template: the port goes in through the store."""
    for obj in list(cluster.pods_of(NS, "api")):

        async def put(name: str = obj["metadata"]["name"]) -> None:
            assert cluster.emu is not None
            from kube_controllers import PODS

            async with cluster.emu._lock:
                await cluster.emu._patch(
                    PODS,
                    NS,
                    name,
                    {"spec": {"containers": [{"name": "api", "ports": [{"containerPort": 8080}]}]}},
                )

        cluster.run(put())


def test_log_tail_reads_the_last_lines_through_the_log_subresource(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    assert isinstance(target, PodLogs)
    pod = target.select("app=api")[0]
    cluster.pod_logs[(NS, pod.name, "api")] = "starting\nlistening on 8080\npool exhausted\nbye\n"
    assert target.log_tail(pod, lines=2) == "pool exhausted | bye"
    (req,) = [r for r in cluster.requests() if r.subresource == "log"]
    assert req.query["tailLines"] == "2"


def test_log_tail_of_a_gone_pod_is_empty(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    target.kill_pod(pod)
    assert target.log_tail(pod) == ""


def test_builtin_probes_read_the_pods_metrics_on_kubernetes(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    """What the engine's probes cost per interval: one pod listing, one proxy GET per pod."""
    _as_in_deploy_k8s(target, cluster)
    cluster.pod_http[("GET", "*", "9102", "/metrics")] = (
        200,
        "# TYPE demo_db_pool_in_use gauge\ndemo_db_pool_in_use 7\n"
        "# TYPE demo_db_pool_max gauge\ndemo_db_pool_max 10\n",
    )
    probes = BuiltinProbes(target, None, "api", max_age_s=0)
    try:
        before = len(cluster.requests())
        assert probes.pool_use() == pytest.approx(0.7)
        assert len(cluster.requests()) - before == 1 + 3
    finally:
        probes.close()


def test_releases_capability(target: KubernetesTarget) -> None:
    assert isinstance(target, Releases)
