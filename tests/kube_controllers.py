"""A kmock KubernetesEmulator with the few controllers a real cluster would run.

kmock's emulator stores objects and serves list/watch/get/patch/delete over real HTTP, but
runs no controllers and knows no subresources. The KubernetesTarget is tested against it
through the official client, so the pieces a cluster would add are here, each labelled
with the real component it stands for:

- ``_reconcile``       the Deployment + ReplicaSet controllers (template hash, revisions,
                        replacement pods, status counts) and the scheduler (node choice);
- ``_kubelet_start``    the kubelet starting a pod (Running, Ready condition);
- ``_serve_exec``       the kubelet's exec endpoint (websocket, v4 channel protocol) with a
                        tiny model of what the fault commands do (signals to PID 1, iptables
                        hooks, files); no command is ever run on this machine;
- ``_serve_eviction``   the Eviction API with PodDisruptionBudget checks (429);
- ephemeral containers  the kubelet starting an ephemeral container after the subresource
                        patch (the emulator merges that patch into the pod object);
- ``forbid`` / ``refuse_ephemeral``  RBAC and PodSecurity admission refusing a request.

The emulator runs in its own event loop thread so the synchronous client under test can
talk to it from the test thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock

PODS = kmock.resource("v1/pods")
NODES = kmock.resource("v1/nodes")
SERVICES = kmock.resource("v1/services")
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
REPLICASETS = kmock.resource("apps/v1/replicasets")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
NETPOLS = kmock.resource("networking.k8s.io/v1/networkpolicies")
KUBELET_STARTUP_S = 0.02  # the emulated kubelet's container start latency


def _now(offset_s: float = 0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_hash(template: dict[str, Any]) -> str:
    t = json.loads(json.dumps(template))
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return hashlib.sha1(json.dumps(t, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class ContainerModel:
    """What the emulated kubelet tracks about effects of exec'd commands in one pod."""

    hooks: set[str] = field(default_factory=set)  # iptables "HOOK CHAIN" pairs
    files: dict[str, int] = field(default_factory=dict)  # path -> MiB
    paused: bool = False


class ClusterEmulator(kmock.KubernetesEmulator):
    cluster: EmulatedCluster

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        c = self.cluster
        plural = request.resource.plural if request.resource else None
        rule = (str(request.method.value).upper(), plural, request.subresource)
        for method, res, sub, message in c.forbidden:
            if (method, res, sub) == rule:
                return await self._render_error(
                    kmock.KubernetesError(status=403, reason="Forbidden", message=message)
                )
        if request.action == kmock.action.WATCH and plural in c.expire_watches:
            return await self._expire_watch(request, c.expire_watches.pop(plural))
        if request.subresource == "exec":
            return await self._serve_exec(request)
        if request.subresource == "eviction" and rule[0] == "POST":
            return await self._serve_eviction(request)
        if request.subresource == "ephemeralcontainers" and c.refuse_ephemeral:
            return await self._render_error(
                kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message='pods "x" is forbidden: violates PodSecurity "baseline:latest": '
                    "non-default capabilities (container uses NET_ADMIN)",
                )
            )
        generation = None
        if plural == "deployments" and rule[0] == "PATCH" and request.subresource != "status":
            current = self._get(DEPLOYMENTS, request.namespace, request.name)
            if current is not None:
                generation = int(current.get("metadata", {}).get("generation") or 1) + 1
        response = await super()._handle(request)
        if response.status >= 400:
            return response
        # After-effects: what the controllers would do once the API server accepted a write.
        if generation is not None:
            async with self._lock:
                await self._patch(
                    DEPLOYMENTS,
                    request.namespace,
                    request.name,
                    {"metadata": {"generation": generation}},
                )
            c.spawn(self._reconcile(request.namespace, request.name))
        elif plural == "pods" and rule[0] == "DELETE":
            c.spawn(self._reconcile_all(request.namespace))
        elif plural == "pods" and request.subresource == "ephemeralcontainers":
            c.spawn(self._kubelet_start_ephemeral(request.namespace, request.name))
        return response

    async def _expire_watch(self, request: Any, how: str) -> aiohttp.web.StreamResponse:
        """The API server ending a watch: its timeout ("end") or a compacted version ("410")."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        if how == "410":
            gone = {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version",
            }
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        await response.write_eof()
        return response

    # ---------------------------------------------------------- store access

    def _get(self, res: Any, ns: str | None, name: str) -> dict[str, Any] | None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return json.loads(json.dumps(self._objects[key].raw))

    def _items(self, res: Any, ns: str | None) -> list[dict[str, Any]]:
        return [
            json.loads(json.dumps(o.raw))
            for (r, n, _), o in self._objects.items()
            if r == res and (ns is None or n == ns) and not o.deleted
        ]

    async def _create(self, res: Any, ns: str | None, body: dict[str, Any]) -> None:
        key = (res, ns, body["metadata"]["name"])
        if key in self._objects:
            self._objects[key].create(body)
        else:
            self._objects[key] = body
        await self._buses[res].put({"type": "ADDED", "object": self._objects[key].raw})

    async def _patch(self, res: Any, ns: str | None, name: str, patch: dict[str, Any]) -> None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return
        self._objects[key].patch(patch)
        await self._buses[res].put({"type": "MODIFIED", "object": self._objects[key].raw})

    async def _delete(self, res: Any, ns: str | None, name: str) -> None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return
        raw = self._objects[key].raw
        self._objects[key].delete()
        await self._buses[res].put({"type": "DELETED", "object": raw})

    # ------------------------------------- Deployment/ReplicaSet controllers

    async def _reconcile_all(self, ns: str) -> None:
        for dep in self._items(DEPLOYMENTS, ns):
            await self._reconcile(ns, dep["metadata"]["name"])

    async def _reconcile(self, ns: str, name: str) -> None:
        """The Deployment and ReplicaSet controllers plus the scheduler, in one pass."""
        started: list[str] = []
        async with self._lock:
            dep = self._get(DEPLOYMENTS, ns, name)
            if dep is None:
                return
            template = dep["spec"]["template"]
            h = _template_hash(template)
            owned = [
                rs
                for rs in self._items(REPLICASETS, ns)
                if any(r.get("name") == name for r in rs["metadata"].get("ownerReferences", []))
            ]
            revisions = [
                int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                for rs in owned
            ]
            current = next(
                (rs for rs in owned if rs["metadata"]["labels"]["pod-template-hash"] == h), None
            )
            top = max(revisions, default=0)
            rs_name = f"{name}-{h}"
            if current is None:
                tmpl = json.loads(json.dumps(template))
                tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                await self._create(
                    REPLICASETS,
                    ns,
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": rs_name,
                            "namespace": ns,
                            "uid": f"uid-rs-{h}",
                            "labels": {
                                **dep["spec"]["selector"]["matchLabels"],
                                "pod-template-hash": h,
                            },
                            "annotations": {"deployment.kubernetes.io/revision": str(top + 1)},
                            "ownerReferences": [
                                {
                                    "apiVersion": "apps/v1",
                                    "kind": "Deployment",
                                    "name": name,
                                    "uid": dep["metadata"].get("uid"),
                                    "controller": True,
                                }
                            ],
                        },
                        "spec": {
                            "replicas": dep["spec"]["replicas"],
                            "template": tmpl,
                            "selector": {
                                "matchLabels": {
                                    **dep["spec"]["selector"]["matchLabels"],
                                    "pod-template-hash": h,
                                }
                            },
                        },
                    },
                )
                revision = top + 1
            else:
                revision = int(
                    current["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                )
                if revision < top:  # a rollback reuses the old ReplicaSet as the newest revision
                    revision = top + 1
                    await self._patch(
                        REPLICASETS,
                        ns,
                        rs_name,
                        {
                            "metadata": {
                                "annotations": {"deployment.kubernetes.io/revision": str(revision)}
                            }
                        },
                    )
            if dep["metadata"].get("annotations", {}).get(
                "deployment.kubernetes.io/revision"
            ) != str(revision):
                await self._patch(
                    DEPLOYMENTS,
                    ns,
                    name,
                    {
                        "metadata": {
                            "annotations": {"deployment.kubernetes.io/revision": str(revision)}
                        }
                    },
                )
            pods = [
                p
                for p in self._items(PODS, ns)
                if any(
                    r.get("kind") == "ReplicaSet" and r.get("name", "").startswith(name + "-")
                    for r in p["metadata"].get("ownerReferences", [])
                )
            ]
            for p in pods:  # old revisions go (a Recreate-like rollout, enough for tests)
                if p["metadata"]["labels"].get("pod-template-hash") != h:
                    await self._delete(PODS, ns, p["metadata"]["name"])
            mine = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == h]
            want = int(dep["spec"].get("replicas", 1))
            for p in mine[want:]:
                await self._delete(PODS, ns, p["metadata"]["name"])
            nodes = [
                n["metadata"]["name"]
                for n in self._items(NODES, None)
                if not n.get("spec", {}).get("unschedulable")
            ]
            for _ in range(len(mine), want):
                self.cluster.serial += 1
                pod_name = f"{rs_name}-{self.cluster.serial:05d}"
                tmpl = json.loads(json.dumps(template))
                await self._create(
                    PODS,
                    ns,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": pod_name,
                            "namespace": ns,
                            "uid": f"uid-{pod_name}",
                            "creationTimestamp": _now(self.cluster.pod_age_offset_s),
                            "labels": {
                                **tmpl.get("metadata", {}).get("labels", {}),
                                "pod-template-hash": h,
                            },
                            "ownerReferences": [
                                {
                                    "apiVersion": "apps/v1",
                                    "kind": "ReplicaSet",
                                    "name": rs_name,
                                    "uid": f"uid-rs-{h}",
                                    "controller": True,
                                }
                            ],
                        },
                        # the scheduler: spread over schedulable nodes
                        "spec": {
                            **tmpl.get("spec", {}),
                            "nodeName": nodes[self.cluster.serial % len(nodes)] if nodes else None,
                        },
                        "status": {"phase": "Pending"},
                    },
                )
                started.append(pod_name)
            await self._update_status(ns, name)
        for pod_name in started:
            self.cluster.spawn(self._kubelet_start(ns, pod_name, name))

    async def _update_status(self, ns: str, name: str) -> None:
        dep = self._get(DEPLOYMENTS, ns, name)
        if dep is None:
            return
        h = _template_hash(dep["spec"]["template"])
        pods = [
            p
            for p in self._items(PODS, ns)
            if p["metadata"]["labels"].get("pod-template-hash")
            and any(
                r.get("name", "").startswith(name + "-")
                for r in p["metadata"].get("ownerReferences", [])
            )
        ]
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        ]
        updated = [p for p in pods if p["metadata"]["labels"]["pod-template-hash"] == h]
        await self._patch(
            DEPLOYMENTS,
            ns,
            name,
            {
                "status": {
                    "observedGeneration": dep["metadata"].get("generation", 1),
                    "replicas": len(pods),
                    "updatedReplicas": len(updated),
                    "readyReplicas": len(ready),
                    "availableReplicas": len(ready),
                }
            },
        )

    # ----------------------------------------------------------------- kubelet

    async def _kubelet_start(self, ns: str, pod: str, deployment: str | None) -> None:
        """The kubelet: pull, start, pass the readiness probe."""
        await asyncio.sleep(KUBELET_STARTUP_S)
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None:
                return
            names = [c["name"] for c in obj.get("spec", {}).get("containers", [])] or ["main"]
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "phase": "Running",
                        "podIP": f"10.244.0.{self.cluster.serial % 250 + 1}",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                            {
                                "name": n,
                                "ready": True,
                                "restartCount": 0,
                                "state": {"running": {"startedAt": _now()}},
                            }
                            for n in names
                        ],
                    }
                },
            )
            if deployment:
                await self._update_status(ns, deployment)

    async def _kubelet_start_ephemeral(self, ns: str, pod: str) -> None:
        await asyncio.sleep(KUBELET_STARTUP_S)
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None:
                return
            statuses = [
                {"name": c["name"], "state": {"running": {"startedAt": _now()}}}
                for c in obj["spec"].get("ephemeralContainers", [])
            ]
            await self._patch(PODS, ns, pod, {"status": {"ephemeralContainerStatuses": statuses}})

    async def _kubelet_restart_container(self, ns: str, pod: str) -> None:
        """PID 1 died: the kubelet restarts the container (restartCount+1, NotReady, Ready)."""
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None:
                return
            statuses = obj.get("status", {}).get("containerStatuses", [])
            for s in statuses:
                s["restartCount"] = int(s.get("restartCount", 0)) + 1
                s["ready"] = False
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "False"}],
                    }
                },
            )
        await asyncio.sleep(KUBELET_STARTUP_S)
        async with self._lock:
            await self._patch(
                PODS, ns, pod, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
            )

    async def _serve_exec(self, request: Any) -> aiohttp.web.StreamResponse:
        """The kubelet's exec endpoint: websocket with the v4 channel protocol."""
        raw = request._raw_request
        argv = raw.query.getall("command", [])
        container = raw.query.get("container")
        async with self._lock:
            pod = self._get(PODS, request.namespace, request.name)
        if pod is None:
            return await self._render_error(kmock.KubernetesObjectNotFoundError())
        if container and container not in {c["name"] for c in pod["spec"].get("containers", [])} | {
            c["name"] for c in pod["spec"].get("ephemeralContainers", [])
        }:
            return await self._render_error(
                kmock.KubernetesError(
                    status=400, reason="BadRequest", message=f"container {container} is not valid"
                )
            )
        key = (request.namespace, request.name)
        self.cluster.exec_log.append((request.namespace, request.name, container, list(argv)))
        code, out, err = self.cluster.exec_reply(argv)
        model = self.cluster.containers.setdefault(key, ContainerModel())
        if code == 0:
            await self._apply_exec(request.namespace, request.name, argv, model)
        ws = aiohttp.web.WebSocketResponse(protocols=["v4.channel.k8s.io"])
        await ws.prepare(raw)
        if out:
            await ws.send_bytes(b"\x01" + out.encode())
        if err:
            await ws.send_bytes(b"\x02" + err.encode())
        status: dict[str, Any] = (
            {"status": "Success"}
            if code == 0
            else {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        )
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    async def _apply_exec(self, ns: str, pod: str, argv: list[str], model: ContainerModel) -> None:
        """A model of the fault commands' effects; nothing runs on this machine."""
        if len(argv) == 3 and argv[0] == "kill" and argv[2] == "1":
            sig = signal.Signals["SIG" + argv[1].lstrip("-")]
            if sig in (signal.SIGSTOP, signal.SIGCONT):
                model.paused = sig == signal.SIGSTOP
            elif sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
                self.cluster.spawn(self._kubelet_restart_container(ns, pod))
            return
        script = argv[2] if argv[:2] == ["sh", "-c"] else " ".join(argv)
        for hook, chain in re.findall(r"iptables -I (INPUT|OUTPUT) -j (\S+)", script):
            model.hooks.add(f"{hook} {chain}")
        for hook, chain in re.findall(r"iptables -D (INPUT|OUTPUT) -j (\S+)", script):
            model.hooks.discard(f"{hook} {chain}")
        for size, path in re.findall(r"fallocate -l (\d+)M (\S+)", script):
            model.files[path.strip("'")] = int(size)
        for path in re.findall(r"echo \$! > (\S+)", script):
            model.files[path] = 0
        for path in re.findall(r"rm -f (\S+)", script):
            model.files.pop(path.strip("';"), None)

    # --------------------------------------------------------------- Eviction

    async def _serve_eviction(self, request: Any) -> aiohttp.web.StreamResponse:
        """The Eviction API: honour PodDisruptionBudgets, else delete the pod."""
        ns, name = request.namespace, request.name
        async with self._lock:
            pod = self._get(PODS, ns, name)
            if pod is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            labels = pod["metadata"].get("labels", {})
            for pdb in self._items(PDBS, ns):
                sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
                if not all(labels.get(k) == v for k, v in sel.items()):
                    continue
                matching = [
                    p
                    for p in self._items(PODS, ns)
                    if all(p["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
                ]
                healthy = sum(
                    1
                    for p in matching
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions", [])
                    )
                )
                if "minAvailable" in pdb["spec"]:
                    allowed = healthy - int(pdb["spec"]["minAvailable"])
                else:
                    allowed = healthy - (len(matching) - int(pdb["spec"].get("maxUnavailable", 1)))
                if allowed < 1:
                    self.cluster.evictions_refused += 1
                    return await self._render_error(
                        kmock.KubernetesError(
                            status=429,
                            reason="TooManyRequests",
                            message="Cannot evict pod as it would violate the pod's "
                            "disruption budget.",
                        )
                    )
            await self._delete(PODS, ns, name)
        self.cluster.spawn(self._reconcile_all(ns))
        return aiohttp.web.json_response(
            {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}, status=201
        )


@dataclass
class Request:
    method: str
    path: str
    subresource: str | None
    query: dict[str, str]


class EmulatedCluster:
    """The emulator on a free port, in a background event loop thread."""

    def __init__(self) -> None:
        self.exec_log: list[tuple[str, str, str | None, list[str]]] = []
        self.exec_replies: list[tuple[Callable[[list[str]], bool], tuple[int, str, str]]] = []
        self.containers: dict[tuple[str, str], ContainerModel] = {}
        self.forbidden: list[tuple[str, str, str | None, str]] = []
        self.refuse_ephemeral = False
        self.expire_watches: dict[str, str] = {}  # plural -> "end" | "410", for the next watch
        self.evictions_refused = 0
        self.serial = 0
        self.pod_age_offset_s = 0.0
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._main, daemon=True, name="kmock")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.emu: ClusterEmulator | None = None
        self.url = ""

    # lifecycle
    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emu, kmock.Server(emu) as server:
            emu.cluster = self
            for res in (PODS, NODES, SERVICES, DEPLOYMENTS, REPLICASETS, PDBS, NETPOLS):
                emu.resources[res] = kmock.ResourceInfo()  # empty kinds list as [], not 404
            self.emu, self.url = emu, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run(self, coro: Any, timeout: float = 10) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # test-facing helpers
    def kubeconfig(
        self, tmp_path: Path, *, context: str = "kind-test", namespace: str = "chaos-demo"
    ) -> Path:
        path = tmp_path / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
                    "users": [{"name": "emu", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": context,
                            "context": {"cluster": "emu", "user": "emu", "namespace": namespace},
                        }
                    ],
                    "current-context": context,
                }
            )
        )
        return path

    def exec_reply(self, argv: list[str]) -> tuple[int, str, str]:
        for predicate, reply in self.exec_replies:
            if predicate(argv):
                return reply
        return (0, "", "")

    def forbid(self, method: str, plural: str, subresource: str | None = None) -> None:
        """RBAC: answer 403 to this verb on this resource, as the API server would."""
        self.forbidden.append(
            (
                method.upper(),
                plural,
                subresource,
                (
                    f'{plural} is forbidden: User "system:serviceaccount:ci:chaos" cannot '
                    f'{method.lower()} resource "{plural}" in API group "" '
                    'in the namespace "chaos-demo"'
                ),
            )
        )

    def requests(self) -> list[Request]:
        assert self.emu is not None
        return [
            Request(str(r.method.value).upper(), r.url.path, r.subresource, dict(r.params))
            for r in list(self.emu)
        ]

    def mutating_requests(self) -> list[Request]:
        return [r for r in self.requests() if r.method != "GET" or r.subresource == "exec"]

    def obj(self, res: Any, ns: str | None, name: str) -> dict[str, Any] | None:
        async def get() -> Any:
            assert self.emu is not None
            async with self.emu._lock:
                return self.emu._get(res, ns, name)

        return self.run(get())

    def items(self, res: Any, ns: str | None) -> list[dict[str, Any]]:
        async def get() -> Any:
            assert self.emu is not None
            async with self.emu._lock:
                return self.emu._items(res, ns)

        return self.run(get())

    def add(self, res: Any, ns: str | None, body: dict[str, Any]) -> None:
        async def put() -> None:
            assert self.emu is not None
            async with self.emu._lock:
                await self.emu._create(res, ns, body)

        self.run(put())

    def seed(
        self,
        *,
        namespace: str = "chaos-demo",
        deployment: str = "api",
        replicas: int = 3,
        nodes: tuple[str, ...] = ("worker-1", "worker-2", "worker-3"),
        filler: int = 0,
    ) -> None:
        """Nodes, a Deployment whose pods are Ready, and ``filler`` unrelated pods."""
        for node in nodes:
            self.add(
                NODES,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node},
                    "spec": {},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                    },
                },
            )
        labels = {"app": deployment}
        self.add(
            DEPLOYMENTS,
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": deployment,
                    "namespace": namespace,
                    "uid": f"uid-dep-{deployment}",
                    "generation": 1,
                    "labels": labels,
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "api", "image": "chaos-demo:v1"}]},
                    },
                },
            },
        )
        for i in range(filler):
            self.add(
                PODS,
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"filler-{i:04d}",
                        "namespace": namespace,
                        "labels": {"app": "filler"},
                        "creationTimestamp": _now(-3600),
                    },
                    "spec": {
                        "nodeName": nodes[i % len(nodes)],
                        "containers": [{"name": "c", "image": "x"}],
                    },
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                },
            )
        self.pod_age_offset_s = -3600  # seeded pods are old: replacements are recognisably new
        assert self.emu is not None
        self.run(self.emu._reconcile(namespace, deployment))
        self.eventually(
            lambda: (
                (self.obj(DEPLOYMENTS, namespace, deployment) or {})
                .get("status", {})
                .get("readyReplicas")
                == replicas
            )
        )
        self.pod_age_offset_s = 0.0

    def eventually(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``check`` until truthy, with a deadline (the emulator changes state async)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s: {check}")
            time.sleep(0.01)

    def pods_of(self, ns: str, app: str) -> Iterator[dict[str, Any]]:
        return (
            p for p in self.items(PODS, ns) if p["metadata"].get("labels", {}).get("app") == app
        )


# ------------------------------------------------------------------ pytest fixtures
# Imported by the tests/test_kubernetes_*.py modules.

import pytest  # noqa: E402


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as c:
        c.seed()
        yield c


@pytest.fixture
def kubeconfig(cluster: EmulatedCluster, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path)


@pytest.fixture
def target(kubeconfig: Path) -> Iterator[Any]:
    from pytest_resilience.targets.kubernetes import KubernetesTarget

    t = KubernetesTarget(kubeconfig=str(kubeconfig), namespace="chaos-demo")
    try:
        yield t
    finally:
        t.close()
