"""The Kubernetes target: a real cluster through the official ``kubernetes`` client.

:class:`KubernetesTarget` is the Target API: it connects, reads pods, workloads and nodes,
and kills, pauses and execs in pods; the rest of the protocol lives in its mixins, one
module per seam: the request plumbing (:mod:`.calls`, over the typed error ladder of
:mod:`.api`), events (:mod:`.events`, on the list+watch loops of :mod:`.watch`), waits
(:mod:`.waiting`), Deployment changes (:mod:`.deployments`, :mod:`.releases`), nodes and
drain (:mod:`.nodes`), pod access (:mod:`.pod_access`), fault primitives (:mod:`.faults`)
and autoscaling (:mod:`.autoscaling`); API objects become ``Pod`` and the rest in
:mod:`.conversions`.

Pods are found by label selector in one namespace; a SIGKILL is a delete with grace 0
(the kubelet still sends SIGTERM first; a real SIGKILL by exec where asked), other signals
are the shell builtin ``kill -<SIG> 1`` by exec; events come from list+watch streams,
never from polling all pods; rollback re-applies the previous ReplicaSet's template the
way ``kubectl rollout undo`` does; drain goes through the Eviction API so
PodDisruptionBudgets are honoured.

Safety first (:mod:`.safety`): the context and namespace are checked when the target
is built, and each changing call checks its namespace again before anything is sent.
``dry_run=True`` logs every change it would make (and keeps them in ``dry_run_calls``)
and sends none.

The client library is imported inside functions only: ``import kubernetes.client`` costs
~0.27 s and most pytest runs never build this target.

Note on signals: inside a container PID 1 ignores any signal it installed no handler
for (SIGSTOP/SIGKILL included), so ``kill -TERM 1`` needs an app that handles SIGTERM
and pause/resume (``kill -STOP/-CONT 1``) needs an init (tini, shareProcessNamespace) in
front of the app.
"""

from __future__ import annotations

import contextlib
import signal as _signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...errors import SelectorMatchedNothing, TargetError
from ..base import ExecResult, Node, Pod, Workload, match_labels, parse_selector
from .api import connect, connect_in_cluster, exec_status, translate
from .autoscaling import KubeAutoscaling
from .conversions import labels_of, node_of, pod_of, selector_string, terminating, workload_of
from .deployments import KubeDeployments
from .faults import KubeFaults
from .load_workers import KubeLoadWorkers
from .nodes import KubeNodes
from .pod_access import KubePodAccess
from .safety import ChaosPolicy
from .waiting import KubeWaiting

__all__ = ["KubernetesTarget"]


class KubernetesTarget(
    KubeWaiting,
    KubeDeployments,
    KubeNodes,
    KubePodAccess,
    KubeFaults,
    KubeAutoscaling,
    KubeLoadWorkers,
):
    """:class:`~pytest_resilience.targets.base.Target` on a Kubernetes cluster.

    ``context``/``kubeconfig`` pick the cluster (default: the kubeconfig's current
    context), or ``in_cluster=True`` the pod's own service account (context
    ``in-cluster``, refused unless allowed like any other); ``namespace`` is where
    workloads live; ``allow`` takes ``--chaos-allow`` values (syntax in :mod:`.safety`).
    """

    name = "kubernetes"
    #: pods are the cluster's: a killed session leaves them running, with its releases
    pods_outlive_session = True

    def __init__(
        self,
        *,
        context: str | None = None,
        namespace: str = "default",
        allow: Iterable[str] | str | None = (),
        kubeconfig: str | None = None,
        dry_run: bool = False,
        watch_timeout_s: int = 300,
        net_image: str = "nicolaka/netshoot:v0.13",
        release_env: str = "DEMO_VERSION",
        sigkill_by_exec: bool = False,
        in_cluster: bool = False,
    ):
        self.policy = ChaosPolicy.parse(allow)
        self.conn = (
            connect_in_cluster() if in_cluster else connect(kubeconfig=kubeconfig, context=context)
        )
        self.policy.check_context(self.conn.context)
        self.policy.check_namespace(namespace)
        self.context = self.conn.context
        self.namespace = namespace
        self.dry_run = dry_run
        self.dry_run_calls = []
        self.net_image = net_image
        #: the env of the pod template that holds the release (what the demo reads)
        self.release_env = release_env
        #: kill_pod(sig=SIGKILL) by exec (a real SIGKILL) instead of delete grace 0
        self.sigkill_by_exec = sigkill_by_exec
        self._ports = {}
        self._ports_lock = threading.Lock()
        #: In a cluster Toxiproxy runs as a Deployment, reached via ``--toxiproxy-url``.
        self.toxiproxy_url: str | None = None
        self._watch_timeout_s = watch_timeout_s
        import kubernetes.client as kc

        self._client = self.conn.api_client()
        self._core = kc.CoreV1Api(self._client)
        self._apps = kc.AppsV1Api(self._client)
        self._net = kc.NetworkingV1Api(self._client)
        self._exec_client = self.conn.api_client()  # stream() patches its ApiClient: keep it apart
        self._exec_lock = threading.Lock()
        self._subscribers = []
        self._sub_lock = threading.Lock()
        self._watches = []
        #: the namespace's HPAs, watched from the first autoscale() (autoscaling.py)
        self._hpa_watch = None
        self._hpa_watch_lock = threading.Lock()
        self._watch_clients = []
        self._kill_times = {}
        self._unreplaced = {}

    # ------------------------------------------------------------------ reading

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]:
        return [pod_of(o, self.release_env) for o in self._list_pods(selector, namespace)]

    def select(
        self, selector: str | Mapping[str, str], *, namespace: str | None = None
    ) -> list[Pod]:
        """The pods a fault acts on: like :meth:`pods`, without those already being deleted
        (in their grace period: the kubelet removes them at any moment, so a fault that
        picked one failed with NotFound mid-inject), and matching nothing is an error."""
        listed = self._list_pods(selector, namespace)
        found = [pod_of(o, self.release_env) for o in listed if not terminating(o)]
        where = f"namespace {namespace or self.namespace!r} (context {self.context!r})"
        wanted = selector_string(parse_selector(selector))
        if listed and not found:
            names = ", ".join(o["metadata"]["name"] for o in listed)
            raise SelectorMatchedNothing(
                f"selector {wanted!r} matches only pods being deleted in {where} ({names}); "
                "wait for their replacements"
            )
        if not found:
            raise SelectorMatchedNothing(
                f"selector {wanted!r} matched no pod in {where}; "
                "check the labels with kubectl get pods --show-labels"
            )
        return found

    def _list_pods(
        self, selector: str | Mapping[str, str], namespace: str | None
    ) -> list[Mapping[str, Any]]:
        wanted = parse_selector(selector)
        ns = namespace or self.namespace
        data = self._read(
            self._core.list_namespaced_pod,
            ns,
            label_selector=selector_string(wanted),
            verb="list",
            resource="pods",
            namespace=ns,
        )
        items = [o for o in data.get("items") or () if match_labels(labels_of(o), wanted)]
        for obj in items:
            self._remember(obj)
        self._forget_gone(ns, {o["metadata"]["name"] for o in items}, not wanted)
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def workloads(self) -> list[Workload]:
        data = self._read(
            self._apps.list_namespaced_deployment,
            self.namespace,
            verb="list",
            resource="deployments",
            namespace=self.namespace,
        )
        return [workload_of(o, self.release_env) for o in data.get("items") or ()]

    def version(self, workload: str) -> str:
        """The release the workload's template runs (:class:`~..base.Releases`)."""
        return workload_of(self._deployment(workload), self.release_env).version

    def nodes(self) -> list[Node]:
        data = self._read(self._core.list_node, verb="list", resource="nodes")
        return [node_of(o) for o in data.get("items") or ()]

    def endpoint(self, workload: str) -> str:
        """Where clients reach a workload: an explicit annotation, a NodePort, or cluster DNS."""
        svc = self._read(
            self._core.read_namespaced_service,
            workload,
            self.namespace,
            verb="get",
            resource="services",
            namespace=self.namespace,
            name=workload,
        )
        annotations = svc.get("metadata", {}).get("annotations") or {}
        if annotations.get("pytest-resilience/endpoint"):
            return str(annotations["pytest-resilience/endpoint"])
        ports = svc.get("spec", {}).get("ports") or [{}]
        if svc.get("spec", {}).get("type") == "NodePort" and ports[0].get("nodePort"):
            for node in self._read(self._core.list_node, verb="list", resource="nodes")["items"]:
                for addr in node.get("status", {}).get("addresses") or ():
                    if addr.get("type") == "InternalIP":
                        return f"http://{addr['address']}:{ports[0]['nodePort']}"
        port = ports[0].get("port", 80)
        return f"http://{workload}.{self.namespace}.svc.cluster.local:{port}"

    def toxiproxy_server(self) -> str | None:
        """:class:`~..base.DependencyProxies`: the server given with ``--toxiproxy-url``."""
        return self.toxiproxy_url

    @classmethod
    def capabilities_missing(cls, settings: Any) -> dict[str, str]:
        """:class:`~..base.ConfiguredCapabilities`: no Toxiproxy without its URL."""
        if settings.toxiproxy_url:
            return {}
        return {
            "dependency_proxies": "no Toxiproxy server: give --toxiproxy-url http://<host>:8474 "
            "(the toxiproxy Deployment's API, e.g. through a NodePort)"
        }

    # ---------------------------------------------------------------- changing

    def replace_pod(self, pod: Pod) -> None:
        """Delete the pod with its own grace period (``kubectl delete pod``): the kubelet
        sends SIGTERM and waits ``terminationGracePeriodSeconds``, the ReplicaSet starts a
        fresh pod. Not an exec: a container waiting in CrashLoopBackOff cannot be exec'd
        into (the kubelet finds only running containers), and a restart in the same pod
        keeps its back-off."""
        self.policy.check_namespace(pod.namespace)
        self._change(
            f"DELETE pod {pod.namespace}/{pod.name}",
            self._core.delete_namespaced_pod,
            pod.name,
            pod.namespace,
            verb="delete",
            resource="pods",
            namespace=pod.namespace,
            name=pod.name,
        )

    def kill_pod(
        self, pod: Pod, *, sig: int = _signal.SIGKILL, by_exec: bool | None = None
    ) -> None:
        """SIGKILL: delete with grace 0 (the ReplicaSet replaces the pod). That is not a
        bare SIGKILL: the pod object goes at once, but the kubelet still sends SIGTERM
        first and waits its minimum grace (``minimumGracePeriodInSeconds = 2``,
        pkg/kubelet/kuberuntime) before SIGKILL, so an app's SIGTERM handler runs.

        ``by_exec`` (default: the target's ``sigkill_by_exec``) makes SIGKILL a real one,
        by exec: ``kill -KILL -1`` in the container, every process but PID 1 (the kernel
        never delivers SIGKILL to a pid namespace's init from inside it), so the app must
        run under an init (tini, ``shareProcessNamespace``); the container then dies and
        the kubelet restarts it in the same pod. Other signals: ``kill -SIG 1`` by the
        shell's builtin (``sh -c``; slim images have no ``kill`` binary)."""
        self.policy.check_namespace(pod.namespace)
        exec_kill = self.sigkill_by_exec if by_exec is None else by_exec
        if sig == _signal.SIGKILL and not exec_kill:
            self._kill_times[(pod.namespace, pod.name)] = time.time()
            self._change(
                f"DELETE pod {pod.namespace}/{pod.name} gracePeriodSeconds=0",
                self._core.delete_namespaced_pod,
                pod.name,
                pod.namespace,
                grace_period_seconds=0,
                verb="delete",
                resource="pods",
                namespace=pod.namespace,
                name=pod.name,
            )
            if not self.dry_run:
                self._unreplaced.setdefault(pod.workload, []).append(pod)
            return
        name = _signal.Signals(sig).name.removeprefix("SIG")
        script = "kill -KILL -1" if sig == _signal.SIGKILL else f"kill -{name} 1"
        result = self.exec(pod, ["sh", "-c", script])
        if result.exit_code == 0:
            return
        why = result.stderr.strip() or result.stdout.strip()
        if sig == _signal.SIGKILL:
            raise TargetError(
                f"SIGKILL by exec in pod {pod.namespace}/{pod.name}: {script!r} exited "
                f"{result.exit_code} ({why}): no process but PID 1 runs there, and PID 1 "
                "never gets SIGKILL from inside its pid namespace; run the app under an init "
                "(tini, shareProcessNamespace: true) or kill by delete (by_exec=False)"
            )
        raise TargetError(
            f"kill -{name} 1 in pod {pod.namespace}/{pod.name} exited {result.exit_code}: {why}"
            + ("; the image has no sh" if result.exit_code == 127 else "")
        )

    def pause_pod(self, pod: Pod) -> None:
        self.kill_pod(pod, sig=_signal.SIGSTOP)

    def resume_pod(self, pod: Pod) -> None:
        self.kill_pod(pod, sig=_signal.SIGCONT)

    def exec(
        self,
        pod: Pod,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        container: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the pod (``kubernetes.stream``); exec can change anything, so it
        is subject to the namespace rules and to dry-run."""
        self.policy.check_namespace(pod.namespace)
        where = f"{pod.namespace}/{pod.name}" + (f" container {container}" if container else "")
        if self._dry(f"EXEC in pod {where}: {' '.join(argv)}"):
            return ExecResult(0, "", "dry-run: not executed")
        import kubernetes.client as kc
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream
        from kubernetes.stream.ws_client import ERROR_CHANNEL

        kwargs: dict[str, Any] = dict(
            command=list(argv), stderr=True, stdin=False, stdout=True, tty=False
        )
        if container:
            kwargs["container"] = container
        fields = dict(verb="create", resource="pods/exec", namespace=pod.namespace, name=pod.name)
        with self._exec_lock:
            try:
                ws = stream(
                    kc.CoreV1Api(self._exec_client).connect_get_namespaced_pod_exec,
                    pod.name,
                    pod.namespace,
                    _preload_content=False,
                    **kwargs,
                )
            except ApiException as exc:
                raise translate(exc, **fields) from None
        try:
            ws.run_forever(timeout=timeout)
            if ws.is_open():
                raise TargetError(f"exec in pod {where} did not finish within {timeout}s: {argv}")
            stdout, stderr = ws.read_stdout() or "", ws.read_stderr() or ""
            # the v4 error channel's Status, read here: ws.returncode turns a runtime
            # failure ("executable file not found") into a TypeError and loses its message
            status = exec_status(ws.read_channel(ERROR_CHANNEL))
        finally:
            ws.close()
        return ExecResult(status.exit_code, stdout, stderr or status.message)

    def close(self) -> None:
        for watch in self._watches:
            watch.stop()
        self._watches.clear()
        self._stop_watching_autoscalers()
        for c in [self._client, self._exec_client, *self._watch_clients]:
            with contextlib.suppress(Exception):  # closing is best effort
                c.close()
        self._watch_clients.clear()

    def __enter__(self) -> KubernetesTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
