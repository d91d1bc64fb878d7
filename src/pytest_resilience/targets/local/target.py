"""LocalTarget: services from a YAML file run as supervised local processes; the Target API.

Each pod is a real process in its own process group, supervised the way a kubelet and a
ReplicaSet controller would: a pod that dies is noticed at once, reported, and replaced
under a new name after an exponential back-off; readiness comes from HTTP or TCP probes;
scale, rolling restart, rollback and drain replace pods one by one.

This class holds the public surface and delegates: the shared state (``state.py``) is
changed only on the supervisor thread (``supervisor.py``), by the pods (``pods.py``), the
probes (``readiness.py``) and the controller (``controller.py``); a pod's resources are
``cgroups.py``, ``volumes.py`` and ``proxies.py``, and the ``guardian.py`` process cleans up
if the session dies, SIGKILL included.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import SelectorMatchedNothing, TargetError
from .. import pod_http
from ..base import (
    EventKind,
    ExecResult,
    Node,
    Pod,
    TargetEvent,
    Workload,
    match_labels,
    parse_selector,
)
from ..hpa_spec import AutoscalerSpec, AutoscalerStatus
from ..services import ServiceSpec, load_services
from .autoscaler import LocalAutoscalers
from .cgroups import PodCgroups
from .controller import Controller
from .faults import LocalFaults
from .guardian import Guardian
from .pods import PodRunner
from .processes import wait_stopped
from .proxies import ServiceProxies
from .readiness import Readiness
from .state import TargetState, pod_number
from .supervisor import Supervisor
from .volumes import DataDirs

__all__ = ["LocalTarget"]

log = logging.getLogger("pytest_resilience.targets.local")


class LocalTarget(LocalFaults):
    """Services from a YAML file as supervised local processes; implements ``Target``.

    ``timeline_hook`` is subscribed before anything starts, so it sees the first pods
    start: a callable taking a :class:`TargetEvent` (for a timeline, its
    ``mark_target_event``). ``toxiproxy_url`` is the Toxiproxy
    server for ``proxied: true`` services (``--toxiproxy-url``); without it the
    ``toxiproxy-server`` binary on PATH is started, else the embedded server.
    """

    name = "local"

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        work_dir: Path,
        timeline_hook: Callable[[TargetEvent], None] | None = None,
        stop_grace_s: float = 3.0,
        toxiproxy_url: str | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.stop_grace_s = stop_grace_s
        self._state = state = TargetState(specs, work_dir=self.work_dir, stop_grace_s=stop_grace_s)
        self._supervisor = Supervisor(state)
        self._guardian = Guardian()
        self._data_dirs = DataDirs(self._guardian)
        self._pods = PodRunner(state, self._supervisor, self._guardian)
        self._readiness = Readiness(state, self._supervisor, self._pods)
        self._controller = Controller(state, self._supervisor, self._pods)
        self._proxies = ServiceProxies(toxiproxy_url)
        self._closed = False
        self._autoscalers = LocalAutoscalers(self, self._announce_autoscaled)
        if timeline_hook is not None:
            self.subscribe(timeline_hook)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        work_dir: Path,
        timeline_hook: Callable[[TargetEvent], None] | None = None,
        **options: Any,
    ) -> LocalTarget:
        """Load and check a services YAML (ConfigError on any mistake), nothing started."""
        return cls(
            load_services(path),
            work_dir=work_dir,
            timeline_hook=timeline_hook,
            **options,
        )

    def __enter__(self) -> LocalTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalTarget {', '.join(self._state.specs)} in {self.work_dir}>"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every service in dependency order, each ready before its dependents.

        On any failure everything already started is stopped again, and the TargetError
        names the service, its command and the last lines of the pod's log.
        """
        if self._closed:
            raise TargetError("this LocalTarget was closed; create a new one")
        if self._supervisor.thread is not None:
            raise TargetError("LocalTarget.start() was already called")
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._supervisor.open()
        limited = [s.name for s in self._state.specs.values() if s.memory_limit_mb is not None]
        name = f"pytest-resilience-{os.getpid()}-{id(self):x}"
        self._state.cgroups = PodCgroups.for_target(name, limited)  # per-pod cgroups, as root
        self._supervisor.run(on_exit=self._pods.on_exit, tick=self._tick)
        atexit.register(self.close)
        call = self._supervisor.call
        try:
            call(lambda: self._guardian.start(self._state.cgroups.bases))
            call(lambda: self._data_dirs.prepare(self._state.services.values()))
            self._proxies.start(self._state.proxy_ports, self._state.services)
            for name in self._state.order:
                call(functools.partial(self._controller.activate, name))
                self._controller.wait_started(name)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every pod (SIGTERM to its group, SIGKILL after the grace), then the
        supervisor. Idempotent; safe from signal handlers, atexit and Ctrl-C paths."""
        with self._state.cond:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._autoscalers.stop_all()
        thread = self._supervisor.thread
        if thread is None:
            self._release_resources()
            return
        if self._supervisor.on_thread():
            # Called from an event callback: finish on another thread, which can join us.
            self._controller.begin_shutdown()
            threading.Thread(target=self._finish_close, name="resilience-local-close").start()
            return
        if thread.is_alive():
            self._supervisor.post(self._controller.begin_shutdown)
        self._finish_close()

    def _finish_close(self) -> None:
        self._supervisor.join(timeout=self.stop_grace_s + 10.0)
        self._pods.kill_everything()
        self._supervisor.close()
        self._release_resources()

    def _release_resources(self) -> None:
        """Proxies, volumes, cgroups, guardian: each undone even if another one fails."""
        for step in (
            self._proxies.stop,
            self._data_dirs.unmount_all,
            self._guardian.stop,
        ):
            try:
                step()
            except Exception:
                log.exception("local target: %s failed at close", step.__name__)
        self._state.cgroups.remove()

    def _tick(self) -> None:
        """The supervisor's work each tick, after exits and commands (state lock held)."""
        self._readiness.collect()
        self._pods.timers()
        if not self._state.shutting_down:
            self._controller.reconcile()
        self._readiness.schedule()

    # ------------------------------------------------------------------ Target: reading

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]:
        """Live pods (not terminating) matching ``selector``; ``namespace`` is ignored."""
        wanted = parse_selector(selector)
        found = self._state.pod_views()
        return sorted(
            (p for p in found if match_labels(p.labels, wanted)),
            key=lambda p: (p.workload, pod_number(p.name)),
        )

    def select(self, selector: str | Mapping[str, str]) -> list[Pod]:
        """Like :meth:`pods` but an empty match is an error naming the labels that exist."""
        found = self.pods(selector)
        if not found:
            known = self._state.labels_in_use()
            raise SelectorMatchedNothing(
                f"selector {selector!r} matched no running pod; labels in use: {', '.join(known)}"
            )
        return found

    def workloads(self) -> list[Workload]:
        return self._state.workload_views()

    def nodes(self) -> list[Node]:
        return self._state.node_views()

    def endpoint(self, workload: str) -> str:
        return f"http://127.0.0.1:{self.port_of(workload)}"

    def port_of(self, service: str) -> int:
        port = self._state.service(service).port
        if port is None:
            raise TargetError(f"service {service!r} has no port (set port: auto in its YAML)")
        return port

    def pod_port(self, pod: Pod | str) -> int | None:
        """The pod's private port (``pod_port: true``), or None."""
        return self._state.pod(pod).pod_port

    def scrape_pod(self, pod: Pod, *, timeout: float) -> str | None:
        """:class:`~..base.PodMetrics`: /metrics on the pod's private port."""
        address = self.metrics_address(pod)
        return pod_http.get_text(f"http://{address}/metrics", timeout=timeout) if address else None

    def metrics_address(self, pod: Pod) -> str | None:
        port = self.pod_port(pod)
        return f"{pod.host}:{port}" if port else None

    def post_admin(self, pod: Pod, path: str, *, timeout: float) -> bytes:
        """:class:`~..base.PodAdmin`: the admin hooks are on the pod's private port."""
        port = self.pod_port(pod)
        if not port:
            raise TargetError(
                f"pod {pod.name} has no private port for admin hooks (set pod_port: true on "
                f"service {pod.workload!r})"
            )
        return pod_http.post(f"http://{pod.host}:{port}{path}", timeout=timeout)

    def toxiproxy_server(self) -> str | None:
        """:class:`~..base.DependencyProxies`: the server carrying the proxied services."""
        return self.toxiproxy_url

    def data_dir(self, service: str) -> Path:
        path = self._state.service(service).data_dir
        if path is None:
            raise TargetError(f"service {service!r} has no data_dir (set data_dir: true)")
        return path

    def volume(self, service: str) -> Path | None:
        """The mount point of the service's bounded volume (its data_dir), None without one.

        A PrivilegeError when the service declares a volume but got a plain directory (no
        root to mount a tmpfs): filling it would fill the host's own filesystem.
        """
        return self._data_dirs.bounded(self._state.service(service))

    @property
    def unbounded_volumes(self) -> dict[str, str]:
        """Services whose declared volume is a plain directory here, each with the reason."""
        return dict(self._data_dirs.unbounded)

    @property
    def toxiproxy_url(self) -> str | None:
        """The Toxiproxy server carrying the proxied services, None when none is running."""
        return self._proxies.url

    @property
    def toxiproxy_kind(self) -> str | None:
        """Which server that is: "external", "binary" or "embedded" (None: none)."""
        return self._proxies.kind

    @property
    def memory_enforcement(self) -> str | None:
        """How ``memory_limit_mb`` is enforced: "cgroup2", "cgroup1" (memory cgroups),
        "rlimit" (RLIMIT_AS fallback), or None before start()."""
        if self._supervisor.thread is None:
            return None
        memory = self._state.cgroups.memory
        return f"cgroup{memory.version}" if memory is not None else "rlimit"

    def proxy_port(self, service: str) -> int:
        """The port of the Toxiproxy proxy in front of a ``proxied: true`` service."""
        self._state.service(service)
        port = self._state.proxy_ports.get(service)
        if port is None:
            raise TargetError(f"service {service!r} is not proxied (set proxied: true)")
        return port

    def memory_usage(self, pod: Pod | str) -> tuple[int, int | None]:
        """(bytes used, limit in bytes or None) of a pod.

        Usage is its memory cgroup's charge (resident memory and page cache, tmpfs pages it
        wrote included) where pods get memory cgroups, else the resident set size of its
        process tree. The limit is ``memory_limit_mb``, None when the service sets none.
        """
        return self._pods.memory_usage(pod)

    def spawn_in_pod(
        self,
        pod: Pod | str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a helper process inside a pod: the pod's cgroups (so its memory counts
        against the pod's limit, and egress rules match it), process group, environment
        (updated by ``env``), working directory and user.

        Killing, pausing or closing the pod takes the helper too; otherwise the caller
        stops it (and waits for it). Output goes to the pod's log.
        """
        name = pod.name if isinstance(pod, Pod) else pod
        spawn = functools.partial(self._pods.spawn_helper, name, list(argv), env or {})
        helper: subprocess.Popen[bytes] = self._supervisor.call(spawn)
        return helper

    def log_tail(self, pod: Pod, *, lines: int = 3) -> str:
        """:class:`~..base.PodLogs`: the last ``lines`` of the pod's log, joined by " | "."""
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path(pod).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_path(self, pod: Pod | str) -> Path:
        """Where the pod's stdout and stderr go; kept after the pod is gone."""
        return self._state.log_path(pod.name if isinstance(pod, Pod) else pod)

    def spec(self, service: str) -> ServiceSpec:
        return self._state.service(service).spec

    def restarts(self, service: str) -> int:
        """How many times the service's pods died unexpectedly or failed to start."""
        with self._state.cond:
            return self._state.service(service).restarts

    def version(self, service: str) -> str:
        with self._state.cond:
            return self._state.service(service).version

    # ------------------------------------------------------------------ Target: acting

    def kill_pod(self, pod: Pod, *, sig: int = signal.SIGKILL) -> None:
        """Signal the pod's process group. For SIGKILL, return once supervision has
        seen the death, so a following wait_ready cannot see the dead pod as ready."""
        self._controller.kill(pod.name if isinstance(pod, Pod) else pod, sig)

    def replace_pod(self, pod: Pod) -> None:
        """SIGTERM: the app shuts down, the supervisor starts a fresh process in its place."""
        self.kill_pod(pod, sig=signal.SIGTERM)

    def pause_pod(self, pod: Pod) -> None:
        """SIGSTOP every process of the pod (its group, its whole process tree, its
        cgroups): a hung machine. The pod stops being ready; on return each of those
        processes is stopped (the signal is delivered asynchronously)."""
        name = pod.name if isinstance(pod, Pod) else pod
        pids = self._supervisor.call(functools.partial(self._controller.pause, name))
        left = wait_stopped(pids, timeout=2.0)
        if left:
            log.warning("pod processes %s not stopped 2 s after SIGSTOP", left)

    def resume_pod(self, pod: Pod) -> None:
        """SIGCONT every process of the pod; it is ready again once its health check
        passes."""
        name = pod.name if isinstance(pod, Pod) else pod
        self._supervisor.call(functools.partial(self._controller.resume, name))

    def exec(self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        """Run ``argv`` next to the pod: same env, working directory and user."""
        return self._pods.exec(pod, argv, timeout=timeout)

    def scale(self, workload: str, replicas: int) -> None:
        if not isinstance(replicas, int) or replicas < 0:
            raise TargetError(
                f"scale {workload}: replicas must be an integer >= 0, got {replicas!r}"
            )
        self._supervisor.call(functools.partial(self._controller.scale, workload, replicas))

    def restart(self, workload: str) -> None:
        """Rolling restart: each pod replaced by a new one, which must be ready first."""
        self._controller.restart(workload)

    def rollout(self, workload: str, version: str) -> None:
        """Roll the workload to another of its ``versions`` (a deploy; undo with rollback)."""
        self._controller.rollout(workload, version)

    def rollback(self, workload: str) -> str:
        """Back to the previous version (history, else the one before in ``versions``)."""
        return self._controller.rollback(workload)

    def cordon(self, node: str) -> None:
        self._supervisor.call(functools.partial(self._controller.set_cordon, node, True))

    def uncordon(self, node: str) -> None:
        self._supervisor.call(functools.partial(self._controller.set_cordon, node, False))

    def drain(self, node: str, *, timeout: float | None = None) -> list[Pod]:
        """Cordon ``node``, start a replacement elsewhere for each of its pods, and stop
        each old pod once its replacement is ready; return the pods moved, as the
        Kubernetes target returns the pods it evicted."""
        return self._controller.drain(node, timeout=timeout)

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None:
        self._controller.wait_ready(workload, timeout=timeout, replicas=replicas)

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        return self._state.subscribe(callback)

    # ------------------------------------------------------------------ Autoscaling

    def autoscale(self, spec: AutoscalerSpec) -> None:
        """:class:`~..base.Autoscaling`: the HPA algorithm in a loop of its own
        (autoscaler.py), on the pods' CPU; ConfigError naming the spec's field."""
        self._autoscalers.start(spec, known=set(self._state.services))

    def stop_autoscaling(self, workload: str) -> None:
        self._autoscalers.stop(workload)

    def autoscaler_status(self, workload: str) -> AutoscalerStatus | None:
        return self._autoscalers.status(workload)

    def _announce_autoscaled(self, workload: str, detail: str) -> None:
        with contextlib.suppress(TargetError):  # closing: nobody left to tell
            self._controller.announce(EventKind.AUTOSCALED, workload, detail)
