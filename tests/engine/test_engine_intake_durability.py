"""A webhook 200 means the alerts are in the store: SIGKILL right after loses none of them.

The engine's dispatcher is held mid-batch by a target whose listing waits (an aliased alert
makes the engine look its pod up), so alerts answered 200 are not decided yet when the
`serve` subprocess is SIGKILLed; the restarted engine must decide every one of them.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from engine_support import wait_for
from test_engine_restart import rows, serve  # noqa: F401  (serve is a fixture)

from pytest_resilience.engine import Alert
from pytest_resilience.engine.store import Store
from pytest_resilience.targets.base import ExecResult, Node, Pod, Workload

STALL_DIR = "ENGINE_TEST_STALL_DIR"


class StalledTarget:
    """A platform whose pod listing waits until the test creates ``release``.

    Writes ``listing`` when a listing starts, so the test knows the dispatcher is held.
    Without ``$ENGINE_TEST_STALL_DIR`` it answers at once (the restarted engine).
    """

    name = "stalled"

    def __init__(self) -> None:
        where = os.environ.get(STALL_DIR)
        self.dir = Path(where) if where else None

    def pods(self, selector: str = "", *, namespace: str | None = None) -> list[Pod]:
        if self.dir is not None:
            (self.dir / "listing").touch()
            deadline = time.monotonic() + 60
            while not (self.dir / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return [Pod("api-7d4b9c-x2x7k", "api", ready=True)]

    def workloads(self) -> list[Workload]:
        return [Workload("api", replicas=1, ready_replicas=1)]

    def nodes(self) -> list[Node]:
        return [Node("n1")]

    def exec(self, pod: Pod, argv: list[str], *, timeout: float = 30.0) -> ExecResult:
        return ExecResult(0, "", "")

    def subscribe(self, callback: object):
        return lambda: None

    def endpoint(self, workload: str) -> str:
        return ""

    def close(self) -> None:
        pass

    def __getattr__(self, name: str):  # kill_pod, scale, restart, ...: dry-run acts on none
        return lambda *a, **k: None


def stalled_target() -> StalledTarget:
    """--target-factory test_engine_intake_durability:stalled_target"""
    return StalledTarget()


def alert(name: str, fingerprint: str, **labels: str) -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on {labels}"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def body(group: str, *alerts: dict) -> dict:
    return {"version": "4", "groupKey": group, "status": "firing", "alerts": list(alerts)}


# the alias makes the engine list the target's pods: the dispatcher waits there
CRASH_LOOP = alert("KubePodCrashLooping", "crash", namespace="shop", pod="api-7d4b9c-x2x7k")


@pytest.fixture
def env(tmp_path):
    stall = tmp_path / "stall"
    stall.mkdir()
    base = {
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        )
    }
    return stall, {**base, STALL_DIR: str(stall)}, base


def args_for(db: Path) -> list[str]:
    return [
        "--store", str(db), "--listen", "127.0.0.1:0", "--dry-run",
        "--target-factory", "test_engine_intake_durability:stalled_target",
    ]  # fmt: skip


def post(url: str, data: dict) -> requests.Response:
    return requests.post(f"{url}/alerts", json=data, timeout=30)


def test_alerts_answered_200_survive_a_sigkill_before_they_are_decided(tmp_path, serve, env):  # noqa: F811
    stall, stalled_env, normal_env = env
    db = tmp_path / "engine.db"
    proc, url = serve(stalled_env, args_for(db))
    more = [alert("HighMemoryUsage", f"mem-{i}", service=f"svc-{i}") for i in range(3)]
    first = post(url, body("g1", CRASH_LOOP, *more))
    assert first.status_code == 200 and first.json()["accepted"] == 4
    wait_for(lambda: (stall / "listing").exists(), what="dispatcher held in the listing")
    assert rows(db, "SELECT COUNT(*) FROM alerts") in ([(0,)], [])  # answered, not decided
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    proc, url = serve(normal_env, args_for(db))
    expected = {"crash", "mem-0", "mem-1", "mem-2"}
    wait_for(
        lambda: {f for (f,) in rows(db, "SELECT fingerprint FROM alerts")} == expected,
        what="every alert answered 200 decided after the restart",
    )
    wait_for(lambda: rows(db, "SELECT COUNT(*) FROM inbox") == [(0,)], what="inbox emptied")
    decided = rows(db, "SELECT fingerprint, decision FROM alerts ORDER BY fingerprint")
    assert [f for f, _ in decided] == sorted(expected)  # each decided once, none twice
    assert all(d == "incident" for _, d in decided), decided


def test_bodies_written_in_one_group_commit_keep_their_duplicates_apart(tmp_path, serve, env):  # noqa: F811
    stall, stalled_env, _ = env
    db = tmp_path / "engine.db"
    _, url = serve(stalled_env, args_for(db))
    assert post(url, body("g1", CRASH_LOOP)).status_code == 200
    wait_for(lambda: (stall / "listing").exists(), what="dispatcher held in the listing")
    memory = alert("HighMemoryUsage", "mem", service="api")
    cpu = alert("HighCPU", "cpu", service="api")
    same = body("g2", memory)
    # while held, these go into the inbox (in one transaction or a few, as they arrive) and
    # are answered: an identical re-delivery, and the same alert again in another group
    bodies = [same, same, body("g3", memory, cpu)]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, url, b) for b in bodies]
        answers = [f.result().json() for f in futures]  # answered while the dispatcher waits
        # the held alert and three taken: the identical body is not written twice
        assert rows(db, "SELECT COUNT(*) FROM inbox") == [(4,)]
        (stall / "release").touch()
    statuses = sorted(a["status"] for a in answers)
    assert statuses == ["duplicate", "ok", "ok"], answers  # the identical body: once
    assert sorted(a["accepted"] for a in answers) == [0, 1, 2]
    wait_for(lambda: len(rows(db, "SELECT id FROM alerts")) == 4, what="4 alerts decided")
    wait_for(lambda: rows(db, "SELECT COUNT(*) FROM inbox") == [(0,)], what="inbox emptied")
    decisions = rows(db, "SELECT fingerprint, decision FROM alerts ORDER BY id")
    assert [d for f, d in decisions if f == "mem"] == ["incident", "duplicate"], decisions
    assert [d for f, d in decisions if f == "cpu"] == ["incident"], decisions
    health = requests.get(f"{url}/healthz", timeout=10).json()
    assert (health["accepted"], health["duplicates"]) == (4, 1)


def test_rows_batched_in_a_transaction_are_read_back_in_it_and_rolled_back_with_it(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        with store.transaction():
            store.add_alert(Alert("A", "t"), "incident", "inc-1")
            store.note("inc-1", "alert", "seen")
            assert store.alerts_of("inc-1")[0][2] == "incident"  # visible inside
            assert [n.kind for n in store.notes("inc-1")] == ["alert"]
        with pytest.raises(RuntimeError), store.transaction():
            store.add_alert(Alert("B", "t"), "incident", "inc-2")
            store.set_state("cooldown:B|t", 99.0)
            raise RuntimeError("decision failed")
        assert store.alerts_of("inc-2") == []
        assert store.get_state("cooldown:B|t") is None  # the cached state rolled back too
        assert store.alert_decisions() == {"incident": 1}
    finally:
        store.close()
