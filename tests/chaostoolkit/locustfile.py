"""Locust users for the experiments' load (the pytest-resilience extension): GET /whoami."""

from __future__ import annotations

from locust import HttpUser, constant, task


class WhoAmI(HttpUser):
    wait_time = constant(0.05)

    @task
    def whoami(self) -> None:
        self.client.get("/whoami")
