"""Test support for the engine tests: a small Target over real `sleep` processes, and an
aiohttp server on its own thread (admin hooks of pods, PagerDuty-like endpoints).

ProcTarget is a test double of the *platform*, not of project code: pods are real
processes, killed with real signals, replaced by a small supervisor thread like a
kubelet would. Pods get PR_SET_PDEATHSIG so none outlives the process that started it
(the serve subprocess in the SIGKILL test).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from pytest_resilience.engine.playbooks import BUNDLED_PLAYBOOKS
from pytest_resilience.errors import TargetError
from pytest_resilience.targets import pod_http
from pytest_resilience.targets.base import (
    EventKind,
    ExecResult,
    Node,
    Pod,
    TargetEvent,
    Workload,
    match_labels,
    parse_selector,
)

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Pod:
    name: str
    workload: str
    node: str
    version: str
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Workload:
    name: str
    replicas: int
    versions: dict[str, list[str]]
    version: str
    history: list[str] = field(default_factory=list)
    serial: int = 0


class ProcTarget:
    """Workloads of `sleep` processes; a version whose argv exits quickly crash-loops."""

    name = "proc"

    def __init__(
        self,
        workloads: Mapping[str, tuple[int, dict[str, list[str]], str]],
        *,
        nodes: Sequence[str] = ("node-a", "node-b"),
        admin_port: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._workloads = {
            name: _Workload(name, replicas, dict(versions), version, [version])
            for name, (replicas, versions, version) in workloads.items()
        }
        self._nodes = {n: Node(n) for n in nodes}
        self._pods: dict[str, _Pod] = {}
        self._subscribers: list[Callable[[TargetEvent], None]] = []
        self._admin_port = admin_port
        self._stop = threading.Event()
        self._next_node = 0
        self.calls: list[str] = []
        self._reconcile()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    # -- supervisor --------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.02):
            self._reconcile()

    def _emit(self, kind: EventKind, **kw) -> None:
        event = TargetEvent(kind, **kw)
        for callback in list(self._subscribers):
            callback(event)

    def _reconcile(self) -> None:
        events = []
        with self._lock:
            for pod in list(self._pods.values()):
                if pod.proc.poll() is not None:
                    del self._pods[pod.name]
                    events.append((EventKind.POD_DIED, dict(workload=pod.workload, pod=pod.name)))
            for w in self._workloads.values():
                live = [p for p in self._pods.values() if p.workload == w.name]
                for pod in live[w.replicas :]:
                    self._terminate(pod)
                for _ in range(w.replicas - len(live)):
                    pod = self._start_pod(w)
                    events.append((EventKind.POD_READY, dict(workload=w.name, pod=pod.name)))
        for kind, kw in events:
            self._emit(kind, **kw)

    def _start_pod(self, w: _Workload) -> _Pod:
        nodes = [n.name for n in self._nodes.values() if n.schedulable and n.ready]
        if not nodes:
            raise TargetError("no schedulable node")
        node = nodes[self._next_node % len(nodes)]
        self._next_node += 1
        w.serial += 1
        proc = subprocess.Popen(
            w.versions[w.version], preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL
        )
        pod = _Pod(f"{w.name}-{w.serial}", w.name, node, w.version, proc)
        self._pods[pod.name] = pod
        return pod

    def _terminate(self, pod: _Pod, sig: int = signal.SIGTERM) -> None:
        self._pods.pop(pod.name, None)
        if pod.proc.poll() is None:
            pod.proc.send_signal(sig)
        pod.proc.wait(timeout=5)

    # -- Target protocol ---------------------------------------------------------------

    def pods(self, selector="", *, namespace=None) -> list[Pod]:
        wanted = parse_selector(selector)
        with self._lock:
            return [
                pod
                for p in self._pods.values()
                if match_labels((pod := self._view(p)).labels, wanted)
            ]

    def _view(self, p: _Pod) -> Pod:
        alive = p.proc.poll() is None
        # like a readiness probe's initial delay: a pod that crashes at once is never ready
        ready = alive and self._nodes[p.node].ready and time.monotonic() - p.started >= 0.1
        return Pod(
            p.name,
            p.workload,
            labels={"app": p.workload},
            node=p.node,
            pid=p.proc.pid,
            ready=ready,
            version=p.version,
        )

    def workloads(self) -> list[Workload]:
        with self._lock:
            return [
                Workload(
                    w.name,
                    replicas=w.replicas,
                    version=w.version,
                    ready_replicas=sum(1 for p in self.pods() if p.workload == w.name and p.ready),
                )
                for w in self._workloads.values()
            ]

    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes.values())

    def kill_pod(self, pod: Pod, *, sig: int = signal.SIGKILL) -> None:
        self.calls.append(f"kill_pod {pod.name} {int(sig)}")
        with self._lock:
            p = self._pods.get(pod.name)
            if p is None:
                raise TargetError(f"no pod {pod.name}")
            p.proc.send_signal(sig)
            p.proc.wait(timeout=5)

    def replace_pod(self, pod: Pod) -> None:
        """SIGTERM, as the local target does; the supervisor here starts a fresh process."""
        self.calls.append(f"replace_pod {pod.name}")
        with self._lock:
            p = self._pods.get(pod.name)
            if p is None:
                raise TargetError(f"no pod {pod.name}")
            p.proc.send_signal(signal.SIGTERM)
            p.proc.wait(timeout=5)

    def pause_pod(self, pod: Pod) -> None:
        os.kill(pod.pid, signal.SIGSTOP)

    def resume_pod(self, pod: Pod) -> None:
        os.kill(pod.pid, signal.SIGCONT)

    def exec(self, pod: Pod, argv, *, timeout: float = 30.0) -> ExecResult:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def scale(self, workload: str, replicas: int) -> None:
        self.calls.append(f"scale {workload} {replicas}")
        with self._lock:
            self._workloads[workload].replicas = replicas

    def restart(self, workload: str) -> None:
        self.calls.append(f"restart {workload}")
        with self._lock:
            for p in [p for p in self._pods.values() if p.workload == workload]:
                self._terminate(p)

    def rollout(self, workload: str, version: str) -> None:
        with self._lock:
            w = self._workloads[workload]
            w.version = version
            w.history.append(version)
        self.restart(workload)

    def rollback(self, workload: str) -> str:
        self.calls.append(f"rollback {workload}")
        with self._lock:
            w = self._workloads[workload]
            if len(w.history) < 2:
                raise TargetError(f"{workload} has no previous version")
            w.history.pop()
            w.version = w.history[-1]
        self.restart(workload)
        return w.version

    def cordon(self, node: str) -> None:
        self.calls.append(f"cordon {node}")
        with self._lock:
            self._nodes[node] = Node(node, ready=self._nodes[node].ready, schedulable=False)

    def uncordon(self, node: str) -> None:
        with self._lock:
            self._nodes[node] = Node(node, ready=self._nodes[node].ready, schedulable=True)

    def drain(self, node: str) -> None:
        self.calls.append(f"drain {node}")
        with self._lock:
            for p in [p for p in self._pods.values() if p.node == node]:
                self._terminate(p, signal.SIGKILL)

    def fail_node(self, node: str) -> None:
        """Test helper: the node stops being ready (its pods stop being ready)."""
        with self._lock:
            self._nodes[node] = Node(node, ready=False, schedulable=self._nodes[node].schedulable)
        self._emit(EventKind.NODE_NOT_READY, node=node)

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                wanted = replicas if replicas is not None else self._workloads[workload].replicas
                ready = sum(1 for p in self.pods() if p.workload == workload and p.ready)
            if ready >= wanted:
                return
            if time.monotonic() > deadline:
                raise TargetError(f"{workload}: {ready}/{wanted} ready after {timeout}s")
            time.sleep(0.02)

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def endpoint(self, workload: str) -> str:
        return ""

    def pod_port(self, pod: Pod) -> int | None:
        return self._admin_port

    def post_admin(self, pod: Pod, path: str, *, timeout: float) -> bytes:  # PodAdmin
        if not self._admin_port:
            raise TargetError(f"pod {pod.name} has no admin port")
        return pod_http.post(f"http://{pod.host}:{self._admin_port}{path}", timeout=timeout)

    def version(self, workload: str) -> str:
        return self._workloads[workload].version

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for p in list(self._pods.values()):
                self._terminate(p, signal.SIGKILL)


SLEEP = ["sleep", "300"]
CRASH = ["sleep", "0.05"]


def serve_target() -> ProcTarget:
    """What the serve subprocess builds: --target-factory engine_support:serve_target."""
    port = os.environ.get("ENGINE_TEST_ADMIN_PORT")
    return ProcTarget({"api": (1, {"v1": SLEEP}, "v1")}, admin_port=int(port) if port else None)


class ThreadedApp:
    """An aiohttp app served on 127.0.0.1:<free port> from its own thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> ThreadedApp:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class AdminHooks:
    """The demo's admin API shape (POST /admin/...), with state the tests steer."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.effects: dict[str, Callable[[web.Request], dict]] = {}
        self.app = web.Application()
        self.app.router.add_post("/admin/{hook:.*}", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        path = "/admin/" + request.match_info["hook"]
        self.calls.append(path + (f"?{request.query_string}" if request.query_string else ""))
        effect = self.effects.get(path)
        return web.json_response(effect(request) if effect else {"ok": True})


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


REMEDIATORS = BUNDLED_PLAYBOOKS


def fast_playbooks(directory, *, names=None):
    """The bundled playbooks with their waits shortened (same decisions, seconds not minutes)."""
    import re

    directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(REMEDIATORS.glob("*.yaml")):
        if names is not None and path.stem not in names:
            continue
        text = path.read_text()
        text = re.sub(r"wait: \d+s", "wait: 0.5s", text)
        text = re.sub(r"window: \d+s", "window: 0.3s", text)
        text = re.sub(r"for: \d+s", "for: 0s", text)
        (directory / path.name).write_text(text)
    return directory
