"""Real Prometheus and Alertmanager in the loop.

A real /metrics endpoint (prometheus-client in a subprocess, values set over stdin) is
scraped by a real Prometheus; PromQL probes read it; a packaged rule fires, Alertmanager
groups it and POSTs a version-4 webhook to a small aiohttp receiver owned by this test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pytest_resilience.errors import ConfigError
from pytest_resilience.prometheus import (
    POOL_USE,
    DaemonError,
    ManagedAlertmanager,
    ManagedPrometheus,
    PrometheusUnreachable,
    PromQLProbe,
)
from pytest_resilience.prometheus.daemon import free_port

POD = {"service": "api", "pod": "api-0", "node": "n1"}


def _need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        reason = (
            f"{', '.join(missing)} not on PATH "
            "(Debian packages prometheus, prometheus-alertmanager)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:g} s (last: {value!r})")
        time.sleep(0.1)


class Exporter:
    """A real /metrics endpoint in its own process: a pod as Prometheus sees it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_resilience.prometheus.settable_exporter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.address = f"127.0.0.1:{int(line.split()[1])}"

    def set(self, name: str, value: float, **labels: str) -> None:
        pairs = " ".join(f"{k}={v}" for k, v in labels.items())
        self.proc.stdin.write(f"gauge {name} {value} {pairs}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", answer

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class WebhookReceiver:
    """A small Alertmanager webhook receiver: records every payload, answers 200."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "receiver did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/alerts"
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        with self._cond:
            self.payloads.append(payload)
            self._cond.notify_all()
        return web.Response(text="ok")

    def wait_for(self, match: Callable[[dict], bool], timeout: float) -> dict[str, Any]:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((p for p in self.payloads if match(p)), None), timeout
            )
        if not found:
            pytest.fail(f"no matching webhook within {timeout:g} s; got {self.payloads!r}")
        return found

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    yield exp
    exp.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def alertmanager(receiver: WebhookReceiver) -> Iterator[ManagedAlertmanager]:
    _need("prometheus-alertmanager")
    with ManagedAlertmanager(receiver.url) as am:
        yield am


@pytest.fixture(scope="module")
def prometheus(
    exporter: Exporter, alertmanager: ManagedAlertmanager
) -> Iterator[ManagedPrometheus]:
    _need("prometheus")
    with ManagedPrometheus(
        alertmanager=alertmanager.url, targets=[(exporter.address, POD)]
    ) as prom:
        prom.wait_for_targets_up(timeout=10)
        yield prom


def test_probe_reads_what_prometheus_scraped(prometheus: ManagedPrometheus, exporter: Exporter):
    exporter.set("probe_test_value", 42, **POD)
    probe = PromQLProbe("probe_test", "max(probe_test_value)", url=prometheus.url)
    assert _poll(lambda: probe() == 42.0, 10, "probe_test_value == 42 through Prometheus")
    assert PromQLProbe("absent", "max(no_such_metric)", url=prometheus.url)() is None
    probe.close()


def test_range_probe_reduces_the_window(prometheus: ManagedPrometheus, exporter: Exporter):
    exporter.set("range_test_value", 1, **POD)
    low = PromQLProbe("low", "max(range_test_value)", url=prometheus.url)
    _poll(lambda: low() == 1.0, 10, "range_test_value == 1")
    exporter.set("range_test_value", 5, **POD)
    worst = PromQLProbe(
        "range_test", "max(range_test_value)", url=prometheus.url, kind="range", window_s=20
    )
    best = PromQLProbe(
        "range_test",
        "max(range_test_value)",
        url=prometheus.url,
        kind="range",
        window_s=20,
        reduce="min",
    )
    _poll(lambda: worst() == 5.0, 10, "range max == 5")
    assert best() == 1.0
    assert {v for _, v in worst.points()} == {1.0, 5.0}


def test_invalid_promql_names_the_slo_and_the_server_message(prometheus: ManagedPrometheus):
    probe = PromQLProbe("error_rate", "sum(rate(demo_requests_total[30s])", url=prometheus.url)
    with pytest.raises(ConfigError) as info:
        probe()
    text = str(info.value)
    assert "'error_rate'" in text
    assert "unclosed left parenthesis" in text  # Prometheus's own parse error
    assert info.value.field == "expr"


def test_probe_that_returns_many_series_asks_for_aggregation(prometheus: ManagedPrometheus):
    with pytest.raises(ConfigError, match=r"returned 2 series .* aggregate it"):
        PromQLProbe("two", "up or vector(1)", url=prometheus.url)()


def test_unreachable_url_fails_fast_naming_the_url():
    refused = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnreachable, match=f"cannot reach Prometheus at {refused}"):
        PromQLProbe("pool_use", POOL_USE, url=refused)()

    # A listener that never answers: the probe's own timeout, not a hang, must end it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PrometheusUnreachable, match=f"at {url} within 0.5 s"):
            PromQLProbe("pool_use", POOL_USE, url=url, timeout_s=0.5)()


def test_rule_fires_through_alertmanager_then_resolves(
    prometheus: ManagedPrometheus,
    alertmanager: ManagedAlertmanager,
    exporter: Exporter,
    receiver: WebhookReceiver,
):
    name = "DatabaseConnectionPoolExhaustion"
    exporter.set("demo_db_pool_max", 10, **POD)
    exporter.set("demo_db_pool_in_use", 2, **POD)
    probe = PromQLProbe("pool_use", POOL_USE, url=prometheus.url)
    _poll(lambda: probe() == 0.2, 10, "pool use 0.2 before the fault")

    exporter.set("demo_db_pool_in_use", 10, **POD)  # the pool is exhausted
    alert = prometheus.wait_for_alert(name, 15)
    assert alert.labels["service"] == "api" and alert.labels["severity"] == "critical"
    assert alert.active_at is not None and alert.value == 1.0

    def is_ours(status: str) -> Callable[[dict], bool]:
        return lambda p: p["status"] == status and p["commonLabels"].get("alertname") == name

    firing = receiver.wait_for(is_ours("firing"), 15)
    assert firing["version"] == "4"
    assert firing["receiver"] == "remediation-engine"
    assert f'alertname="{name}"' in firing["groupKey"]
    assert firing["groupLabels"] == {"alertname": name, "service": "api"}
    (sent,) = firing["alerts"]
    assert sent["status"] == "firing"
    assert sent["labels"]["service"] == "api" and sent["labels"]["component"] == "database"
    assert sent["annotations"]["summary"] == "A pod of api has used 100% of its DB pool"
    assert sent["annotations"]["value"] == "1"
    assert sent["startsAt"] and sent["endsAt"].startswith("0001-")
    assert sent["fingerprint"]

    exporter.set("demo_db_pool_in_use", 1, **POD)  # the pool recovers
    resolved = receiver.wait_for(is_ours("resolved"), 20)
    assert resolved["groupKey"] == firing["groupKey"]
    (sent_resolved,) = resolved["alerts"]
    assert sent_resolved["status"] == "resolved"
    assert sent_resolved["fingerprint"] == sent["fingerprint"]
    assert not sent_resolved["endsAt"].startswith("0001-")
    prometheus.wait_for_no_alert(name, 10)


def test_targets_follow_pods_and_a_dead_node_alerts(
    prometheus: ManagedPrometheus, exporter: Exporter
):
    with socket.socket() as placeholder:  # a port where no pod answers
        placeholder.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{placeholder.getsockname()[1]}"
    # A pod came up on node n2 and n2 died: file_sd is rewritten, no reload. (Prometheus
    # 2.x batches discovery updates every 5 s, which sets the pace of this test.)
    prometheus.update_targets(
        [(exporter.address, POD), (dead, {"service": "api", "pod": "api-1", "node": "n2"})]
    )
    try:
        alert = prometheus.wait_for_alert("NodeNotReady", 20, labels={"node": "n2"})
        assert alert.labels["severity"] == "critical"
        assert not any(a.labels.get("node") == "n1" for a in prometheus.alerts())
    finally:
        prometheus.update_targets([(exporter.address, POD)])
    _poll(
        lambda: {t.address for t in prometheus.target_health()} == {exporter.address},
        20,
        "the dead pod's target dropped after update_targets",
    )


def test_stop_leaves_no_process_port_or_files(exporter: Exporter):
    _need("prometheus")
    prom = ManagedPrometheus(targets=[(exporter.address, POD)]).start()
    pid, port, workdir = prom._proc.pid, prom.port, prom.workdir
    assert workdir is not None and (workdir / "prometheus.yml").exists()
    prom.stop()
    prom.stop()  # idempotent
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not workdir.exists()


def test_startup_failure_shows_the_server_log(tmp_path: Path):
    _need("prometheus")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(\n")
    with pytest.raises(DaemonError, match=r"exited before it was ready[\s\S]*bad\.yml"):
        ManagedPrometheus(rule_files=[bad]).start()


def test_log_excerpt_keeps_the_error_lines_however_long_the_shutdown_chatter(tmp_path: Path):
    """Prometheus logs the line naming the bad file before a shutdown of varying length;
    the excerpt a failed start shows must keep that line, not only the last lines."""
    daemon = ManagedPrometheus()
    daemon.workdir = tmp_path
    cause = 'level=error component="rule manager" err="/x/bad.yml: 5:15: parse error"'
    chatter = [f'level=info msg="Stopping thing {i}..."' for i in range(40)]
    (tmp_path / "server.log").write_text("\n".join(["level=info msg=start", cause, *chatter]))
    excerpt = daemon.log_tail()
    assert cause in excerpt
    assert chatter[-1] in excerpt
    assert "level=info msg=start" not in excerpt
