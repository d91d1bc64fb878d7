"""What the ``load`` fixture returns: a typed starter of Locust runs against the target.

``load(users=20)`` starts Locust out of process (:func:`~.load.start_load_on`) against the
scenario's entry workload, its samples on the scenario's timeline; every run it started is
stopped at the test's teardown (:meth:`LoadStarter.stop_all`). ``load.py`` is imported on
the first call, so a suite that puts no load pays nothing for it.

Where the workers run is the target's to say, not the scenario's: ``workers`` > 1 on a
target with the ``load_workers`` capability (Kubernetes) run on its nodes against the
workload's in-cluster address; elsewhere (the local target) they are processes here. So
``--load-workers=4`` means the same scenario, more load, on either target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from .load import LoadRun
    from .targets.base import Target
    from .timeline import Timeline

__all__ = ["LoadStarter"]


@final
class LoadStarter:
    """The ``load`` fixture: ``load(users=20)``, ``load(rps=50, workers=2)``."""

    __slots__ = ("_default_workers", "_entry", "_started", "_target", "_timeline")

    def __init__(
        self, *, target: Target, entry: str, timeline: Timeline, default_workers: int
    ) -> None:
        self._target = target
        self._entry = entry
        self._timeline = timeline
        self._default_workers = default_workers
        self._started: list[LoadRun] = []

    def __call__(
        self,
        *,
        host: str | None = None,
        users: int | None = None,
        spawn_rate: float = 10.0,
        locustfile: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        run_time: float | None = None,
        start_timeout: float = 60.0,
        workers: int | None = None,
        rps: float | None = None,
    ) -> LoadRun:
        """Start Locust and return once its users are spawning; see :func:`~.load.start_load`.

        ``host`` defaults to the endpoint of the scenario's entry workload as the load's
        users reach it, ``workers`` to ``--load-workers``; ``rps=`` paces the users to that
        many requests per second in all. The run is a context manager; it is stopped at
        teardown if still running.
        """
        from .load import start_load_on

        run = start_load_on(
            self._target,
            self._entry,
            host=host,
            users=users,
            spawn_rate=spawn_rate,
            locustfile=locustfile,
            timeline=self._timeline,
            env=env,
            run_time=run_time,
            start_timeout=start_timeout,
            workers=self._default_workers if workers is None else workers,
            rps=rps,
        )
        self._started.append(run)
        return run

    @property
    def started(self) -> list[LoadRun]:
        """Every run this test started, oldest first (stopped ones too)."""
        return list(self._started)

    def stop_all(self) -> None:
        """Stop every run this test started (a stopped run stops again as a no-op)."""
        for run in self._started:
            run.stop()

    def __repr__(self) -> str:
        return f"<LoadStarter {len(self._started)} run(s) started in this test>"
