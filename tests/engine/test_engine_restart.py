"""The engine as a service (`serve`), SIGKILLed mid-incident and restarted: nothing lost."""

from __future__ import annotations

import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from aiohttp import web
from engine_support import AdminHooks, ThreadedApp, wait_for

# named as the bundled playbook it replaces: serve layers --playbooks over the bundled ones
PLAYBOOK = """\
playbook: Resource Exhaustion
alerts: [HighMemoryUsage]
steps:
  - name: gc
    actions: [trigger_gc]
    verify: {wait: 0s, window: 60s, condition: {resolved: true}, on_not_fixed: escalate}
"""


class PagerDutyDown:
    """503 until `up` is set, then 202: a page queued before the kill must survive it."""

    def __init__(self) -> None:
        self.up = False
        self.accepted: Counter = Counter()
        self.app = web.Application()
        self.app.router.add_post("/v2/enqueue", self.enqueue)

    async def enqueue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self.up:
            return web.Response(status=503)
        self.accepted[(body["dedup_key"], body["event_action"])] += 1
        return web.json_response({"status": "success"}, status=202)


def rows(db: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        connection.close()


@pytest.fixture
def serve(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(env: dict[str, str | None], args: list[str]) -> tuple[subprocess.Popen, str]:
        """``serve ARGS`` with ``env`` over this process's (a None value unsets it)."""
        log = (tmp_path / f"serve{len(procs)}.log").open("wb")
        merged = {**os.environ, **env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_resilience.engine", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            env={k: v for k, v in merged.items() if v is not None},
        )
        procs.append(proc)
        deadline = time.monotonic() + 30
        line = b""
        while b"\n" not in line and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        match = re.search(rb"listening on (http://[\d.:]+)/alerts", line)
        assert match, (line, (tmp_path / f"serve{len(procs) - 1}.log").read_text())
        return proc, match.group(1).decode()

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def firing(name: str, status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": f"{{}}:{name}",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": name, "service": "api"},
                "annotations": {},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:01:00Z",
                "fingerprint": name,
            }
        ],
    }


def test_sigkill_mid_incident_then_restart_resumes_and_delivers(tmp_path, serve):
    books = tmp_path / "books"
    books.mkdir()
    (books / "memory.yaml").write_text(textwrap.dedent(PLAYBOOK))
    db = tmp_path / "engine.db"
    admin, pagerduty = AdminHooks(), PagerDutyDown()
    with ThreadedApp(admin.app) as admin_server, ThreadedApp(pagerduty.app) as pd_server:
        env = {
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
            ),
            "ENGINE_TEST_ADMIN_PORT": str(admin_server.port),
            "PAGERDUTY_ROUTING_KEY": "routing-key-for-restart-test",
        }
        args = [
            "--playbooks", str(books), "--store", str(db), "--listen", "127.0.0.1:0",
            "--target-factory", "engine_support:serve_target",
            "--pagerduty-url", f"{pd_server.url}/v2/enqueue",
        ]  # fmt: skip
        proc, url = serve(env, args)
        assert requests.post(f"{url}/alerts", json=firing("HighMemoryUsage"), timeout=5).ok
        assert requests.post(f"{url}/alerts", json=firing("NoPlaybookForThis"), timeout=5).ok
        # mid-incident: the action ran, the verify window is open, a page waits in the outbox
        wait_for(lambda: rows(db, "SELECT result FROM actions") == [("ok",)], what="action ran")
        wait_for(
            lambda: rows(db, "SELECT attempts FROM outbox WHERE attempts > 0"), what="page tried"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert admin.calls == ["/admin/gc"]

        pagerduty.up = True
        proc, url = serve(env, args)
        incidents = dict(rows(db, "SELECT alert_name, id FROM incidents"))
        wait_for(
            lambda: pagerduty.accepted[(incidents["NoPlaybookForThis"], "trigger")] == 1,
            what="queued page delivered after restart",
        )
        resolved = firing("HighMemoryUsage", "resolved")
        assert requests.post(f"{url}/alerts", json=resolved, timeout=5).ok
        wait_for(
            lambda: (
                rows(db, "SELECT status FROM incidents WHERE alert_name='HighMemoryUsage'")
                == [("resolved",)]
            ),
            what="resumed incident resolved",
        )
    assert admin.calls == ["/admin/gc"]  # resumed by verifying, not by acting twice
    assert sum(pagerduty.accepted.values()) == 1
    memory = incidents["HighMemoryUsage"]
    notes = [kind for (kind,) in rows(db, f"SELECT kind FROM notes WHERE incident_id='{memory}'")]
    assert "resumed" in notes
    verdicts = rows(db, f"SELECT outcome FROM verifications WHERE incident_id='{memory}'")
    assert verdicts == [("fixed",)]
    assert rows(db, "SELECT COUNT(*) FROM alerts") == [(3,)]  # every alert kept

    command = [sys.executable, "-m", "pytest_resilience.engine", "postmortem", "--store", str(db)]
    postmortem = subprocess.run(
        [*command, memory],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert postmortem.returncode == 0, postmortem.stderr
    assert "trigger_gc" in postmortem.stdout and "resumed" in postmortem.stdout
    assert "routing-key-for-restart-test" not in postmortem.stdout
