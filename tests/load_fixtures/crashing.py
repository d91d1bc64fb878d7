"""A locustfile that takes the driver down from inside a task, as a crash would."""

from __future__ import annotations

import os
import sys

from locust import User, constant, task


class CrashingUser(User):
    wait_time = constant(0.2)

    @task
    def crash(self) -> None:
        sys.stderr.write("crashing.py: driver going down on purpose\n")
        sys.stderr.flush()
        os._exit(3)
