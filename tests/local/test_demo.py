"""The demo system for real: Postgres, Redis and API replicas as processes on this machine.

The small launcher below is this file's own (the local target is built separately): it
starts each program the way services.yaml does, on free ports, and removes every process and
directory afterwards, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pytest_resilience.demo import LOCUSTFILE, SERVICES_YAML
from pytest_resilience.demo.api import FAULT_PERIOD, ApiSettings
from pytest_resilience.demo.breaker import BreakerState, CircuitBreaker
from pytest_resilience.errors import ConfigError

# Generous: only a bound on "did not hang", never a speed goal.
HANG_S = 5.0
TEST_ENV = {
    "DEMO_DB_TIMEOUT_S": "0.5",
    "DEMO_BREAKER_FAILURES": "3",
    "DEMO_BREAKER_COOLDOWN_S": "1",
}


# -- launcher ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    pod_port: int | None = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class DemoCluster:
    work: Path
    procs: list[Proc] = field(default_factory=list)
    pg: Proc | None = None
    redis: Proc | None = None

    def _spawn(self, name: str, argv: list[str], *, port: int, **kwargs: object) -> Proc:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def start_postgres(self) -> Proc:
        port = _free_port()
        argv = [sys.executable, "-m", "pytest_resilience.demo.postgres"]
        argv += ["--data", str(self.work / "pg"), "--port", str(port)]
        self.pg = self._spawn("postgres", argv, port=port)
        _wait_until(self._pg_answers, timeout=60, what="Postgres accepts connections", proc=self.pg)
        return self.pg

    @property
    def pg_dsn(self) -> str:
        assert self.pg is not None
        return f"postgresql://postgres@127.0.0.1:{self.pg.port}/postgres"

    def _pg_answers(self) -> bool:
        try:
            with psycopg.connect(self.pg_dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start_redis(self) -> Proc:
        port = _free_port()
        argv = [sys.executable, "-m", "pytest_resilience.demo.redis", "--port", str(port)]
        self.redis = self._spawn("redis", argv, port=port)
        client = redis.Redis(port=port, socket_timeout=1)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        _wait_until(pong, timeout=20, what="Redis answers PING", proc=self.redis)
        client.close()
        return self.redis

    def start_api(
        self,
        name: str,
        *,
        port: int,
        version: str = "v1",
        pg_dsn: str | None = None,
        redis_url: str | None = None,
        wait_db: bool = True,
    ) -> Proc:
        pod_port = _free_port()
        env = dict(os.environ, **TEST_ENV)
        env.update(
            PORT=str(port),
            POD_PORT=str(pod_port),
            POD_NAME=name,
            DEMO_VERSION=version,
            DEMO_PG_DSN=pg_dsn or self.pg_dsn,
            DEMO_REDIS_URL=redis_url or f"redis://127.0.0.1:{self.redis.port}/0",  # type: ignore[union-attr]
        )
        argv = [sys.executable, "-m", "pytest_resilience.demo.api"]
        proc = self._spawn(name, argv, port=port, env=env)
        proc.pod_port = pod_port

        def ready() -> bool:
            try:
                reply = call(pod_port, "/readyz", timeout=1)
            except OSError:
                return False
            if not wait_db:  # serving at all: /readyz answers (503 until the db answered)
                return reply.status in (200, 503)
            return reply.status == 200 and reply.json()["db"] == "up"

        _wait_until(ready, timeout=30, what=f"{name} ready", proc=proc)
        return proc

    def kill(self, proc: Proc) -> None:
        proc.popen.kill()
        proc.popen.wait(timeout=10)

    def signal_postgres(self, sig: signal.Signals) -> None:
        """Signal the postmaster and every backend.

        Each backend calls setsid(), so a process-group signal would miss them, and a stopped
        postmaster alone leaves open connections answering. The postmaster goes first, so it
        forks nothing new meanwhile.
        """
        assert self.pg is not None
        postmaster = psutil.Process(self.pg.popen.pid)
        for process in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)

    def stop_all(self) -> None:
        """APIs first (they are Postgres' clients), then Postgres and Redis; never raises."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is not None:
                continue
            if proc is self.pg:
                self.signal_postgres(signal.SIGCONT)
                proc.popen.send_signal(signal.SIGINT)  # Postgres' fast shutdown
            else:
                proc.popen.terminate()
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                if proc is self.pg:
                    self.signal_postgres(signal.SIGKILL)
                proc.popen.kill()
                proc.popen.wait(timeout=10)


def _wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, proc: Proc | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(
                f"{proc.name} exited ({proc.popen.returncode}) before: {what}\n" + proc.log_tail()
            )
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc is not None else ""
            pytest.fail(f"not within {timeout}s: {what}\n{tail}")
        time.sleep(0.05)  # polling interval, with a deadline


# -- HTTP and metrics ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)


def call(
    port: int, path: str, *, method: str = "GET", body: object = None, timeout: float = HANG_S
) -> Reply:
    """One request on a fresh connection, so the kernel picks a replica for each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = call(port, "/metrics")
    assert reply.status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    return scrape(port)[(name, frozenset(labels.items()))]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    """Postgres, Redis and two v1 API replicas sharing one port."""
    cluster = DemoCluster(Path(tempfile.mkdtemp(prefix="demo-")))
    try:
        cluster.start_postgres()
        cluster.start_redis()
        port = _free_port()
        cluster.start_api("api-1", port=port)
        cluster.start_api("api-2", port=port)
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(cluster.work, ignore_errors=True)


def _api(cluster: DemoCluster, name: str) -> Proc:
    return next(p for p in cluster.procs if p.name == name)


# -- pure parts ----------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_closes_after_a_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=2.0, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 2.5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: a fresh cooldown
    assert breaker.state is BreakerState.OPEN
    now[0] = 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and not breaker.is_open


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(ConfigError, match=r"DEMO_POOL_MAX.*'zero'"):
        ApiSettings.from_env({"PORT": "8080", "DEMO_POOL_MAX": "zero"})
    with pytest.raises(ConfigError, match="PORT"):
        ApiSettings.from_env({})
    settings = ApiSettings.from_env({"POD_PORT": "9000", "VERSION": "v2"})
    assert (settings.port, settings.pod_port, settings.version) == (None, 9000, "v2")


def test_services_yaml_declares_the_demo_system() -> None:
    """Shape only: the local target's own tests check the format; this checks the content."""
    services = {s["name"]: s for s in yaml.safe_load(SERVICES_YAML.read_text())["services"]}
    assert set(services) == {"postgres", "redis", "api"}
    api = services["api"]
    assert (api["replicas"], api["pod_port"], api["health"]) == (3, True, {"http": "/readyz"})
    assert set(api["versions"]) == {"v1", "v2"} and api["env"]["DEMO_VERSION"] == "{version}"
    assert set(api["depends_on"]) == {"postgres", "redis"}
    assert api["node"] == ["node-a", "node-b"] and services["postgres"]["node"] == "node-c"
    for service in services.values():
        assert service["restart"]["policy"] == "always"
        for argv in service["versions"].values():
            module = argv[argv.index("-m") + 1]
            assert importlib.util.find_spec(module) is not None, module
    # Compiled, never imported: importing locust would monkey-patch this interpreter.
    assert "class DemoUser(HttpUser)" in LOCUSTFILE.read_text()
    compile(LOCUSTFILE.read_text(), str(LOCUSTFILE), "exec")


# -- one API without its dependencies ------------------------------------------------------


def test_api_starts_and_degrades_without_database_or_cache(work_dir: Path) -> None:
    cluster = DemoCluster(work_dir)
    try:
        nowhere = _free_port()  # nothing listens there
        api = cluster.start_api(
            "lonely",
            port=_free_port(),
            pg_dsn=f"postgresql://postgres@127.0.0.1:{nowhere}/postgres",
            redis_url=f"redis://127.0.0.1:{nowhere}/0",
            wait_db=False,
        )
        ready = call(api.pod_port, "/readyz")  # type: ignore[arg-type]
        assert ready.status == 503  # never reached its database: nothing to serve yet
        assert ready.json()["db"] != "up"
        assert call(api.port, "/healthz").status == 200
        assert call(api.port, "/items/1").status == 503
    finally:
        cluster.stop_all()


# -- the running system --------------------------------------------------------------------


def test_items_are_served_and_writes_verify(demo: DemoCluster) -> None:
    port = _api(demo, "api-1").port
    first = call(port, "/items/7")
    assert first.status == 200, first.body
    assert first.json()["id"] == 7 and "item-7" in first.json()["payload"]
    assert call(port, "/items/7").headers["x-cache"] == "hit"
    assert call(port, "/items/999999").status == 404
    assert call(port, "/items/seven").status == 400

    written = call(port, "/items", method="POST", body={"id": 5001, "payload": {"n": 1}})
    assert written.status == 201, written.body
    verified = call(port, "/items/5001/verify")
    assert verified.status == 200 and verified.json()["ok"] is True
    assert call(port, "/items", method="POST", body={"payload": 1}).status == 400


def test_replicas_share_the_service_port(demo: DemoCluster) -> None:
    port = _api(demo, "api-1").port
    pods = {call(port, "/healthz").headers["x-pod"] for _ in range(60)}
    assert pods == {"api-1", "api-2"}


def test_killing_a_replica_leaves_the_service_reachable(demo: DemoCluster) -> None:
    port = _api(demo, "api-1").port
    extra = demo.start_api("api-3", port=port)
    _wait_until(
        lambda: call(port, "/healthz").headers["x-pod"] == "api-3",
        timeout=10,
        what="api-3 serves a share of the port",
    )
    demo.kill(extra)
    statuses = [call(port, f"/items/{i}").status for i in range(1, 31)]
    assert statuses == [200] * 30


def test_metrics_are_exposed_under_the_contract_names(demo: DemoCluster) -> None:
    pod_port = _api(demo, "api-1").pod_port
    assert pod_port is not None
    call(pod_port, "/items/1")
    samples = scrape(pod_port)
    names = {name for name, _ in samples}
    expected = {
        "demo_requests_total",
        "demo_request_duration_seconds_bucket",
        "demo_db_pool_in_use",
        "demo_db_pool_max",
        "demo_cache_hits_total",
        "demo_cache_misses_total",
        "demo_process_resident_memory_bytes",
        "demo_memory_limit_bytes",
        "demo_circuit_breaker_open",
        "demo_version_info",
        "process_cpu_seconds_total",
    }
    assert expected <= names, expected - names
    assert metric(pod_port, "demo_version_info", version="v1") == 1
    assert metric(pod_port, "demo_requests_total", route="/items/{id}", status="200") >= 1
    assert metric(pod_port, "demo_memory_limit_bytes") > 0
    probed = {dict(labels).get("route") for name, labels in samples if name.startswith("demo_req")}
    assert not probed & {"/metrics", "/readyz", "/healthz"}, "probes must not count as traffic"


def test_admin_hooks_act_on_the_replica(demo: DemoCluster) -> None:
    pod_port = _api(demo, "api-1").pod_port
    assert pod_port is not None

    assert call(pod_port, "/admin/pool/resize?max=17", method="POST").status == 200
    assert metric(pod_port, "demo_db_pool_max") == 17
    assert call(pod_port, "/admin/pool/resize?max=0", method="POST").status == 400
    assert call(pod_port, "/admin/pool/resize?max=10", method="POST").status == 200

    assert call(pod_port, "/admin/cache/warm", method="POST").json()["warmed"] == 100
    assert call(pod_port, "/items/3").headers["x-cache"] == "hit"
    misses = metric(pod_port, "demo_cache_misses_total")
    invalidated = call(pod_port, "/admin/cache/invalidate?prefix=item:3", method="POST")
    assert invalidated.status == 200 and invalidated.json()["deleted"] >= 1
    assert call(pod_port, "/items/3").headers["x-cache"] == "miss"
    assert metric(pod_port, "demo_cache_misses_total") == misses + 1

    assert call(pod_port, "/admin/pool/reset", method="POST").status == 200
    assert call(pod_port, "/items/555").status == 200  # served through the fresh pool
    assert call(pod_port, "/admin/gc", method="POST").status == 200

    rss = metric(pod_port, "demo_process_resident_memory_bytes")
    assert call(pod_port, "/admin/memory/hog?mb=64", method="POST").json()["held_mb"] == 64
    assert metric(pod_port, "demo_process_resident_memory_bytes") > rss + 60 * 2**20
    assert call(pod_port, "/admin/memory/release", method="POST").json()["released_mb"] == 64


def test_v2_fails_more_than_one_percent_and_v1_never(demo: DemoCluster) -> None:
    v1_port = _api(demo, "api-1").port
    v2 = demo.start_api("api-v2", port=_free_port(), version="v2")
    try:
        v2_errors = sum(call(v2.port, f"/items/{i % 100 + 1}").status == 500 for i in range(300))
        v1_errors = sum(call(v1_port, f"/items/{i % 100 + 1}").status != 200 for i in range(300))
        assert v2_errors / 300 > 0.01
        assert v2_errors == 300 // FAULT_PERIOD
        assert v1_errors == 0
        assert metric(v2.pod_port, "demo_version_info", version="v2") == 1  # type: ignore[arg-type]
    finally:
        demo.kill(v2)


def test_hung_database_opens_the_breaker_and_cached_items_still_serve(demo: DemoCluster) -> None:
    apis = [_api(demo, "api-1"), _api(demo, "api-2")]
    pod_ports = [api.pod_port for api in apis]
    shared = apis[0].port
    # Make ids 900..999 certainly uncached and 1..100 certainly cached.
    call(pod_ports[0], "/admin/cache/invalidate?prefix=item:9", method="POST")
    assert call(pod_ports[0], "/admin/cache/warm", method="POST").status == 200

    demo.signal_postgres(signal.SIGSTOP)
    try:
        for pod_port in pod_ports:
            cold = iter(range(900, 1000))

            def breaker_open(pod_port: int = pod_port, cold: Iterator[int] = cold) -> bool:
                reply = call(pod_port, f"/items/{next(cold)}")  # raises if it hangs
                assert reply.status == 503, reply.body
                return "circuit breaker open" in reply.json()["detail"]

            _wait_until(breaker_open, timeout=30, what="the breaker opens")
            assert metric(pod_port, "demo_circuit_breaker_open") == 1
            assert call(pod_port, "/readyz").json()["db"] == "down"

        for item_id in range(1, 21):
            reply = call(shared, f"/items/{item_id}")
            assert (reply.status, reply.headers["x-cache"]) == (200, "hit")
        assert call(shared, "/items/950").status == 503
    finally:
        demo.signal_postgres(signal.SIGCONT)

    for pod_port in pod_ports:
        _wait_until(
            # verify always reads the database, never the cache
            lambda pod_port=pod_port: call(pod_port, "/items/901/verify").status == 200,
            timeout=30,
            what="database reads succeed again",
        )
        assert metric(pod_port, "demo_circuit_breaker_open") == 0
