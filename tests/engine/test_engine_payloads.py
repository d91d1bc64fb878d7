"""Real-world webhook bodies (tests/payloads/*.body), each from a named public source.

Every body is posted byte for byte to a running engine: taken (200, every alert in it
queued) or, when there is no alert in it at all, refused with a 400 that names the field;
the engine answers its health check after each one. The odd-but-valid shapes are the point:
a 4xx is an alert Alertmanager never re-sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import Engine
from pytest_resilience.engine.webhook import parse_payload

PAYLOADS = Path(__file__).parents[1] / "payloads"


@dataclass(frozen=True)
class Sample:
    name: str
    source: str
    body: bytes
    status: int
    accepted: int = 0
    field: str = ""


def _load(path: Path) -> Sample:
    """A header of ``#`` lines (source, expect) and then the body exactly as it was sent."""
    lines = path.read_bytes().split(b"\n")
    header = []
    while lines and lines[0].startswith(b"#"):
        header.append(lines.pop(0).decode().lstrip("# ").rstrip())
    source = next((h for h in header if h.startswith("source:")), "")
    expect = next(h for h in header if h.startswith("expect:")).split()[1:]
    fields = dict(item.split("=", 1) for item in expect[1:])
    return Sample(
        name=path.stem,
        source=source,
        body=b"\n".join(lines),
        status=int(expect[0]),
        accepted=int(fields.get("accepted", 0)),
        field=fields.get("field", ""),
    )


SAMPLES = [_load(p) for p in sorted(PAYLOADS.glob("*.body"))]


def test_every_sample_names_its_source():
    assert len(SAMPLES) >= 10
    for sample in SAMPLES:
        assert sample.source.startswith("source: "), sample.name
        source = sample.source.lower()
        assert "github.com/" in source or "alertmanager" in source, sample.name


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("payloads")
    target = ProcTarget({"api": (1, {"v1": SLEEP}, "v1")})
    e = Engine(
        target,
        playbooks_dir=fast_playbooks(tmp / "books"),
        store_path=tmp / "e.db",
        listen="127.0.0.1:0",
        dry_run=True,  # what is decided matters here, not acting on the demo
    ).start()
    yield e
    e.close()
    target.close()


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_real_payload_is_taken_or_refused_naming_the_field(engine, sample):
    before = sum(engine.store.alert_decisions().values())
    answer = requests.post(
        f"{engine.webhook_url}/alerts",
        data=sample.body,
        headers={"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"},
        timeout=10,
    )
    assert answer.status_code == sample.status, answer.text
    if sample.status == 200:
        assert answer.json()["accepted"] == sample.accepted, answer.text
        # every accepted alert reached a decision in the store (none lost after the 200)
        wait_for(
            lambda: sum(engine.store.alert_decisions().values()) - before >= sample.accepted,
            what=f"{sample.accepted} decisions for {sample.name}",
        )
    else:
        assert answer.json()["field"] == sample.field, answer.text
    health = requests.get(f"{engine.webhook_url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["ok"] is True


def _sample(name: str) -> dict:
    import json

    return json.loads(next(s for s in SAMPLES if s.name == name).body)


def test_group_status_applies_to_an_alert_without_its_own():
    _, alerts = parse_payload(_sample("alert-without-status"), now=1000.0)
    (alert,) = alerts
    assert (alert.name, alert.status, alert.starts_at) == ("TestAlert", "firing", 1000.0)


def test_version_3_numeric_group_key_is_read_as_text():
    group_key, alerts = parse_payload(_sample("alertmanager-v3-numeric-groupkey"))
    assert group_key == "9777663806026784477"
    assert [a.name for a in alerts] == ["InstanceDown"]


def test_grafana_managed_body_is_read_like_alertmanager():
    group_key, alerts = parse_payload(_sample("grafana-managed-docs"))
    assert group_key == "{}:{}"
    assert [(a.name, a.status, a.fingerprint) for a in alerts] == [
        ("High memory usage", "firing", "c6eadffa33fcdf37"),
        ("High CPU usage", "firing", "bc97ff14869b13e3"),
    ]
    # +02:00 offset honoured
    assert alerts[0].starts_at == pytest.approx(1634025063.157076)


def test_capitalised_severity_is_normalised():
    _, (alert,) = parse_payload(_sample("kube-deployment-replicas-mismatch-resolved"))
    assert (alert.severity, alert.status, alert.labels["severity"]) == (
        "warning",
        "resolved",
        "Warning",
    )


def test_resolved_alert_with_zero_end_time_is_resolved_at_receipt():
    _, alerts = parse_payload(_sample("severity-major-group-resolved"), now=2000.0)
    assert {(a.status, a.ends_at) for a in alerts} == {("resolved", 2000.0)}


def test_grafana_legacy_state_stands_in_for_a_missing_group_status():
    body = _sample("grafana-alerting-default-payload")
    body.pop("status")
    for alert in body["alerts"]:
        alert.pop("status")
    _, (alert,) = parse_payload(body)
    assert alert.status == "firing"  # "state": "alerting"
    body["state"] = "ok"
    assert parse_payload(body)[1][0].status == "resolved"
