"""The fault primitives of the local target, each undoable from its change record alone.

Network block: all pods share the host's loopback, so a block matches ingress by
destination port (the service port and each pod's own port) and egress by the pod's cgroup
v2 path (``-m cgroup --path``), in an iptables chain of its own (:mod:`..iptables`): a pod is
cut off without touching any other process on the machine. Per-pod network namespaces were
the other option; they would break the shared service port that keeps a service up while
one replica dies.

Disk fill: a real file on the service's bounded volume (a tmpfs of ``size_mb``), so 90 %
means 90 % of something small and the service feels it, while the machine's own disk is
never at risk. Memory stress: :mod:`.memory`. Node failure: every pod on the node is
paused (SIGSTOP), so it holds its sockets and answers nothing, as on a NodeNotReady node.

Each primitive checks its preconditions (root, iptables, the selector, the volume) before
its first :meth:`~..base.ChangeLog.put`, and puts the record before it acts. ``undo`` works
from the record alone (pids with their start times, chain and file names); in the process
that made the change it also uses what it still holds (the helpers' ``Popen``, the paused
pods), so helpers are reaped and pods drained meanwhile are not touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Protocol

import psutil

from ...errors import FaultError, SelectorMatchedNothing, TargetError
from .. import iptables
from ..base import ChangeLog, ChangeRecord, ObjectRef, Pod, Workload
from . import memory

__all__ = ["FILL_PREFIX", "TARGET", "LocalFaults", "usage"]

log = logging.getLogger("pytest_resilience.faults")

TARGET = "local"
FILL_PREFIX = ".pytest-resilience-fill-"
_MIB = 1024 * 1024


class _LocalHost(Protocol):
    """What the primitives use of the local target (no import of it: it imports this)."""

    name: str

    def pods(self, selector: str | Mapping[str, str] = "") -> list[Pod]: ...
    def workloads(self) -> list[Workload]: ...
    def pause_pod(self, pod: Pod) -> None: ...
    def resume_pod(self, pod: Pod) -> None: ...
    def volume(self, service: str) -> Path | None: ...
    def memory_usage(self, pod: Pod) -> tuple[int, int | None]: ...
    def log_tail(self, pod: Pod, *, lines: int = 3) -> str: ...
    def spawn_in_pod(self, pod: Pod, argv: Sequence[str]) -> subprocess.Popen[bytes]: ...


class LocalFaults:
    """:class:`~..base.FaultPrimitives` mixed into :class:`~.target.LocalTarget`."""

    #: a session's pods are its own processes: a killed session's pods died with it
    pods_outlive_session = False

    # ---------------------------------------------------------------- network

    def network_block(
        self: _LocalHost,
        selector: str | Mapping[str, str] | None,
        *,
        port: int | None,
        direction: Literal["ingress", "egress", "both"],
        action: Literal["drop", "reject"],
        name: str,
        changes: ChangeLog,
    ) -> None:
        iptables.check_privilege()
        rules = _rules(self, selector, port, direction)
        changes.put(
            _record(
                "network_block",
                changes,
                (ObjectRef("IptablesChain", name),),
                chain=name,
                rules=[" ".join(r.match) for r in rules],
            )
        )
        iptables.install(name, rules, action=action.upper())
        changes.complete = True

    # ------------------------------------------------------------------- disk

    def disk_fill(
        self: _LocalHost, workload: str, *, percent: float, path: str | None, changes: ChangeLog
    ) -> None:
        volume = _fill_dir(self, workload, path)
        total, used = usage(volume)
        wanted = int(total * percent / 100) - used
        fill_file = volume / f"{FILL_PREFIX}{secrets.token_hex(4)}"
        changes.put(
            _record("disk_fill", changes, (ObjectRef("File", str(fill_file)),), file=str(fill_file))
        )
        if wanted > 0:  # already that full: nothing to add, still a reverted no-op
            with open(fill_file, "wb") as handle:
                try:
                    os.posix_fallocate(handle.fileno(), 0, wanted)
                except OSError as exc:
                    raise FaultError(
                        f"disk_fill: could not allocate {wanted} bytes in {volume}: {exc.strerror}"
                    ) from exc
        changes.complete = True

    def volume_usage(self: _LocalHost, workload: str, *, path: str | None = None) -> float | None:
        """``df``'s used share of the service's volume (a tmpfs of its own, as root)."""
        total, used = usage(_fill_dir(self, workload, path))
        return used / total if total else None

    # ----------------------------------------------------------------- memory

    def memory_stress(
        self: _LocalHost,
        selector: str | Mapping[str, str],
        *,
        share: float,
        mb: int | None,
        hold: bool,
        count: int | None,
        changes: ChangeLog,
    ) -> None:
        pods = _pods_of(self, selector, count)
        growth = {pod.name: _growth(self, pod, share, mb) for pod in pods}
        objects = tuple(ObjectRef("Pod", p.name) for p in pods)
        # Ahead of the helpers: they carry the ledger id as their tag, found by it if killed.
        changes.put(_record("memory_stress", changes, objects, hogs=[]))
        procs = _held(self).setdefault(changes.ledger_id, [])
        hogs: list[memory.Hog] = []
        started: list[tuple[Pod, int, subprocess.Popen[bytes], float, memory.ReportPipe]] = []
        try:
            # Every helper starts first, then each is waited for: the pods grow side by side.
            for pod in pods:
                if growth[pod.name] <= 0:
                    log.info("memory_stress: %s is already at %.0f%%", pod.name, share * 100)
                    continue
                report = memory.ReportPipe()
                try:
                    proc, created = _spawn(
                        self, pod, growth[pod.name], report, changes.ledger_id, hold
                    )
                except BaseException:
                    report.close()
                    raise
                procs.append(proc)
                started.append((pod, growth[pod.name], proc, created, report))
            deadline = time.monotonic() + memory.ALLOCATE_TIMEOUT_S
            for pod, grow, proc, created, report in started:
                hogs.append(_collect(self, pod, grow, proc, created, report, deadline))
                changes.put(
                    _record("memory_stress", changes, objects, hogs=[asdict(h) for h in hogs])
                )
        finally:
            for *_, report in started:
                report.close()
        changes.complete = True

    # ------------------------------------------------------------------- node

    def node_failure(self: _LocalHost, node: str, *, changes: ChangeLog) -> None:
        """A local node fails by hanging: there is no kubelet to drain it."""
        self.hang_node(node, changes=changes)  # type: ignore[attr-defined]  # this mixin's own

    def hang_node(self: _LocalHost, node: str, *, changes: ChangeLog) -> None:
        """Pause every pod on the node (SIGSTOP): the node goes NotReady (:class:`NodeOutage`)."""
        pods = [p for p in self.pods() if p.node == node]
        changes.put(
            _record(
                "node_failure",
                changes,
                (ObjectRef("Node", node),),
                pods=[p.name for p in pods],
                pids=[p.pid for p in pods if p.pid],
            )
        )
        paused = _held(self).setdefault(changes.ledger_id, [])
        for pod in pods:
            self.pause_pod(pod)
            paused.append(pod)
        changes.complete = True

    # ------------------------------------------------------------------- undo

    def undo(self: _LocalHost, record: ChangeRecord | Mapping[str, Any]) -> str | None:
        """Revert one record; idempotent. Returns why nothing was left to undo, if so."""
        if not isinstance(record, ChangeRecord):
            record = ChangeRecord.from_dict(record)
        if record.target != TARGET:
            raise FaultError(
                f"record {record.ledger_id} was made on the {record.target!r} target: undo it "
                f"with `pytest --chaos-cleanup --chaos-target={record.target}`"
            )
        if record.context and record.context != socket.gethostname():
            raise FaultError(
                f"record {record.ledger_id} was made on host {record.context!r}; its iptables "
                f"chains, files and processes are there: run `pytest --chaos-cleanup` on it"
            )
        held = _held(self).pop(record.ledger_id, None)
        d = record.detail
        if record.kind == "network_block":
            iptables.remove(str(d["chain"]))
        elif record.kind == "disk_fill":
            try:
                Path(str(d["file"])).unlink()
            except FileNotFoundError:
                return "its fill file is gone (a killed session's volume goes with it)"
        elif record.kind == "memory_stress":
            return _undo_memory(held or [], d.get("hogs") or [], record.ledger_id)
        elif record.kind == "node_failure":
            if held is not None:  # this process paused them: resume those still there
                present = {p.name for p in self.pods()}
                for pod in reversed(held):
                    if pod.name in present:
                        self.resume_pod(pod)
            else:
                return _resume_pids(d.get("pids") or [])
        else:
            raise FaultError(f"undo: unknown local change record kind {record.kind!r}")
        return None

    def undo_unrecorded(self: _LocalHost, ledger_id: str, *, made_on: str) -> int:
        """Only memory helpers can exist without their record: stop those tagged so."""
        if made_on != TARGET:
            raise FaultError(
                f"this fault was injected on the {made_on!r} target: revert it with "
                f"`pytest --chaos-cleanup --chaos-target={made_on}`"
            )
        return memory.stop_tagged(ledger_id)


def usage(path: Path) -> tuple[int, int]:
    """(total, used) bytes of the filesystem holding ``path``, as ``df`` reports them."""
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    return total, total - stats.f_bfree * stats.f_frsize


# ------------------------------------------------------------------------- helpers


def _record(
    kind: str, changes: ChangeLog, objects: tuple[ObjectRef, ...], **detail: Any
) -> ChangeRecord:
    return ChangeRecord(
        kind=kind,
        ledger_id=changes.ledger_id,
        context=socket.gethostname(),
        objects=objects,
        detail=detail,
        target=TARGET,
    )


def _held(target: object) -> dict[str, list[Any]]:
    """What this process holds per ledger id (helper ``Popen`` s, paused pods)."""
    held: dict[str, list[Any]] = target.__dict__.setdefault("_fault_handles", {})
    return held


def _rules(
    target: _LocalHost, selector: str | Mapping[str, str] | None, port: int | None, direction: str
) -> list[iptables.FilterRule]:
    tcp = ("-p", "tcp")
    if port is not None:
        _check_listened(port)
    if selector is None:
        assert port is not None
        return [iptables.FilterRule("INPUT", ("-i", "lo", *tcp, "--dport", str(port)))]
    pods = target.pods(selector)
    if not pods:
        raise SelectorMatchedNothing(f"network_block: no pod matches selector {selector!r}")
    rules: list[iptables.FilterRule] = []
    if direction in ("ingress", "both"):
        ports = sorted({p for pod in pods for p in pod.ports})
        if port is not None:
            ports = [port]
        if not ports:
            raise FaultError(
                f"network_block: pods {selector!r} listen on no known port; "
                "give port= to block ingress"
            )
        rules += [
            iptables.FilterRule("INPUT", ("-i", "lo", *tcp, "--dport", str(p))) for p in ports
        ]
    if direction in ("egress", "both"):
        for pod in pods:
            if pod.cgroup is None:
                raise FaultError(
                    f"network_block: pod {pod.name} has no cgroup v2 path, so its egress "
                    "cannot be told apart from other processes; block ingress instead"
                )
            dport = ("--dport", str(port)) if port else ()
            match = ("-m", "cgroup", "--path", pod.cgroup, *tcp, *dport)
            rules.append(iptables.FilterRule("OUTPUT", match))
    return rules


def _check_listened(port: int) -> None:
    """A block of a port nothing listens on would pass silently and test nothing."""
    listening: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # the kernel's own socket tables
        try:
            with open(table) as rows:
                next(rows, None)  # header
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        listening.add(int(fields[1].rpartition(":")[2], 16))
        except OSError:
            continue
    if port not in listening:
        raise FaultError(
            f"network_block: nothing listens on TCP port {port} on this host, so blocking it "
            "would test nothing; give the port of a running service (target.port_of(name))"
        )


def _fill_dir(target: _LocalHost, service: str, path: str | None) -> Path:
    volume = target.volume(service)
    if volume is None:
        raise SelectorMatchedNothing(
            f"disk_fill: service {service!r} declares no volume; add "
            "`volume: {size_mb: 64}` to it in the services YAML"
        )
    if path is None:
        return volume
    chosen = Path(path)
    chosen = chosen if chosen.is_absolute() else volume / chosen
    if not chosen.resolve().is_relative_to(volume.resolve()):
        raise FaultError(f"disk_fill: path {path!r} is not on the volume of {service!r} ({volume})")
    return chosen if chosen.is_dir() else chosen.parent


def _pods_of(target: _LocalHost, selector: str | Mapping[str, str], count: int | None) -> list[Pod]:
    if isinstance(selector, str) and "=" not in selector:
        pods = [p for p in target.pods() if p.workload == selector]
        what = f"service {selector!r}"
    else:
        pods = target.pods(selector)
        what = f"selector {selector!r}"
    if not pods:
        names = sorted({w.name for w in target.workloads()})
        raise SelectorMatchedNothing(
            f"memory_stress: no running pod matches {what}; services: {', '.join(names)}"
        )
    return pods[:count] if count else pods


def _growth(target: _LocalHost, pod: Pod, share: float, mb: int | None) -> int:
    used, limit = target.memory_usage(pod)
    if mb is not None:
        return mb * _MIB
    if limit is None:
        raise FaultError(
            f"memory_stress: service {pod.workload!r} has no memory limit, so "
            f"{share:.0%} of it means nothing; set `memory_limit_mb: <MiB>` on "
            f"{pod.workload!r} in the services YAML (or give mb=)"
        )
    return int(share * limit) - used


def _spawn(
    target: _LocalHost,
    pod: Pod,
    growth: int,
    report: memory.ReportPipe,
    tag: str,
    hold: bool,
) -> tuple[subprocess.Popen[bytes], float]:
    argv = [sys.executable, "-m", memory.HOG_MODULE, "--bytes", str(growth)]
    argv += ["--report", str(report.path), "--tag", tag]
    if not hold:
        argv.append("--release")
    try:
        proc = target.spawn_in_pod(pod, argv)
    except TargetError as exc:
        raise FaultError(f"memory_stress: cannot start the helper in {pod.name}: {exc}") from exc
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    return proc, created


def _collect(
    target: _LocalHost,
    pod: Pod,
    growth: int,
    proc: subprocess.Popen[bytes],
    created: float,
    report: memory.ReportPipe,
    deadline: float,
) -> memory.Hog:
    line = report.read_line(proc, timeout=deadline - time.monotonic())
    if line is None:
        code = proc.poll()
        why = (
            f"exited with {memory.exit_text(code)} before reporting"
            if code is not None
            else f"did not report within {memory.ALLOCATE_TIMEOUT_S:g} s"
        )
        tail = target.log_tail(pod)
        raise FaultError(
            f"memory_stress: the helper in pod {pod.name} (+{growth // _MIB} MiB) {why}"
            + (f"; pod log: {tail}" if tail else "")
        )
    log.info("memory_stress: %s grew by %s", pod.name, line.strip())
    return memory.Hog(pod.name, proc.pid, created, int(line.split()[1]))


def _undo_memory(
    procs: list[subprocess.Popen[bytes]], hogs: list[Mapping[str, Any]], tag: str
) -> str | None:
    for proc in procs:  # all of them told first, then each waited for
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        memory.stop(proc)
    stopped = 0
    for hog in hogs:  # from the record alone: only if still the same process
        process = memory.same_process(int(hog["pid"]), float(hog["create_time"]))
        if process is not None and memory.is_hog(process):
            memory.stop_process(process)
            stopped += 1
    if not procs:  # from the record alone: also helpers it never recorded, by their tag
        stopped += memory.stop_tagged(tag)
    if procs or stopped:
        return None
    return "its memory helpers died with their session, and the memory with them"


def _resume_pids(pids: Sequence[int]) -> str | None:
    """A killed run's pods died with it; resume any that is still stopped."""
    resumed = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_STOPPED:
                for member in [process, *process.children(recursive=True)]:
                    member.send_signal(signal.SIGCONT)
                resumed += 1
        except psutil.NoSuchProcess:
            continue
    return None if resumed else "its paused pods died with their session"
