"""A locustfile whose user spins forever without yielding to gevent's hub.

Neither SIGTERM (handled in the hub) nor the driver's parent watch (a greenlet) can run,
so only a kernel-delivered SIGKILL ends it: the tests use it to prove PR_SET_PDEATHSIG and
``stop()``'s escalation to SIGKILL.
"""

from __future__ import annotations

from locust import User, constant, task


class SpinningUser(User):
    wait_time = constant(0)

    @task
    def spin(self) -> None:
        while True:
            pass
