"""What proves that a fault of a killed run cannot still be acting.

After a SIGKILL, ``pytest --chaos-cleanup`` may close a ledger entry without undoing
anything only when it can show the fault has nothing left to act on. Two proofs cover the
faults that live outside the target's own primitives (a user's or a scenario's
:class:`~.base.Fault`):

- *in-process state of pods* (a leaked pool, a heap ballast, a Redis ``CONFIG SET``) dies
  with the process that held it. A fault notes each pod it is about to touch with
  :func:`pod_ref` before acting; :func:`pod_gone` tells from that note whether the very
  same process (pid and start time, so a reused pid does not count) or pod still runs.
- *a driver thread in the test session* (a crash loop that kills a replica after each
  start) stops with the session: :func:`driver_gone` checks the entry's owner is dead on
  this host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import Any

import psutil

from ..targets.base import Pod, Target

__all__ = ["alive_pods", "driver_gone", "pod_gone", "pod_ref"]


def pod_ref(pod: Pod) -> dict[str, Any]:
    """What identifies this pod's process later, in another process (JSON-able)."""
    ref: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace, "pid": pod.pid}
    if pod.pid is not None:
        try:
            ref["started"] = psutil.Process(pod.pid).create_time()
        except psutil.Error:
            ref["started"] = None
    return ref


def pod_gone(target: Target, ref: Mapping[str, Any]) -> str | None:
    """Why the pod ``ref`` names cannot hold the fault's state any more; None if it may."""
    name, namespace, pid = ref["name"], ref.get("namespace", "default"), ref.get("pid")
    if pid is not None:
        try:
            process = psutil.Process(int(pid))
            started = process.create_time()
            dead = process.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
        except psutil.NoSuchProcess:
            return f"{name} (pid {pid}) is gone"
        except psutil.Error:
            return None  # not ours to inspect: it may still be the same process
        if dead and started == ref.get("started"):
            return f"{name} (pid {pid}) is gone (exited, not yet reaped)"
        if ref.get("started") is not None and started != ref["started"]:
            return f"{name} (pid {pid}) is gone; the pid now belongs to another process"
        return None
    if any(p.name == name and p.namespace == namespace for p in target.pods()):
        return None
    return f"pod {namespace}/{name} is gone"


def alive_pods(target: Target, refs: Iterable[Mapping[str, Any]]) -> tuple[list[Pod], list[str]]:
    """The target's pods among ``refs`` that still run, and why each other one is gone.

    A process that still runs but that the target does not list (an orphan of a dead
    session) is neither: the caller cannot reach it and must not call it gone.
    """
    listed = {(p.name, p.namespace): p for p in target.pods()}
    alive: list[Pod] = []
    gone: list[str] = []
    for ref in refs:
        reason = pod_gone(target, ref)
        if reason is not None:
            gone.append(reason)
            continue
        pod = listed.get((ref["name"], ref.get("namespace", "default")))
        if pod is None or (ref.get("pid") is not None and pod.pid != ref["pid"]):
            raise LookupError(
                f"{ref['name']} (pid {ref.get('pid')}) still runs but no target lists it:"
                " stop it, then run `pytest --chaos-cleanup` again"
            )
        alive.append(pod)
    return alive, gone


def driver_gone(spec: Mapping[str, Any]) -> str | None:
    """Why the session whose thread drove the fault cannot drive it any more; None if it may."""
    pid, host = spec.get("owner_pid"), spec.get("owner_host")
    if pid is None or host != socket.gethostname():
        return None  # another machine's session: nothing here proves it stopped
    if psutil.pid_exists(int(pid)):
        return None
    return f"the test session that drove it (pid {pid}) is gone, and its threads with it"
