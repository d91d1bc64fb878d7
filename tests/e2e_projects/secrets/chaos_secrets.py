"""A chaos test whose own code lets secrets slip into what the reports render.

The pager key and the database password come from the environment (planted by the
test that runs this project); a careless team logs a DSN with its password on the
timeline and puts the key in a failure message. None of it may reach a report.
"""

from __future__ import annotations

import os

import pytest


@pytest.mark.chaos
def test_careless_logging(pod_kill, timeline, record_property):
    password = os.environ["DEMO_ADMIN_PASSWORD"]
    key = os.environ["PAGERDUTY_ROUTING_KEY"]
    dsn = f"postgresql://app:{password}@127.0.0.1:5432/app"
    timeline.mark("note", "config", dsn=dsn, routing_key=key)
    record_property("dsn", dsn)
    killed = pod_kill("app=web")
    killed.revert()


@pytest.mark.chaos
def test_fails_with_the_key_in_its_message(pod_kill):
    pod_kill("app=web").revert()
    raise AssertionError(f"pager rejected routing key {os.environ['PAGERDUTY_ROUTING_KEY']}")
