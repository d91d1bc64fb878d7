"""Load from Locust, run out of process, streamed back one sample per second.

Locust monkey-patches the interpreter with gevent on import, which breaks asyncio, threads
and urllib3; so it never enters the pytest process. ``start_load`` runs
``python -m pytest_resilience._locust_driver`` and a reader thread turns its JSON lines into
``LoadSample`` objects and ``timeline.record("load", ...)`` samples, so the SLO monitor and
the report see what the users saw, second by second.

The driver dies with its parent: ``PR_SET_PDEATHSIG`` on Linux (set in ``preexec_fn``) when
started from the main thread, since the kernel ties it to the creating *thread*; in every
case the driver also checks once a second that its parent is still the one that started it.

``workers=N`` (N > 1) is Locust's own distributed mode on this machine: the driver runs as
the master and N more drivers as its workers, all children of this process (so each dies
with it the same way, and none depends on another to be cleaned up). The master merges the
workers' seconds into the one stream described above, so a LoadRun reads the same for one
process or many. A worker that dies mid-run ends the run with a ``LoadError`` naming it:
the load asked for no longer exists, and a chaos test must not read its silence as calm.

``workers_in=target`` (a target with the ``load_workers`` capability, e.g. Kubernetes) puts
the N workers on the platform instead, next to the system under load: the master still
runs here and binds the address the target names, the workers dial it, and the target
takes them away when the master ends, whatever ended it. Workers that never all connect
end the start with a ``LoadError`` naming them and what the platform says of them.

Size: over 500 lines because one process and a master with workers are started, read and
reaped by the same LoadRun; the worker supervision is the part to move out (issue 14).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .errors import ConfigError, FaultError
from .timeline import LOAD_STARTED, LOAD_STOPPED, Timeline

if TYPE_CHECKING:
    from .targets.base import LoadWorkers, PlacedWorkers, Target

__all__ = [
    "DEFAULT_LOCUSTFILE",
    "LOAD_WORKER_LOST",
    "SERIES",
    "LoadError",
    "LoadRun",
    "LoadSample",
    "LoadTotals",
    "LocustfileError",
    "start_load",
    "start_load_on",
]

logger = logging.getLogger("pytest_resilience.load")

DEFAULT_LOCUSTFILE = Path(__file__).resolve().parent / "demo" / "locustfile.py"
SERIES = "load"
"""Name of the timeline series the samples are recorded under."""
LOAD_WORKER_LOST = "load_worker_lost"
"""Timeline event: a Locust worker process died before the run was stopped."""

_DRIVER_MODULE = "pytest_resilience._locust_driver"
_STDERR_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1
_WORKER_GRACE_S = 2.0  # after the master's end, for its workers to act on its quit
_USERS_PER_PACED_RPS = 10.0  # rps= without users=: one user per 10 rps (slots of 100 ms)
# Locust/gevent chatter that says nothing about why a run failed.
_NOISE = re.compile(
    r"MonkeyPatchWarning|monkey\.patch_all\(\)|Ramping to \d+ users|All users spawned"
    r"|Shape worker|Starting Locust|^\s*$"
)


class LoadError(FaultError):
    """The load generator could not start, or stopped on its own (driver crash)."""


class LocustfileError(LoadError, ConfigError):
    """The locustfile is missing, cannot be imported, or defines no User class."""


@dataclass(frozen=True)
class LoadSample:
    """What the users saw in one interval (one wall-clock second, shorter at the edges).

    ``at`` is the end of the interval; latencies are milliseconds, exact over the requests
    that completed in the interval and ``None`` when none did. ``histogram`` maps response
    times rounded as Locust rounds them to counts, so intervals can be merged.
    """

    at: float
    interval_s: float
    requests: int
    failures: int
    p50: float | None
    p95: float | None
    p99: float | None
    max_ms: float | None
    rps: float
    users: int
    total_requests: int
    total_failures: int
    histogram: dict[int, int] = field(default_factory=dict, repr=False)
    asked_rps: float | None = None
    """The rate ``rps=`` asked for; beside ``rps`` (achieved) on the timeline."""

    @property
    def start(self) -> float:
        return self.at - self.interval_s

    @property
    def error_rate(self) -> float:
        """Failures / requests; NaN when nothing completed (no answer is not a good answer)."""
        return self.failures / self.requests if self.requests else math.nan

    def values(self) -> dict[str, float]:
        """The timeline's view: numbers only, undefined figures left out."""
        values: dict[str, float] = {
            "requests": self.requests,
            "failures": self.failures,
            "rps": self.rps,
            "users": self.users,
            "total_requests": self.total_requests,
            "total_failures": self.total_failures,
        }
        if self.requests:
            values["error_rate"] = self.error_rate
        if self.asked_rps is not None:
            values["asked_rps"] = self.asked_rps
        for name in ("p50", "p95", "p99", "max_ms"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        return values

    @classmethod
    def from_line(cls, line: Mapping[str, Any]) -> LoadSample:
        return cls(
            at=float(line["at"]),
            interval_s=float(line["interval_s"]),
            requests=int(line["requests"]),
            failures=int(line["failures"]),
            p50=line.get("p50"),
            p95=line.get("p95"),
            p99=line.get("p99"),
            max_ms=line.get("max"),
            rps=float(line["rps"]),
            users=int(line["users"]),
            total_requests=int(line["total_requests"]),
            total_failures=int(line["total_failures"]),
            histogram={int(k): int(v) for k, v in line.get("histogram", {}).items()},
            asked_rps=line.get("asked_rps"),
        )


@dataclass(frozen=True)
class LoadTotals:
    requests: int
    failures: int

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else math.nan


_live_runs: weakref.WeakSet[LoadRun] = weakref.WeakSet()


@atexit.register
def _stop_forgotten_runs() -> None:
    for run in list(_live_runs):
        run.stop(timeout=2)


class LoadRun:
    """One Locust run in a child process; a context manager that stops it on exit.

    Built by ``start_load``. Thread-safe: the reader thread appends while tests read.
    """

    def __init__(
        self,
        process: subprocess.Popen[str],
        *,
        host: str,
        users: int,
        spawn_rate: float,
        locustfile: Path,
        timeline: Timeline,
        workers: int = 1,
        asked_rps: float | None = None,
    ) -> None:
        self.host = host
        self.users = users
        self.spawn_rate = spawn_rate
        self.locustfile = locustfile
        self.timeline = timeline
        self.workers = workers
        self.asked_rps = asked_rps
        """The request rate ``rps=`` asked for, or ``None`` for an unpaced run."""
        self._process = process
        self._workers: list[subprocess.Popen[str]] = []
        self._worker_tails: dict[int, deque[str]] = {}
        self._workers_lock = threading.Lock()
        self._listening: int | None = None
        self._connected = 0  # workers the master saw connect, while it waits for them all
        self._placed: PlacedWorkers | None = None  # workers a target runs (workers_in=)
        self._placed_lock = threading.Lock()
        self._lost: dict[str, Any] | None = None
        self._reaping = False  # the run itself ends its workers: their exits are expected
        self._cond = threading.Condition()
        self._samples: list[LoadSample] = []
        self._started: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._error: LoadError | None = None
        self._stopping = False
        self._ended = False
        self._stop_lock = threading.Lock()
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, name=f"locust-stderr-{process.pid}", daemon=True
        )
        self._stdout_reader = threading.Thread(
            target=self._read_stdout, name=f"locust-stats-{process.pid}", daemon=True
        )
        self._stderr_reader.start()
        self._stdout_reader.start()
        _live_runs.add(self)

    # -- reading the driver ------------------------------------------------------------

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.rstrip("\n")
            if _NOISE.search(line):
                continue
            self._stderr_tail.append(line)
            logger.debug("locust[%d]: %s", self._process.pid, line)

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                logger.debug("locust[%d] stdout: %s", self._process.pid, raw.rstrip())
                continue
            if not isinstance(message, dict):
                continue
            try:
                self._handle(message)
            except (KeyError, TypeError, ValueError) as exc:  # keep draining the pipe
                logger.warning("unreadable line from Locust driver %r: %s", raw.rstrip(), exc)
        self._stderr_reader.join()
        self._on_exit(self._process.wait())

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            error: LoadError
            if message.get("kind") == "locustfile":
                error = LocustfileError(message["error"], source=message.get("locustfile"))
            else:
                error = LoadError(f"Locust driver: {message['error']}")
            with self._cond:
                self._error = error
                self._cond.notify_all()
        elif "listening" in message:
            with self._cond:
                self._listening = int(message["listening"])
                self._cond.notify_all()
        elif "connected" in message:
            with self._cond:
                self._connected = int(message["connected"])
        elif message.get("started"):
            with self._placed_lock:
                placed = self._placed
            self.timeline.mark(
                LOAD_STARTED,
                "locust",
                at=float(message["at"]),
                host=self.host,
                users=self.users,
                spawn_rate=self.spawn_rate,
                locustfile=str(self.locustfile),
                user_classes=message.get("user_classes", []),
                pid=self._process.pid,
                workers=self.workers,
                worker_pids=self.worker_pids,
                asked_rps=self.asked_rps,
                **({"workers_in": placed.name} if placed is not None else {}),
            )
            with self._cond:
                self._started = message
                self._cond.notify_all()
        elif message.get("final"):
            with self._cond:
                self._final = message
                self._cond.notify_all()
        elif "at" in message and "requests" in message:
            sample = LoadSample.from_line(message)
            self.timeline.record(SERIES, sample.values(), at=sample.at)
            with self._cond:
                self._samples.append(sample)
                self._cond.notify_all()

    def _on_exit(self, returncode: int) -> None:
        self._stop_workers(grace=_WORKER_GRACE_S)  # whatever ended the master ends them
        self._remove_placed()
        with self._cond:
            if self._lost is not None:
                reason = "worker_lost"
            elif self._final is not None:
                reason = "stopped" if self._stopping else "run_time"
            elif self._error is not None:
                reason = "failed"
            elif self._stopping:
                reason = "killed" if returncode == -signal.SIGKILL else "stopped"
            else:
                reason = "crashed"
            if reason == "crashed" and self._error is None:
                self._error = LoadError(
                    f"Locust driver (pid {self._process.pid}, locustfile {self.locustfile}) "
                    f"exited with code {returncode} before it was stopped; stderr tail:\n"
                    + self.stderr_tail()
                )
            started = self._started is not None
            at = float(self._final["at"]) if self._final else time.time()
            totals = self._totals_locked()
            worker_requests = (self._final or {}).get("worker_requests")
        if started:
            detail: dict[str, Any] = {}
            if worker_requests is not None:
                detail["worker_requests"] = worker_requests
            self.timeline.mark(
                LOAD_STOPPED,
                "locust",
                at=at,
                reason=reason,
                returncode=returncode,
                total_requests=totals.requests,
                total_failures=totals.failures,
                workers=self.workers,
                asked_rps=self.asked_rps,
                achieved_rps=self.achieved_rps(),
                **detail,
            )
        if reason == "killed":
            logger.warning(
                "Locust driver (pid %d) did not stop in time and was killed", self._process.pid
            )
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        _live_runs.discard(self)

    # -- the workers (distributed mode) ------------------------------------------------

    def _wait_listening(self, timeout: float) -> int:
        """The master's port for its workers, once it is bound."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._listening is not None or self._error is not None or self._ended,
                timeout,
            )
            port = self._listening
        if port is not None:
            return port
        self.stop(timeout=5)
        error = self.error
        if error is not None:
            raise error
        raise LoadError(
            f"Locust master (pid {self.pid}) did not listen for its workers within {timeout} s;"
            " stderr tail:\n" + self.stderr_tail()
        )

    def _attach_workers(self, processes: list[subprocess.Popen[str]]) -> None:
        with self._workers_lock:
            self._workers = list(processes)
        for index, process in enumerate(processes, start=1):
            self._worker_tails[process.pid] = deque(maxlen=_STDERR_TAIL_LINES)
            threading.Thread(
                target=self._watch_worker,
                args=(index, process),
                name=f"locust-worker-{process.pid}",
                daemon=True,
            ).start()

    def _watch_worker(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        tail = self._worker_tails[process.pid]
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if not _NOISE.search(line):
                tail.append(line)
                logger.debug("locust worker[%d]: %s", process.pid, line)
        returncode = process.wait()
        process.stdout.close()
        with self._cond:
            # a worker quits on the master's word after its final line: give that line time
            def expected() -> bool:
                return self._stopping or self._reaping or self._final is not None or self._ended

            if returncode == 0:
                self._cond.wait_for(expected, _WORKER_GRACE_S)
            if expected() or self._lost is not None:
                return
            how = (
                f"was killed by {signal.Signals(-returncode).name}"
                if returncode < 0
                else f"exited with code {returncode}"
            )
            self._lost = {"pid": process.pid, "index": index, "returncode": returncode}
            self._error = LoadError(
                f"Locust worker {index} of {self.workers} (pid {process.pid}) {how} mid-run; "
                f"its share of the {self.users} users was gone, so the run was stopped "
                f"(master pid {self.pid}, locustfile {self.locustfile}); worker stderr tail:\n"
                + ("\n".join(tail) or "(empty)")
            )
            self._cond.notify_all()
        self.timeline.mark(
            LOAD_WORKER_LOST,
            "locust",
            pid=process.pid,
            index=index,
            workers=self.workers,
            returncode=returncode,
        )
        logger.warning("%s", self._error)
        self.stop()

    def _place(self, workers_in: LoadWorkers, args: list[str]) -> None:
        with self._placed_lock:
            self._placed = workers_in.place_load_workers(args, replicas=self.workers)

    def _remove_placed(self) -> None:
        """The target's workers go with the master (once; the reader thread or stop())."""
        with self._placed_lock:
            placed, self._placed = self._placed, None
        if placed is None:
            return
        try:
            placed.remove()
        except Exception as exc:  # the master is gone either way; say what is left behind
            logger.warning("could not remove the load workers %s: %s", placed.name, exc)

    def _stop_workers(self, *, grace: float, timeout: float = 5.0) -> None:
        """Reap every worker: ``grace`` to leave on their own, then SIGTERM, then SIGKILL."""
        with self._cond:
            self._reaping = True
            self._cond.notify_all()
        with self._workers_lock:
            workers = list(self._workers)
            deadline = time.monotonic() + grace
            for process in workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))
            alive = [p for p in workers if p.poll() is None]
            for process in alive:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for process in alive:
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    # -- public API --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The driver process id."""
        return self._process.pid

    @property
    def worker_pids(self) -> list[int]:
        """The worker process ids (``workers=N`` > 1); empty when one process runs the load."""
        with self._workers_lock:
            return [p.pid for p in self._workers]

    @property
    def running(self) -> bool:
        with self._cond:
            return not self._ended

    @property
    def error(self) -> LoadError | None:
        """Why the run failed (crash, bad locustfile), or ``None``."""
        with self._cond:
            return self._error

    @property
    def samples(self) -> list[LoadSample]:
        with self._cond:
            return list(self._samples)

    @property
    def totals(self) -> LoadTotals:
        with self._cond:
            return self._totals_locked()

    def _totals_locked(self) -> LoadTotals:
        if self._final is not None:
            final = self._final
            return LoadTotals(int(final["total_requests"]), int(final["total_failures"]))
        if self._samples:
            last = self._samples[-1]
            return LoadTotals(last.total_requests, last.total_failures)
        return LoadTotals(0, 0)

    def stderr_tail(self) -> str:
        """The driver's last stderr lines, Locust's routine chatter removed."""
        return "\n".join(self._stderr_tail) or "(empty)"

    def wait_for_samples(self, n: int, timeout: float = 30.0) -> list[LoadSample]:
        """Block until at least ``n`` samples arrived; returns all samples so far.

        Raises the run's ``LoadError`` if the driver died first, ``LoadError`` if the run
        ended normally with fewer samples, ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self._samples) >= n or self._ended, timeout)
            if len(self._samples) >= n:
                return list(self._samples)
            if self._error is not None:
                raise self._error
            have = len(self._samples)
            if self._ended:
                raise LoadError(f"load run ended after {have} of the {n} samples waited for")
        raise TimeoutError(f"{have} of {n} load samples arrived within {timeout} s")

    def wait(self, timeout: float | None = None) -> LoadTotals:
        """Block until the run ends by itself (``run_time``), then return its totals.

        Raises the run's ``LoadError`` if the driver crashed, ``TimeoutError`` if it is
        still running after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._ended, timeout):
                raise TimeoutError(f"load run (pid {self.pid}) still running after {timeout} s")
            if self._error is not None:
                raise self._error
            return self._totals_locked()

    def _wait_started(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._started is not None or self._error is not None or self._ended,
                timeout,
            )
            started, error, connected = self._started is not None, self._error, self._connected
        if started:
            return
        with self._placed_lock:
            placed = self._placed
        if placed is not None and error is None and not self._ended:
            # the workers never all came: say which, and what the platform says of them
            state = placed.describe()
            self.stop(timeout=5)
            raise LoadError(
                f"{connected} of the {self.workers} load workers of {placed.name} connected to "
                f"the Locust master (pid {self.pid}) within {timeout} s: {state}"
            )
        self.stop(timeout=5)
        if error is None:
            error = self.error
        if error is not None:
            raise error
        raise LoadError(
            f"Locust driver (pid {self.pid}) did not start within {timeout} s; stderr tail:\n"
            + self.stderr_tail()
        )

    def stop(self, timeout: float = 10.0) -> LoadTotals:
        """SIGTERM the driver (it flushes its last interval), wait, then SIGKILL. Idempotent.

        With workers, the master collects their last seconds and tells them to quit; any
        worker still there after that is terminated like the driver.
        """
        with self._stop_lock:
            with self._cond:
                self._stopping = True
            if self._process.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._stdout_reader.join(timeout)
            self._stop_workers(grace=_WORKER_GRACE_S, timeout=timeout)
            self._remove_placed()
            for stream in (self._process.stdout, self._process.stderr):
                if stream is not None and not self._stdout_reader.is_alive():
                    stream.close()
        return self.totals

    def error_rate(self, since: float | None = None) -> float:
        """Failures / requests over the samples wholly after ``since`` (all if ``None``).

        NaN when no request completed there, so ``assert rate < 0.01`` cannot pass on silence.
        """
        chosen = self._since(since)
        requests = sum(s.requests for s in chosen)
        return sum(s.failures for s in chosen) / requests if requests else math.nan

    def achieved_rps(self, since: float | None = None) -> float:
        """Requests completed per second over the samples wholly after ``since`` (all if ``None``).

        Set it against ``asked_rps``: short of it means the users could not keep the pace
        (each task took longer than its slot), above it that a task makes several requests.
        NaN before the first sample.
        """
        chosen = self._since(since)
        seconds = sum(s.interval_s for s in chosen)
        return sum(s.requests for s in chosen) / seconds if seconds else math.nan

    def percentile(self, p: float, since: float | None = None) -> float:
        """The ``p``-th percentile response time (ms) over the samples wholly after ``since``.

        Merged from the per-interval histograms, so it is as exact as Locust's own rounding
        (1 ms under 100 ms, 10 ms under 1 s, 100 ms under 10 s). NaN when nothing completed.
        """
        if not 0 < p <= 100:
            raise ValueError(f"percentile p must be in (0, 100], got {p!r}")
        return _histogram_percentile((s.histogram for s in self._since(since)), p)

    def _since(self, since: float | None) -> list[LoadSample]:
        samples = self.samples
        if since is None:
            return samples
        return [s for s in samples if s.start >= since - 1e-6]

    def __enter__(self) -> LoadRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None and self.error is not None:
            raise self.error

    def __repr__(self) -> str:
        state = "running" if self.running else "ended"
        workers = f" workers={self.workers}" if self.workers > 1 else ""
        return f"<LoadRun pid={self.pid} host={self.host!r} users={self.users}{workers} {state}>"


def _histogram_percentile(histograms: Iterable[Mapping[int, int]], p: float) -> float:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for ms, count in histogram.items():
            merged[ms] = merged.get(ms, 0) + count
    total = sum(merged.values())
    if not total:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * total))
    seen = 0
    for ms in sorted(merged):
        seen += merged[ms]
        if seen >= rank:
            return float(ms)
    return float(max(merged))


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when this thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None  # a worker thread's exit would kill the driver; the ppid watch covers it
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def start_load_on(
    target: Target,
    workload: str,
    *,
    host: str | None = None,
    workers: int = 1,
    **options: Any,
) -> LoadRun:
    """The ``load`` fixture's start: ``workers`` > 1 on a target with the ``load_workers``
    capability run on it, against ``workload`` as its pods reach it; otherwise here,
    against ``target.endpoint(workload)``. ``host`` overrides either."""
    from .targets.base import LoadWorkers

    if isinstance(workers, int) and workers > 1 and isinstance(target, LoadWorkers):
        url = host or target.load_endpoint(workload)
        return start_load(host=url, workers=workers, workers_in=target, **options)
    url = host or target.endpoint(workload)
    return start_load(host=url, workers=workers, **options)


class _PopenText(TypedDict):
    """What the driver and its workers are started with (a text pipe out)."""

    stdin: int
    stdout: int
    text: Literal[True]
    encoding: str
    errors: str
    bufsize: int
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None
    start_new_session: bool


def start_load(
    *,
    host: str,
    users: int | None = None,
    spawn_rate: float = 10.0,
    locustfile: str | os.PathLike[str] | None = None,
    timeline: Timeline | None = None,
    env: Mapping[str, str] | None = None,
    run_time: float | None = None,
    start_timeout: float = 60.0,
    workers: int = 1,
    rps: float | None = None,
    workers_in: LoadWorkers | None = None,
) -> LoadRun:
    """Start Locust against ``host`` in a child process; returns once users are spawning.

    ``locustfile`` defaults to the demo system's (``DEFAULT_LOCUSTFILE``). ``env`` adds
    environment variables for the driver (and so for the locustfile). ``run_time`` stops the
    run by itself after that many seconds. An unreachable host is not an error: its
    requests are counted as failures, which is what a chaos test wants to see.

    ``workers=N`` (N > 1) runs the users in N Locust worker processes under a master, for
    more load than one process (one core) can make. ``rps=R`` paces the users to R task
    runs per second in all (one request per task, as in the demo's locustfile, makes that
    R requests/s); ``users`` then defaults to one per 10 rps, so a request may take up to
    100 ms before the pace slips. ``LoadRun.achieved_rps()`` says what was reached.

    ``workers_in=target`` runs the ``workers`` on that target (its ``load_workers``
    capability) rather than here; ``host`` is then the URL as the workers see it, and they
    run the locustfile their image ships (the package's, ``DEFAULT_LOCUSTFILE``).
    ``start_timeout`` is the deadline for all of them to connect.
    """
    if not isinstance(host, str) or not re.match(r"^https?://[^/\s]+", host):
        raise ConfigError(f"host must be an http(s):// URL, got {host!r}", field="host")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"workers must be a positive integer (Locust processes), got {workers!r}",
            field="workers",
        )
    if rps is not None and (isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0):
        raise ConfigError(f"rps must be a number > 0 (requests/s), got {rps!r}", field="rps")
    if users is None:
        users = max(10, math.ceil(rps / _USERS_PER_PACED_RPS)) if rps is not None else 10
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ConfigError(f"users must be a positive integer, got {users!r}", field="users")
    if not spawn_rate > 0:
        raise ConfigError(f"spawn_rate must be > 0, got {spawn_rate!r}", field="spawn_rate")
    if run_time is not None and not run_time > 0:
        raise ConfigError(f"run_time must be > 0 seconds, got {run_time!r}", field="run_time")
    path = Path(locustfile if locustfile is not None else DEFAULT_LOCUSTFILE).absolute()
    if not path.is_file():
        raise LocustfileError(
            "locustfile not found; pass locustfile= the path of a Locust file that defines "
            "at least one User class",
            source=str(path),
        )
    if workers_in is not None and path != DEFAULT_LOCUSTFILE:
        raise LocustfileError(
            "workers on the target run the locustfile their image ships (the package's "
            f"{DEFAULT_LOCUSTFILE.name}); drop locustfile= or run the load here (workers=1)",
            source=str(path),
        )
    common = [
        sys.executable,
        "-m",
        _DRIVER_MODULE,
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        repr(float(spawn_rate)),
        "--locustfile",
        str(path),
        "--parent-pid",
        str(os.getpid()),
    ]
    if rps is not None:
        common += ["--rps", repr(float(rps))]
    command = list(common)
    master_host = workers_in.load_master_address() if workers_in is not None else None
    if workers > 1 or master_host is not None:
        command += ["--role", "master", "--workers", str(workers)]
    if master_host is not None:
        command += ["--bind-host", master_host]
    if run_time is not None:
        command += ["--run-time", repr(float(run_time))]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    popen: _PopenText = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "text": True,
        "encoding": "utf-8",
        "errors": "replace",
        "bufsize": 1,
        "env": child_env,
        "preexec_fn": _die_with_parent(),
        "start_new_session": True,  # the terminal's Ctrl-C goes to pytest, which stops us
    }
    process = subprocess.Popen(command, stderr=subprocess.PIPE, **popen)
    run = LoadRun(
        process,
        host=host,
        users=users,
        spawn_rate=float(spawn_rate),
        locustfile=path,
        timeline=timeline if timeline is not None else Timeline("load"),
        workers=workers,
        asked_rps=None if rps is None else float(rps),
    )
    if master_host is not None:
        assert workers_in is not None
        port = run._wait_listening(start_timeout)
        # no --parent-pid or --locustfile: a pod has neither this process nor this path
        args = ["--host", host, "--users", str(users), "--spawn-rate", repr(float(spawn_rate))]
        if rps is not None:
            args += ["--rps", repr(float(rps))]
        args += ["--role", "worker", "--master-host", master_host, "--master-port", str(port)]
        try:
            run._place(workers_in, args)
        except BaseException:
            run.stop(timeout=5)
            raise
    elif workers > 1:
        port = run._wait_listening(start_timeout)
        worker_command = [*common, "--role", "worker", "--master-port", str(port)]
        # started here, not by the master: each is this process's child, dies with it, and
        # is reaped by the run whatever became of the master
        run._attach_workers(
            [
                subprocess.Popen(worker_command, stderr=subprocess.STDOUT, **popen)
                for _ in range(workers)
            ]
        )
    run._wait_started(start_timeout)
    logger.debug("load started: %r", run)
    return run
