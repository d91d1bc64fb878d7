"""The embedded local target: services from a YAML file run as supervised local processes.

Each pod is a real process in its own process group, supervised the way a kubelet and a
ReplicaSet controller would: a pod that dies is noticed at once (a pidfd per pod in one
selector, no polling of every pod), reported, and replaced under a new name after an
exponential back-off; readiness comes from HTTP or TCP probes; scale, rolling restart,
rollback and drain replace pods one by one.

Why the threading is shaped the way it is:

* Every pod is forked by the single long-lived supervisor thread. Pods carry
  ``PR_SET_PDEATHSIG=SIGKILL``, and the kernel fires it when the *thread* that forked
  them exits, so forking from a short-lived caller thread would kill the pod with it.
  Public methods therefore hand their change to the supervisor and wait for it.
* PDEATHSIG only reaches the pod's first process. A "guardian" (a tiny Python process
  holding the read end of a pipe from us) kills every pod's process group when that
  pipe closes, which happens however we die, SIGKILL included; so a pod's children
  (Postgres under its wrapper, say) do not outlive the session either.
* Events go to subscribers from the supervisor thread, outside the state lock, and a
  failing callback is logged, never allowed to stop supervision.
* Pods are process-group leaders in *our* session (not setsid), so a helper started by
  :meth:`LocalTarget.spawn_in_pod` can join a pod's process group: setpgid() only works
  within one session.

Resources a pod may declare (Toxiproxy proxies, bounded volumes, memory limits) live in
``proxies.py``, ``volumes.py`` and ``cgroups.py``; this module decides when to make and
remove them.

Size: over 500 lines because LocalTarget's supervisor loop, readiness and Target API share the
supervisor's state under one lock; the split along those seams is issue 14's.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import http.client
import logging
import os
import pwd
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ...errors import PrivilegeError, SelectorMatchedNothing, TargetError
from ...ports import free_port
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
from ..services import ServiceSpec, dependency_order, expand_placeholders, load_services
from .autoscaler import LocalAutoscalers
from .cgroups import PodCgroups, cgroup_kill, enter_pod, limit_bytes
from .faults import LocalFaults
from .guardian import GUARDIAN_SCRIPT
from .processes import signal_processes, tree_rss, wait_stopped
from .proxies import ProxyRoutes, start_proxies
from .volumes import mount_volume, sweep_stale_volumes, unmount_volume

__all__ = ["LocalTarget"]

log = logging.getLogger("pytest_resilience.targets.local")

_LOG_TAIL_LINES = 15
_STARTING_PROBE_S = 0.1  # probe period of a pod that is not ready yet
_READY_PROBE_S = 1.0  # probe period of a ready pod
_PROBE_TIMEOUT_S = 1.0
_FAILURE_THRESHOLD = 3  # consecutive failed probes before a ready pod is marked not ready
_PROCESS_READY_S = 0.3  # "process alive" health: alive this long counts as started
_IDLE_TICK_S = 0.5


@dataclass
class _PodState:
    name: str
    service: str
    number: int
    node: str
    version: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: Path
    pod_port: int | None
    cgroup: Path | None = None  # its own cgroup v2 directory, when we may create one
    memory_cgroup: Path | None = None  # its v1 memory cgroup (v2: the same as cgroup)
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    ever_ready: bool = False
    ready_since: float | None = None
    paused: bool = False
    terminating: bool = False
    kill_at: float | None = None
    failed_start: bool = False  # POD_FAILED_TO_START already emitted for this pod
    killed: bool = False  # killed through kill_pod: a deleted pod, replaced without back-off
    failures: int = 0
    next_probe_at: float = 0.0
    probe: Future[str | None] | None = None
    replaces: str | None = None  # the old pod this one replaces once ready
    superseded_by: str | None = None  # the new pod that will replace this one

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def cgroups(self) -> list[Path]:
        return [c for c in dict.fromkeys((self.cgroup, self.memory_cgroup)) if c is not None]


@dataclass
class _Failure:
    """Why a pod of a service did not come up; start() turns it into a TargetError."""

    pod: str
    argv: list[str]
    reason: str
    tail: str


@dataclass
class _ServiceState:
    spec: ServiceSpec
    port: int | None
    data_dir: Path | None
    version: str
    history: list[str]
    desired: int
    backoff: float
    active: bool = False
    restarts: int = 0
    held: int = 0  # slots the restart policy says not to refill
    counter: int = 0
    next_spawn_at: float = 0.0
    last_failure: _Failure | None = None


class LocalTarget(LocalFaults):
    """Services from a YAML file as supervised local processes; implements ``Target``.

    ``timeline_hook`` is subscribed before anything starts: a callable taking a
    :class:`TargetEvent`, or an object with ``mark(kind, name, **detail)`` such as a
    :class:`~pytest_resilience.timeline.Timeline`. ``toxiproxy_url`` is the Toxiproxy
    server for ``proxied: true`` services (``--toxiproxy-url``); without it the
    ``toxiproxy-server`` binary on PATH is started, else the embedded server.
    """

    name = "local"

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        work_dir: Path,
        timeline_hook: Any = None,
        stop_grace_s: float = 3.0,
        toxiproxy_url: str | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.stop_grace_s = stop_grace_s
        self._toxiproxy_url_option = toxiproxy_url
        self._specs = {s.name: s for s in specs}
        self._order = _dependency_order(list(specs))
        self._cond = threading.Condition(threading.RLock())
        self._services: dict[str, _ServiceState] = {}
        for spec in specs:
            port = free_port() if spec.port == "auto" else spec.port
            data = self.work_dir / "data" / spec.name if spec.data_dir else None
            self._services[spec.name] = _ServiceState(
                spec=spec,
                port=port,
                data_dir=data,
                version=spec.version,
                history=[spec.version],
                desired=spec.replicas,
                backoff=spec.restart.backoff_s,
            )
        # Chosen now, like "auto" ports, so {proxies.<name>.port} is known before anything runs.
        self._proxy_ports = {s.name: free_port() for s in specs if s.proxied}
        self._proxies: ProxyRoutes | None = None
        self._volumes: list[Path] = []  # mounted, in mount order
        # Declared volumes that are plain directories (no tmpfs to be had): service -> why.
        self._unbounded: dict[str, str] = {}
        self._nodes = list(dict.fromkeys(n for s in specs for n in s.nodes))
        self._cordoned: set[str] = set()
        self._nodes_down: set[str] = set()
        self._pods: dict[str, _PodState] = {}
        self._subscribers: list[Callable[[TargetEvent], None]] = []
        self._outbox: list[TargetEvent] = []
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._probes: ThreadPoolExecutor | None = None
        self._guardian: subprocess.Popen[bytes] | None = None
        self._cgroups = PodCgroups()
        self._shutting_down = False
        self._closed = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._autoscalers = LocalAutoscalers(self, self._announce_autoscaled)
        if timeline_hook is not None:
            self.subscribe(_as_callback(timeline_hook))

    @classmethod
    def from_file(
        cls, path: str | Path, *, work_dir: Path, timeline_hook: Any = None, **options: Any
    ) -> LocalTarget:
        """Load and check a services YAML (ConfigError on any mistake), nothing started."""
        return cls(load_services(path), work_dir=work_dir, timeline_hook=timeline_hook, **options)

    def __enter__(self) -> LocalTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalTarget {', '.join(self._specs)} in {self.work_dir}>"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every service in dependency order, each ready before its dependents.

        On any failure everything already started is stopped again, and the TargetError
        names the service, its command and the last lines of the pod's log.
        """
        if self._closed:
            raise TargetError("this LocalTarget was closed; create a new one")
        if self._thread is not None:
            raise TargetError("LocalTarget.start() was already called")
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resilience-probe")
        self._make_cgroup_base()
        self._thread = threading.Thread(
            target=self._supervise, name="resilience-local-supervisor", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)
        try:
            self._call(self._start_guardian)
            self._call(self._prepare_data_dirs)
            self._start_proxies()
            for name in self._order:
                self._call(functools.partial(self._activate, name))
                self._wait_started(name)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every pod (SIGTERM to its group, SIGKILL after the grace), then the
        supervisor. Idempotent; safe from signal handlers, atexit and Ctrl-C paths."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._autoscalers.stop_all()
        thread = self._thread
        if thread is None:
            self._release_resources()
            return
        if threading.current_thread() is thread:
            # Called from an event callback: finish on another thread, which can join us.
            self._begin_shutdown()
            threading.Thread(target=self._finish_close, name="resilience-local-close").start()
            return
        if thread.is_alive():
            done: Future[None] = Future()
            self._commands.put((self._begin_shutdown, done))
            self._wake()
        self._finish_close()

    def _finish_close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=self.stop_grace_s + 10.0)
            if thread.is_alive():
                log.error("local target supervisor did not stop; killing pod groups directly")
        self._kill_everything()
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)
        if self._selector is not None:
            self._selector.close()
        # -1 first: a late probe callback must not write into a reused descriptor number.
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._release_resources()

    def _release_resources(self) -> None:
        """Proxies, volumes, cgroups, guardian: each undone even if another one fails."""
        for step in (self._stop_proxies, self._unmount_volumes, self._stop_guardian):
            try:
                step()
            except Exception:
                log.exception("local target: %s failed at close", step.__name__)
        self._remove_cgroups()

    def _prepare_data_dirs(self) -> None:
        """Create data dirs, mounting the bounded volumes (supervisor thread: it alone
        writes to the guardian, which must learn of each mount before it exists)."""
        sweep_stale_volumes()
        for svc in self._services.values():
            if svc.data_dir is None:
                continue
            svc.data_dir.mkdir(parents=True, exist_ok=True)
            if svc.spec.volume_mb is not None:
                self._mount_or_fall_back(svc.spec.name, svc.data_dir, svc.spec.volume_mb)
            if svc.spec.user:
                entry = _user_entry(svc.spec)
                os.chown(svc.data_dir, entry.pw_uid, entry.pw_gid)

    def _mount_or_fall_back(self, service: str, path: Path, size_mb: int) -> None:
        """Mount the bounded volume; without the privilege to mount, keep a plain directory.

        A plain directory lets the service (and the demo) run as a normal user; only
        ``disk_fill`` needs the bound, and :meth:`volume` refuses it there, naming why.
        """
        why = None
        if os.geteuid() != 0:
            why = f"a tmpfs mount needs root and this process runs as uid {os.geteuid()}"
        else:
            self._tell_guardian(f"mount {path}")
            try:
                mount_volume(path, size_mb, service=service)
            except PrivilegeError as exc:
                self._tell_guardian(f"unmount {path}")
                why = str(exc)
            except TargetError:
                self._tell_guardian(f"unmount {path}")
                raise
            else:
                self._volumes.append(path)
                return
        self._unbounded[service] = why
        log.warning(
            "service %s: volume of %d MiB is a plain directory at %s, not a bounded "
            "filesystem (%s); the service runs, disk_fill on it is refused",
            service,
            size_mb,
            path,
            why,
        )

    def _unmount_volumes(self) -> None:
        while self._volumes:
            path = self._volumes.pop()
            unmount_volume(path)
            self._tell_guardian(f"unmount {path}")

    def _start_proxies(self) -> None:
        if not self._proxy_ports:
            return
        routes = {}
        for name, listen in self._proxy_ports.items():
            upstream = self._services[name].port
            assert upstream is not None  # services.py refuses proxied without a port
            routes[name] = (listen, upstream)
        self._proxies = start_proxies(self._toxiproxy_url_option, routes)

    def _stop_proxies(self) -> None:
        proxies, self._proxies = self._proxies, None
        if proxies is not None:
            proxies.close()

    def _make_cgroup_base(self) -> None:
        """Per-pod cgroups (see cgroups.PodCgroups); only as root."""
        self._cgroups = PodCgroups.create(f"pytest-resilience-{os.getpid()}-{id(self):x}")
        limited = [s.name for s in self._specs.values() if s.memory_limit_mb is not None]
        if limited and self._cgroups.memory is None:
            log.warning(
                "memory_limit_mb of %s enforced with RLIMIT_AS (address space, not resident "
                "memory: a limit can stop a program that maps much but uses little), because "
                "pods get no memory cgroup here: %s",
                ", ".join(limited),
                self._cgroups.memory_fallback,
            )

    def _remove_cgroups(self) -> None:
        self._cgroups.remove()

    # ------------------------------------------------------------------ Target: reading

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]:
        """Live pods (not terminating) matching ``selector``; ``namespace`` is ignored."""
        wanted = parse_selector(selector)
        with self._cond:
            found = [
                self._pod_view(p)
                for p in self._pods.values()
                if not p.terminating and p.proc is not None
            ]
        return sorted(
            (p for p in found if match_labels(p.labels, wanted)),
            key=lambda p: (p.workload, _number(p.name)),
        )

    def select(self, selector: str | Mapping[str, str]) -> list[Pod]:
        """Like :meth:`pods` but an empty match is an error naming the labels that exist."""
        found = self.pods(selector)
        if not found:
            with self._cond:
                known = sorted(
                    {f"{k}={v}" for s in self._services.values() for k, v in s.spec.labels.items()}
                )
            raise SelectorMatchedNothing(
                f"selector {selector!r} matched no running pod; labels in use: {', '.join(known)}"
            )
        return found

    def workloads(self) -> list[Workload]:
        with self._cond:
            return [
                Workload(
                    name=name,
                    replicas=svc.desired,
                    ready_replicas=self._ready_count(name),
                    version=svc.version,
                    labels=dict(svc.spec.labels),
                )
                for name, svc in self._services.items()
            ]

    def nodes(self) -> list[Node]:
        with self._cond:
            return [
                Node(name=n, ready=n not in self._nodes_down, schedulable=n not in self._cordoned)
                for n in self._nodes
            ]

    def endpoint(self, workload: str) -> str:
        return f"http://127.0.0.1:{self.port_of(workload)}"

    def port_of(self, service: str) -> int:
        port = self._service(service).port
        if port is None:
            raise TargetError(f"service {service!r} has no port (set port: auto in its YAML)")
        return port

    def pod_port(self, pod: Pod | str) -> int | None:
        """The pod's private port (``pod_port: true``), or None."""
        return self._pod(pod).pod_port

    def scrape_pod(self, pod: Pod, *, timeout: float) -> str | None:
        """:class:`~.base.PodMetrics`: /metrics on the pod's private port."""
        address = self.metrics_address(pod)
        return pod_http.get_text(f"http://{address}/metrics", timeout=timeout) if address else None

    def metrics_address(self, pod: Pod) -> str | None:
        port = self.pod_port(pod)
        return f"{pod.host}:{port}" if port else None

    def post_admin(self, pod: Pod, path: str, *, timeout: float) -> bytes:
        """:class:`~.base.PodAdmin`: the admin hooks are on the pod's private port."""
        port = self.pod_port(pod)
        if not port:
            raise TargetError(
                f"pod {pod.name} has no private port for admin hooks (set pod_port: true on "
                f"service {pod.workload!r})"
            )
        return pod_http.post(f"http://{pod.host}:{port}{path}", timeout=timeout)

    def toxiproxy_server(self) -> str | None:
        """:class:`~.base.DependencyProxies`: the server carrying the proxied services."""
        return self.toxiproxy_url

    def data_dir(self, service: str) -> Path:
        path = self._service(service).data_dir
        if path is None:
            raise TargetError(f"service {service!r} has no data_dir (set data_dir: true)")
        return path

    def volume(self, service: str) -> Path | None:
        """The mount point of the service's bounded volume (its data_dir), None without one.

        A PrivilegeError when the service declares a volume but got a plain directory (no
        root to mount a tmpfs): filling it would fill the host's own filesystem.
        """
        svc = self._service(service)
        if svc.spec.volume_mb is None:
            return None
        why = self._unbounded.get(service)
        if why is not None:
            raise PrivilegeError(
                f"service {service!r} has no bounded volume: its data dir {svc.data_dir} is a "
                f"plain directory on the host's filesystem ({why}); filling it needs the "
                f"declared volume of {svc.spec.volume_mb} MiB, a tmpfs mount: run as root "
                "(with CAP_SYS_ADMIN)"
            )
        return svc.data_dir

    @property
    def unbounded_volumes(self) -> dict[str, str]:
        """Services whose declared volume is a plain directory here, each with the reason."""
        return dict(self._unbounded)

    @property
    def toxiproxy_url(self) -> str | None:
        """The Toxiproxy server carrying the proxied services, None when none is running."""
        return self._proxies.url if self._proxies is not None else None

    @property
    def toxiproxy_kind(self) -> str | None:
        """Which server that is: "external", "binary" or "embedded" (None: none)."""
        return self._proxies.kind if self._proxies is not None else None

    @property
    def memory_enforcement(self) -> str | None:
        """How ``memory_limit_mb`` is enforced: "cgroup2", "cgroup1" (memory cgroups),
        "rlimit" (RLIMIT_AS fallback), or None before start()."""
        if self._thread is None:
            return None
        memory = self._cgroups.memory
        return f"cgroup{memory.version}" if memory is not None else "rlimit"

    def proxy_port(self, service: str) -> int:
        """The port of the Toxiproxy proxy in front of a ``proxied: true`` service."""
        self._service(service)
        port = self._proxy_ports.get(service)
        if port is None:
            raise TargetError(f"service {service!r} is not proxied (set proxied: true)")
        return port

    def memory_usage(self, pod: Pod | str) -> tuple[int, int | None]:
        """(bytes used, limit in bytes or None) of a pod.

        Usage is its memory cgroup's charge (resident memory and page cache, tmpfs pages it
        wrote included) where pods get memory cgroups, else the resident set size of its
        process tree. The limit is ``memory_limit_mb``, None when the service sets none.
        """
        with self._cond:
            state = self._pod(pod)
            limit = limit_bytes(self._services[state.service].spec.memory_limit_mb)
            cgroup, leader, cgroups = state.memory_cgroup, state.pid, state.cgroups
        used = self._cgroups.usage(cgroup)
        return (tree_rss(leader or 0, cgroups) if used is None else used), limit

    def spawn_in_pod(
        self, pod: Pod | str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a helper process inside a pod: the pod's cgroups (so its memory counts
        against the pod's limit, and egress rules match it), process group, environment
        (updated by ``env``), working directory and user.

        Killing, pausing or closing the pod takes the helper too; otherwise the caller
        stops it (and waits for it). Output goes to the pod's log.
        """
        name = pod.name if isinstance(pod, Pod) else pod
        return self._call(functools.partial(self._spawn_helper, name, list(argv), env or {}))

    def log_tail(self, pod: Pod, *, lines: int = 3) -> str:
        """:class:`~.base.PodLogs`: the last ``lines`` of the pod's log, joined by " | "."""
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path(pod).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_path(self, pod: Pod | str) -> Path:
        """Where the pod's stdout and stderr go; kept after the pod is gone."""
        name = pod.name if isinstance(pod, Pod) else pod
        return self.work_dir / "logs" / f"{name}.log"

    def spec(self, service: str) -> ServiceSpec:
        return self._service(service).spec

    def restarts(self, service: str) -> int:
        """How many times the service's pods died unexpectedly or failed to start."""
        with self._cond:
            return self._service(service).restarts

    def version(self, service: str) -> str:
        with self._cond:
            return self._service(service).version

    # ------------------------------------------------------------------ Target: acting

    def kill_pod(self, pod: Pod, *, sig: int = signal.SIGKILL) -> None:
        """Signal the pod's process group. For SIGKILL, return once supervision has
        seen the death, so a following wait_ready cannot see the dead pod as ready."""
        name = pod.name if isinstance(pod, Pod) else pod
        pgid = self._call(functools.partial(self._signal_pod, name, sig))
        if sig == signal.SIGKILL:
            with self._cond:
                self._cond.wait_for(lambda: self._pod_gone(name, pgid), timeout=5.0)

    def replace_pod(self, pod: Pod) -> None:
        """SIGTERM: the app shuts down, the supervisor starts a fresh process in its place."""
        self.kill_pod(pod, sig=signal.SIGTERM)

    def pause_pod(self, pod: Pod) -> None:
        """SIGSTOP every process of the pod (its group, its whole process tree, its
        cgroups): a hung machine. The pod stops being ready; on return each of those
        processes is stopped (the signal is delivered asynchronously)."""
        pids = self._call(functools.partial(self._pause, pod.name if isinstance(pod, Pod) else pod))
        left = wait_stopped(pids, timeout=2.0)
        if left:
            log.warning("pod processes %s not stopped 2 s after SIGSTOP", left)

    def resume_pod(self, pod: Pod) -> None:
        """SIGCONT every process of the pod; it is ready again once its health check
        passes."""
        self._call(functools.partial(self._resume, pod.name if isinstance(pod, Pod) else pod))

    def exec(self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult:
        """Run ``argv`` next to the pod: same env, working directory and user."""
        with self._cond:
            state = self._pod(pod)
            env, cwd, user = dict(state.env), state.cwd, self._services[state.service].spec.user
        try:
            done = subprocess.run(
                list(argv),
                env=env,
                cwd=cwd,
                capture_output=True,
                timeout=timeout,
                start_new_session=True,
                user=user,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TargetError(
                f"exec in pod {state.name}: {list(argv)!r} did not finish within {timeout:g} s"
            ) from exc
        except OSError as exc:
            raise TargetError(
                f"exec in pod {state.name}: cannot run {list(argv)!r}: {exc.strerror}"
            ) from exc
        return ExecResult(
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def scale(self, workload: str, replicas: int) -> None:
        if not isinstance(replicas, int) or replicas < 0:
            raise TargetError(
                f"scale {workload}: replicas must be an integer >= 0, got {replicas!r}"
            )
        self._call(functools.partial(self._scale, workload, replicas))

    def restart(self, workload: str) -> None:
        """Rolling restart: each pod replaced by a new one, which must be ready first."""
        self._service(workload)
        self._roll(workload, lambda p: True, why="restart")
        self._call(functools.partial(self._emit, EventKind.RESTARTED, workload=workload))

    def rollout(self, workload: str, version: str) -> None:
        """Roll the workload to another of its ``versions`` (a deploy; undo with rollback)."""
        svc = self._service(workload)
        if version not in svc.spec.versions:
            raise TargetError(
                f"{workload} has no version {version!r}; versions: {', '.join(svc.spec.versions)}"
            )
        self._call(functools.partial(self._set_version, workload, version, push=True))
        self._roll(workload, lambda p: p.version != version, why=f"rollout to {version}")

    def rollback(self, workload: str) -> str:
        """Back to the previous version (history, else the one before in ``versions``)."""
        previous = self._call(functools.partial(self._previous_version, workload))
        self._roll(workload, lambda p: p.version != previous, why=f"rollback to {previous}")
        self._call(
            functools.partial(
                self._emit, EventKind.ROLLED_BACK, workload=workload, detail=f"now {previous}"
            )
        )
        return previous

    def cordon(self, node: str) -> None:
        self._call(functools.partial(self._set_cordon, node, True))

    def uncordon(self, node: str) -> None:
        self._call(functools.partial(self._set_cordon, node, False))

    def drain(self, node: str, *, timeout: float | None = None) -> None:
        """Cordon ``node``, start a replacement elsewhere for each of its pods, and stop
        each old pod once its replacement is ready."""
        self.cordon(node)
        with self._cond:
            names = [p.name for p in self._live_pods() if p.node == node]
        pairs = [
            (old, self._call(functools.partial(self._replace, old, avoid=node))) for old in names
        ]
        for old, new in pairs:
            if new is not None:
                self._wait_replaced(old, new, timeout=timeout, why=f"drain {node}")

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None:
        if threading.current_thread() is self._thread:
            raise TargetError("wait_ready cannot be called from an event callback")
        self._service(workload)
        with self._cond:
            want = self._services[workload].desired if replicas is None else replicas
            if not self._cond.wait_for(lambda: self._ready_count(workload) >= want, timeout):
                raise TargetError(
                    f"{workload}: {self._ready_count(workload)} of {want} pod(s) ready after "
                    f"{timeout:g} s ({self._describe_pods(workload)})"
                )

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ Autoscaling

    def autoscale(self, spec: AutoscalerSpec) -> None:
        """:class:`~.base.Autoscaling`: the HPA algorithm in a loop of its own
        (autoscaler.py), on the pods' CPU; ConfigError naming the spec's field."""
        self._autoscalers.start(spec, known=set(self._services))

    def stop_autoscaling(self, workload: str) -> None:
        self._autoscalers.stop(workload)

    def autoscaler_status(self, workload: str) -> AutoscalerStatus | None:
        return self._autoscalers.status(workload)

    def _announce_autoscaled(self, workload: str, detail: str) -> None:
        with contextlib.suppress(TargetError):  # closing: nobody left to tell
            self._call(
                functools.partial(
                    self._emit, EventKind.AUTOSCALED, workload=workload, detail=detail
                )
            )

    # ------------------------------------------------------------------ caller side helpers

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the supervisor thread (the only one that forks) and wait."""
        if threading.current_thread() is self._thread:
            return fn()
        if self._thread is None or not self._thread.is_alive() or self._shutting_down:
            raise TargetError("the local target is not running (start() not called, or closed)")
        done: Future[Any] = Future()
        self._commands.put((fn, done))
        self._wake()
        return done.result()

    def _wait_started(self, name: str) -> None:
        svc = self._services[name]
        deadline = time.monotonic() + svc.spec.start_timeout_s
        with self._cond:
            while True:
                failure = svc.last_failure
                if failure is not None:
                    raise TargetError(
                        f"service {name!r} failed to start: pod {failure.pod} {failure.reason}\n"
                        f"  command: {' '.join(failure.argv)}\n"
                        f"  last lines of {self.log_path(failure.pod)}:\n{failure.tail}"
                    )
                if self._ready_count(name) >= svc.desired:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TargetError(
                        f"service {name!r}: {self._ready_count(name)} of {svc.desired} pod(s) "
                        f"ready after start_timeout_s={svc.spec.start_timeout_s:g} "
                        f"({self._describe_pods(name)}); command: "
                        f"{' '.join(svc.spec.versions[svc.version])}"
                    )
                self._cond.wait(left)

    def _roll(self, workload: str, needs: Callable[[_PodState], bool], *, why: str) -> None:
        with self._cond:
            names = [p.name for p in self._live_pods(workload) if needs(p)]
        for old in names:
            new = self._call(functools.partial(self._replace, old))
            if new is not None:
                # As the Deployment controller does, the next step need not wait for the old
                # pod's graceful exit: once it is terminating it serves nothing new.
                self._wait_replaced(old, new, timeout=None, why=why, old_exited=False)

    def _wait_replaced(
        self, old: str, new: str, *, timeout: float | None, why: str, old_exited: bool = True
    ) -> None:
        """Until ``new`` is ready and ``old`` is gone (``old_exited``) or terminating.

        A drain waits for the exit, as ``kubectl drain`` waits for the deletion."""
        svc = self._services[new.rsplit("-", 1)[0]]
        limit = timeout if timeout is not None else svc.spec.start_timeout_s + self.stop_grace_s
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                new_state = self._pods.get(new)
                old_state = self._pods.get(old)
                old_done = old_state is None or (not old_exited and old_state.terminating)
                if new_state is not None and new_state.ready and old_done:
                    return
                if new_state is None or new_state.terminating:
                    failure = svc.last_failure
                    raise TargetError(
                        f"{why}: replacement pod {new} for {old} did not become ready"
                        + (f": {failure.reason}\n{failure.tail}" if failure else "")
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TargetError(
                        f"{why}: replacement pod {new} for {old} not ready within {limit:g} s "
                        f"({self._describe_pods(svc.spec.name)})"
                    )
                self._cond.wait(left)

    def _service(self, name: str) -> _ServiceState:
        try:
            return self._services[name]
        except KeyError:
            raise TargetError(
                f"no service {name!r} in this local target; services: {', '.join(self._services)}"
            ) from None

    def _pod(self, pod: Pod | str) -> _PodState:
        name = pod.name if isinstance(pod, Pod) else pod
        with self._cond:
            state = self._pods.get(name)
        if state is None or state.proc is None:
            raise TargetError(f"no running pod named {name!r} (it may have died or been replaced)")
        return state

    def _pod_gone(self, name: str, pgid: int | None) -> bool:
        state = self._pods.get(name)
        return state is None or state.pid != pgid

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # ------------------------------------------------------------------ views (lock held)

    def _pod_view(self, p: _PodState) -> Pod:
        port = self._services[p.service].port
        return Pod(
            name=p.name,
            workload=p.service,
            labels=dict(self._services[p.service].spec.labels),
            node=p.node,
            pid=p.pid,
            ready=p.ready,
            version=p.version,
            ports=tuple(x for x in (port, p.pod_port) if x is not None),
            cgroup=self._cgroups.relative(p.cgroup),
        )

    def _live_pods(self, service: str | None = None) -> list[_PodState]:
        return [
            p
            for p in self._pods.values()
            if p.proc is not None
            and not p.terminating
            and (service is None or p.service == service)
        ]

    def _ready_count(self, service: str) -> int:
        return sum(1 for p in self._live_pods(service) if p.ready)

    def _describe_pods(self, service: str) -> str:
        pods = self._live_pods(service)
        if not pods:
            return "no pod running"
        return ", ".join(
            f"{p.name} {'ready' if p.ready else 'paused' if p.paused else 'not ready'}"
            for p in pods
        )

    # ------------------------------------------------------------------ supervisor thread

    def _supervise(self) -> None:
        assert self._selector is not None
        while True:
            try:
                timeout = self._tick_timeout()
                for key, _ in self._selector.select(timeout):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            while os.read(self._wake_r, 4096):
                                pass
                    else:
                        with self._cond:
                            self._on_exit(key.data)
                self._run_commands()
                with self._cond:
                    for pod in list(self._pods.values()):
                        if (
                            pod.pidfd is None
                            and pod.proc is not None
                            and pod.proc.poll() is not None
                        ):
                            self._on_exit(pod)
                    self._collect_probes()
                    self._timers()
                    if not self._shutting_down:
                        self._reconcile()
                    self._schedule_probes()
                    self._cond.notify_all()
                    finished = self._shutting_down and not self._pods
                self._dispatch()
                if finished:
                    return
            except Exception:
                log.exception("local target supervisor error (supervision continues)")
                time.sleep(0.05)  # a failing tick must not spin a core

    def _tick_timeout(self) -> float:
        now = time.monotonic()
        with self._cond:
            due = [now + _IDLE_TICK_S]
            for p in self._pods.values():
                if p.kill_at is not None:
                    due.append(p.kill_at)
                elif p.proc is not None and not p.paused and not p.terminating and p.probe is None:
                    due.append(p.next_probe_at)
            for svc in self._services.values():
                if svc.active and len(self._counted(svc.spec.name)) < svc.desired - svc.held:
                    due.append(svc.next_spawn_at)
        return max(0.0, min(due) - now)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            if not done.set_running_or_notify_cancel():
                continue
            try:
                with self._cond:
                    result = fn()
                    self._cond.notify_all()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(result)

    def _dispatch(self) -> None:
        with self._cond:
            events, self._outbox = self._outbox, []
            callbacks = list(self._subscribers)
        for event in events:
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    log.exception("local target event callback %r failed on %s", callback, event)

    def _emit(
        self,
        kind: EventKind,
        *,
        workload: str | None = None,
        pod: str | None = None,
        node: str | None = None,
        detail: str = "",
    ) -> None:
        restarts = self._services[workload].restarts if workload in self._services else 0
        event = TargetEvent(
            kind, workload=workload, pod=pod, node=node, detail=detail, restarts=restarts
        )
        log.debug("event %s", event)
        self._outbox.append(event)

    def _start_guardian(self) -> None:
        self._guardian = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", GUARDIAN_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for base in self._cgroups.bases:
            self._tell_guardian(f"cgroup {base}")

    def _tell_guardian(self, line: str) -> None:
        if self._guardian is None or self._guardian.stdin is None:
            return
        try:
            self._guardian.stdin.write(line.encode() + b"\n")
            self._guardian.stdin.flush()
        except (OSError, ValueError):
            log.warning("local target guardian is gone; pods rely on PDEATHSIG alone")

    def _stop_guardian(self) -> None:
        guardian, self._guardian = self._guardian, None
        if guardian is None:
            return
        with contextlib.suppress(OSError):
            guardian.stdin.close()  # type: ignore[union-attr]
        try:
            guardian.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            guardian.kill()
            guardian.wait()

    def _activate(self, name: str) -> None:
        svc = self._services[name]
        svc.active = True
        svc.last_failure = None
        svc.next_spawn_at = 0.0

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        for svc in self._services.values():
            svc.active = False
        for pod in list(self._pods.values()):
            self._terminate(pod, "target closing")

    def _kill_everything(self) -> None:
        """Last resort after close(): SIGKILL whatever pod group is still registered."""
        with self._cond:
            pods = list(self._pods.values())
            self._pods.clear()
        for pod in pods:
            if pod.proc is None:
                continue
            _killpg(pod.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.proc.wait(timeout=2.0)
            if pod.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(pod.pidfd)

    # --- pods: spawning, exits, stopping

    def _counted(self, service: str) -> list[_PodState]:
        """Pods that fill a replica slot: live and not about to be replaced."""
        return [p for p in self._live_pods(service) if p.superseded_by is None]

    def _reconcile(self) -> None:
        now = time.monotonic()
        for name in self._order:
            svc = self._services[name]
            if not svc.active:
                continue
            pods = self._counted(name)
            want = max(0, svc.desired - svc.held)
            if len(pods) < want and now >= svc.next_spawn_at:
                for _ in range(want - len(pods)):
                    if self._spawn(svc).proc is None:
                        break  # could not even start: wait for the back-off
            elif len(pods) > svc.desired:
                # Scale down like a ReplicaSet: not-ready pods first, then the newest.
                victims = sorted(pods, key=lambda p: (p.ready, -p.number))[
                    : len(pods) - svc.desired
                ]
                for pod in victims:
                    self._terminate(pod, "scaled down")

    def _choose_node(self, svc: _ServiceState, avoid: str | None = None) -> str:
        def usable(n: str) -> bool:
            return n != avoid and n not in self._cordoned and n not in self._nodes_down

        candidates = [n for n in svc.spec.nodes if usable(n)]
        if not candidates:
            candidates = [n for n in self._nodes if usable(n)]
        if not candidates:
            raise TargetError(
                f"no schedulable node for {svc.spec.name}: nodes {', '.join(self._nodes)}, "
                f"cordoned {sorted(self._cordoned) or 'none'}, not ready "
                f"{sorted(self._nodes_down) or 'none'}"
            )
        load = {n: 0 for n in candidates}
        for p in self._live_pods(svc.spec.name):
            if p.node in load:
                load[p.node] += 1
        return min(candidates, key=lambda n: load[n])

    def _spawn(self, svc: _ServiceState, *, avoid: str | None = None) -> _PodState:
        spec = svc.spec
        svc.counter += 1
        name = f"{spec.name}-{svc.counter}"
        try:
            node = self._choose_node(svc, avoid)
        except TargetError:
            if avoid is not None:
                raise
            node = spec.nodes[0]  # nowhere better: stay where the YAML put it
        pod_port = free_port() if spec.pod_port else None
        values = self._placeholders(svc, name, pod_port)
        argv = [expand_placeholders(a, values) for a in spec.versions[svc.version]]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update({k: expand_placeholders(v, values) for k, v in spec.env.items()})
        env.update(POD_NAME=name, SERVICE_NAME=spec.name, VERSION=svc.version, NODE_NAME=node)
        for key, value in (
            ("PORT", svc.port),
            ("POD_PORT", pod_port),
            ("DATA_DIR", svc.data_dir),
            ("MEMORY_LIMIT_MB", spec.memory_limit_mb),
        ):
            if value is not None:
                env[key] = str(value)
        pod = _PodState(
            name=name,
            service=spec.name,
            number=svc.counter,
            node=node,
            version=svc.version,
            argv=argv,
            env=env,
            cwd=str(svc.data_dir or self.work_dir),
            log_path=self.log_path(name),
            pod_port=pod_port,
        )
        pod.cgroup, pod.memory_cgroup, rlimit_as = self._cgroups.make(
            name, limit_bytes(spec.memory_limit_mb)
        )
        with open(pod.log_path, "ab") as out:
            try:
                pod.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=pod.cwd,
                    process_group=0,  # a group of its own, in our session: see module doc
                    preexec_fn=self._entry(pod, rlimit_as),
                )
            except (OSError, subprocess.SubprocessError, TargetError) as exc:
                reason = f"cannot start {argv[0]!r}: {getattr(exc, 'strerror', None) or exc}"
                out.write(f"[pytest-resilience] {reason}\n".encode())
                out.flush()
                for cgroup in reversed(pod.cgroups):
                    with contextlib.suppress(OSError):
                        cgroup.rmdir()
                self._failed_start(svc, pod, reason)
                self._after_death(svc, pod, exit_code=None)
                return pod
        try:
            pod.pidfd = os.pidfd_open(pod.proc.pid)
        except OSError:
            pod.pidfd = None  # the tick polls this pod instead
        if pod.pidfd is not None and self._selector is not None:
            self._selector.register(pod.pidfd, selectors.EVENT_READ, pod)
        self._tell_guardian(f"+ {pod.proc.pid}")
        self._pods[name] = pod
        self._emit(
            EventKind.POD_STARTED,
            workload=spec.name,
            pod=name,
            node=node,
            detail=f"pid {pod.proc.pid}, version {svc.version}",
        )
        return pod

    def _entry(self, pod: _PodState, rlimit_as: int | None) -> Callable[[], None]:
        """The preexec_fn of a pod's processes (the pod itself and its helpers)."""
        spec = self._services[pod.service].spec
        ids = None
        if spec.user:
            entry = _user_entry(spec)
            ids = (entry.pw_uid, entry.pw_gid)
        procs = tuple(str(c / "cgroup.procs") for c in pod.cgroups)
        return functools.partial(enter_pod, self._libc, os.getpid(), procs, rlimit_as, ids)

    def _spawn_helper(
        self, name: str, argv: list[str], extra_env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        pod = self._pods.get(name)
        if pod is None or pod.proc is None or pod.terminating:
            raise TargetError(f"no running pod named {name!r} to spawn {argv!r} in")
        spec = self._services[pod.service].spec
        by_cgroup = self._cgroups.memory is not None and pod.memory_cgroup is not None
        rlimit_as = None if by_cgroup else limit_bytes(spec.memory_limit_mb)
        with open(pod.log_path, "ab") as out:
            try:
                helper = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**pod.env, **extra_env},
                    cwd=pod.cwd,
                    process_group=pod.proc.pid,
                    preexec_fn=self._entry(pod, rlimit_as),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise TargetError(
                    f"spawn in pod {name}: cannot run {argv!r}: "
                    f"{getattr(exc, 'strerror', None) or exc}"
                ) from exc
        log.info("pod %s: helper pid %d started: %s", name, helper.pid, " ".join(argv))
        return helper

    def _placeholders(self, svc: _ServiceState, pod: str, pod_port: int | None) -> dict[str, str]:
        values = {
            "python": sys.executable,
            "pod_name": pod,
            "service": svc.spec.name,
            "version": svc.version,
            "work_dir": str(self.work_dir),
            "host": "127.0.0.1",
        }
        if svc.port is not None:
            values["port"] = str(svc.port)
        if pod_port is not None:
            values["pod_port"] = str(pod_port)
        if svc.data_dir is not None:
            values["data_dir"] = str(svc.data_dir)
        for other in self._services.values():
            if other.port is not None:
                values[f"services.{other.spec.name}.port"] = str(other.port)
            if other.data_dir is not None:
                values[f"services.{other.spec.name}.data_dir"] = str(other.data_dir)
        for proxied, port in self._proxy_ports.items():
            values[f"proxies.{proxied}.port"] = str(port)
        return values

    def _on_exit(self, pod: _PodState) -> None:
        if pod.proc is None or self._pods.get(pod.name) is not pod:
            return
        # Kill what is left of the group while the zombie leader still pins the pgid.
        _killpg(pod.proc.pid, signal.SIGKILL)
        code = pod.proc.wait()
        if pod.pidfd is not None:
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(pod.pidfd)
            os.close(pod.pidfd)
            pod.pidfd = None
        self._tell_guardian(f"- {pod.proc.pid}")
        oom_killed = self._cgroups.oom_killed(pod.memory_cgroup)
        for cgroup in pod.cgroups:
            cgroup_kill(cgroup)  # what left the process group; rmdir may wait for close()
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        del self._pods[pod.name]
        svc = self._services[pod.service]
        if pod.replaces is not None and not pod.ever_ready:
            old = self._pods.get(pod.replaces)
            if old is not None:
                old.superseded_by = None
        if pod.terminating:
            log.debug("pod %s stopped (exit %s)", pod.name, code)
        else:
            self._after_death(svc, pod, exit_code=code, oom_killed=oom_killed)
        self._update_node(pod.node)

    def _after_death(
        self,
        svc: _ServiceState,
        pod: _PodState,
        *,
        exit_code: int | None,
        oom_killed: bool = False,
    ) -> None:
        """An unexpected exit: count it, report it, plan the replacement's back-off."""
        svc.restarts += 1
        what = _describe_exit(exit_code)
        if oom_killed:
            what += f" (OOMKilled: memory limit {svc.spec.memory_limit_mb} MiB)"
        policy = svc.spec.restart.policy
        replace = policy == "always" or (policy == "on-failure" and exit_code != 0)
        now = time.monotonic()
        if replace and pod.killed:
            # Like a deleted Kubernetes pod: the ReplicaSet replaces it at once. Back-off
            # is for pods that die by themselves (CrashLoopBackOff); the death still counts.
            svc.next_spawn_at = min(svc.next_spawn_at, now)
            plan = "replacing now (killed)"
        elif replace and svc.next_spawn_at > now:
            # A restart is already pending: deaths at the same moment share one back-off step.
            plan = f"restarting in {svc.next_spawn_at - now:.3f}s"
        elif replace:
            delay = svc.backoff
            svc.next_spawn_at = now + delay
            svc.backoff = min(svc.backoff * 2, svc.spec.restart.max_backoff_s)
            plan = f"restarting in {delay:.3f}s"
        else:
            svc.held += 1
            plan = f"not restarted (restart policy {policy})"
        if not pod.ever_ready and not pod.failed_start:
            self._failed_start(svc, pod, f"{what} before becoming ready", plan=plan)
        elif pod.ever_ready:
            self._emit(
                EventKind.POD_DIED,
                workload=svc.spec.name,
                pod=pod.name,
                node=pod.node,
                detail=f"{what}; {plan}",
            )
        log.info("pod %s %s; %s (restarts: %d)", pod.name, what, plan, svc.restarts)

    def _failed_start(
        self, svc: _ServiceState, pod: _PodState, reason: str, *, plan: str = ""
    ) -> None:
        pod.failed_start = True
        svc.last_failure = _Failure(pod.name, pod.argv, reason, _tail(pod.log_path))
        self._emit(
            EventKind.POD_FAILED_TO_START,
            workload=svc.spec.name,
            pod=pod.name,
            node=pod.node,
            detail=f"{reason}{'; ' + plan if plan else ''}",
        )

    def _terminate(self, pod: _PodState, reason: str) -> None:
        if pod.terminating or pod.proc is None:
            return
        pod.terminating = True
        if pod.ready:
            pod.ready = False
            self._emit(
                EventKind.POD_NOT_READY,
                workload=pod.service,
                pod=pod.name,
                node=pod.node,
                detail=f"terminating: {reason}",
            )
        _killpg(pod.proc.pid, signal.SIGTERM)
        if pod.paused:
            signal_processes(pod.proc.pid, pod.cgroups, signal.SIGCONT)
        pod.kill_at = time.monotonic() + self.stop_grace_s
        log.debug("pod %s terminating: %s", pod.name, reason)

    def _timers(self) -> None:
        now = time.monotonic()
        for pod in list(self._pods.values()):
            if pod.kill_at is not None and now >= pod.kill_at and pod.proc is not None:
                log.warning(
                    "pod %s ignored SIGTERM for %.1fs; SIGKILL", pod.name, self.stop_grace_s
                )
                _killpg(pod.proc.pid, signal.SIGKILL)
                pod.kill_at = None

    # --- readiness

    def _schedule_probes(self) -> None:
        now = time.monotonic()
        assert self._probes is not None
        for pod in self._pods.values():
            if pod.proc is None or pod.paused or pod.terminating or pod.probe is not None:
                continue
            spec = self._services[pod.service].spec
            if pod.ready and pod.ready_since is not None:
                svc = self._services[pod.service]
                if now - pod.ready_since >= spec.restart.reset_after_s:
                    svc.backoff = spec.restart.backoff_s
            if now < pod.next_probe_at:
                continue
            if spec.health.kind == "process":
                if pod.ready:
                    pod.next_probe_at = now + _READY_PROBE_S
                elif now - pod.started_at >= _PROCESS_READY_S:
                    self._probe_result(pod, None)
                else:
                    pod.next_probe_at = pod.started_at + _PROCESS_READY_S
                continue
            if (
                not pod.ever_ready
                and not pod.failed_start
                and now - pod.started_at > spec.start_timeout_s
            ):
                self._failed_start(
                    self._services[pod.service],
                    pod,
                    f"not ready within start_timeout_s={spec.start_timeout_s:g}",
                )
                _killpg(pod.proc.pid, signal.SIGKILL)  # its exit counts as a restart
                continue
            port = pod.pod_port if pod.pod_port is not None else self._services[pod.service].port
            assert port is not None
            # On a shared SO_REUSEPORT port a network probe may reach another replica, so
            # the pod must also hold a listening socket on it itself.
            own_listen = pod.pod_port is None
            network = pod.pod_port is not None or not pod.ever_ready
            pod.probe = self._probes.submit(
                _probe,
                spec.health.kind,
                spec.health.path,
                port,
                pod.proc.pid,
                listen=own_listen,
                network=network,
            )
            pod.probe.add_done_callback(lambda _f: self._wake())

    def _collect_probes(self) -> None:
        for pod in list(self._pods.values()):
            future = pod.probe
            if future is None or not future.done():
                continue
            pod.probe = None
            if pod.paused or pod.terminating or pod.proc is None:
                continue
            try:
                problem = future.result()
            except Exception as exc:
                problem = f"probe error: {exc}"
            self._probe_result(pod, problem)

    def _probe_result(self, pod: _PodState, problem: str | None) -> None:
        now = time.monotonic()
        if problem is None:
            pod.failures = 0
            pod.next_probe_at = now + _READY_PROBE_S
            if not pod.ready:
                pod.ready = pod.ever_ready = True
                pod.ready_since = now
                self._emit(
                    EventKind.POD_READY,
                    workload=pod.service,
                    pod=pod.name,
                    node=pod.node,
                    detail=f"ready after {now - pod.started_at:.3f}s",
                )
                if pod.replaces is not None:
                    old = self._pods.get(pod.replaces)
                    pod.replaces = None
                    if old is not None:
                        self._terminate(old, f"replaced by {pod.name}")
            return
        if not pod.ready:
            pod.next_probe_at = now + _STARTING_PROBE_S
            return
        pod.failures += 1
        pod.next_probe_at = now + _READY_PROBE_S
        if pod.failures >= _FAILURE_THRESHOLD:
            pod.ready = False
            pod.ready_since = None
            self._emit(
                EventKind.POD_NOT_READY,
                workload=pod.service,
                pod=pod.name,
                node=pod.node,
                detail=f"{pod.failures} failed probes: {problem}",
            )

    # --- commands run on the supervisor thread (lock held)

    def _signal_pod(self, name: str, sig: int) -> int:
        state = self._pods.get(name)
        if state is None or state.proc is None or state.terminating:
            raise TargetError(f"no running pod named {name!r} (it may have died or been replaced)")
        log.info("signal %s to pod %s (group %d)", signal.Signals(sig).name, name, state.proc.pid)
        state.killed = sig == signal.SIGKILL
        _killpg(state.proc.pid, sig)
        return state.proc.pid

    def _pause(self, name: str) -> set[int]:
        state = self._pods.get(name)
        if state is None or state.proc is None or state.terminating:
            raise TargetError(f"no running pod named {name!r} to pause")
        # Also when already paused: a process that joined since is stopped too.
        pids = signal_processes(state.proc.pid, state.cgroups, signal.SIGSTOP)
        if state.paused:
            return pids
        log.info("pod %s paused (%d processes stopped)", name, len(pids))
        state.paused = True
        was_ready, state.ready, state.ready_since = state.ready, False, None
        if was_ready:
            self._emit(
                EventKind.POD_NOT_READY,
                workload=state.service,
                pod=name,
                node=state.node,
                detail="paused (SIGSTOP)",
            )
        self._update_node(state.node)
        return pids

    def _resume(self, name: str) -> None:
        state = self._pods.get(name)
        if state is None or state.proc is None:
            raise TargetError(f"no running pod named {name!r} to resume")
        if not state.paused:
            return
        signal_processes(state.proc.pid, state.cgroups, signal.SIGCONT)
        state.paused = False
        state.failures = 0
        state.next_probe_at = 0.0
        self._update_node(state.node)

    def _update_node(self, node: str) -> None:
        on_node = [p for p in self._live_pods() if p.node == node]
        down = bool(on_node) and all(p.paused for p in on_node)
        if down and node not in self._nodes_down:
            self._nodes_down.add(node)
            self._emit(EventKind.NODE_NOT_READY, node=node, detail="every pod on it is paused")
        elif not down and node in self._nodes_down:
            self._nodes_down.discard(node)
            self._emit(EventKind.NODE_READY, node=node)

    def _scale(self, name: str, replicas: int) -> None:
        svc = self._service(name)
        before, svc.desired = svc.desired, replicas
        svc.held = min(svc.held, replicas)
        self._reconcile()
        self._emit(EventKind.SCALED, workload=name, detail=f"{before} -> {replicas}")

    def _replace(self, old_name: str, *, avoid: str | None = None) -> str | None:
        old = self._pods.get(old_name)
        if old is None or old.terminating or old.proc is None:
            return None  # already gone: the reconciler refills its slot
        svc = self._services[old.service]
        new = self._spawn(svc, avoid=avoid)
        if new.proc is None:
            raise TargetError(
                f"cannot replace {old_name}: {svc.last_failure.reason if svc.last_failure else ''}"
            )
        new.replaces = old_name
        old.superseded_by = new.name
        return new.name

    def _set_version(self, name: str, version: str, *, push: bool) -> None:
        svc = self._service(name)
        svc.version = version
        if push:
            svc.history.append(version)

    def _previous_version(self, name: str) -> str:
        svc = self._service(name)
        if len(svc.history) >= 2:
            svc.history.pop()
            previous = svc.history[-1]
        else:
            order = list(svc.spec.versions)
            at = order.index(svc.version)
            if at == 0:
                raise TargetError(
                    f"{name} has no previous version to roll back to: it runs {svc.version!r}, "
                    f"the first of its versions ({', '.join(order)}), and no earlier rollout"
                )
            previous = order[at - 1]
            svc.history = [previous]
        svc.version = previous
        return previous

    def _set_cordon(self, node: str, cordoned: bool) -> None:
        if node not in self._nodes:
            raise TargetError(f"no node {node!r}; nodes: {', '.join(self._nodes)}")
        if cordoned:
            self._cordoned.add(node)
        else:
            self._cordoned.discard(node)


# ---------------------------------------------------------------------- module helpers


def _probe(kind: str, path: str, port: int, pid: int, *, listen: bool, network: bool) -> str | None:
    """One readiness check; returns what is wrong, or None when ready."""
    if listen and not _listens(pid, port):
        return f"no socket listening on port {port}"
    if not network:
        return None
    try:
        if kind == "tcp":
            with socket.create_connection(("127.0.0.1", port), timeout=_PROBE_TIMEOUT_S):
                return None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_PROBE_TIMEOUT_S)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            status = conn.getresponse().status
        finally:
            conn.close()
        return None if status < 400 else f"GET {path} answered {status}"
    except OSError as exc:
        return f"{kind} probe on port {port}: {exc}"


def _listens(pid: int, port: int) -> bool:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return False


def _user_entry(spec: ServiceSpec) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(spec.user or "")
    except KeyError:
        raise TargetError(f"service {spec.name!r}: user {spec.user!r} does not exist") from None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "    (no log)"
    kept = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (log is empty)"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "could not be started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _number(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _dependency_order(specs: list[ServiceSpec]) -> list[str]:
    """The start order; a cycle is services.dependency_order's to find (one place for both the
    file checker and specs built in Python), an unknown name this target's to refuse."""
    names = {s.name for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in names:
                raise TargetError(f"service {spec.name!r} depends on unknown service {dep!r}")
    return dependency_order(specs)


def _as_callback(hook: Any) -> Callable[[TargetEvent], None]:
    """Accept a plain callback or a Timeline-like object with ``mark``."""
    mark = getattr(hook, "mark", None)
    if mark is None:
        if not callable(hook):
            raise TypeError(f"timeline_hook must be callable or have .mark(), got {hook!r}")
        return hook

    def to_timeline(event: TargetEvent) -> None:
        mark(
            str(event.kind),
            event.pod or event.workload or event.node or "",
            at=event.at,
            workload=event.workload,
            node=event.node,
            restarts=event.restarts,
            detail=event.detail,
        )

    return to_timeline
