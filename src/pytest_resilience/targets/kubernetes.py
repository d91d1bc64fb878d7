"""The Kubernetes target: a real cluster through the official ``kubernetes`` client.

Pods are found by label selector in one namespace; a SIGKILL is a delete with grace 0
(the kubelet still sends SIGTERM first; a real SIGKILL by exec where asked), other signals
are the shell builtin ``kill -<SIG> 1`` by exec; events come from list+watch streams
(:mod:`.kube_watch`), never from polling all pods; rollback re-applies the previous
ReplicaSet's template the way ``kubectl rollout undo`` does; drain goes through the
Eviction API so PodDisruptionBudgets are honoured.

Safety first (:mod:`.kube_safety`): the context and namespace are checked when the target
is built, and each changing call checks its namespace again before anything is sent.
``dry_run=True`` logs every change it would make (and keeps them in ``dry_run_calls``)
and sends none.

The client library is imported inside functions only: ``import kubernetes.client`` costs
~0.27 s and most pytest runs never build this target.

Note on signals: inside a container PID 1 ignores any signal it installed no handler
for (SIGSTOP/SIGKILL included), so ``kill -TERM 1`` needs an app that handles SIGTERM
and pause/resume (``kill -STOP/-CONT 1``) needs an init (tini, shareProcessNamespace) in
front of the app.

Size: over 500 lines because the Target API and the request ladder (``_read``, ``_change``,
``_watch_until``) it is built on share one client; faults, pod access, releases and the watch
already live beside it (and autoscaling, kube_autoscaling.py); the conversions and the safety
checks are next (issue 14).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import signal as _signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import SelectorMatchedNothing, TargetError
from .base import (
    EventKind,
    ExecResult,
    Node,
    Pod,
    TargetEvent,
    Workload,
    match_labels,
    parse_selector,
)
from .kube_api import (
    KubeConnection,
    KubeNotFound,
    KubeTooManyRequests,
    call,
    connect,
    connect_in_cluster,
    exec_status,
    translate,
)
from .kube_autoscaling import KubeAutoscaling
from .kube_faults import KubeFaults
from .kube_pod_access import KubePodAccess, PodPorts
from .kube_releases import plan_rollback, release_of, release_patch
from .kube_safety import ChaosPolicy
from .kube_watch import (
    ResourceWatch,
    diff_deployment,
    diff_node,
    diff_pod,
    pod_is_ready,
    pod_workload,
)

__all__ = ["KubernetesTarget"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

_HASH_LABELS = (
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
)
_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class KubernetesTarget(KubePodAccess, KubeFaults, KubeAutoscaling):
    """:class:`~pytest_resilience.targets.base.Target` on a Kubernetes cluster.

    ``context``/``kubeconfig`` pick the cluster (default: the kubeconfig's current
    context), or ``in_cluster=True`` the pod's own service account (context
    ``in-cluster``, refused unless allowed like any other); ``namespace`` is where
    workloads live; ``allow`` takes ``--chaos-allow`` values (syntax in :mod:`.kube_safety`).
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
        self.conn: KubeConnection = (
            connect_in_cluster() if in_cluster else connect(kubeconfig=kubeconfig, context=context)
        )
        self.policy.check_context(self.conn.context)
        self.policy.check_namespace(namespace)
        self.context = self.conn.context
        self.namespace = namespace
        self.dry_run = dry_run
        self.dry_run_calls: list[str] = []
        self.net_image = net_image
        #: the env of the pod template that holds the release (what the demo reads)
        self.release_env = release_env
        #: kill_pod(sig=SIGKILL) by exec (a real SIGKILL) instead of delete grace 0
        self.sigkill_by_exec = sigkill_by_exec
        self._ports: dict[tuple[str, str], PodPorts] = {}
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
        self._subscribers: list[Callable[[TargetEvent], None]] = []
        self._sub_lock = threading.Lock()
        self._watches: list[ResourceWatch] = []
        #: the namespace's HPAs, watched from the first autoscale() (kube_autoscaling.py)
        self._hpa_watch: ResourceWatch | None = None
        self._hpa_watch_lock = threading.Lock()
        self._watch_clients: list[Any] = []
        self._kill_times: dict[tuple[str, str], float] = {}
        #: pods deleted by kill_pod, per workload, until a wait_ready sees them replaced
        self._unreplaced: dict[str, list[Pod]] = {}

    # ------------------------------------------------------------------ reading

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]:
        return [_pod(o, self.release_env) for o in self._list_pods(selector, namespace)]

    def select(
        self, selector: str | Mapping[str, str], *, namespace: str | None = None
    ) -> list[Pod]:
        """The pods a fault acts on: like :meth:`pods`, without those already being deleted
        (in their grace period: the kubelet removes them at any moment, so a fault that
        picked one failed with NotFound mid-inject), and matching nothing is an error."""
        listed = self._list_pods(selector, namespace)
        found = [_pod(o, self.release_env) for o in listed if not _terminating(o)]
        where = f"namespace {namespace or self.namespace!r} (context {self.context!r})"
        wanted = _selector_string(parse_selector(selector))
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
            label_selector=_selector_string(wanted),
            verb="list",
            resource="pods",
            namespace=ns,
        )
        items = [o for o in data.get("items") or () if match_labels(_labels(o), wanted)]
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
        return [_workload(o, self.release_env) for o in data.get("items") or ()]

    def version(self, workload: str) -> str:
        """The release the workload's template runs (:class:`~.base.Releases`)."""
        return _workload(self._deployment(workload), self.release_env).version

    def nodes(self) -> list[Node]:
        data = self._read(self._core.list_node, verb="list", resource="nodes")
        return [_node(o) for o in data.get("items") or ()]

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
        """:class:`~.base.DependencyProxies`: the server given with ``--toxiproxy-url``."""
        return self.toxiproxy_url

    @classmethod
    def capabilities_missing(cls, settings: Any) -> dict[str, str]:
        """:class:`~.base.ConfiguredCapabilities`: no Toxiproxy without its URL."""
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

    def scale(self, workload: str, replicas: int) -> None:
        """Through the scale subresource, so only the replica count is touched."""
        self.policy.check_namespace(self.namespace)
        if replicas < 0:
            raise TargetError(f"scale {workload}: replicas must be >= 0, got {replicas}")
        self._change(
            f"PATCH deployment {self.namespace}/{workload}/scale replicas={replicas}",
            self._apps.patch_namespaced_deployment_scale,
            workload,
            self.namespace,
            {"spec": {"replicas": replicas}},
            verb="patch",
            resource="deployments/scale",
            namespace=self.namespace,
            name=workload,
        )

    def restart(self, workload: str) -> None:
        """What ``kubectl rollout restart`` does: stamp the pod template."""
        self.policy.check_namespace(self.namespace)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {_RESTARTED_AT: stamp}}}}}
        self._change(
            f"PATCH deployment {self.namespace}/{workload} template {_RESTARTED_AT}={stamp}",
            self._apps.patch_namespaced_deployment,
            workload,
            self.namespace,
            patch,
            verb="patch",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def rollout(self, workload: str, version: str) -> None:
        """:class:`~.base.Releases`: set the release env (``release_env``) of the pod
        template to ``version``; the Deployment rolls it out (surge, readiness) and
        ``wait_ready`` waits for it. A JSON patch with a ``test`` of the old value, so a
        concurrent change of the template is a conflict, not overwritten."""
        self.policy.check_namespace(self.namespace)
        patch = release_patch(self._deployment(workload), self.release_env, version)
        self._change(
            f"PATCH deployment {self.namespace}/{workload} template env "
            f"{self.release_env}={version}",
            self._apps.patch_namespaced_deployment,
            workload,
            self.namespace,
            patch,
            verb="patch",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def rollback(self, workload: str) -> str:
        """``kubectl rollout undo`` (:mod:`.kube_releases`): the previous revision's
        template and annotations; a paused Deployment is refused. Returns the release
        rolled back to (e.g. ``"v1"``; the revision number where the template has none)."""
        self.policy.check_namespace(self.namespace)
        ns = self.namespace
        dep = self._deployment(workload)
        uid = dep["metadata"].get("uid")
        match = (dep.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        sets = self._read(
            self._apps.list_namespaced_replica_set,
            ns,
            label_selector=_selector_string(match),
            verb="list",
            resource="replicasets",
            namespace=ns,
        )
        owned = [
            rs
            for rs in sets.get("items") or ()
            if match_labels(_labels(rs), match)
            and any(
                ref.get("kind") == "Deployment"
                and (
                    ref.get("uid") == uid if uid and ref.get("uid") else ref.get("name") == workload
                )
                for ref in rs["metadata"].get("ownerReferences") or ()
            )
        ]
        plan = plan_rollback(dep, owned)
        release = release_of(plan.template, self.release_env) or str(plan.revision)
        if plan.patch is None:
            log.info(
                "rollback %s/%s skipped: the template already matches revision %s (%s)",
                ns,
                workload,
                plan.revision,
                plan.replicaset,
            )
            return release
        self._change(
            f"PATCH deployment {ns}/{workload} template := ReplicaSet "
            f"{plan.replicaset} (revision {plan.revision}, release {release})",
            self._apps.patch_namespaced_deployment,
            workload,
            ns,
            plan.patch,
            verb="patch",
            resource="deployments",
            namespace=ns,
            name=workload,
        )
        self._emit(
            TargetEvent(
                EventKind.ROLLED_BACK,
                workload=workload,
                detail=f"{release} (revision {plan.revision})",
            )
        )
        return release

    def cordon(self, node: str) -> None:
        self._set_unschedulable(node, True)

    def uncordon(self, node: str) -> None:
        self._set_unschedulable(node, False)

    def drain(self, node: str, *, timeout: float = 120.0) -> list[Pod]:
        """Cordon, then evict every pod on the node through the Eviction API.

        DaemonSet pods and mirror (static) pods are skipped, as ``kubectl drain`` does;
        so are pods in namespaces the safety rules protect (logged). A 429 (a
        PodDisruptionBudget says not now) is retried with back-off until ``timeout``.
        Returns the pods whose eviction was accepted.
        """
        self.cordon(node)
        data = self._read(
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            verb="list",
            resource="pods",
        )
        deadline = time.monotonic() + timeout
        evicted: list[Pod] = []
        for obj in data.get("items") or ():
            if obj.get("spec", {}).get("nodeName") != node or not _evictable(obj):
                continue
            pod = _pod(obj)
            try:
                self.policy.check_namespace(pod.namespace)
            except TargetError as refusal:
                log.warning(
                    "drain %s: leaving pod %s/%s: %s", node, pod.namespace, pod.name, refusal
                )
                continue
            if self._evict(pod, deadline):
                evicted.append(pod)
        return evicted

    def _evict(self, pod: Pod, deadline: float) -> bool:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        delay = 0.1
        while True:
            try:
                self._change(
                    f"CREATE eviction for pod {pod.namespace}/{pod.name}",
                    self._core.create_namespaced_pod_eviction,
                    pod.name,
                    pod.namespace,
                    body,
                    verb="create",
                    resource="pods/eviction",
                    namespace=pod.namespace,
                    name=pod.name,
                )
                return True
            except KubeNotFound:
                return False  # already gone
            except KubeTooManyRequests as exc:
                if time.monotonic() + delay > deadline:
                    raise TargetError(
                        f"drain: eviction of pod {pod.namespace}/{pod.name} still refused at "
                        f"the deadline (a PodDisruptionBudget allows no disruption): {exc}"
                    ) from None
                log.info("eviction of %s refused (429), retrying in %.1fs", pod.name, delay)
                time.sleep(delay)  # back-off demanded by the server, not synchronisation
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ waiting

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None:
        """Watch the Deployment until its updated and ready replicas reach the spec.

        Right after a kill the Deployment's status still counts the dead pod as ready
        (the controllers have not caught up), so pods this target killed must first be
        replaced by as many Ready pods created since.
        """
        deadline = time.monotonic() + timeout
        killed = self._unreplaced.pop(workload, [])
        if killed:
            spec = self._deployment(workload).get("spec", {})
            want = int(spec.get("replicas", 1)) if replicas is None else replicas
            try:
                self._wait_replacements(killed, want, deadline)
            except TargetError:
                self._unreplaced.setdefault(workload, []).extend(killed)
                raise
        dep = self._deployment(workload)
        version = dep["metadata"].get("resourceVersion", "")
        while not _deployment_ready(dep, replicas):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TargetError(_not_ready_message(dep, replicas, timeout))
            found = self._watch_until(
                self._apps.list_namespaced_deployment,
                lambda o: o["metadata"]["name"] == workload,
                lambda o: _deployment_ready(o, replicas),
                field_selector=f"metadata.name={workload}",
                resource="deployments",
                version=version,
                remaining=remaining,
            )
            if found is None:
                raise TargetError(_not_ready_message(dep, replicas, timeout))
            dep = found

    def _wait_replacements(self, killed: list[Pod], want: int, deadline: float) -> None:
        """Until ``want`` pods of the killed pods' labels are Ready, none of them killed.

        Counting pods, not one fresh pod per kill: a kill may hit an earlier kill's
        replacement (real pod names are random, so "the first pod" can be the new one),
        and that kill needs no replacement of its own beyond the one that replaces it."""
        gone = {p.name for p in killed}
        wanted = {k: v for k, v in killed[0].labels.items() if k not in _HASH_LABELS}
        ready: set[str] = set()

        def enough(o: Mapping[str, Any]) -> bool:
            name = o.get("metadata", {}).get("name")
            if name in gone:
                return False
            if pod_is_ready(o) and match_labels(_labels(o), wanted):
                ready.add(name)
            else:
                ready.discard(name)
            return len(ready) >= want

        found = self._watch_until(
            functools.partial(
                self._core.list_namespaced_pod, label_selector=_selector_string(wanted)
            ),
            lambda o: True,
            enough,
            resource="pods",
            namespace=killed[0].namespace,
            remaining=deadline - time.monotonic(),
            list_first=True,
            deleted=lambda o: ready.discard(o.get("metadata", {}).get("name")),
        )
        if found is None:
            raise TargetError(
                f"{len(ready)} of {want} pods Ready after killing {', '.join(sorted(gone))} "
                f"(selector {_selector_string(wanted)})"
            )

    def wait_replaced(self, pod: Pod, *, timeout: float = 60.0) -> Pod:
        """After killing ``pod``: watch its siblings until a replacement is Ready.

        A replacement has the killed pod's labels (minus the template hashes) and was
        created no earlier than the kill.
        """
        deadline = time.monotonic() + timeout
        since = self._kill_times.get((pod.namespace, pod.name), time.time())
        wanted = {k: v for k, v in pod.labels.items() if k not in _HASH_LABELS}

        def is_replacement(o: Mapping[str, Any]) -> bool:
            meta = o.get("metadata", {})
            created = _timestamp(meta.get("creationTimestamp"))
            return (
                pod_is_ready(o)
                and match_labels(meta.get("labels") or {}, wanted)
                and created >= int(since)
            )

        found = self._watch_until(
            functools.partial(
                self._core.list_namespaced_pod, label_selector=_selector_string(wanted)
            ),
            lambda o: True,
            is_replacement,
            resource="pods",
            namespace=pod.namespace,
            remaining=deadline - time.monotonic(),
            list_first=True,
        )
        if found is None:
            raise TargetError(
                f"no Ready replacement for pod {pod.namespace}/{pod.name} within {timeout}s "
                f"(selector {_selector_string(wanted)})"
            )
        return _pod(found)

    def _watch_until(
        self,
        list_fn: Callable[..., Any],
        accept: Callable[[Mapping[str, Any]], bool],
        done: Callable[[Mapping[str, Any]], bool],
        *,
        resource: str,
        remaining: float,
        namespace: str | None = None,
        field_selector: str | None = None,
        version: str = "",
        list_first: bool = False,
        deleted: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> Mapping[str, Any] | None:
        """One watch (plus an optional list) until ``done`` holds for an object, or timeout;
        ``deleted`` hears of each object the watch reports gone."""
        import urllib3.exceptions
        from kubernetes.watch.watch import iter_resp_lines

        ns = namespace or self.namespace
        deadline = time.monotonic() + remaining
        extra = {"field_selector": field_selector} if field_selector else {}
        while time.monotonic() < deadline:
            if list_first:
                data = self._read(
                    list_fn, ns, verb="list", resource=resource, namespace=ns, **extra
                )
                for obj in data.get("items") or ():
                    if accept(obj) and done(obj):
                        return obj
                version = str((data.get("metadata") or {}).get("resourceVersion") or "")
            left = max(deadline - time.monotonic(), 0.1)
            kwargs: dict[str, Any] = dict(
                watch=True,
                timeout_seconds=max(int(left), 1),
                _preload_content=False,
                _request_timeout=(10, left),
                **extra,
            )
            if version:
                kwargs["resource_version"] = version
            resp = call(list_fn, ns, verb="watch", resource=resource, namespace=ns, **kwargs)
            try:
                for line in iter_resp_lines(resp):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            list_first, version = True, ""
                            break
                        raise TargetError(f"watch {resource}: {obj.get('message') or obj}")
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event.get("type") in ("ADDED", "MODIFIED") and accept(obj) and done(obj):
                        return obj
                    if event.get("type") == "DELETED" and deleted is not None:
                        deleted(obj)
                    if time.monotonic() >= deadline:
                        return None
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                return None
            finally:
                resp.release_conn()
        return None

    # ------------------------------------------------------------------- events

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` (from a watch thread) for every pod/node/deployment transition.

        The watches start on the first subscription and run until :meth:`close`.
        """
        with self._sub_lock:
            self._subscribers.append(callback)
            if not self._watches:
                self._start_watches()

        def unsubscribe() -> None:
            with self._sub_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait_watching(self, timeout: float = 10.0) -> bool:
        """True once every watch has its baseline list (events after that are not missed)."""
        deadline = time.monotonic() + timeout
        return all(w.synced.wait(max(deadline - time.monotonic(), 0)) for w in self._watches)

    def _start_watches(self) -> None:
        import kubernetes.client as kc

        def client() -> Any:
            c = self.conn.api_client()
            self._watch_clients.append(c)
            return c

        ns = self.namespace
        specs = [
            ("pods", functools.partial(kc.CoreV1Api(client()).list_namespaced_pod, ns), diff_pod),
            (
                "deployments",
                functools.partial(kc.AppsV1Api(client()).list_namespaced_deployment, ns),
                diff_deployment,
            ),
            ("nodes", kc.CoreV1Api(client()).list_node, diff_node),
        ]
        for name, fn, differ in specs:
            watch = ResourceWatch(
                name=name,
                list_fn=fn,
                differ=differ,
                emit=self._emit,
                timeout_s=self._watch_timeout_s,
            )
            self._watches.append(watch.start())

    def _emit(self, event: TargetEvent) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s", callback, event)

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

    # ------------------------------------------------------------------ plumbing

    def _dry(self, what: str) -> bool:
        if self.dry_run:
            log.info("dry-run: would %s", what)
            self.dry_run_calls.append(what)
        return self.dry_run

    def _change(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Every change goes through here: namespace rule, dry-run, error ladder."""
        if namespace:
            self.policy.check_namespace(namespace)
        if self._dry(what):
            return None
        log.info("%s", what)
        return self._read(
            fn, *args, verb=verb, resource=resource, namespace=namespace, name=name, **kwargs
        )

    def _read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        """The pod as the API server has it now (plain dicts)."""
        return self._read(
            self._core.read_namespaced_pod,
            name,
            namespace,
            verb="get",
            resource="pods",
            namespace=namespace,
            name=name,
        )

    def _read(
        self,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A call whose JSON answer comes back as plain dicts (no model deserialization)."""
        resp = call(
            fn,
            *args,
            verb=verb,
            resource=resource,
            namespace=namespace,
            name=name,
            _preload_content=False,
            **kwargs,
        )
        raw = resp.data
        return json.loads(raw) if raw else {}

    def _deployment(self, workload: str) -> dict[str, Any]:
        return self._read(
            self._apps.read_namespaced_deployment,
            workload,
            self.namespace,
            verb="get",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def _node_raw(self, node: str) -> dict[str, Any]:
        return self._read(self._core.read_node, node, verb="get", resource="nodes", name=node)

    def _set_unschedulable(self, node: str, value: bool) -> None:
        self._change(
            f"PATCH node {node} spec.unschedulable={value}",
            self._core.patch_node,
            node,
            {"spec": {"unschedulable": value or None}},
            verb="patch",
            resource="nodes",
            name=node,
        )

    # used by kube_faults
    def _patch_meta(
        self, kind: str, name: str, namespace: str | None, meta: Mapping[str, Any]
    ) -> None:
        fn, resource, args = {
            "Pod": (self._core.patch_namespaced_pod, "pods", (name, namespace)),
            "Node": (self._core.patch_node, "nodes", (name,)),
        }[kind]
        self._change(
            f"PATCH {resource} {namespace + '/' if namespace else ''}{name} metadata {dict(meta)}",
            fn,
            *args,
            {"metadata": dict(meta)},
            verb="patch",
            resource=resource,
            namespace=namespace,
            name=name,
        )


# ---------------------------------------------------------------------- converters


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _pod(obj: Mapping[str, Any], release_env: str = "DEMO_VERSION") -> Pod:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    labels = _labels(obj)
    return Pod(
        name=meta.get("name", ""),
        workload=pod_workload(obj),
        namespace=meta.get("namespace") or "default",
        labels=labels,
        node=spec.get("nodeName"),
        host=status.get("podIP") or "",
        ready=pod_is_ready(obj),
        version=release_of(obj, release_env),
    )


def _workload(obj: Mapping[str, Any], release_env: str = "DEMO_VERSION") -> Workload:
    """A Deployment; ``version`` is the release its template runs (not the revision)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    return Workload(
        name=meta.get("name", ""),
        namespace=meta.get("namespace") or "default",
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        version=release_of(spec.get("template"), release_env),
        labels=dict((spec.get("selector") or {}).get("matchLabels") or {}),
    )


def _node(obj: Mapping[str, Any]) -> Node:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or ()
    )
    return Node(
        name=obj["metadata"]["name"],
        ready=ready,
        schedulable=not obj.get("spec", {}).get("unschedulable", False),
    )


def _evictable(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata", {})
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return False
    if any(ref.get("kind") == "DaemonSet" for ref in meta.get("ownerReferences") or ()):
        return False
    return obj.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def _deployment_ready(obj: Mapping[str, Any], replicas: int | None) -> bool:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    want = spec.get("replicas", 1) if replicas is None else replicas
    if meta.get("generation") and int(status.get("observedGeneration") or 0) < int(
        meta["generation"]
    ):
        return False
    return (
        int(status.get("updatedReplicas") or 0) >= want
        and int(status.get("readyReplicas") or 0) >= want
        and int(status.get("replicas") or 0) <= max(want, int(spec.get("replicas", want)))
    )


def _not_ready_message(obj: Mapping[str, Any], replicas: int | None, timeout: float) -> str:
    status = obj.get("status", {})
    want = obj.get("spec", {}).get("replicas", 1) if replicas is None else replicas
    return (
        f"deployment {obj.get('metadata', {}).get('name')} not ready after {timeout}s: "
        f"ready {status.get('readyReplicas') or 0}/{want}, updated "
        f"{status.get('updatedReplicas') or 0}/{want}, total {status.get('replicas') or 0}"
        " (kubectl describe deployment; kubectl get events)"
    )


def _timestamp(value: Any) -> int:
    if not value:
        return 0
    try:
        return int(_dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
