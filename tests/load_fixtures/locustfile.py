"""Locust users for the load tests and benchmark: one GET / per task.

The pause between tasks comes from ``LOAD_FIXTURE_WAIT_S`` (default 0.05 s) so the tests
can run a gentle load and the benchmark a saturating one with the same file.
"""

from __future__ import annotations

import os

from locust import HttpUser, constant, task


class TargetUser(HttpUser):
    wait_time = constant(float(os.environ.get("LOAD_FIXTURE_WAIT_S", "0.05")))

    @task
    def root(self) -> None:
        self.client.get("/")
