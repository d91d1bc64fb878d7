"""Remediation actions that speak a datastore's own protocol: Postgres and Redis.

The admin-hook actions (``close_idle_connections``, ``invalidate_cache`` ...) reach only an
application that exposes ``/admin/...`` hooks, such as the demo's API. Alerts from
postgres_exporter and redis_exporter name the database itself, which has no such hooks, so
these actions connect to it as any client would and fix it with its own commands:

- ``terminate_idle_connections``: ``pg_terminate_backend`` over ``pg_stat_activity`` for the
  client backends of this database idle longer than ``idle_for`` (the seed's 5-minute rule),
  never the action's own backend, a superuser's or a replication role's, at most
  ``max_terminated`` of them, oldest first;
- ``unlink_stale_keys``: ``SCAN MATCH <match>`` and ``UNLINK`` in bounded batches; keys with a
  TTL (the hot set the application refreshes) are kept unless ``keep_ttl: false``; at most
  ``max_keys`` of them.

Where: host and port are the core :meth:`~pytest_resilience.targets.base.Target.endpoint` of
the alert's workload (or of ``service``), so the same step runs on every target. Credentials:
from an environment variable holding a DSN/URL (``RESILIENCE_PG_DSN``,
``RESILIENCE_REDIS_URL`` or the one ``dsn_env``/``url_env`` names), of which the host and port
are replaced by the endpoint's; libpq's own ``PGPASSWORD``/``PGUSER``/``.pgpass`` work too.
Every password read is registered with :mod:`.redaction`, so no log, stored detail or report
holds it.

Kubernetes API: these actions make no call of their own. On the Kubernetes target,
``Target.endpoint`` reads the workload's Service (``get services``); that is all the RBAC
they need. Everything else goes to the database's own port.

Options are checked before anything connects, and when the playbook is loaded
(``check=`` of :func:`~.actions.action`): a bad one is an error naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, TargetError
from .durations import parse_duration
from .redaction import register_secret
from .registry import action

if TYPE_CHECKING:
    from .actions import ActionContext

__all__ = ["PG_DSN_ENV", "REDIS_URL_ENV", "terminate_idle_connections", "unlink_stale_keys"]

#: default environment variables holding the credentials (host and port come from the target)
PG_DSN_ENV = "RESILIENCE_PG_DSN"
REDIS_URL_ENV = "RESILIENCE_REDIS_URL"
_CONNECT_TIMEOUT_S = 5
_APPLICATION_NAME = "pytest-resilience-engine"

# Client backends of this database, idle since before the cutoff; never this session's own,
# never a superuser's or a replication role's (a standby's walreceiver, a DBA's psql).
_IDLE_BACKENDS = """
SELECT a.pid
  FROM pg_stat_activity a
  JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.datname = current_database()
   AND a.state = 'idle'
   AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid()
   AND NOT r.rolsuper
   AND NOT r.rolreplication
   AND a.state_change < now() - make_interval(secs => %(idle_s)s)
 ORDER BY a.state_change
 LIMIT %(cap)s
"""


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PgOptions:
    idle_s: float
    max_terminated: int
    wait_s: float
    service: str
    database: str
    user: str
    dsn_env: str | None


@dataclass(frozen=True)
class _RedisOptions:
    match: str | Mapping[str, str]
    keep_ttl: bool
    max_keys: int
    batch: int
    service: str
    db: int | None
    url_env: str | None


def _pg_options(
    *,
    idle_for: Any,
    max_terminated: Any,
    wait: Any,
    service: Any,
    database: Any,
    user: Any,
    dsn_env: Any,
) -> _PgOptions:
    return _PgOptions(
        idle_s=_duration("idle_for", idle_for),
        max_terminated=_count("max_terminated", max_terminated),
        wait_s=_duration("wait", wait),
        service=_text("service", service),
        database=_text("database", database),
        user=_text("user", user),
        dsn_env=_env_name("dsn_env", dsn_env),
    )


def _redis_options(
    *,
    match: Any,
    keep_ttl: Any,
    max_keys: Any,
    batch: Any,
    service: Any,
    db: Any,
    url_env: Any,
) -> _RedisOptions:
    if not isinstance(keep_ttl, bool):
        raise ValueError(f"option 'keep_ttl': expected true or false, got {keep_ttl!r}")
    if db is not None and (not isinstance(db, int) or isinstance(db, bool) or db < 0):
        raise ValueError(f"option 'db': expected a database number >= 0, got {db!r}")
    return _RedisOptions(
        match=_pattern(match),
        keep_ttl=keep_ttl,
        max_keys=_count("max_keys", max_keys),
        batch=min(_count("batch", batch), 10_000),
        service=_text("service", service),
        db=db,
        url_env=_env_name("url_env", url_env),
    )


def _duration(name: str, value: Any) -> float:
    try:
        return parse_duration(value, field=name)
    except ConfigError as exc:
        raise ValueError(f"option {name!r}: {exc.message}") from None


def _count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"option {name!r}: expected a whole number >= 1, got {value!r}")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"option {name!r}: expected a string, got {value!r}")
    return value


def _env_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(
            f"option {name!r}: expected the name of an environment variable, got {value!r}"
        )
    return value


def _pattern(value: Any) -> str | Mapping[str, str]:
    """A SCAN MATCH glob, or ``{label: NAME}``: the glob is the alert's label/annotation."""
    if isinstance(value, Mapping):
        label = value.get("label")
        if set(value) != {"label"} or not isinstance(label, str) or not label:
            raise ValueError(
                f"option 'match': a mapping must be {{label: NAME}} (the alert label or "
                f"annotation that holds the pattern), got {dict(value)!r}"
            )
        return {"label": label}
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"option 'match': give the stale keys' pattern, e.g. 'cache:*', got {value!r}"
        )
    if not value.strip("*"):
        raise ValueError(
            f"option 'match': {value!r} matches every key; name the stale keys' namespace, "
            "e.g. 'cache:*' (keys outside it may be data, not cache)"
        )
    return value


def _bad_options(name: str, exc: ValueError) -> TargetError:
    return TargetError(f"{name}: {exc}")


# -- where and as whom --------------------------------------------------------------------


def _address(ctx: ActionContext, service: str, default_port: int) -> tuple[str, int, str]:
    """Host, port and the service name, from the target's endpoint of the service."""
    name = service or ctx.workload
    where = urlsplit(ctx.target.endpoint(name))
    if not where.hostname:
        raise TargetError(
            f"the endpoint of service {name!r} on {ctx.target.name!r} names no host: "
            f"{where.geturl()!r}"
        )
    return where.hostname, where.port or default_port, name


def _credentials_env(option: str, named: str | None, default: str) -> str | None:
    """The DSN/URL from the variable the option names (it must be set), else the default's."""
    if named is not None:
        value = os.environ.get(named)
        if not value:
            raise TargetError(
                f"option {option!r} names the environment variable {named!r}, which is not "
                "set: export it with the credentials, or drop the option"
            )
        return value
    return os.environ.get(default) or None


def _pg_conninfo(ctx: ActionContext, opts: _PgOptions) -> tuple[dict[str, Any], str]:
    from psycopg.conninfo import conninfo_to_dict

    host, port, _ = _address(ctx, opts.service, 5432)
    dsn = _credentials_env("dsn_env", opts.dsn_env, PG_DSN_ENV)
    params: dict[str, Any] = {}
    if dsn:
        try:
            params = dict(conninfo_to_dict(dsn))
        except Exception:  # the message would quote the DSN, password and all
            raise TargetError(
                f"the Postgres DSN in ${opts.dsn_env or PG_DSN_ENV} is not a valid libpq "
                "connection string or URL"
            ) from None
        register_secret(str(params.get("password") or "") or None)
    params.update(host=host, port=port, connect_timeout=_CONNECT_TIMEOUT_S)
    params["application_name"] = _APPLICATION_NAME
    if opts.database:
        params["dbname"] = opts.database
    if opts.user:
        params["user"] = opts.user
    params.setdefault("dbname", os.environ.get("PGDATABASE") or "postgres")
    params.setdefault("user", os.environ.get("PGUSER") or "postgres")
    register_secret(os.environ.get("PGPASSWORD"))
    return params, f"{host}:{port}"


def _redis_client(ctx: ActionContext, opts: _RedisOptions) -> tuple[Any, str]:
    import redis

    host, port, _ = _address(ctx, opts.service, 6379)
    url = _credentials_env("url_env", opts.url_env, REDIS_URL_ENV)
    kwargs: dict[str, Any] = {}
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise TargetError(
                f"the Redis URL in ${opts.url_env or REDIS_URL_ENV} must start with redis:// "
                "or rediss://"
            )
        if parts.password:
            register_secret(unquote(parts.password))
            kwargs["password"] = unquote(parts.password)
        if parts.username:
            kwargs["username"] = unquote(parts.username)
        path = parts.path.strip("/")
        if path.isdigit():
            kwargs["db"] = int(path)
        kwargs["ssl"] = parts.scheme == "rediss"
    if opts.db is not None:
        kwargs["db"] = opts.db
    timeout = float(_CONNECT_TIMEOUT_S)
    client = redis.Redis(
        host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )
    return client, f"{host}:{port}"


# -- the actions --------------------------------------------------------------------------


@action("terminate_idle_connections", check=_pg_options)
def terminate_idle_connections(
    ctx: ActionContext,
    *,
    idle_for: str | float = "5m",
    max_terminated: int = 50,
    wait: str | float = "5s",
    service: str = "",
    database: str = "",
    user: str = "",
    dsn_env: str | None = None,
) -> str:
    """Terminate this database's client connections idle longer than ``idle_for``.

    Options: ``idle_for`` (default ``5m``), ``max_terminated`` (default 50, oldest first),
    ``wait`` (default ``5s``: on Postgres 14+ each termination is waited for, so the count
    is of backends really gone), ``service`` (default: the alert's workload), ``database``,
    ``user`` (default ``postgres``), ``dsn_env`` (default ``RESILIENCE_PG_DSN`` if set).
    The role needs superuser or ``pg_signal_backend``. Makes no Kubernetes API call but
    ``Target.endpoint`` (module docstring).
    """
    try:
        opts = _pg_options(
            idle_for=idle_for,
            max_terminated=max_terminated,
            wait=wait,
            service=service,
            database=database,
            user=user,
            dsn_env=dsn_env,
        )
    except ValueError as exc:
        raise _bad_options("terminate_idle_connections", exc) from None
    import psycopg

    params, where = _pg_conninfo(ctx, opts)
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        raise TargetError(
            f"cannot connect to Postgres at {where} (service {opts.service or ctx.workload!r}, "
            f"database {params['dbname']!r}, user {params['user']!r}): {_pg_message(exc)}"
        ) from None
    try:
        with conn.cursor() as cur:
            cur.execute(_IDLE_BACKENDS, {"idle_s": opts.idle_s, "cap": opts.max_terminated})
            pids = [row[0] for row in cur.fetchall()]
            gone = 0
            waits = conn.info.server_version >= 140000 and opts.wait_s > 0
            for pid in pids:
                if waits:
                    cur.execute(
                        "SELECT pg_terminate_backend(%s, %s)", (pid, int(opts.wait_s * 1000))
                    )
                else:
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                row = cur.fetchone()
                gone += bool(row and row[0])
            cur.execute(
                "SELECT count(*) FILTER (WHERE backend_type = 'client backend'),"
                " current_setting('max_connections')::int FROM pg_stat_activity"
            )
            used, limit = cur.fetchone() or (0, 0)
    except psycopg.Error as exc:
        raise TargetError(
            f"terminating idle connections on Postgres at {where} (user {params['user']!r}; "
            f"it needs superuser or pg_signal_backend) failed: {_pg_message(exc)}"
        ) from None
    finally:
        conn.close()
    if limit:
        ctx.state["pool_use"] = used / limit
    capped = "; cap reached" if len(pids) >= opts.max_terminated else ""
    return (
        f"terminated {gone} idle connection(s) to database {params['dbname']!r} at {where} "
        f"(idle > {opts.idle_s:g}s; cap {opts.max_terminated}{capped}); "
        f"{used}/{limit} connections in use"
    )


@action("unlink_stale_keys", check=_redis_options)
def unlink_stale_keys(
    ctx: ActionContext,
    *,
    match: str | Mapping[str, str],
    keep_ttl: bool = True,
    max_keys: int = 100_000,
    batch: int = 500,
    service: str = "",
    db: int | None = None,
    url_env: str | None = None,
) -> str:
    """UNLINK the keys matching ``match`` that have no TTL, in batches, up to ``max_keys``.

    Options: ``match`` (required: a SCAN glob such as ``cache:*``, or ``{label: NAME}`` to
    take it from the alert's label or annotation NAME; a bare ``*`` is refused),
    ``keep_ttl`` (default true: keys with a TTL are the hot set), ``max_keys`` (default
    100000), ``batch`` (SCAN COUNT and UNLINK size, default 500), ``service`` (default: the
    alert's workload), ``db``, ``url_env`` (default ``RESILIENCE_REDIS_URL`` if set).
    Makes no Kubernetes API call but ``Target.endpoint`` (module docstring).
    """
    try:
        opts = _redis_options(
            match=match,
            keep_ttl=keep_ttl,
            max_keys=max_keys,
            batch=batch,
            service=service,
            db=db,
            url_env=url_env,
        )
    except ValueError as exc:
        raise _bad_options("unlink_stale_keys", exc) from None
    pattern = _alert_pattern(ctx, opts.match)
    import redis

    client, where = _redis_client(ctx, opts)
    unlinked = kept = scanned = 0
    try:
        memory_before = _used_memory(client)
        for keys in _scan_batches(client, pattern, opts.batch):
            scanned += len(keys)
            if opts.keep_ttl:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.pttl(key)
                ttls = pipe.execute()
                stale = [k for k, ttl in zip(keys, ttls, strict=True) if ttl == -1]
                kept += sum(1 for ttl in ttls if ttl >= 0)
            else:
                stale = keys
            stale = stale[: opts.max_keys - unlinked]
            if stale:
                unlinked += int(client.unlink(*stale))
            if unlinked >= opts.max_keys:
                break
        memory_after = _used_memory(client)
    except redis.RedisError as exc:
        raise TargetError(
            f"unlinking keys matching {pattern!r} on Redis at {where} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        client.close()
    capped = "; cap reached" if unlinked >= opts.max_keys else ""
    hot = f"kept {kept} with a TTL" if opts.keep_ttl else "TTLs ignored (keep_ttl: false)"
    return (
        f"unlinked {unlinked} stale key(s) matching {pattern!r} at {where} ({hot}; scanned "
        f"{scanned}; cap {opts.max_keys}{capped}); used_memory {_mib(memory_before)} -> "
        f"{_mib(memory_after)}"
    )


def _alert_pattern(ctx: ActionContext, match: str | Mapping[str, str]) -> str:
    if isinstance(match, str):
        return match
    label = match["label"]
    value = ctx.alert.labels.get(label) or ctx.alert.annotations.get(label) or ""
    try:
        pattern = _pattern(value)
    except ValueError as exc:
        raise TargetError(
            f"unlink_stale_keys: 'match: {{label: {label}}}' takes the pattern from the "
            f"alert's label or annotation {label!r}: {exc}; add it to the alert rule"
        ) from None
    assert isinstance(pattern, str)  # a label's value is text, never a mapping
    return pattern


def _scan_batches(client: Any, pattern: str, batch: int) -> Iterator[list[Any]]:
    """Each SCAN page as a list (a cursor loop, so UNLINKs between pages are safe)."""
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=pattern, count=batch)
        if keys:
            yield list(keys)
        if int(cursor) == 0:
            return


def _used_memory(client: Any) -> int | None:
    """INFO's used_memory; None where INFO is renamed or denied (managed Redis, ACLs)."""
    import redis

    try:
        return int(client.info("memory").get("used_memory", 0))
    except redis.ResponseError:
        return None


def _pg_message(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1024 * 1024):.1f} MiB"
