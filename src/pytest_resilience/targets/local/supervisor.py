"""The supervisor thread: the one thread that forks pods and changes the target's state.

Every pod is forked by this single long-lived thread. Pods carry ``PR_SET_PDEATHSIG=SIGKILL``,
and the kernel fires it when the *thread* that forked them exits, so forking from a
short-lived caller thread would kill the pod with it. Callers therefore hand their change to
this thread (:meth:`Supervisor.call`) and wait for it. A pod that dies is noticed at once: a
pidfd per pod in one selector, next to a wake pipe for commands and finished probes, no
polling of every pod. Events go to subscribers from this thread, outside the state lock, and
a failing callback is logged, never allowed to stop supervision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ...errors import TargetError
from .state import PodState, TargetState

__all__ = ["Supervisor"]

log = logging.getLogger("pytest_resilience.targets.local")

_IDLE_TICK_S = 0.5


class Supervisor:
    """The supervisor thread of one target, its selector, wake pipe and command queue.

    Each tick, with the state lock held: the pods that exited (``on_exit``), the commands
    callers sent, then ``tick`` (probes, timers, reconciling); then the events are handed out.
    """

    def __init__(self, state: TargetState) -> None:
        self.state = state
        self.thread: threading.Thread | None = None
        self.selector: selectors.DefaultSelector | None = None
        self.probes: ThreadPoolExecutor | None = None
        self._wake_r, self._wake_w = -1, -1
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._on_exit: Callable[[PodState], None] = lambda pod: None
        self._tick: Callable[[], None] = lambda: None

    def open(self) -> None:
        """The selector, the wake pipe and the probe workers; no thread yet."""
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resilience-probe")

    def run(self, *, on_exit: Callable[[PodState], None], tick: Callable[[], None]) -> None:
        self._on_exit, self._tick = on_exit, tick
        self.thread = threading.Thread(
            target=self._supervise, name="resilience-local-supervisor", daemon=True
        )
        self.thread.start()

    def on_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the supervisor thread (the only one that forks) and wait."""
        if self.on_thread():
            return fn()
        if self.thread is None or not self.thread.is_alive() or self.state.shutting_down:
            raise TargetError("the local target is not running (start() not called, or closed)")
        done: Future[Any] = Future()
        self._commands.put((fn, done))
        self.wake()
        return done.result()

    def post(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` for the supervisor thread without waiting for it."""
        done: Future[Any] = Future()
        self._commands.put((fn, done))
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def watch(self, pod: PodState) -> None:
        """Wake when the pod's process exits (its pidfd in the selector)."""
        if pod.pidfd is not None and self.selector is not None:
            self.selector.register(pod.pidfd, selectors.EVENT_READ, pod)

    def unwatch(self, pidfd: int) -> None:
        if self.selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(pidfd)

    def join(self, timeout: float) -> None:
        thread = self.thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=timeout)
            if thread.is_alive():
                log.error("local target supervisor did not stop; killing pod groups directly")

    def close(self) -> None:
        if self.probes is not None:
            self.probes.shutdown(wait=False, cancel_futures=True)
        if self.selector is not None:
            self.selector.close()
        # -1 first: a late probe callback must not write into a reused descriptor number.
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ------------------------------------------------------------------ the thread

    def _supervise(self) -> None:
        assert self.selector is not None
        state = self.state
        while True:
            try:
                timeout = self._tick_timeout()
                for key, _ in self.selector.select(timeout):
                    if key.fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            while os.read(self._wake_r, 4096):
                                pass
                    else:
                        with state.cond:
                            self._on_exit(key.data)
                self._run_commands()
                with state.cond:
                    for pod in list(state.pods.values()):
                        if (
                            pod.pidfd is None
                            and pod.proc is not None
                            and pod.proc.poll() is not None
                        ):
                            self._on_exit(pod)
                    self._tick()
                    state.cond.notify_all()
                    finished = state.shutting_down and not state.pods
                self._dispatch()
                if finished:
                    return
            except Exception:
                log.exception("local target supervisor error (supervision continues)")
                time.sleep(0.05)  # a failing tick must not spin a core

    def _tick_timeout(self) -> float:
        now = time.monotonic()
        state = self.state
        with state.cond:
            due = [now + _IDLE_TICK_S]
            for p in state.pods.values():
                if p.kill_at is not None:
                    due.append(p.kill_at)
                elif p.proc is not None and not p.paused and not p.terminating and p.probe is None:
                    due.append(p.next_probe_at)
            for svc in state.services.values():
                if svc.active and len(state.counted(svc.spec.name)) < svc.desired - svc.held:
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
                with self.state.cond:
                    result = fn()
                    self.state.cond.notify_all()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(result)

    def _dispatch(self) -> None:
        with self.state.cond:
            events, self.state.outbox = self.state.outbox, []
            callbacks = list(self.state.subscribers)
        for event in events:
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    log.exception("local target event callback %r failed on %s", callback, event)
