"""The default load on the demo API: mostly reads of hot items, a few cold reads and writes.

Run only inside a Locust process (``locust -f <this file>``): importing locust monkey-patches
the interpreter with gevent, so nothing in the package may import this module.

Hot ids 1..100 are warmed into Redis by every API replica, so while the database is lost
those reads keep succeeding: the service degrades (cold reads and writes fail) rather than
going down.
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

HOT_IDS = (1, 100)
COLD_IDS = (101, 1000)
# Writes go to their own ids so they never change the seeded rows that corruption checks read.
WRITE_IDS = (1001, 1100)


class DemoUser(HttpUser):
    wait_time = between(0.01, 0.05)

    @task(90)
    def read_hot(self) -> None:
        self.client.get(f"/items/{random.randint(*HOT_IDS)}", name="/items/[hot]")

    @task(6)
    def read_cold(self) -> None:
        self.client.get(f"/items/{random.randint(*COLD_IDS)}", name="/items/[cold]")

    @task(4)
    def write(self) -> None:
        item_id = random.randint(*WRITE_IDS)
        self.client.post(
            "/items",
            json={"id": item_id, "payload": {"value": random.random()}},
            name="/items [write]",
        )
