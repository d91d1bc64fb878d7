"""The controller: replica counts, replacements, versions, cordons and pauses.

What a ReplicaSet and a Deployment controller would do, for local pods: keep each service at
its desired replicas (scale down like a ReplicaSet: not-ready pods first, then the newest),
replace a pod by a new one that must be ready first (rolling restart, rollout, rollback,
drain), and keep each service's version history. The lock-held methods run on the
supervisor thread; ``wait_started``, ``roll``, ``wait_replaced`` and ``drain`` run on the
caller's thread and wait on the state's condition.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections.abc import Callable

from ...errors import TargetError
from ..base import EventKind, Pod
from .pods import PodRunner
from .processes import killpg, signal_processes
from .state import PodState, TargetState
from .supervisor import Supervisor

__all__ = ["Controller"]

log = logging.getLogger("pytest_resilience.targets.local")


class Controller:
    """Reconciles one target's services and carries out its scale, roll and node changes."""

    def __init__(self, state: TargetState, supervisor: Supervisor, pods: PodRunner) -> None:
        self.state = state
        self.supervisor = supervisor
        self.pods = pods

    # ------------------------------------------------------------------ supervisor thread

    def reconcile(self) -> None:
        state = self.state
        now = time.monotonic()
        for name in state.order:
            svc = state.services[name]
            if not svc.active:
                continue
            pods = state.counted(name)
            want = max(0, svc.desired - svc.held)
            if len(pods) < want and now >= svc.next_spawn_at:
                for _ in range(want - len(pods)):
                    if self.pods.spawn(svc).proc is None:
                        break  # could not even start: wait for the back-off
            elif len(pods) > svc.desired:
                # Scale down like a ReplicaSet: not-ready pods first, then the newest.
                victims = sorted(pods, key=lambda p: (p.ready, -p.number))[
                    : len(pods) - svc.desired
                ]
                for pod in victims:
                    self.pods.terminate(pod, "scaled down")

    def activate(self, name: str) -> None:
        svc = self.state.services[name]
        svc.active = True
        svc.last_failure = None
        svc.next_spawn_at = 0.0

    def begin_shutdown(self) -> None:
        self.state.shutting_down = True
        for svc in self.state.services.values():
            svc.active = False
        for pod in list(self.state.pods.values()):
            self.pods.terminate(pod, "target closing")

    def scale(self, name: str, replicas: int) -> None:
        svc = self.state.service(name)
        before, svc.desired = svc.desired, replicas
        svc.held = min(svc.held, replicas)
        self.reconcile()
        self.state.emit(EventKind.SCALED, workload=name, detail=f"{before} -> {replicas}")

    def replace(self, old_name: str, *, avoid: str | None = None) -> str | None:
        old = self.state.pods.get(old_name)
        if old is None or old.terminating or old.proc is None:
            return None  # already gone: the reconciler refills its slot
        svc = self.state.services[old.service]
        new = self.pods.spawn(svc, avoid=avoid)
        if new.proc is None:
            raise TargetError(
                f"cannot replace {old_name}: {svc.last_failure.reason if svc.last_failure else ''}"
            )
        new.replaces = old_name
        old.superseded_by = new.name
        return new.name

    def set_version(self, name: str, version: str, *, push: bool) -> None:
        svc = self.state.service(name)
        svc.version = version
        if push:
            svc.history.append(version)

    def previous_version(self, name: str) -> str:
        svc = self.state.service(name)
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

    def set_cordon(self, node: str, cordoned: bool) -> None:
        if node not in self.state.nodes:
            raise TargetError(f"no node {node!r}; nodes: {', '.join(self.state.nodes)}")
        if cordoned:
            self.state.cordoned.add(node)
        else:
            self.state.cordoned.discard(node)

    def signal_pod(self, name: str, sig: int) -> int:
        state = self.state.pods.get(name)
        if state is None or state.proc is None or state.terminating:
            raise TargetError(f"no running pod named {name!r} (it may have died or been replaced)")
        log.info(
            "signal %s to pod %s (group %d)",
            signal.Signals(sig).name,
            name,
            state.proc.pid,
        )
        state.killed = sig == signal.SIGKILL
        killpg(state.proc.pid, sig)
        return state.proc.pid

    def pause(self, name: str) -> set[int]:
        state = self.state.pods.get(name)
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
            self.state.emit(
                EventKind.POD_NOT_READY,
                workload=state.service,
                pod=name,
                node=state.node,
                detail="paused (SIGSTOP)",
            )
        self.state.update_node(state.node)
        return pids

    def resume(self, name: str) -> None:
        state = self.state.pods.get(name)
        if state is None or state.proc is None:
            raise TargetError(f"no running pod named {name!r} to resume")
        if not state.paused:
            return
        signal_processes(state.proc.pid, state.cgroups, signal.SIGCONT)
        state.paused = False
        state.failures = 0
        state.next_probe_at = 0.0
        self.state.update_node(state.node)

    # ------------------------------------------------------------------ caller's thread

    def wait_started(self, name: str) -> None:
        state = self.state
        svc = state.services[name]
        deadline = time.monotonic() + svc.spec.start_timeout_s
        with state.cond:
            while True:
                failure = svc.last_failure
                if failure is not None:
                    raise TargetError(
                        f"service {name!r} failed to start: pod {failure.pod} {failure.reason}\n"
                        f"  command: {' '.join(failure.argv)}\n"
                        f"  last lines of {state.log_path(failure.pod)}:\n{failure.tail}"
                    )
                if state.ready_count(name) >= svc.desired:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TargetError(
                        f"service {name!r}: {state.ready_count(name)} of {svc.desired} pod(s) "
                        f"ready after start_timeout_s={svc.spec.start_timeout_s:g} "
                        f"({state.describe_pods(name)}); command: "
                        f"{' '.join(svc.spec.versions[svc.version])}"
                    )
                state.cond.wait(left)

    def kill(self, name: str, sig: int) -> None:
        """Signal the pod's group; for SIGKILL, until supervision has seen the death."""
        pgid = self.supervisor.call(functools.partial(self.signal_pod, name, sig))
        if sig == signal.SIGKILL:
            with self.state.cond:
                self.state.cond.wait_for(lambda: self.state.pod_gone(name, pgid), timeout=5.0)

    def wait_ready(self, workload: str, *, timeout: float, replicas: int | None) -> None:
        if self.supervisor.on_thread():
            raise TargetError("wait_ready cannot be called from an event callback")
        state = self.state
        state.service(workload)
        with state.cond:
            want = state.services[workload].desired if replicas is None else replicas
            if not state.cond.wait_for(lambda: state.ready_count(workload) >= want, timeout):
                raise TargetError(
                    f"{workload}: {state.ready_count(workload)} of {want} pod(s) ready after "
                    f"{timeout:g} s ({state.describe_pods(workload)})"
                )

    def restart(self, workload: str) -> None:
        self.state.service(workload)
        self.roll(workload, lambda p: True, why="restart")
        self.announce(EventKind.RESTARTED, workload)

    def rollout(self, workload: str, version: str) -> None:
        svc = self.state.service(workload)
        if version not in svc.spec.versions:
            raise TargetError(
                f"{workload} has no version {version!r}; versions: {', '.join(svc.spec.versions)}"
            )
        self.supervisor.call(functools.partial(self.set_version, workload, version, push=True))
        self.roll(workload, lambda p: p.version != version, why=f"rollout to {version}")

    def rollback(self, workload: str) -> str:
        previous: str = self.supervisor.call(functools.partial(self.previous_version, workload))
        self.roll(workload, lambda p: p.version != previous, why=f"rollback to {previous}")
        self.announce(EventKind.ROLLED_BACK, workload, f"now {previous}")
        return previous

    def announce(self, kind: EventKind, workload: str, detail: str = "") -> None:
        """An event the caller's change makes, in order with the supervisor's own."""
        emit = functools.partial(self.state.emit, kind, workload=workload, detail=detail)
        self.supervisor.call(emit)

    def roll(self, workload: str, needs: Callable[[PodState], bool], *, why: str) -> None:
        with self.state.cond:
            names = [p.name for p in self.state.live_pods(workload) if needs(p)]
        for old in names:
            new = self.supervisor.call(functools.partial(self.replace, old))
            if new is not None:
                # As the Deployment controller does, the next step need not wait for the old
                # pod's graceful exit: once it is terminating it serves nothing new.
                self.wait_replaced(old, new, timeout=None, why=why, old_exited=False)

    def drain(self, node: str, *, timeout: float | None) -> list[Pod]:
        """The pods moved off ``node``, as they were before it was drained."""
        self.supervisor.call(functools.partial(self.set_cordon, node, True))
        with self.state.cond:
            moved = [self.state.pod_view(p) for p in self.state.live_pods() if p.node == node]
        names = [p.name for p in moved]
        pairs = [
            (
                old,
                self.supervisor.call(functools.partial(self.replace, old, avoid=node)),
            )
            for old in names
        ]
        for old, new in pairs:
            if new is not None:
                self.wait_replaced(old, new, timeout=timeout, why=f"drain {node}")
        return moved

    def wait_replaced(
        self,
        old: str,
        new: str,
        *,
        timeout: float | None,
        why: str,
        old_exited: bool = True,
    ) -> None:
        """Until ``new`` is ready and ``old`` is gone (``old_exited``) or terminating.

        A drain waits for the exit, as ``kubectl drain`` waits for the deletion."""
        state = self.state
        svc = state.services[new.rsplit("-", 1)[0]]
        limit = timeout if timeout is not None else svc.spec.start_timeout_s + state.stop_grace_s
        deadline = time.monotonic() + limit
        with state.cond:
            while True:
                new_state = state.pods.get(new)
                old_state = state.pods.get(old)
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
                        f"({state.describe_pods(svc.spec.name)})"
                    )
                state.cond.wait(left)
