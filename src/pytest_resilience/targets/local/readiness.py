"""Readiness: HTTP, TCP or "process alive" probes on each pod, run off the supervisor thread.

A pod that is not ready yet is probed every 0.1 s, a ready one every second; three failed
probes in a row take a ready pod out. Replicas share their service port (``SO_REUSEPORT``),
so a network probe on it may reach another replica: the pod must also hold a listening
socket on the port itself. A pod not ready within ``start_timeout_s`` failed to start and
is killed (its exit counts as a restart); one ready for ``reset_after_s`` resets the back-off.
"""

from __future__ import annotations

import http.client
import signal
import socket
import time

import psutil

from ..base import EventKind
from .pods import PodRunner
from .processes import killpg
from .state import PodState, TargetState
from .supervisor import Supervisor

__all__ = ["Readiness"]

_STARTING_PROBE_S = 0.1  # probe period of a pod that is not ready yet
_READY_PROBE_S = 1.0  # probe period of a ready pod
_PROBE_TIMEOUT_S = 1.0
_FAILURE_THRESHOLD = 3  # consecutive failed probes before a ready pod is marked not ready
_PROCESS_READY_S = 0.3  # "process alive" health: alive this long counts as started


class Readiness:
    """The probes of one target's pods (supervisor thread, state lock held)."""

    def __init__(self, state: TargetState, supervisor: Supervisor, pods: PodRunner) -> None:
        self.state = state
        self.supervisor = supervisor
        self.pods = pods

    def schedule(self) -> None:
        state = self.state
        now = time.monotonic()
        probes = self.supervisor.probes
        assert probes is not None
        for pod in state.pods.values():
            if pod.proc is None or pod.paused or pod.terminating or pod.probe is not None:
                continue
            spec = state.services[pod.service].spec
            if pod.ready and pod.ready_since is not None:
                svc = state.services[pod.service]
                if now - pod.ready_since >= spec.restart.reset_after_s:
                    svc.backoff = spec.restart.backoff_s
            if now < pod.next_probe_at:
                continue
            if spec.health.kind == "process":
                if pod.ready:
                    pod.next_probe_at = now + _READY_PROBE_S
                elif now - pod.started_at >= _PROCESS_READY_S:
                    self._result(pod, None)
                else:
                    pod.next_probe_at = pod.started_at + _PROCESS_READY_S
                continue
            if (
                not pod.ever_ready
                and not pod.failed_start
                and now - pod.started_at > spec.start_timeout_s
            ):
                self.pods.failed_start(
                    state.services[pod.service],
                    pod,
                    f"not ready within start_timeout_s={spec.start_timeout_s:g}",
                )
                killpg(pod.proc.pid, signal.SIGKILL)  # its exit counts as a restart
                continue
            port = pod.pod_port if pod.pod_port is not None else state.services[pod.service].port
            assert port is not None
            # On a shared SO_REUSEPORT port a network probe may reach another replica, so
            # the pod must also hold a listening socket on it itself.
            own_listen = pod.pod_port is None
            network = pod.pod_port is not None or not pod.ever_ready
            pod.probe = probes.submit(
                _probe,
                spec.health.kind,
                spec.health.path,
                port,
                pod.proc.pid,
                listen=own_listen,
                network=network,
            )
            pod.probe.add_done_callback(lambda _f: self.supervisor.wake())

    def collect(self) -> None:
        for pod in list(self.state.pods.values()):
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
            self._result(pod, problem)

    def _result(self, pod: PodState, problem: str | None) -> None:
        now = time.monotonic()
        if problem is None:
            pod.failures = 0
            pod.next_probe_at = now + _READY_PROBE_S
            if not pod.ready:
                pod.ready = pod.ever_ready = True
                pod.ready_since = now
                self.state.emit(
                    EventKind.POD_READY,
                    workload=pod.service,
                    pod=pod.name,
                    node=pod.node,
                    detail=f"ready after {now - pod.started_at:.3f}s",
                )
                if pod.replaces is not None:
                    old = self.state.pods.get(pod.replaces)
                    pod.replaces = None
                    if old is not None:
                        self.pods.terminate(old, f"replaced by {pod.name}")
            return
        if not pod.ready:
            pod.next_probe_at = now + _STARTING_PROBE_S
            return
        pod.failures += 1
        pod.next_probe_at = now + _READY_PROBE_S
        if pod.failures >= _FAILURE_THRESHOLD:
            pod.ready = False
            pod.ready_since = None
            self.state.emit(
                EventKind.POD_NOT_READY,
                workload=pod.service,
                pod=pod.name,
                node=pod.node,
                detail=f"{pod.failures} failed probes: {problem}",
            )


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
