"""Escalation through the durable outbox against a real HTTP endpoint that pushes back."""

from __future__ import annotations

import json
import logging
import textwrap
import uuid
from collections import Counter, defaultdict

import pytest
from aiohttp import web
from engine_support import SLEEP, ProcTarget, ThreadedApp, wait_for

from pytest_resilience.engine import Alert, Engine, GenericWebhook, PagerDuty, SafetyPolicy
from pytest_resilience.errors import ConfigError

PLAYBOOK = """\
playbook: Hopeless
alerts: [Hopeless]
steps:
  - name: restart
    actions: [graceful_restart]
    verify: {wait: 0s, window: 0.05s, condition: {probe: health, above: 0.5},
             on_not_fixed: escalate}
follow_up: {rca: [look at it]}
"""


class FlakyPagerDuty:
    """Answers 429, then 500 (echoing the request, as some proxies do), then 202."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, int]] = []
        self._seen: Counter = Counter()
        self.app = web.Application()
        self.app.router.add_post("/v2/enqueue", self.enqueue)

    async def enqueue(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = (body["dedup_key"], body["event_action"])
        self._seen[key] += 1
        status = {1: 429, 2: 500}.get(self._seen[key], 202)
        self.requests.append((body, status))
        if status == 429:
            return web.json_response(
                {"status": "throttled"}, status=429, headers={"Retry-After": "0"}
            )
        if status == 500:
            return web.Response(status=500, text=f"upstream error for {json.dumps(body)}")
        return web.json_response({"status": "success", "dedup_key": body["dedup_key"]}, status=202)

    def accepted(self, action: str) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for body, status in self.requests:
            if status == 202 and body["event_action"] == action:
                counts[body["dedup_key"]] += 1
        return dict(counts)


@pytest.fixture
def target():
    t = ProcTarget({name: (1, {"v1": SLEEP}, "v1") for name in ("a", "b", "c")})
    yield t
    t.close()


@pytest.fixture
def books(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "hopeless.yaml").write_text(textwrap.dedent(PLAYBOOK))
    return tmp_path / "books"


def test_every_incident_paged_exactly_once_and_resolved(
    target, books, tmp_path, monkeypatch, caplog
):
    secret = f"R0UTING{uuid.uuid4().hex}"
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", secret)
    caplog.set_level(logging.DEBUG, logger="pytest_resilience")
    pd = FlakyPagerDuty()
    with ThreadedApp(pd.app) as server:
        engine = Engine(
            target,
            playbooks_dir=books,
            store_path=tmp_path / "e.db",
            escalation=[PagerDuty(url=f"{server.url}/v2/enqueue")],
            probes={"health": lambda: 0.0},
            safety=SafetyPolicy(breaker_failures=100),
        ).start()
        try:
            for name in ("a", "b", "c"):
                engine.submit(Alert("Hopeless", name, severity="critical"))
                engine.submit(Alert("Hopeless", name))  # duplicate: same incident
            wait_for(lambda: len(engine.pages_sent()) == 3, what="3 pages delivered")
            incidents = engine.incidents()
            assert [i.status for i in incidents] == ["escalated"] * 3
            assert pd.accepted("trigger") == {i.id: 1 for i in incidents}
            assert [p.attempts for p in engine.pages_sent()] == [3, 3, 3]  # 429, 500, 202
            assert len([r for r in pd.requests if r[0]["event_action"] == "trigger"]) == 9
            body = pd.requests[-1][0]
            assert body["routing_key"] == secret and body["payload"]["severity"] == "critical"

            for name in ("a", "b", "c"):
                engine.submit(Alert("Hopeless", name).resolved())
            wait_for(lambda: len(pd.accepted("resolve")) == 3, what="3 resolves delivered")
            assert pd.accepted("resolve") == {i.id: 1 for i in incidents}
            assert [i.status for i in engine.incidents()] == ["resolved"] * 3
            postmortem = engine.postmortem(incidents[0].id)
            postmortem_text = postmortem.to_markdown() + postmortem.to_json()
        finally:
            engine.close()
    assert "upstream error" in caplog.text  # the 500 body was logged ...
    assert secret not in caplog.text  # ... with the routing key masked
    assert "[REDACTED]" in caplog.text
    for path in tmp_path.glob("e.db*"):
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in postmortem_text
    assert (
        "rca: look at it" in postmortem_text and "pagerduty trigger: delivered" in postmortem_text
    )


def recording_webhook() -> tuple[web.Application, list[dict]]:
    """A generic webhook endpoint at /hook that keeps every body it is sent."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app, received


def test_generic_webhook_gets_the_incident(target, books, tmp_path):
    app, received = recording_webhook()
    with ThreadedApp(app) as server:
        engine = Engine(target, playbooks_dir=books, store_path=tmp_path / "e.db",
                        escalation=[GenericWebhook(f"{server.url}/hook")],
                        probes={"health": lambda: 0.0}).start()  # fmt: skip
        try:
            engine.submit(Alert("Hopeless", "a"))
            wait_for(lambda: engine.pages_sent(), what="webhook delivery")
        finally:
            engine.close()
    (page,) = received
    assert (page["event"], page["alert"], page["target"]) == ("trigger", "Hopeless", "a")


def test_missing_routing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    with pytest.raises(ConfigError, match="PAGERDUTY_ROUTING_KEY is not set"):
        PagerDuty()


def test_a_dry_run_escalates_on_the_record_and_pages_nobody(target, books, tmp_path):
    """--remediation-baseline and serve --dry-run give the engine its channels: an alert
    no playbook handles still escalates (stored, on the timeline), but nothing is queued."""
    app, received = recording_webhook()
    with ThreadedApp(app) as server:
        engine = Engine(target, playbooks_dir=books, store_path=tmp_path / "e.db",
                        escalation=[GenericWebhook(f"{server.url}/hook")], dry_run=True,
                        probes={"health": lambda: 0.0}).start()  # fmt: skip
        try:
            engine.submit(Alert("NobodyHandlesThis", "a"))
            wait_for(
                lambda: [i.status for i in engine.incidents()] == ["escalated"],
                what="the incident escalated",
            )
            engine.submit(Alert("NobodyHandlesThis", "a").resolved())
            wait_for(
                lambda: [i.status for i in engine.incidents()] == ["resolved"],
                what="the incident closed by the resolve",
            )
            assert engine.store.outbox() == []  # neither trigger nor resolve queued
            assert engine.pages_sent() == [] and received == []
            assert (
                "dry run: nobody paged" in engine.postmortem(engine.incidents()[0].id).to_markdown()
            )
        finally:
            engine.close()
