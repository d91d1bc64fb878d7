"""Pods as processes: started, watched, reported when they die, stopped.

Pods are process-group leaders in *our* session (not setsid), so a helper started by
:meth:`~.target.LocalTarget.spawn_in_pod` can join a pod's process group: setpgid() only
works within one session. A pod's process enters its cgroups, bounds its address space (the
RLIMIT_AS fallback) and drops to the service's user between fork and exec
(:func:`.cgroups.enter_pod`). An unexpected exit is counted and reported, and the
replacement's exponential back-off planned; what to replace when is the controller's.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...errors import TargetError
from ...ports import free_port
from ..base import EventKind, ExecResult, Pod
from ..services import expand_placeholders
from .cgroups import cgroup_kill, enter_pod, limit_bytes
from .guardian import Guardian
from .processes import killpg, signal_processes, tree_rss, user_entry
from .state import PodState, ServiceState, StartFailure, TargetState
from .supervisor import Supervisor

__all__ = ["PodRunner"]

log = logging.getLogger("pytest_resilience.targets.local")

_LOG_TAIL_LINES = 15


class PodRunner:
    """Starts and stops the pods of one target; every method but ``exec`` and
    ``kill_everything`` runs on the supervisor thread with the state lock held."""

    def __init__(self, state: TargetState, supervisor: Supervisor, guardian: Guardian) -> None:
        self.state = state
        self.supervisor = supervisor
        self.guardian = guardian
        self._libc = ctypes.CDLL(None, use_errno=True)

    def spawn(self, svc: ServiceState, *, avoid: str | None = None) -> PodState:
        state = self.state
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
        pod = PodState(
            name=name,
            service=spec.name,
            number=svc.counter,
            node=node,
            version=svc.version,
            argv=argv,
            env=env,
            cwd=str(svc.data_dir or state.work_dir),
            log_path=state.log_path(name),
            pod_port=pod_port,
        )
        pod.cgroup, pod.memory_cgroup, rlimit_as = state.cgroups.make(
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
                self.failed_start(svc, pod, reason)
                self._after_death(svc, pod, exit_code=None)
                return pod
        try:
            pod.pidfd = os.pidfd_open(pod.proc.pid)
        except OSError:
            pod.pidfd = None  # the tick polls this pod instead
        self.supervisor.watch(pod)
        self.guardian.tell(f"+ {pod.proc.pid}")
        state.pods[name] = pod
        state.emit(
            EventKind.POD_STARTED,
            workload=spec.name,
            pod=name,
            node=node,
            detail=f"pid {pod.proc.pid}, version {svc.version}",
        )
        return pod

    def _choose_node(self, svc: ServiceState, avoid: str | None = None) -> str:
        state = self.state

        def usable(n: str) -> bool:
            return n != avoid and n not in state.cordoned and n not in state.nodes_down

        candidates = [n for n in svc.spec.nodes if usable(n)]
        if not candidates:
            candidates = [n for n in state.nodes if usable(n)]
        if not candidates:
            raise TargetError(
                f"no schedulable node for {svc.spec.name}: nodes {', '.join(state.nodes)}, "
                f"cordoned {sorted(state.cordoned) or 'none'}, not ready "
                f"{sorted(state.nodes_down) or 'none'}"
            )
        load = {n: 0 for n in candidates}
        for p in state.live_pods(svc.spec.name):
            if p.node in load:
                load[p.node] += 1
        return min(candidates, key=lambda n: load[n])

    def _entry(self, pod: PodState, rlimit_as: int | None) -> Callable[[], None]:
        """The preexec_fn of a pod's processes (the pod itself and its helpers)."""
        spec = self.state.services[pod.service].spec
        ids = None
        if spec.user:
            entry = user_entry(spec)
            ids = (entry.pw_uid, entry.pw_gid)
        procs = tuple(str(c / "cgroup.procs") for c in pod.cgroups)
        return functools.partial(enter_pod, self._libc, os.getpid(), procs, rlimit_as, ids)

    def spawn_helper(
        self, name: str, argv: list[str], extra_env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        pod = self.state.pods.get(name)
        if pod is None or pod.proc is None or pod.terminating:
            raise TargetError(f"no running pod named {name!r} to spawn {argv!r} in")
        spec = self.state.services[pod.service].spec
        by_cgroup = self.state.cgroups.memory is not None and pod.memory_cgroup is not None
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

    def _placeholders(self, svc: ServiceState, pod: str, pod_port: int | None) -> dict[str, str]:
        values = {
            "python": sys.executable,
            "pod_name": pod,
            "service": svc.spec.name,
            "version": svc.version,
            "work_dir": str(self.state.work_dir),
            "host": "127.0.0.1",
        }
        if svc.port is not None:
            values["port"] = str(svc.port)
        if pod_port is not None:
            values["pod_port"] = str(pod_port)
        if svc.data_dir is not None:
            values["data_dir"] = str(svc.data_dir)
        for other in self.state.services.values():
            if other.port is not None:
                values[f"services.{other.spec.name}.port"] = str(other.port)
            if other.data_dir is not None:
                values[f"services.{other.spec.name}.data_dir"] = str(other.data_dir)
        for proxied, port in self.state.proxy_ports.items():
            values[f"proxies.{proxied}.port"] = str(port)
        return values

    def on_exit(self, pod: PodState) -> None:
        state = self.state
        if pod.proc is None or state.pods.get(pod.name) is not pod:
            return
        # Kill what is left of the group while the zombie leader still pins the pgid.
        killpg(pod.proc.pid, signal.SIGKILL)
        code = pod.proc.wait()
        if pod.pidfd is not None:
            self.supervisor.unwatch(pod.pidfd)
            os.close(pod.pidfd)
            pod.pidfd = None
        self.guardian.tell(f"- {pod.proc.pid}")
        oom_killed = state.cgroups.oom_killed(pod.memory_cgroup)
        for cgroup in pod.cgroups:
            cgroup_kill(cgroup)  # what left the process group; rmdir may wait for close()
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        del state.pods[pod.name]
        svc = state.services[pod.service]
        if pod.replaces is not None and not pod.ever_ready:
            old = state.pods.get(pod.replaces)
            if old is not None:
                old.superseded_by = None
        if pod.terminating:
            log.debug("pod %s stopped (exit %s)", pod.name, code)
        else:
            self._after_death(svc, pod, exit_code=code, oom_killed=oom_killed)
        state.update_node(pod.node)

    def _after_death(
        self,
        svc: ServiceState,
        pod: PodState,
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
            self.failed_start(svc, pod, f"{what} before becoming ready", plan=plan)
        elif pod.ever_ready:
            self.state.emit(
                EventKind.POD_DIED,
                workload=svc.spec.name,
                pod=pod.name,
                node=pod.node,
                detail=f"{what}; {plan}",
            )
        log.info("pod %s %s; %s (restarts: %d)", pod.name, what, plan, svc.restarts)

    def failed_start(
        self, svc: ServiceState, pod: PodState, reason: str, *, plan: str = ""
    ) -> None:
        pod.failed_start = True
        svc.last_failure = StartFailure(pod.name, pod.argv, reason, _tail(pod.log_path))
        self.state.emit(
            EventKind.POD_FAILED_TO_START,
            workload=svc.spec.name,
            pod=pod.name,
            node=pod.node,
            detail=f"{reason}{'; ' + plan if plan else ''}",
        )

    def terminate(self, pod: PodState, reason: str) -> None:
        if pod.terminating or pod.proc is None:
            return
        pod.terminating = True
        if pod.ready:
            pod.ready = False
            self.state.emit(
                EventKind.POD_NOT_READY,
                workload=pod.service,
                pod=pod.name,
                node=pod.node,
                detail=f"terminating: {reason}",
            )
        killpg(pod.proc.pid, signal.SIGTERM)
        if pod.paused:
            signal_processes(pod.proc.pid, pod.cgroups, signal.SIGCONT)
        pod.kill_at = time.monotonic() + self.state.stop_grace_s
        log.debug("pod %s terminating: %s", pod.name, reason)

    def timers(self) -> None:
        now = time.monotonic()
        for pod in list(self.state.pods.values()):
            if pod.kill_at is not None and now >= pod.kill_at and pod.proc is not None:
                log.warning(
                    "pod %s ignored SIGTERM for %.1fs; SIGKILL",
                    pod.name,
                    self.state.stop_grace_s,
                )
                killpg(pod.proc.pid, signal.SIGKILL)
                pod.kill_at = None

    def kill_everything(self) -> None:
        """Last resort after close(): SIGKILL whatever pod group is still registered."""
        with self.state.cond:
            pods = list(self.state.pods.values())
            self.state.pods.clear()
        for pod in pods:
            if pod.proc is None:
                continue
            killpg(pod.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.proc.wait(timeout=2.0)
            if pod.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(pod.pidfd)

    def memory_usage(self, pod: Pod | str) -> tuple[int, int | None]:
        """(bytes used, limit in bytes or None): see ``LocalTarget.memory_usage``."""
        with self.state.cond:
            state = self.state.pod(pod)
            limit = limit_bytes(self.state.services[state.service].spec.memory_limit_mb)
            cgroup, leader, cgroups = state.memory_cgroup, state.pid, state.cgroups
        used = self.state.cgroups.usage(cgroup)
        return (tree_rss(leader or 0, cgroups) if used is None else used), limit

    def exec(self, pod: Pod, argv: Sequence[str], *, timeout: float) -> ExecResult:
        """Run ``argv`` next to the pod (caller thread): same env, working directory, user."""
        with self.state.cond:
            state = self.state.pod(pod)
            env, cwd = dict(state.env), state.cwd
            user = self.state.services[state.service].spec.user
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
