"""The script run in the Locust subprocess: Locust as a library, stats as JSON lines.

Locust monkey-patches the whole interpreter with gevent as soon as it is imported, which
breaks asyncio, threads and urllib3 in the pytest process; so Locust lives here, in a
child process started by ``load.py``, and nothing in the package imports this module.

    python -m pytest_resilience._locust_driver --host URL --users N --spawn-rate R
        [--locustfile PATH] [--run-time S] [--parent-pid PID] [--rps R]
        [--role local|master|worker] [--workers N] [--master-port P]
        [--bind-host ADDR] [--master-host ADDR]

Roles: ``local`` (default) runs the users itself. ``master`` is Locust's MasterRunner: it
binds ``--bind-host`` (default 127.0.0.1;
the address a cluster's pods reach when the workers run there), waits for ``--workers``
workers, dispatches the users to them, and writes the same stream
from their seconds (``_Merge``). ``worker`` is Locust's WorkerRunner, connected to
``--master-host``:``--master-port``: it cuts its requests
into the same wall-clock seconds and sends each to the master as a custom message
(``pr_bucket``, raw response times included, so the merged percentiles stay exact); on the
master's ``pr_flush`` it stops its users and sends its partial last second (``pr_final``).
Locust's own stats reports (every 3 s, cumulative) are too coarse for per-second samples.

Protocol on stdout (one JSON object per line; everything else the process prints goes to
stderr, so a chatty locustfile cannot corrupt it):

- ``{"listening": port}`` (master only) once it is bound: the parent starts the workers;
- ``{"connected": n}`` (master only) each time the number of connected workers changes;
- ``{"started": true, "at": ..., "user_classes": [...], ...}`` once the runner is up (a
  master: once every worker is connected);
- one line per wall-clock second, for the requests that *completed* in that second:
  ``{"at": end_of_interval, "interval_s", "requests", "failures", "p50", "p95", "p99",
  "max", "rps", "users", "total_requests", "total_failures", "histogram"}``. Percentiles are
  exact over the interval (``null`` when nothing completed); ``histogram`` maps response
  times rounded like Locust's own stats (1 ms below 100 ms, 10 ms below 1 s, ...) to counts,
  so the parent can merge intervals into any percentile;
- ``{"final": true, "at", "started_at", "elapsed_s", "total_requests", "total_failures"}``
  after SIGTERM/SIGINT, ``--run-time`` or the parent's death (the partial last interval is
  flushed first); a master adds ``worker_requests`` (worker pid -> requests);
- with ``--rps``, every sample carries ``asked_rps``;
- ``{"error": message, "kind": "locustfile", "locustfile": path}`` if the run cannot
  start (exit 2).

Size: over 500 lines because this is one child process's whole script (Locust may be
imported nowhere else): the local, master and worker roles share its arguments, its stats
lines and its merge of the workers' stats.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

EXIT_BAD_LOCUSTFILE = 2


@dataclass
class _Bucket:
    start: float
    end: float
    times: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0


def _round_ms(ms: float) -> int:
    """Locust's own rounding of response times: keeps the histogram small at any load."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def _nearest_rank(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


class _Seconds:
    """Cuts requests into wall-clock seconds by completion time; hands each closed second on.

    ``close(bucket, at)`` is the JSON line writer in one process and in the master, and the
    message to the master in a worker: the same cut everywhere, so the master merges
    workers' seconds by their end alone.
    """

    def __init__(self, close: Callable[[_Bucket, float], None]) -> None:
        self._close = close
        self._current: _Bucket | None = None

    def start(self, now: float) -> None:
        self._current = _Bucket(start=now, end=math.floor(now) + 1.0)

    @property
    def next_boundary(self) -> float:
        assert self._current is not None
        return self._current.end

    def add(self, response_time: float | None, failed: bool) -> None:
        if self._current is None:
            return
        self.roll(time.time())
        bucket = self._current
        bucket.requests += 1
        if response_time is not None:
            bucket.times.append(float(response_time))
        if failed:
            bucket.failures += 1

    def roll(self, now: float) -> None:
        """Close every interval that ended before ``now``, including empty ones."""
        assert self._current is not None
        while now >= self._current.end:
            closed = self._current
            self._close(closed, closed.end)
            self._current = _Bucket(start=closed.end, end=closed.end + 1.0)

    def finish(self, now: float) -> None:
        """Close what ended, then the partial last interval (if it has any length)."""
        if self._current is None:
            return
        self.roll(now)
        if now > self._current.start:
            self._close(self._current, now)
        self._current = None


class _Lines:
    """The protocol's writer: one sample line per closed interval, totals kept on the way."""

    def __init__(self, out: IO[str], user_count: Callable[[], int], asked_rps: float | None):
        self._out = out
        self.user_count = user_count
        self._asked_rps = asked_rps
        self.total_requests = 0
        self.total_failures = 0

    def sample(self, bucket: _Bucket, at: float) -> None:
        self.total_requests += bucket.requests
        self.total_failures += bucket.failures
        ordered = sorted(bucket.times)
        interval = max(at - bucket.start, 1e-6)
        line: dict[str, Any] = {
            "at": at,
            "interval_s": round(interval, 6),
            "requests": bucket.requests,
            "failures": bucket.failures,
            "p50": round(_nearest_rank(ordered, 50), 3) if ordered else None,
            "p95": round(_nearest_rank(ordered, 95), 3) if ordered else None,
            "p99": round(_nearest_rank(ordered, 99), 3) if ordered else None,
            "max": round(ordered[-1], 3) if ordered else None,
            "rps": bucket.requests / interval,
            "users": self.user_count(),
            "total_requests": self.total_requests,
            "total_failures": self.total_failures,
            "histogram": {str(k): v for k, v in sorted(Counter(map(_round_ms, ordered)).items())},
        }
        if self._asked_rps is not None:
            line["asked_rps"] = self._asked_rps
        self.write(line)

    def final(self, now: float, started_at: float, **extra: Any) -> None:
        self.write(
            {
                "final": True,
                "at": now,
                "started_at": started_at,
                "elapsed_s": now - started_at,
                "total_requests": self.total_requests,
                "total_failures": self.total_failures,
                **extra,
            }
        )

    def write(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()


class _Merge:
    """The master's view: the workers' seconds merged into one sample per second.

    A second is written once every live worker has reported it (they do just after its
    boundary), or ``grace_s`` after it if one has not: a stalled worker delays the stream by
    at most that. Its late requests go into the first second still open, so totals stay exact.
    """

    def __init__(
        self, lines: _Lines, started_at: float, live: Callable[[], set[str]], grace_s: float
    ) -> None:
        self._lines = lines
        self._live = live
        self._grace_s = grace_s
        self._start = started_at  # start of the first interval not written yet
        self._next = math.floor(started_at) + 1  # its end (a whole second)
        self._open: dict[int, _Bucket] = {}
        self._seen: dict[str, float] = {}  # worker -> end of the last second it reported
        self._users: dict[str, int] = {}
        self.finals: dict[str, float] = {}
        self.worker_requests: dict[str, int] = {}

    @property
    def user_count(self) -> int:
        live = self._live()
        return sum(n for worker, n in self._users.items() if worker in live)

    def add(self, worker: str, data: dict[str, Any]) -> None:
        end = float(data["end"])
        key = max(math.ceil(end - 1e-6), self._next)
        bucket = self._open.setdefault(key, _Bucket(start=key - 1.0, end=float(key)))
        bucket.requests += int(data["requests"])
        bucket.failures += int(data["failures"])
        bucket.times.extend(data["times"])
        self._seen[worker] = max(self._seen.get(worker, 0.0), end)
        self._users[worker] = int(data["users"])
        pid = str(data["pid"])
        self.worker_requests[pid] = self.worker_requests.get(pid, 0) + int(data["requests"])

    def roll(self, now: float) -> None:
        while True:
            boundary = self._next
            reported = all(self._seen.get(w, 0.0) >= boundary - 1e-6 for w in self._live())
            if not (reported or now >= boundary + self._grace_s):
                return
            self._write_until(float(boundary))

    def finish(self, now: float) -> None:
        while self._next <= now:
            self._write_until(float(self._next))
        if now > self._start:
            rest = _Bucket(start=self._start, end=now)
            for key in sorted(self._open):
                bucket = self._open.pop(key)
                rest.requests += bucket.requests
                rest.failures += bucket.failures
                rest.times.extend(bucket.times)
            self._lines.sample(rest, now)

    def _write_until(self, at: float) -> None:
        bucket = self._open.pop(self._next, None) or _Bucket(start=self._start, end=at)
        bucket.start = self._start
        self._lines.sample(bucket, at)
        self._start = at
        self._next += 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_resilience._locust_driver")
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--spawn-rate", type=float, required=True)
    parser.add_argument("--locustfile", default=None)
    parser.add_argument("--run-time", type=float, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--rps", type=float, default=None)
    parser.add_argument("--role", choices=("local", "master", "worker"), default="local")
    parser.add_argument("--workers", type=int, default=1, help="master: workers to wait for")
    parser.add_argument("--master-port", type=int, default=None, help="worker: where to connect")
    parser.add_argument("--master-host", default="127.0.0.1", help="worker: where to connect")
    parser.add_argument("--bind-host", default="127.0.0.1", help="master: where workers dial")
    return parser.parse_args(argv)


def _default_locustfile() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "locustfile.py")


def _pace(user_classes: list[Any], rps: float, users: int) -> None:
    """``rps`` as Locust's own ``constant_throughput``: every user at ``rps / users`` tasks/s.

    Per user rather than a LoadTestShape because a shape sets the number of users, not their
    rate: holding a rate with it would need a feedback loop over latency. Pacing each user
    keeps the locustfile's tasks and weights, adds up the same whichever worker a user runs
    on, and never runs ahead (a late task is followed by no wait, not by a burst): the rate
    falls short only when a task takes longer than its slot, which ``achieved_rps`` shows.
    """
    from locust import constant_throughput

    for user_class in user_classes:
        user_class.wait_time = constant_throughput(rps / users)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # The protocol gets a private copy of stdout; fd 1 then points at stderr, so prints from
    # the locustfile (or Locust) cannot interleave with the JSON lines.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def fail(kind: str, message: str) -> int:
        out.write(json.dumps({"error": message, "kind": kind, "locustfile": locustfile}) + "\n")
        out.flush()
        return EXIT_BAD_LOCUSTFILE

    locustfile = os.path.abspath(args.locustfile or _default_locustfile())
    if not os.path.isfile(locustfile):
        return fail("locustfile", "locustfile not found")

    import logging

    # Locust's INFO chatter ("Ramping to...", "All users spawned") is noise here.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import gevent  # imported only in this subprocess, never in pytest's
    import gevent.event
    import locust
    from locust.env import Environment
    from locust.util.load_locustfile import load_locustfile

    try:
        user_classes, shapes = load_locustfile(locustfile)
    except Exception as exc:  # the user's file: any error there is theirs to fix
        return fail("locustfile", f"cannot import: {type(exc).__name__}: {exc}")
    if not user_classes:
        return fail(
            "locustfile",
            "defines no User class (subclass locust.HttpUser, FastHttpUser or User, not abstract)",
        )
    if args.rps is not None:
        if shapes:
            return fail(
                "locustfile",
                f"rps={args.rps:g} paces a fixed number of users, but the locustfile's "
                f"LoadTestShape {type(shapes[0]).__name__!r} changes that number: "
                "drop rps= or run the shape without it",
            )
        _pace(list(user_classes.values()), args.rps, args.users)

    env = Environment(
        user_classes=list(user_classes.values()),
        shape_class=shapes[0] if shapes else None,
        events=locust.events,
        host=args.host,
        locustfile=os.path.basename(locustfile),
    )
    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    gevent.signal_handler(signal.SIGINT, done.set)

    def orphaned() -> bool:
        return args.parent_pid is not None and os.getppid() != args.parent_pid

    if args.role == "worker":
        return _work(args, env, done, orphaned)

    if args.role == "master":
        runner: Any = env.create_master_runner(master_bind_host=args.bind_host, master_bind_port=0)
        out.write(json.dumps({"listening": runner.server.port}) + "\n")
        out.flush()
    else:
        runner = env.create_local_runner()
    env.events.init.fire(environment=env, runner=runner, web_ui=None)

    if args.role == "master":
        connected = 0
        while runner.worker_count < args.workers and not done.is_set():
            done.wait(0.05)  # workers connect within a second or two of their start
            if runner.worker_count != connected:
                connected = runner.worker_count
                out.write(json.dumps({"connected": connected}) + "\n")
                out.flush()
            if orphaned():
                done.set()
        if done.is_set():
            runner.server.close(linger=0)
            out.close()
            return 0

    started = time.time()
    lines = _Lines(out, lambda: runner.user_count, args.rps)
    merge: _Merge | None = None
    seconds: _Seconds | None = None
    if args.role == "master":
        merge = _Merge(lines, started, lambda: _live_workers(runner), grace_s=1.0)
        lines.user_count = lambda: merge.user_count
        finals = gevent.event.Event()

        def on_bucket(environment: Any, msg: Any, **_: Any) -> None:
            merge.add(msg.node_id, msg.data)
            merge.roll(time.time())

        def on_final(environment: Any, msg: Any, **_: Any) -> None:
            merge.finals[msg.node_id] = float(msg.data["at"])
            if _live_workers(runner) <= set(merge.finals):
                finals.set()

        runner.register_message("pr_bucket", on_bucket)
        runner.register_message("pr_final", on_final)
    else:
        seconds = _Seconds(lines.sample)
        seconds.start(started)

        def on_request(
            response_time: float | None = None, exception: object = None, **_: Any
        ) -> None:
            seconds.add(response_time, exception is not None)

        env.events.request.add_listener(on_request)

    if env.shape_class is not None:
        runner.start_shape()
    elif args.role == "master":
        gevent.spawn(runner.start, args.users, args.spawn_rate)  # it blocks while it dispatches
    else:
        runner.start(args.users, spawn_rate=args.spawn_rate)
    lines.write(
        {
            "started": True,
            "at": started,
            "host": args.host,
            "users": args.users,
            "spawn_rate": args.spawn_rate,
            "locustfile": locustfile,
            "user_classes": sorted(user_classes),
            "shape": type(env.shape_class).__name__ if env.shape_class else None,
            "workers": args.workers if args.role == "master" else 1,
            "asked_rps": args.rps,
        }
    )

    def tick() -> None:
        while not done.is_set():
            if merge is not None:
                gevent.sleep(0.1)  # a second is written as its last worker reports it
                merge.roll(time.time())
            else:
                # wake just after each second's boundary, or sooner if the parent is gone
                assert seconds is not None
                gevent.sleep(max(0.0, seconds.next_boundary - time.time()) + 0.002)
                seconds.roll(time.time())
            if orphaned():
                done.set()

    ticker = gevent.spawn(tick)
    done.wait(timeout=args.run_time)
    done.set()
    ticker.kill(block=True)
    users_at_stop = lines.user_count()
    extra: dict[str, Any] = {}
    if merge is not None:
        # each worker stops its users and sends its last seconds; then they are told to quit
        if _live_workers(runner):
            runner.send_message("pr_flush")
            deadline = time.time() + _FLUSH_TIMEOUT_S
            # a dead worker leaves Locust's live set once its heartbeats are missed
            while not _live_workers(runner) <= set(merge.finals) and time.time() < deadline:
                finals.wait(timeout=0.05)
        ends = list(merge.finals.values())
        lines.user_count = lambda: users_at_stop
        merge.finish(max(ends) if ends else time.time())
        extra["worker_requests"] = dict(merge.worker_requests)
        extra["workers_flushed"] = len(merge.finals)
        lines.final(max(ends) if ends else time.time(), started, **extra)
        env.events.quitting.fire(environment=env, reverse=True)  # Locust's own: quit workers
        runner.server.close(linger=0)
    else:
        runner.quit()
        assert seconds is not None
        lines.user_count = lambda: users_at_stop
        now = time.time()
        seconds.finish(now)
        lines.final(now, started)
        env.events.quitting.fire(environment=env, reverse=True)
    out.close()
    return 0


_FLUSH_TIMEOUT_S = 5.0


def _live_workers(runner: Any) -> set[str]:
    clients = runner.clients
    return {c.id for c in clients.ready + clients.spawning + clients.running}


def _work(args: argparse.Namespace, env: Any, done: Any, orphaned: Callable[[], bool]) -> int:
    """A worker: Locust's WorkerRunner, its seconds sent to the master instead of written."""
    import gevent
    import gevent.event

    runner = env.create_worker_runner(args.master_host, args.master_port)  # returns once acked
    env.events.init.fire(environment=env, runner=runner, web_ui=None)
    pid = os.getpid()

    def send(bucket: _Bucket, at: float) -> None:
        runner.send_message(
            "pr_bucket",
            {
                "pid": pid,
                "end": at,
                "requests": bucket.requests,
                "failures": bucket.failures,
                "times": [round(t, 3) for t in bucket.times],
                "users": runner.user_count,
            },
        )

    seconds = _Seconds(send)
    seconds.start(time.time())

    def on_request(response_time: float | None = None, exception: object = None, **_: Any) -> None:
        seconds.add(response_time, exception is not None)

    env.events.request.add_listener(on_request)

    def on_flush(environment: Any, msg: Any, **_: Any) -> None:
        runner.stop()  # no request completes after the last second is sent
        now = time.time()
        seconds.finish(now)
        runner.send_message("pr_final", {"pid": pid, "at": now})

    runner.register_message("pr_flush", on_flush)

    def tick() -> None:
        while not done.is_set():
            gevent.sleep(max(0.0, seconds.next_boundary - time.time()) + 0.002)
            seconds.roll(time.time())
            if orphaned():
                done.set()

    told_to_quit = gevent.event.Event()

    def on_quit() -> None:
        runner.greenlet.join()  # Locust's worker kills its greenlets on the master's quit
        told_to_quit.set()
        done.set()

    ticker = gevent.spawn(tick)
    gevent.spawn(on_quit)
    done.wait()
    ticker.kill(block=True)
    if not told_to_quit.is_set():  # stopped by a signal or orphaned, not by the master
        env.events.quitting.fire(environment=env, reverse=True)  # tells the master we quit
        runner.quit()
    runner.client.close(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
