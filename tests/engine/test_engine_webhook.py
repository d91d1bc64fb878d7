"""The Alertmanager webhook receiver over real HTTP: accept, de-duplicate, push back, reject."""

from __future__ import annotations

import copy

import pytest
import requests
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_resilience.engine import Engine
from pytest_resilience.engine.webhook import WebhookServer


def payload(status="firing", alerts=None, group='{}:{alertname="X"}'):
    return {
        "version": "4",
        "groupKey": group,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "engine",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts
        if alerts is not None
        else [
            {
                "status": status,
                "labels": {
                    "alertname": "DeploymentFailure",
                    "service": "api",
                    "severity": "critical",
                },
                "annotations": {"summary": "release v2 fails"},
                "startsAt": "2026-01-01T00:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:05:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": "c0ffee",
            }
        ],
    }


@pytest.fixture
def target():
    t = ProcTarget({"api": (1, {"v1": SLEEP, "v2": SLEEP}, "v1")})
    yield t
    t.close()


@pytest.fixture
def engine(target, tmp_path):
    e = Engine(
        target,
        playbooks_dir=fast_playbooks(tmp_path / "books"),
        store_path=tmp_path / "e.db",
        listen="127.0.0.1:0",
        webhook_token="s3cret-token",
    ).start()
    yield e
    e.close()


def post(url, body, token="s3cret-token", **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{url}/alerts", json=body, headers=headers, timeout=10, **kw)


def test_alert_in_incident_out_duplicates_ignored(engine, target):
    target.rollout("api", "v2")
    assert engine.webhook_url.startswith("http://127.0.0.1:")
    first = post(engine.webhook_url, payload())
    assert first.status_code == 200 and first.json()["accepted"] == 1
    again = post(engine.webhook_url, payload())  # Alertmanager re-sends the group
    assert again.json()["status"] == "duplicate"
    wait_for(lambda: engine.incidents() and not engine.incidents()[0].open)
    (incident,) = engine.incidents()
    assert (incident.alert_name, incident.target, incident.alert.source) == (
        "DeploymentFailure",
        "api",
        "webhook",
    )
    assert "rollback api" in target.calls
    assert post(engine.webhook_url, payload("resolved")).status_code == 200


def test_bearer_token_is_required(engine):
    assert post(engine.webhook_url, payload(), token=None).status_code == 401
    assert post(engine.webhook_url, payload(), token="wrong").status_code == 401


def test_queue_full_answers_503_so_alertmanager_retries(target, tmp_path):
    idle_engine = Engine(  # never started: nothing drains its queue
        target,
        playbooks_dir=fast_playbooks(tmp_path / "books"),
        store_path=tmp_path / "e.db",
        max_queue=2,
    )
    server = WebhookServer(idle_engine, "127.0.0.1:0", max_body=4096)
    url = server.start()
    try:
        alerts = [dict(payload()["alerts"][0], fingerprint=f"f{i}") for i in range(3)]
        busy = post(url, payload(alerts=alerts), token=None)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        big = post(url, payload(alerts=alerts * 50), token=None)
        assert big.status_code == 413
    finally:
        server.stop()
        idle_engine.close()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.update(alerts={}), "alerts"),
        (lambda p: p.pop("alerts"), "alerts"),
        (lambda p: p.update(alerts=[]), "alerts"),
        (lambda p: p["alerts"][0]["labels"].pop("alertname"), "alerts[0].labels.alertname"),
        (lambda p: p["alerts"][0].pop("labels"), "alerts[0].labels"),
        (lambda p: (p["alerts"][0].pop("status"), p.pop("status")), "alerts[0].status"),
        (lambda p: p.update(alerts=["x"]), "alerts[0]"),
    ],
)
def test_body_without_an_alert_is_400_naming_the_field(engine, mutate, field):
    body = payload()
    mutate(body)
    answer = post(engine.webhook_url, body)
    assert answer.status_code == 400
    assert answer.json()["field"] == field


@pytest.mark.parametrize(
    ("mutate", "ignored"),
    [
        (lambda p: p.update(version="3"), None),
        (lambda p: p.pop("version"), None),
        (lambda p: p.pop("groupKey"), None),
        (lambda p: p.update(groupKey=15335440397915075285), None),
        (lambda p: p.update(status="burning"), None),  # the alert's own status holds
        (lambda p: p["alerts"][0].pop("status"), None),  # the group's status holds
        (lambda p: p["alerts"][0]["labels"].update(service=3), None),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda p: p["alerts"][0].update(endsAt=17), "alerts[0].endsAt"),
        (lambda p: p.update(notification_reason="first notification", routeLabels={}), None),
    ],
)
def test_odd_but_understandable_payload_is_taken(engine, mutate, ignored):
    """Each of these was a 400 once: an alert lost, since Alertmanager never retries a 4xx."""
    body = payload()
    mutate(body)
    answer = post(engine.webhook_url, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    notes = answer.json().get("ignored", [])
    assert ignored is None or any(n.startswith(ignored) for n in notes), notes


def test_one_bad_alert_does_not_cost_the_others(engine):
    good = payload()["alerts"][0]
    nameless = dict(good, labels={"service": "api"}, fingerprint="f2")
    answer = post(engine.webhook_url, payload(alerts=[nameless, good]))
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert any("alerts[0].labels.alertname" in n for n in answer.json()["ignored"])


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_paths = st.sampled_from([(), ("alerts", 0), ("alerts", 0, "labels"), ("alerts", 0, "annotations")])
_keys = st.sampled_from(
    ["version", "groupKey", "status", "alerts", "labels", "alertname", "startsAt", "endsAt",
     "fingerprint", "annotations", "value", "x"]
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_paths, key=_keys, value=_json, raw=st.booleans())
def test_fuzzed_payloads_get_400_or_200_never_a_crash(engine, path, key, value, raw):
    body = copy.deepcopy(payload())
    node = body
    for step in path:
        node = node[step]
    if raw:
        data = value
    else:
        node[key] = value
        data = body
    answer = post(engine.webhook_url, data)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["field"]


def test_receiver_survives_garbage_bytes(engine):
    for raw in (b"", b"{", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'{"version": "4"'):
        answer = requests.post(
            f"{engine.webhook_url}/alerts",
            data=raw,
            headers={"Authorization": "Bearer s3cret-token"},
            timeout=10,
        )
        assert answer.status_code == 400
    assert requests.get(f"{engine.webhook_url}/healthz", timeout=5).json()["ok"] is True
