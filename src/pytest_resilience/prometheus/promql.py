"""PromQL probes: what the service reports about itself, read through prometheus-api-client.

A probe is one expression that must evaluate to one number. ``None`` means "no data"
(no series, or NaN such as 0/0 when there is no traffic), which an SLO check treats
differently from a value out of bounds.

prometheus-api-client is imported where it is used (DESIGN: import cost) and is created
with no retries and a short timeout: its defaults retry three times with back-off, so a
wrong ``--prometheus-url`` would stall a test for many seconds before saying anything.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, ResilienceError

if TYPE_CHECKING:
    from prometheus_api_client import PrometheusConnect

__all__ = [
    "CACHE_HIT_RATIO",
    "DEMO_SLOS",
    "DISK_USE",
    "ERROR_RATE",
    "LATENCY_P99",
    "MEMORY_SHARE",
    "POOL_USE",
    "PromQLProbe",
    "PrometheusQueryError",
    "PrometheusUnreachable",
]

# The demo's SLO signals. Each aggregates to one series, so a probe reads one number.
# A counter of something that has not happened yet (a 5xx, a cache miss) often has no
# series at all: prometheus-client exports a labelled child only once it is used. Such a
# part is `or vector(0)`, so a healthy service reads 0 errors (1.0 hits), not "no data";
# a service that served nothing in the window still reads no data (an empty total, 0/0).
ERROR_RATE = (
    '(sum(rate(demo_requests_total{status=~"5.."}[30s])) or vector(0))'
    " / sum(rate(demo_requests_total[30s]))"
)
LATENCY_P99 = (
    "histogram_quantile(0.99, sum by (le) (rate(demo_request_duration_seconds_bucket[30s])))"
)
POOL_USE = "max(demo_db_pool_in_use / demo_db_pool_max)"
_CACHE_HITS = "(sum(rate(demo_cache_hits_total[30s])) or vector(0))"
_CACHE_MISSES = "(sum(rate(demo_cache_misses_total[30s])) or vector(0))"
CACHE_HIT_RATIO = f"{_CACHE_HITS} / ({_CACHE_HITS} + {_CACHE_MISSES})"
# cgroup usage (what the OOM killer counts), not resident memory of the one process
MEMORY_SHARE = "max(demo_memory_usage_bytes / demo_memory_limit_bytes)"
DISK_USE = "max(demo_disk_used_ratio)"

DEMO_SLOS: dict[str, str] = {
    "error_rate": ERROR_RATE,
    "latency_p99": LATENCY_P99,
    "pool_use": POOL_USE,
    "cache_hit_ratio": CACHE_HIT_RATIO,
    "memory_share": MEMORY_SHARE,
    "disk_use": DISK_USE,
}

DEFAULT_TIMEOUT_S = 2.0


class PrometheusUnreachable(ConfigError):
    """Nothing answers at the Prometheus URL: almost always a wrong ``--prometheus-url``."""


class PrometheusQueryError(ResilienceError):
    """Prometheus answered but could not evaluate (overloaded, timed out, 5xx)."""


Reduce = Literal["max", "min", "mean", "last"]
_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "max": max,
    "min": min,
    "mean": lambda vs: sum(vs) / len(vs),
    "last": lambda vs: vs[-1],
}


@dataclass
class PromQLProbe:
    """One PromQL expression evaluated against one Prometheus.

    ``kind="instant"`` reads the value now. ``kind="range"`` evaluates the expression
    over the last ``window_s`` seconds every ``step_s`` and reduces the points with
    ``reduce`` (default ``max``: the worst point for an upper-bound SLO; use ``min``
    for a lower bound such as the cache hit ratio).
    """

    name: str
    expr: str
    url: str = field(kw_only=True)
    kind: Literal["instant", "range"] = field(default="instant", kw_only=True)
    window_s: float = field(default=30.0, kw_only=True)
    step_s: float = field(default=1.0, kw_only=True)
    reduce: Reduce = field(default="max", kw_only=True)
    timeout_s: float = field(default=DEFAULT_TIMEOUT_S, kw_only=True)
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = f"PromQL probe {self.name!r}"
        if not self.expr or not self.expr.strip():
            raise ConfigError("expression is empty", source=source, field="expr")
        if self.kind not in ("instant", "range"):
            raise ConfigError(
                f"kind {self.kind!r} is not 'instant' or 'range'", source=source, field="kind"
            )
        if self.reduce not in _REDUCERS:
            raise ConfigError(
                f"reduce {self.reduce!r} is not one of {sorted(_REDUCERS)}",
                source=source,
                field="reduce",
            )
        if self.kind == "range" and not (self.window_s > 0 and 0 < self.step_s <= self.window_s):
            raise ConfigError(
                f"a range probe needs 0 < step_s ({self.step_s}) <= window_s ({self.window_s})",
                source=source,
                field="window_s",
            )
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"Prometheus URL {self.url!r} must start with http:// or https://",
                source=source,
                field="url",
            )
        self.url = self.url.rstrip("/")

    def __call__(self) -> float | None:
        return self.read()

    def read(self) -> float | None:
        """The probe's value now; ``None`` when Prometheus has no data for it."""
        if self.kind == "instant":
            result = self._query(lambda c: c.custom_query(self.expr, timeout=self.timeout_s))
            return _instant_value(result, self)
        points = self.points()
        values = [v for _, v in points]
        return _REDUCERS[self.reduce](values) if values else None

    def points(self) -> list[tuple[float, float]]:
        """For a range probe: ``(unix time, value)`` points over the window, NaN dropped."""
        end = time.time()
        start = end - self.window_s
        result = self._query(
            lambda c: c.custom_query_range(
                self.expr,
                start_time=datetime.fromtimestamp(start, tz=UTC),
                end_time=datetime.fromtimestamp(end, tz=UTC),
                step=f"{self.step_s:g}",  # float seconds: "1.0s" is no duration
                timeout=self.timeout_s,
            )
        )
        if not result:
            return []
        if len(result) > 1:
            raise _many_series(self, result)
        points = [(float(t), float(v)) for t, v in result[0]["values"]]
        return [(t, v) for t, v in points if not math.isnan(v)]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self) -> PrometheusConnect:
        if self._client is None:
            # Imported here: prometheus-api-client pulls in requests and, optionally, pandas.
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            self._client = PrometheusConnect(
                url=self.url, retry=Retry(total=0, raise_on_status=False), timeout=self.timeout_s
            )
        client: PrometheusConnect = self._client
        return client

    def _query(self, call: Callable[[PrometheusConnect], Any]) -> Any:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        client = self._connect()
        try:
            return call(client)
        except requests.exceptions.RequestException as exc:
            raise PrometheusUnreachable(
                f"cannot reach Prometheus at {self.url} within {self.timeout_s:g} s "
                f"({type(exc).__name__}); is it running, and is --prometheus-url right?",
                source=f"PromQL probe {self.name!r}",
                field="url",
            ) from exc
        except PrometheusApiClientException as exc:
            status, error_type, message = _server_error(str(exc))
            if status == 404:
                raise PrometheusUnreachable(
                    f"no Prometheus API at {self.url} (HTTP 404 on /api/v1/query); "
                    "is --prometheus-url the server's base URL?",
                    source=f"PromQL probe {self.name!r}",
                    field="url",
                ) from exc
            if status in (400, 422):  # bad_data (parse) / execution: the expression is wrong
                raise ConfigError(
                    f"Prometheus rejected {self.expr!r}: {message}",
                    source=f"PromQL probe {self.name!r}",
                    field="expr",
                ) from exc
            raise PrometheusQueryError(
                f"PromQL probe {self.name!r}: Prometheus at {self.url} answered {status} "
                f"({error_type}): {message}"
            ) from exc


_CLIENT_ERROR = re.compile(r"HTTP Status Code (\d+) \((b(['\"]).*\3)\)$", re.DOTALL)


def _server_error(text: str) -> tuple[int | None, str, str]:
    """Recover status, errorType and error from the client's exception text.

    prometheus-api-client keeps only ``"HTTP Status Code 400 (b'{...json...}')"``; the
    server's own message (e.g. ``1:8: parse error: unexpected ...``) is inside the JSON.
    """
    match = _CLIENT_ERROR.match(text)
    if not match:
        return None, "unknown", text
    status = int(match.group(1))
    try:
        body = json.loads(ast.literal_eval(match.group(2)))
        return status, body.get("errorType", "unknown"), body.get("error", text)
    except (ValueError, SyntaxError, AttributeError):
        raw = ast.literal_eval(match.group(2)).decode(errors="replace").strip()
        return status, "unknown", raw[:300] or "(empty body)"


def _instant_value(result: Any, probe: PromQLProbe) -> float | None:
    if not result:
        return None
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        value = float(result[1])  # a scalar result: [time, "value"]
    elif len(result) == 1:
        value = float(result[0]["value"][1])
    else:
        raise _many_series(probe, result)
    return None if math.isnan(value) else value


def _many_series(probe: PromQLProbe, result: list[Any]) -> ConfigError:
    more = ", ..." if len(result) > 3 else ""
    shown = ", ".join(
        "{" + ",".join(f'{k}="{v}"' for k, v in r.get("metric", {}).items()) + "}"
        for r in result[:3]
    )
    return ConfigError(
        f"{probe.expr!r} returned {len(result)} series ({shown}{more})"
        "; a probe needs one number: aggregate it, e.g. max(...) or sum(...)",
        source=f"PromQL probe {probe.name!r}",
        field="expr",
    )
