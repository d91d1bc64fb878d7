"""Memory pressure: make a pod's memory grow to a share of its limit, as a leak would.

On the local target a helper process is started *inside* the pod
(``target.spawn_in_pod``: the pod's memory cgroup, process group and user), so what it
allocates is charged to the pod and the kernel enforces ``memory_limit_mb`` on it exactly
as it would on the service's own growth; the demo API reports the pod's cgroup usage as
``demo_memory_usage_bytes`` on /metrics. The helper (``faults/_memory_hog.py``) is asked for
``share * limit - current usage`` bytes, says when they are resident, and holds them until
the revert terminates it.

The ledger holds each helper's pid *and* its start time (psutil ``create_time``): a cleanup
after SIGKILL terminates that process only if it is still the same one, never a stranger
that inherited the pid. Helpers also carry the ledger id on their command line
(``--tag``), so a fault killed halfway through inject (before any pid reached the ledger)
is still found. On the local target a killed session's helpers die with it anyway (parent
death signal, and the target's guardian empties the pod cgroups).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ..errors import ConfigError, FaultError, SelectorMatchedNothing, TargetError
from ..targets.base import Pod
from .base import Fault, FaultContext, register_reverter

__all__ = ["HOG_MODULE", "Hog", "MemoryStress"]

log = logging.getLogger("pytest_resilience.faults")

HOG_MODULE = "pytest_resilience.faults._memory_hog"
#: how long a helper may take to allocate and say so (a loaded 2-core machine, ~200 MiB)
ALLOCATE_TIMEOUT_S = 30.0
#: how long a helper gets to exit on SIGTERM before it is SIGKILLed
STOP_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
#: start times are compared with this slack (psutil rounds to clock ticks)
_SAME_START_S = 0.05


@dataclass(frozen=True)
class Hog:
    """One helper holding memory in one pod, as the ledger records it."""

    pod: str
    pid: int
    create_time: float
    bytes: int


class MemoryStress(Fault):
    kind = "memory_stress"

    def __init__(
        self,
        selector: str | Mapping[str, str],
        *,
        share: float = 0.8,
        hold: bool = True,
        mb: int | None = None,
        count: int | None = None,
    ) -> None:
        """``selector``: a service (workload) name or a label selector; every matching pod is
        stressed. ``share``: fraction of the pod's memory limit to fill, strictly between 0
        and 1. ``hold``: keep the memory until the revert (False: allocate and free at once,
        a spike). ``mb``: grow by this many MiB instead of up to a share (kubernetes, where
        the target reports no usage). ``count``: stress only the first ``count`` matching pods."""
        if not selector or not isinstance(selector, str | Mapping):
            raise ConfigError(
                f"memory_stress needs a service name or label selector, got {selector!r}",
                field="selector",
            )
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ConfigError(
                f"memory_stress share is the fraction of the memory limit to fill, strictly "
                f"between 0 and 1 (0.8 = 80%), got {share!r}",
                field="share",
            )
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
            raise ConfigError(
                f"memory_stress mb must be a whole number of MiB >= 1, got {mb!r}", field="mb"
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ConfigError(f"memory_stress count must be >= 1, got {count!r}", field="count")
        self.selector = selector
        self.count = count
        self.share = float(share)
        self.hold = hold
        self.mb = mb
        self.hogs: list[Hog] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._complete = False

    def describe(self) -> str:
        how = f"+{self.mb} MiB" if self.mb else f"{self.share:.0%} of the memory limit"
        return f"memory of pods {self.selector!r} to {how}{'' if self.hold else ' (spike)'}"

    def plan(self) -> dict[str, Any]:
        return {"selector": str(self.selector), "share": self.share, "hold": self.hold}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        if ctx.target.name == "kubernetes":
            return self._kube_inject(ctx)
        pods = self._pods(ctx)
        growth = {pod.name: self._growth(ctx, pod) for pod in pods}
        # Every helper starts first, then each is waited for: the pods grow side by side.
        started: list[tuple[Pod, int, subprocess.Popen[bytes], float, _ReportPipe]] = []
        try:
            for pod in pods:
                if growth[pod.name] <= 0:
                    log.info("memory_stress: %s is already at %.0f%%", pod.name, self.share * 100)
                    continue
                report = _ReportPipe()
                try:
                    proc, created = self._spawn(ctx, pod, growth[pod.name], report)
                except BaseException:
                    report.close()
                    raise
                started.append((pod, growth[pod.name], proc, created, report))
            deadline = time.monotonic() + ALLOCATE_TIMEOUT_S
            for pod, grow, proc, created, report in started:
                self._collect(ctx, pod, grow, proc, created, report, deadline)
            self._complete = True
        finally:
            for *_, report in started:
                report.close()
        return self.spec()

    def spec(self) -> dict[str, Any]:
        return {"hogs": [asdict(h) for h in self.hogs]}

    def revert(self, ctx: FaultContext) -> None:
        if self._kube is not None:
            self._kube_revert(ctx)
            return
        for proc in self._procs:  # all of them told first, then each waited for
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()
        if not self._complete:  # whatever a half-done inject left running under its tag
            _stop_tagged(self.ledger_id)

    # -- local ----------------------------------------------------------------------------

    def _pods(self, ctx: FaultContext) -> list[Pod]:
        selector = self.selector
        if isinstance(selector, str) and "=" not in selector:
            pods = [p for p in ctx.target.pods() if p.workload == selector]
            what = f"service {selector!r}"
        else:
            pods = ctx.target.pods(selector)
            what = f"selector {selector!r}"
        if not pods:
            names = sorted({w.name for w in ctx.target.workloads()})
            raise SelectorMatchedNothing(
                f"memory_stress: no running pod matches {what}; services: {', '.join(names)}"
            )
        return pods[: self.count] if self.count else pods

    def _growth(self, ctx: FaultContext, pod: Pod) -> int:
        usage = getattr(ctx.target, "memory_usage", None)
        if usage is None:
            raise FaultError(
                f"memory_stress: target {ctx.target.name!r} cannot read a pod's memory usage"
            )
        used, limit = usage(pod)
        if self.mb is not None:
            return self.mb * _MIB
        if limit is None:
            raise FaultError(
                f"memory_stress: service {pod.workload!r} has no memory limit, so "
                f"{self.share:.0%} of it means nothing; set `memory_limit_mb: <MiB>` on "
                f"{pod.workload!r} in the services YAML (or give mb=)"
            )
        return int(self.share * limit) - used

    def _spawn(
        self, ctx: FaultContext, pod: Pod, growth: int, report: _ReportPipe
    ) -> tuple[subprocess.Popen[bytes], float]:
        argv = [sys.executable, "-m", HOG_MODULE, "--bytes", str(growth)]
        argv += ["--report", str(report.path), "--tag", self.ledger_id]
        if not self.hold:
            argv.append("--release")
        try:
            proc = ctx.target.spawn_in_pod(pod, argv)  # type: ignore[attr-defined]
        except TargetError as exc:
            raise FaultError(
                f"memory_stress: cannot start the helper in {pod.name}: {exc}"
            ) from exc
        self._procs.append(proc)
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            created = 0.0
        return proc, created

    def _collect(
        self,
        ctx: FaultContext,
        pod: Pod,
        growth: int,
        proc: subprocess.Popen[bytes],
        created: float,
        report: _ReportPipe,
        deadline: float,
    ) -> None:
        line = report.read_line(proc, timeout=deadline - time.monotonic())
        if line is None:
            code = proc.poll()
            why = (
                f"exited with {_exit_text(code)} before reporting"
                if code is not None
                else f"did not report within {ALLOCATE_TIMEOUT_S:g} s"
            )
            tail = _log_tail(ctx, pod)
            raise FaultError(
                f"memory_stress: the helper in pod {pod.name} (+{growth // _MIB} MiB) {why}"
                + (f"; pod log: {tail}" if tail else "")
            )
        self.hogs.append(Hog(pod.name, proc.pid, created, int(line.split()[1])))
        log.info("memory_stress: %s grew by %s", pod.name, line.strip())

    # -- kubernetes: the target's primitive, through faults/kube_dispatch.py --------------
    _kube: Any = None  # kube_dispatch.KubeChanges once injected on kubernetes

    def _kube_inject(self, ctx: FaultContext) -> dict[str, Any]:
        # KUBERNETES BRANCH: the target's memory_stress primitive (an exec'd holder per pod)
        # does the work; dispatch and revert belong to faults/kube_dispatch.py.
        from . import kube_dispatch

        if not hasattr(ctx.target, "memory_stress"):
            raise FaultError("memory_stress: this kubernetes target has no memory_stress primitive")
        if self.mb is None:
            raise FaultError(
                "memory_stress on kubernetes: the target reports no pod memory usage, so a "
                "share of the limit cannot be computed; give mb=<MiB to add>"
            )
        self._kube = kube_dispatch.KubeChanges(self.ledger_id)
        return kube_dispatch.memory_stress(
            ctx,
            self._kube,
            selector=self.selector,
            mb=self.mb,
            duration_s=3600.0 if self.hold else 0.0,
        )

    def _kube_revert(self, ctx: FaultContext) -> None:
        from . import kube_dispatch

        kube_dispatch.revert(ctx, self._kube)


class _ReportPipe:
    """A FIFO a helper writes its ``allocated`` line to, read here with a deadline.

    The read end is opened (non-blocking) before any helper starts, so a helper's open
    never fails; the directory is world-traversable and the FIFO world-writable because a
    pod may run as its own user.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pytest-resilience-mem-"))
        self.dir.chmod(0o711)
        self.path = self.dir / "report"
        os.mkfifo(self.path)
        self.path.chmod(0o622)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # A writer of our own: once a helper closes its end, a FIFO with no writer left
        # would poll as readable (HUP) forever, and read_line would spin.
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def close(self) -> None:
        os.close(self._keep)
        os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def read_line(self, proc: subprocess.Popen[bytes], *, timeout: float) -> str | None:
        """The next line, or None if ``proc`` exits first or the deadline passes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Wake at least every 0.1 s to notice a helper that died without writing.
            readable, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if readable:
                chunk = os.read(self.fd, 4096)
                self._buffer += chunk
                if chunk:
                    continue
            if proc.poll() is not None and b"\n" not in self._buffer:
                # It may have written just before exiting: one last look.
                with contextlib.suppress(BlockingIOError):
                    self._buffer += os.read(self.fd, 4096)
                if b"\n" not in self._buffer:
                    return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, SIGKILL if it will not go; idempotent (already gone is fine)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    else:
        proc.wait()


def _stop_process(process: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _is_hog(process: psutil.Process, tag: str | None = None) -> bool:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return False
    if HOG_MODULE not in argv:
        return False
    return tag is None or (tag in argv and argv[argv.index(tag) - 1] == "--tag")


def _stop_tagged(tag: str) -> None:
    if not tag:
        return
    for process in psutil.process_iter():
        if process.pid != os.getpid() and _is_hog(process, tag):
            log.info("memory_stress: stopping helper %d tagged %s", process.pid, tag)
            _stop_process(process)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"{name} (OOM-killed?)" if code == -signal.SIGKILL else name
    return f"exit code {code}"


def _log_tail(ctx: FaultContext, pod: Pod) -> str:
    path_of = getattr(ctx.target, "log_path", None)
    if path_of is None:
        return ""
    with contextlib.suppress(OSError):
        lines = Path(path_of(pod)).read_text(errors="replace").splitlines()
        return " | ".join(lines[-3:])
    return ""


@register_reverter(MemoryStress.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> None:
    from . import kube_dispatch

    if kube_dispatch.handles(spec, ctx):
        kube_dispatch.revert_spec(spec, ctx)
        return
    for hog in spec.get("hogs", []):
        try:
            process = psutil.Process(int(hog["pid"]))
            same = abs(process.create_time() - float(hog["create_time"])) < _SAME_START_S
        except psutil.NoSuchProcess:
            continue  # died with its session: the memory went with it
        if same and _is_hog(process):
            _stop_process(process)
        else:
            log.info("memory_stress: pid %s is another process now; left alone", hog["pid"])
    _stop_tagged(str(spec.get("ledger_id", "")))
