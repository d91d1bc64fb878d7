"""Session monitoring: real Prometheus following real local pods, PromQL SLOs, bad input.

The pods are small real processes of a local target, each serving prometheus-client's
/metrics on its private port; the managed Prometheus scrapes them through the file_sd file
that ``PodFollower`` rewrites as they come and go. The full loop on the demo (fault ->
rule -> Alertmanager -> engine -> action -> resolved) is scenarios/test_prometheus_loop.py.

Tests that need the Debian packages prometheus / prometheus-alertmanager skip without them,
and fail when ``CI`` is set: CI installs them, so a missing binary there is a broken image.
"""

from __future__ import annotations

import os
import shutil
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_resilience.errors import ConfigError
from pytest_resilience.monitoring import (
    BUILTIN,
    PROMETHEUS,
    Monitoring,
    engine_alert_options,
    open_monitoring,
)
from pytest_resilience.ports import free_port
from pytest_resilience.prometheus import PrometheusUnreachable
from pytest_resilience.slo import SLOMonitor
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.timeline import Timeline

METRICS_POD = (
    "import os, time; from prometheus_client import Gauge, start_http_server; "
    "Gauge('loop_test_ready', 'set to 1 at start').set(1); "
    "start_http_server(int(os.environ['POD_PORT']), addr='127.0.0.1'); time.sleep(3600)"
)

SERVICES = textwrap.dedent(
    f"""\
    services:
      - name: metrics
        labels: {{tier: web}}
        replicas: 2
        pod_port: true
        health: process
        node: [node-a, node-b]
        versions:
          v1: ["{{python}}", "-c", "{METRICS_POD}"]
        restart: {{policy: always, backoff_s: 0.05, max_backoff_s: 1}}
    """
)


def _need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        packages = "Debian packages prometheus, prometheus-alertmanager"
        reason = f"{', '.join(missing)} not on PATH ({packages})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)


def _poll(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:g} s (last: {value!r})")
        time.sleep(0.2)


def _services(tmp_path: Path) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES)
    return path


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[LocalTarget]:
    work = tmp_path_factory.mktemp("loop-target")
    local = LocalTarget.from_file(_services(work), work_dir=work)
    local.start()
    try:
        local.wait_ready("metrics", timeout=20, replicas=2)
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def monitoring(target: LocalTarget) -> Iterator[Monitoring]:
    _need("prometheus", "prometheus-alertmanager")
    opened = open_monitoring(target)
    try:
        yield opened
    finally:
        opened.close()


def _scraped_pods(monitoring: Monitoring) -> dict[str, dict[str, str]]:
    assert monitoring.prometheus is not None
    return {
        t.labels["pod"]: dict(t.labels)
        for t in monitoring.prometheus.target_health()
        if t.health == "up"
    }


def test_managed_servers_scrape_every_pod_with_its_labels(
    monitoring: Monitoring, target: LocalTarget
):
    assert monitoring.probe_path == PROMETHEUS and monitoring.managed
    assert monitoring.routes_alerts
    assert monitoring.webhook_url and monitoring.webhook_url.startswith("http://127.0.0.1:")
    assert "managed Prometheus" in monitoring.describe()
    scraped = _scraped_pods(monitoring)
    pods = {p.name: p for p in target.pods()}
    assert set(scraped) == set(pods)
    for name, labels in scraped.items():
        assert labels["service"] == "metrics" and labels["node"] == pods[name].node
    # the generated rule files are the packaged demo alerts, loaded by the server
    assert monitoring.prometheus is not None
    groups = monitoring.prometheus.api("rules")["groups"]
    assert {"demo-availability", "demo-resources"} <= {g["name"] for g in groups}
    # Alertmanager routes to the engine's receiver (its loaded config, read back)
    assert monitoring.alertmanager is not None
    assert monitoring.webhook_url in monitoring.alertmanager.config_path.read_text()


def test_pods_are_followed_as_they_come_and_go(monitoring: Monitoring, target: LocalTarget):
    target.scale("metrics", 3)
    try:
        target.wait_ready("metrics", timeout=20, replicas=3)
        # Prometheus 2.x applies file_sd changes in 5 s batches: allow two of them.
        _poll(lambda: len(_scraped_pods(monitoring)) == 3, 15, "the third pod scraped")
    finally:
        target.scale("metrics", 2)
    target.wait_ready("metrics", timeout=20, replicas=2)
    live = {p.name for p in target.pods()}
    _poll(
        lambda: (
            set(_scraped_pods(monitoring)) == live
            and {t.labels["pod"] for t in monitoring.prometheus.target_health()} == live
        ),
        15,
        "the removed pod dropped from the scrape targets",
    )


def test_promql_slo_is_polled_into_its_series(monitoring: Monitoring):
    timeline = Timeline("promql")
    slo = SLOMonitor(timeline, prometheus=monitoring.probe, poll_interval_s=0.2)
    try:
        ready = slo.promql("pods_up", 'sum(up{service="metrics"})', above=2, window_s=1)
        worst = slo.promql("ready_range", "max(loop_test_ready)", below=1, window_s=1, range_s=5)
        assert ready.query and "PromQL" in ready.describe()
        assert timeline.wait_for(
            lambda: len(timeline.series("pods_up")) >= 3 and timeline.series("ready_range"),
            timeout=10,
        )
        slo.assert_holds()
        assert {s.values["value"] for s in timeline.series("pods_up")} == {2.0}
        assert worst.direction == "below"
    finally:
        slo.close()


def test_demo_slo_names_have_promql_forms(monitoring: Monitoring):
    timeline = Timeline("demo-forms")
    slo = SLOMonitor(timeline, prometheus=monitoring.probe)
    try:
        # the demo's metrics are absent here: the forms parse and read "no data"
        for name in ("error_rate", "latency_p99", "pool_use", "cache_hit_ratio", "disk_use"):
            slo.promql(name, below=1.0)
        slo.promql("memory_share", below=0.9)
        with pytest.raises(ConfigError, match="not one of the demo's PromQL SLOs"):
            slo.promql("throughput", below=1)
    finally:
        slo.close()


def test_invalid_promql_slo_names_the_slo_and_the_server_message(monitoring: Monitoring):
    slo = SLOMonitor(Timeline("bad"), prometheus=monitoring.probe)
    with pytest.raises(ConfigError) as info:
        slo.promql("checkout_errors", "sum(rate(demo_requests_total[30s])", below=0.01)
    text = str(info.value)
    assert "'checkout_errors'" in text
    assert "unclosed left parenthesis" in text  # Prometheus' own parse error
    assert slo.objectives == []  # nothing half-declared
    slo.close()


def test_unreachable_prometheus_url_fails_fast_and_clearly(target: LocalTarget):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(PrometheusUnreachable) as info:
        open_monitoring(target, prometheus_url=url)
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert url in text and "--prometheus-url" in text
    with pytest.raises(ConfigError, match="must start with http"):
        open_monitoring(target, prometheus_url="localhost:9090")


def test_external_prometheus_url_is_the_probe_path(monitoring: Monitoring, target: LocalTarget):
    assert monitoring.prometheus_url is not None
    external = open_monitoring(target, prometheus_url=monitoring.prometheus_url + "/")
    assert external.probe_path == PROMETHEUS and not external.managed
    assert not external.routes_alerts  # its own config says where its alerts go
    assert external.probe("up", "count(up)")() >= 2
    assert engine_alert_options("auto", external) == {}


def test_without_the_binary_the_builtin_path_serves(
    target: LocalTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus here
    builtin = open_monitoring(target)
    assert builtin.probe_path == BUILTIN
    assert builtin.describe() == "probes: built-in (prometheus is not on PATH)"
    with pytest.raises(ConfigError, match=r"PromQL SLO 'pool_use' needs a Prometheus"):
        builtin.probe("pool_use", "max(demo_db_pool_in_use)")
    slo = SLOMonitor(Timeline("builtin"), prometheus=builtin.probe)
    with pytest.raises(ConfigError, match="needs a Prometheus"):
        slo.promql("pool_use", below=0.9)
    slo.close()
    assert engine_alert_options("auto", builtin) == {}
    assert engine_alert_options("built-in", builtin) == {}
    with pytest.raises(ConfigError, match="needs the managed Prometheus and Alertmanager"):
        engine_alert_options("alertmanager", builtin)
    with pytest.raises(ConfigError, match="not one of"):
        engine_alert_options("pagerduty", builtin)


def test_engine_options_route_through_alertmanager(monitoring: Monitoring):
    options = engine_alert_options("auto", monitoring)
    assert options == {"listen": monitoring.webhook_listen, "own_rules": False}
    assert engine_alert_options("built-in", monitoring) == {}


def test_close_leaves_no_server_behind(target: LocalTarget):
    _need("prometheus", "prometheus-alertmanager")
    opened = open_monitoring(target, targets_timeout_s=20)
    servers = [opened.prometheus, opened.alertmanager]
    pids = [s._proc.pid for s in servers if s is not None and s._proc is not None]
    ports = [s.port for s in servers if s is not None]
    workdirs = [s.workdir for s in servers if s is not None]
    opened.close()
    opened.close()  # idempotent
    assert len(pids) == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not any(w is not None and w.exists() for w in workdirs)


# -- through the plugin --------------------------------------------------------------------

INNER = """
import pytest

def test_probe_path(chaos_monitoring, slo):
    slo.promql("pods_up", 'sum(up{service="metrics"})', above=1)
    print("PATH=" + chaos_monitoring.probe_path)

def test_bad_promql(slo):
    slo.promql("checkout_errors", "sum(rate(x[30s])", below=0.01)
"""


def test_plugin_session_monitoring_and_bad_promql(pytester: pytest.Pytester):
    _need("prometheus", "prometheus-alertmanager")
    services = _services(pytester.path)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", f"--chaos-services={services}",
        f"--chaos-ledger={pytester.path / 'ledger.sqlite'}",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*PATH=prometheus*",
            "*ConfigError*'checkout_errors'*unclosed left parenthesis*",
            "*probes: prometheus (managed Prometheus at http://127.0.0.1:*",
        ]
    )


def test_plugin_unreachable_prometheus_url_fails_each_test_fast(pytester: pytest.Pytester):
    services = _services(pytester.path)
    pytester.makepyfile(test_inner=INNER)
    url = f"http://127.0.0.1:{free_port()}"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--chaos-services={services}", f"--prometheus-url={url}",
        f"--chaos-ledger={pytester.path / 'ledger.sqlite'}",
    )  # fmt: skip
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*monitoring did not start: --prometheus-url: cannot reach Prometheus at "
            f"{url} within 2 s (Connection refused)*"
        ]
    )
    assert result.stdout.str().count("cannot reach Prometheus") >= 2
