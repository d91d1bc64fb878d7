"""SIGTERM ends the demo API by itself, under load and with a leaked pool, within the grace.

The local target (like a kubelet) sends SIGTERM, then SIGKILL once its grace is over: 3 s
here, a pod's terminationGracePeriodSeconds (30 s) in a cluster. A replica that outlives the
grace slows every scale-down, restart, rollout and drain by that much. The API's answer is a
bounded drain: requests in flight get a short while to finish (and are answered 503 if they
cannot), then the pool and the cache client are closed and the process exits.

The requests that cannot finish come from a dry pool (the ConnectionLeak fault's admin hook)
with a database timeout longer than the grace: each waits for a connection that never comes.
Real processes throughout: Postgres and Redis from the demo's own launchers, the API as
``python -m pytest_resilience.demo.api``, keep-alive clients on real sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from pytest_resilience.demo import SERVICES_YAML
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.targets.services import load_services

#: What the local target waits after SIGTERM before it sends SIGKILL (its default).
GRACE_S: float = inspect.signature(LocalTarget.__init__).parameters["stop_grace_s"].default
#: Longer than the grace: a request waiting on a dry pool waits that long for a connection.
SLOW_DB_ENV = {"DEMO_DB_TIMEOUT_S": "10", "DEMO_POOL_MAX": "4"}
START_S = 60.0  # a bound on "did not hang" while starting, never a speed goal


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)  # polling interval, with a deadline


def _request(port: int, method: str, path: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- the processes --------------------------------------------------------------------------


@dataclass
class Deps:
    """Postgres and Redis, each the demo's own launcher on a free port."""

    work: Path
    pg: subprocess.Popen[bytes]
    pg_port: int
    redis_port: int

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    def signal_postgres(self, sig: signal.Signals) -> None:
        """Postmaster and every backend (each its own session: a group signal misses them)."""
        postmaster = psutil.Process(self.pg.pid)
        for process in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)


@pytest.fixture(scope="module")
def deps() -> Iterator[Deps]:
    work = Path(tempfile.mkdtemp(prefix="demo-shutdown-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (work / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    pg_port, redis_port = _free_port(), _free_port()
    python = [sys.executable, "-m"]
    pg = spawn("postgres", [*python, "pytest_resilience.demo.postgres", "--data",
                            str(work / "pg"), "--port", str(pg_port)])  # fmt: skip
    spawn("redis", [*python, "pytest_resilience.demo.redis", "--port", str(redis_port)])
    found = Deps(work, pg, pg_port, redis_port)

    def pg_answers() -> bool:
        try:
            with psycopg.connect(found.pg_dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def redis_answers() -> bool:
        try:
            return bool(redis.Redis(port=redis_port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    try:
        _wait_until(pg_answers, timeout=START_S, what="Postgres accepts connections")
        _wait_until(redis_answers, timeout=START_S, what="Redis answers PING")
        yield found
    finally:
        found.signal_postgres(signal.SIGCONT)
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT if proc is pg else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Api:
    popen: subprocess.Popen[bytes]
    port: int
    pod_port: int
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "--- api log ---\n" + "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def start_api(deps: Deps) -> Iterator[Callable[..., Api]]:
    started: list[Api] = []

    def start(**extra_env: str) -> Api:
        port, pod_port = _free_port(), _free_port()
        env = dict(os.environ, **SLOW_DB_ENV, **extra_env)
        env.update(
            PORT=str(port),
            POD_PORT=str(pod_port),
            POD_NAME=f"api-shutdown-{len(started)}",
            DEMO_PG_DSN=deps.pg_dsn,
            DEMO_REDIS_URL=f"redis://127.0.0.1:{deps.redis_port}/0",
        )
        log = deps.work / f"api-{len(started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "pytest_resilience.demo.api"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        api = Api(popen, port, pod_port, log)
        started.append(api)

        def ready() -> bool:
            if popen.poll() is not None:
                pytest.fail(f"the API exited ({popen.returncode}) while starting\n{api.tail()}")
            try:
                status, body = _request(pod_port, "GET", "/readyz", timeout=1)
            except OSError:
                return False
            return status == 200 and json.loads(body)["db"] == "up"

        _wait_until(ready, timeout=START_S, what="the API is ready")
        return api

    yield start
    for api in started:
        if api.popen.poll() is None:
            api.popen.kill()
            api.popen.wait()


def _leak_pool(pod_port: int) -> None:
    """Warm the cache first (hot reads then need no connection), then check out the pool."""
    status, body = _request(pod_port, "POST", "/admin/cache/warm")
    assert status == 200, body
    status, body = _request(pod_port, "POST", "/admin/pool/leak?n=1000")
    assert status == 200, body
    reply = json.loads(body)
    assert reply["leaked"] == reply["pool_max"] > 0, reply


def _exit_within_grace(api: Api) -> float:
    """SIGTERM, then wait as the local target would; the code, or a failure if it outlived it."""
    api.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while api.popen.poll() is None:
        if time.monotonic() > deadline:
            api.popen.kill()  # what the target does now
            api.popen.wait()
            pytest.fail(
                f"the API still ran {GRACE_S}s after SIGTERM: the target would SIGKILL it\n"
                + api.tail()
            )
        time.sleep(0.02)  # polling interval, with a deadline
    return api.popen.returncode


# -- load -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    path: str
    sent_at: float
    status: int | None = None
    error: str | None = None


@dataclass
class KeepAliveClients:
    """One thread per path, each reusing one HTTP/1.1 connection, as Locust's users do."""

    port: int
    paths: Sequence[str]
    outcomes: list[list[Outcome]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> KeepAliveClients:
        for path in self.paths:
            mine: list[Outcome] = []
            self.outcomes.append(mine)
            thread = threading.Thread(target=self._run, args=(path, mine), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def answered(self) -> int:
        return sum(1 for mine in self.outcomes for o in list(mine) if o.status is not None)

    def _run(self, path: str, mine: list[Outcome]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        while not self._stop.is_set():
            outcome = Outcome(path, time.monotonic())
            mine.append(outcome)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                outcome.status = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
                conn.close()
                self._stop.wait(0.05)  # back-off before reconnecting, not synchronisation
            if outcome.status is not None and response.will_close:
                conn.close()


HOT = [f"/items/{i}" for i in (1, 2, 3, 4)]  # served from Redis: no database needed
DB = [f"/items/{i}/verify" for i in (501, 502, 503, 504)]  # always read from Postgres


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["intact", "leaked"])
def test_sigterm_under_load_ends_the_api_by_itself_within_the_grace(
    start_api: Callable[..., Api], pool: str
) -> None:
    api = start_api()
    if pool == "leaked":
        _leak_pool(api.pod_port)
    with KeepAliveClients(api.port, HOT + DB) as clients:
        # Many answers later, every client's first request has reached the server: the
        # database-bound ones are in flight (waiting on the dry pool when it is leaked).
        _wait_until(lambda: clients.answered() >= 200, timeout=30, what="200 answers")
        sigterm_at = time.monotonic()
        code = _exit_within_grace(api)
    assert code == 0, api.tail()
    if pool == "leaked":
        # The requests that waited on the dry pool were answered, not cut off.
        for mine in clients.outcomes[len(HOT) :]:
            first = mine[0]
            assert first.sent_at < sigterm_at
            assert first.status == 503, (first, api.tail())


def test_a_request_in_flight_at_sigterm_still_gets_its_answer(
    start_api: Callable[..., Api], deps: Deps
) -> None:
    """The drain lets a request that can finish do so: here its query waits on a stopped
    Postgres, which resumes once the API has stopped listening (it is draining)."""
    api = start_api(DEMO_DRAIN_S="2")  # room for a slow machine between SIGTERM and SIGCONT
    answer: dict[str, object] = {}
    # The startup's cache warm-up done: a connection in use from now on is the read's.
    _wait_until(lambda: _pool_in_use(api.pod_port) == 0, timeout=10, what="the pool idle")

    def slow_read() -> None:
        try:
            answer["reply"] = _request(api.port, "GET", "/items/777/verify", timeout=15)
        except (OSError, http.client.HTTPException) as exc:
            answer["error"] = exc

    deps.signal_postgres(signal.SIGSTOP)
    try:
        reader = threading.Thread(target=slow_read, daemon=True)
        reader.start()
        _wait_until(
            lambda: _pool_in_use(api.pod_port) >= 1, timeout=10, what="the read holds a connection"
        )
        api.popen.send_signal(signal.SIGTERM)
        _wait_until(lambda: _refuses(api.pod_port), timeout=GRACE_S, what="the API stops listening")
    finally:
        deps.signal_postgres(signal.SIGCONT)
    reader.join(timeout=15)
    _wait_until(lambda: api.popen.poll() is not None, timeout=10, what="the API exits")
    assert api.popen.returncode == 0, api.tail()
    status, body = answer["reply"]  # type: ignore[misc]
    assert status == 200, body
    assert json.loads(body)["ok"] is True


def _pool_in_use(pod_port: int) -> float:
    _, body = _request(pod_port, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("demo_db_pool_in_use "):
            return float(line.split()[1])
    raise AssertionError("demo_db_pool_in_use missing from /metrics")


def test_the_local_target_scales_leaked_api_pods_down_without_sigkill(
    caplog: pytest.LogCaptureFixture,
) -> None:
    specs = [
        dataclasses.replace(s, env={**s.env, **SLOW_DB_ENV}) if s.name == "api" else s
        for s in load_services(SERVICES_YAML)
    ]
    place = Path(tempfile.mkdtemp(prefix="demo-shutdown-target-"))
    place.chmod(0o755)  # Postgres runs as its own user and must reach its data directory
    caplog.set_level(logging.DEBUG, logger="pytest_resilience.targets.local")
    try:
        with LocalTarget(specs, work_dir=place / "work") as target:
            pods = target.pods("app=api")
            assert len(pods) == 3
            for pod in pods:
                _leak_pool(target.pod_port(pod))
            with KeepAliveClients(target.port_of("api"), HOT + DB + DB) as clients:
                _wait_until(lambda: clients.answered() >= 200, timeout=30, what="200 answers")
                target.scale("api", 1)
                gone = {p.name for p in pods} - {p.name for p in target.pods("app=api")}
                assert len(gone) == 2

                def stopped() -> bool:
                    done = {r.getMessage() for r in caplog.records}
                    return all(any(m.startswith(f"pod {n} stopped") for m in done) for n in gone)

                _wait_until(stopped, timeout=GRACE_S + 10, what=f"{sorted(gone)} stopped")
    finally:
        shutil.rmtree(place, ignore_errors=True)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "ignored SIGTERM" in m] == []
    for name in gone:  # by itself: a SIGKILLed pod stops with exit -9
        assert f"pod {name} stopped (exit 0)" in messages, [m for m in messages if name in m]
