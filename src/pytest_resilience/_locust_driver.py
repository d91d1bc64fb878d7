"""The script run in the Locust subprocess: Locust as a library, stats as JSON lines.

Locust monkey-patches the whole interpreter with gevent as soon as it is imported, which
breaks asyncio, threads and urllib3 in the pytest process; so Locust lives here, in a
child process started by ``load.py``, and nothing in the package imports this module.

    python -m pytest_resilience._locust_driver --host URL --users N --spawn-rate R
        [--locustfile PATH] [--run-time S] [--parent-pid PID]

Protocol on stdout (one JSON object per line; everything else the process prints goes to
stderr, so a chatty locustfile cannot corrupt it):

- ``{"started": true, "at": ..., "user_classes": [...], ...}`` once the runner is up;
- one line per wall-clock second, for the requests that *completed* in that second:
  ``{"at": end_of_interval, "interval_s", "requests", "failures", "p50", "p95", "p99",
  "max", "rps", "users", "total_requests", "total_failures", "histogram"}``. Percentiles are
  exact over the interval (``null`` when nothing completed); ``histogram`` maps response
  times rounded like Locust's own stats (1 ms below 100 ms, 10 ms below 1 s, ...) to counts,
  so the parent can merge intervals into any percentile;
- ``{"final": true, "at", "started_at", "elapsed_s", "total_requests", "total_failures"}``
  after SIGTERM/SIGINT, ``--run-time`` or the parent's death (the partial last interval is
  flushed first);
- ``{"error": message, "kind": "locustfile", "locustfile": path}`` if the run cannot
  start (exit 2).
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


class _Stream:
    """Cuts requests into wall-clock seconds by completion time and writes one line each."""

    def __init__(self, out: IO[str], user_count: Any) -> None:
        self._out = out
        self._user_count = user_count
        self.started_at = 0.0
        self.total_requests = 0
        self.total_failures = 0
        self._current: _Bucket | None = None

    def start(self, now: float) -> None:
        self.started_at = now
        self._current = _Bucket(start=now, end=math.floor(now) + 1.0)

    def set_user_count(self, user_count: Any) -> None:
        self._user_count = user_count

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
            self._emit(closed, at=closed.end)
            self._current = _Bucket(start=closed.end, end=closed.end + 1.0)

    def finish(self, now: float) -> None:
        if self._current is None:
            return
        self.roll(now)
        if now > self._current.start:
            self._emit(self._current, at=now)
        self._current = None
        self.write(
            {
                "final": True,
                "at": now,
                "started_at": self.started_at,
                "elapsed_s": now - self.started_at,
                "total_requests": self.total_requests,
                "total_failures": self.total_failures,
            }
        )

    def _emit(self, bucket: _Bucket, *, at: float) -> None:
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
            "users": self._user_count(),
            "total_requests": self.total_requests,
            "total_failures": self.total_failures,
            "histogram": {str(k): v for k, v in sorted(Counter(map(_round_ms, ordered)).items())},
        }
        self.write(line)

    def write(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._out.flush()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_resilience._locust_driver")
    parser.add_argument("--host", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--spawn-rate", type=float, required=True)
    parser.add_argument("--locustfile", default=None)
    parser.add_argument("--run-time", type=float, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    return parser.parse_args(argv)


def _default_locustfile() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "locustfile.py")


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

    env = Environment(
        user_classes=list(user_classes.values()),
        shape_class=shapes[0] if shapes else None,
        events=locust.events,
        host=args.host,
        locustfile=os.path.basename(locustfile),
    )
    runner = env.create_local_runner()
    stream = _Stream(out, lambda: runner.user_count)

    def on_request(response_time=None, exception=None, **_: Any) -> None:
        stream.add(response_time, exception is not None)

    env.events.request.add_listener(on_request)
    env.events.init.fire(environment=env, runner=runner, web_ui=None)

    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    gevent.signal_handler(signal.SIGINT, done.set)

    def tick() -> None:
        while not done.is_set():
            # wake just after each second's boundary, or sooner if the parent is gone
            gevent.sleep(max(0.0, stream.next_boundary - time.time()) + 0.002)
            stream.roll(time.time())
            if args.parent_pid is not None and os.getppid() != args.parent_pid:
                done.set()

    started = time.time()
    stream.start(started)
    if env.shape_class is not None:
        runner.start_shape()
    else:
        runner.start(args.users, spawn_rate=args.spawn_rate)
    stream.write(
        {
            "started": True,
            "at": started,
            "host": args.host,
            "users": args.users,
            "spawn_rate": args.spawn_rate,
            "locustfile": locustfile,
            "user_classes": sorted(user_classes),
            "shape": type(env.shape_class).__name__ if env.shape_class else None,
        }
    )
    ticker = gevent.spawn(tick)
    done.wait(timeout=args.run_time)
    done.set()
    ticker.kill(block=True)
    users_at_stop = runner.user_count
    runner.quit()
    stream.set_user_count(lambda: users_at_stop)
    stream.finish(time.time())
    env.events.quitting.fire(environment=env, reverse=True)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
