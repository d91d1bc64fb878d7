"""The generated configuration and the packaged alert rules, checked by the real tools.

``promtool check`` proves the files load; ``promtool test rules`` proves each alert's
PromQL fires on the series it is meant for (and not before its ``for``), without a server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pytest_resilience.errors import ConfigError
from pytest_resilience.prometheus import (
    ManagedAlertmanager,
    ManagedPrometheus,
    ScrapeTarget,
    default_rule_files,
)
from pytest_resilience.prometheus.config import (
    AlertmanagerSettings,
    PrometheusSettings,
    render_alertmanager_config,
    render_prometheus_config,
    write_targets_file,
)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not on PATH (Debian packages prometheus / prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_packaged_rules_pass_promtool_check():
    promtool = _tool("promtool")
    files = default_rule_files()
    assert files, "no packaged rule files"
    result = _run([promtool, "check", "rules", *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr
    names = {
        rule["alert"]
        for path in files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    assert names >= {
        "PodCrashLoop",
        "HighMemoryUsage",
        "DatabaseConnectionPoolExhaustion",
        "CacheHitRatioDegraded",
        "ErrorRateHighCritical",
        "DeploymentFailure",
        "NodeNotReady",
        "HighCPU",
        "DiskFull",
    }


def test_generated_prometheus_config_passes_promtool_check(tmp_path: Path):
    promtool = _tool("promtool")
    targets = tmp_path / "targets.json"
    write_targets_file(
        targets,
        [ScrapeTarget("127.0.0.1:9100", {"service": "api", "pod": "api-0", "node": "n1"})],
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_prometheus_config(
            PrometheusSettings(
                targets_file=targets,
                rule_files=tuple(default_rule_files()),
                alertmanager_address="127.0.0.1:9093",
            )
        )
    )
    result = _run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = yaml.safe_load(config.read_text())
    assert loaded["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    sd = loaded["scrape_configs"][0]["file_sd_configs"][0]
    assert sd == {"files": [str(targets)], "refresh_interval": "1s"}
    assert json.loads(targets.read_text()) == [
        {"targets": ["127.0.0.1:9100"], "labels": {"node": "n1", "pod": "api-0", "service": "api"}}
    ]


def test_generated_alertmanager_config_passes_amtool(tmp_path: Path):
    amtool = _tool("amtool")
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(AlertmanagerSettings("http://127.0.0.1:8080/x")))
    result = _run([amtool, "check-config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    route = yaml.safe_load(path.read_text())["route"]
    assert (route["group_wait"], route["group_interval"]) == ("1s", "1s")
    webhook = yaml.safe_load(path.read_text())["receivers"][0]["webhook_configs"][0]
    assert webhook["send_resolved"] is True


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match=r"'api-0' is not host:port"):
        ScrapeTarget("api-0")
    with pytest.raises(ConfigError, match=r"label name 'bad-name'"):
        ScrapeTarget("127.0.0.1:1", {"bad-name": "x"})
    with pytest.raises(ConfigError, match=r"webhook URL 'localhost:8080'"):
        ManagedAlertmanager("localhost:8080")


def test_missing_binary_is_a_config_error():
    assert not ManagedPrometheus.available("no-such-prometheus-binary")
    prom = ManagedPrometheus(binary="no-such-prometheus-binary")
    with pytest.raises(ConfigError, match="'no-such-prometheus-binary' is not on PATH"):
        prom.start()


# -- promtool test rules: each packaged alert on synthetic series ---------------------------

_API = {"service": "api", "pod": "api-0"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


# (alertname, input series, a time it must be quiet, a time it must fire, labels, annotations,
#  the `value` annotation: the reading that fired it)
RULE_CASES = [
    (
        "DatabaseConnectionPoolExhaustion",
        [
            _series("demo_db_pool_in_use", _API, "1x5 10x10"),
            _series("demo_db_pool_max", _API, "10x15"),
        ],
        "7s",  # crossed at 6s, still pending: `for: 2s`
        "10s",
        {"severity": "critical", "component": "database", "service": "api"},
        {
            "summary": "A pod of api has used 100% of its DB pool",
            "description": "Database connection pool of the busiest pod at or above 90% in use.",
        },
        "1",
    ),
    (
        "HighMemoryUsage",
        [
            _series("demo_memory_usage_bytes", _API, "500x5 950x10"),
            _series("demo_memory_limit_bytes", _API, "1000x15"),
        ],
        "5s",
        "10s",
        {"severity": "warning", "component": "memory", **_API},
        {
            "summary": "Pod api-0 uses 95% of its memory limit",
            "description": "Memory charged to the pod (cgroup usage) above 90% of its limit.",
        },
        "0.95",
    ),
    (
        "HighCPU",
        [_series("process_cpu_seconds_total", _API, "0+0.1x10 2+1x60")],
        "35s",  # busy since ~13s, but `for: 30s`: a few busy seconds are noise
        "55s",
        {"severity": "warning", "component": "cpu", **_API},
        {"summary": "Pod api-0 uses 1 CPU cores", "description": "CPU above 0.9 cores over 15s."},
        "1",
    ),
    (
        "DiskFull",
        [_series("demo_disk_used_ratio", {**_API, "node": "n1"}, "0.5x5 0.95x10")],
        "5s",
        "10s",
        {"severity": "critical", "component": "disk", "node": "n1", **_API},
        {"summary": "Disk 95% full", "description": "Disk use above 90%."},
        "0.95",
    ),
    (
        "CacheHitRatioDegraded",
        [
            _series("demo_cache_hits_total", _API, "0+10x20 200+1x30"),
            _series("demo_cache_misses_total", _API, "0+1x20 20+10x30"),
        ],
        "20s",
        "50s",
        {"severity": "warning", "component": "cache", "service": "api"},
        {
            "summary": "Cache hit ratio of api is 9.091%",
            "description": "Cache hit ratio below 50% over 30s.",
        },
        "0.09090909090909091",
    ),
    (
        "ErrorRateHighCritical",
        [
            _series("demo_requests_total", {**_API, "route": "/", "status": "200"}, "0+10x50"),
            _series("demo_requests_total", {**_API, "route": "/", "status": "500"}, "0x20 5+5x30"),
        ],
        "20s",
        "50s",  # a full 30s window of 5xx at 5/s against 10/s of 200s
        {"severity": "critical", "component": "service", "service": "api"},
        {
            "summary": "api answers 33.33% errors",
            "description": "5xx ratio above 5% over 30s.",
        },
        "0.3333333333333333",
    ),
    (
        "DeploymentFailure",
        [
            _series("demo_requests_total", {**_API, "route": "/", "status": "200"}, "0+10x50"),
            _series("demo_requests_total", {**_API, "route": "/", "status": "500"}, "0x20 5+5x30"),
            _series("demo_version_info", {**_API, "version": "1"}, "1x20"),
            _series(
                "demo_version_info", {"service": "api", "pod": "api-1", "version": "2"}, "_x20 1x30"
            ),
        ],
        "20s",
        "45s",
        {"severity": "critical", "component": "deployment", "service": "api"},
        {
            "summary": "api fails after a new version was rolled out",
            "description": "5xx ratio above 5% while more than one version served in 5 minutes.",
        },
        "0.29411764705882354",
    ),
    (
        "NodeNotReady",
        [
            _series("up", {"job": "demo", **_API, "node": "n1"}, "1x5 0x10"),
            _series("up", {"job": "demo", "service": "api", "pod": "api-1", "node": "n2"}, "1x15"),
        ],
        "6s",
        "10s",
        {"severity": "critical", "component": "node", "node": "n1"},
        {
            "summary": "Node n1 is not ready",
            "description": "No pod on node n1 answers its scrape.",
        },
        "0",
    ),
    (
        "PodCrashLoop",
        [_series("up", {"job": "demo", **_API}, "1 0 1 0 1 1 1 1 1 1")],
        "4s",
        "7s",
        {"severity": "critical", "component": "pod", **_API},
        {
            "summary": "Pod api-0 of api is crash looping",
            "description": "4 up/down changes or restarts in the last minute.",
        },
        "4",
    ),
]


def test_each_alert_fires_on_its_signal_after_its_for(tmp_path: Path):
    promtool = _tool("promtool")
    tests = [
        {
            "interval": "1s",
            "name": alertname,
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": quiet, "alertname": alertname, "exp_alerts": []},
                {
                    "eval_time": fire,
                    "alertname": alertname,
                    "exp_alerts": [
                        {"exp_labels": labels, "exp_annotations": {**annotations, "value": value}}
                    ],
                },
            ],
        }
        for alertname, series, quiet, fire, labels, annotations, value in RULE_CASES
    ]
    path = tmp_path / "demo_alerts_test.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(p) for p in default_rule_files()],
                "evaluation_interval": "1s",
                "tests": tests,
            }
        )
    )
    result = _run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
