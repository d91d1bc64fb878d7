"""The demo's PromQL SLO forms, evaluated by Prometheus' own engine (``promtool test rules``).

A form must read a number whenever the service is serving, also when nothing fails: a
5xx counter that has never been incremented has no series at all (prometheus-client
exports a labelled child only once it is used), and an SLO that divides it by the total
would read "no data" in every healthy steady state. Only a service that serves nothing
(no traffic in the window) is "no data".
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pytest_resilience.prometheus import DEMO_SLOS

_POD = {"service": "api", "pod": "api-0"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not on PATH (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)
    return path


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in {**_POD, **labels}.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _buckets(route: str, per_second: int, fast_le: str) -> list[dict[str, str]]:
    """A latency histogram in which every request took at most ``fast_le`` seconds."""
    bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"]
    return [
        _series(
            "demo_request_duration_seconds_bucket",
            f"0+{per_second if float(le) >= float(fast_le) else 0}x60",
            route=route,
            le=le,
        )
        for le in bounds
    ]


_ITEMS = "/items/{id}"

#: a healthy steady state as the demo exports it: requests answered 200 only (no 5xx
#: series exists), all cache reads hits (the misses counter stays at 0), a pool in use
HEALTHY = [
    _series("demo_requests_total", "0+20x60", route=_ITEMS, status="200"),
    *_buckets(_ITEMS, 20, "0.01"),
    _series("demo_db_pool_in_use", "2x60"),
    _series("demo_db_pool_max", "10x60"),
    _series("demo_cache_hits_total", "0+18x60"),
    _series("demo_cache_misses_total", "0x60"),
    _series("demo_memory_usage_bytes", "100x60"),
    _series("demo_memory_limit_bytes", "1000x60"),
    _series("demo_disk_used_ratio", "0.25x60"),
]

#: what each form reads in HEALTHY at 40 s
HEALTHY_READS = {
    "error_rate": 0.0,
    "latency_p99": 0.00995,  # 99% into the 5..10 ms bucket, linearly interpolated
    "pool_use": 0.2,
    "cache_hit_ratio": 1.0,
    "memory_share": 0.1,
    "disk_use": 0.25,
}

#: a cache that has only ever been hit: an exporter without a misses series at all
ONLY_HITS = [_series("demo_cache_hits_total", "0+18x60")]

#: one request in four answers 503; one read in four misses the cache
FAILING = [
    _series("demo_requests_total", "0+30x60", route=_ITEMS, status="200"),
    _series("demo_requests_total", "0+10x60", route=_ITEMS, status="503"),
    _series("demo_cache_hits_total", "0+15x60"),
    _series("demo_cache_misses_total", "0+5x60"),
]

#: counters that stopped counting: the service served nothing in the rate window
IDLE = [
    _series("demo_requests_total", "100x60", route=_ITEMS, status="200"),
    _series("demo_cache_hits_total", "50x60"),
    _series("demo_cache_misses_total", "5x60"),
]


def _expect(expr: str, value: float | None) -> dict:
    """``None``: no data, which is no sample or NaN (0/0); ``F == F`` drops both."""
    if value is None:
        expr, value = f"absent(({expr}) == ({expr}))", 1.0
    return {"expr": expr, "eval_time": "40s", "exp_samples": [{"labels": "{}", "value": value}]}


def _check(tmp_path: Path, name: str, series: list[dict[str, str]], expected: dict) -> None:
    test = {
        "interval": "1s",
        "name": name,
        "input_series": series,
        "promql_expr_test": [_expect(DEMO_SLOS[slo], value) for slo, value in expected.items()],
    }
    path = tmp_path / f"{name}_test.yml"
    path.write_text(yaml.safe_dump({"evaluation_interval": "1s", "tests": [test]}))
    result = subprocess.run(
        [_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_form_is_covered():
    assert set(HEALTHY_READS) == set(DEMO_SLOS)


def test_every_form_reads_a_number_when_nothing_fails(tmp_path: Path):
    _check(tmp_path, "healthy", HEALTHY, HEALTHY_READS)


def test_a_cache_that_never_missed_reads_a_full_hit_ratio(tmp_path: Path):
    _check(tmp_path, "only_hits", ONLY_HITS, {"cache_hit_ratio": 1.0})


def test_the_forms_still_read_what_fails(tmp_path: Path):
    _check(tmp_path, "failing", FAILING, {"error_rate": 0.25, "cache_hit_ratio": 0.75})


def test_a_service_that_served_nothing_is_no_data(tmp_path: Path):
    # 0/0 is NaN, which PromQLProbe reads as no data, like an empty result
    _check(tmp_path, "idle", IDLE, {"error_rate": None, "cache_hit_ratio": None})
    _check(tmp_path, "nothing", [_series("up", "1x60")], dict.fromkeys(DEMO_SLOS))
