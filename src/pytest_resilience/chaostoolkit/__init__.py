"""Chaos Toolkit experiments, run unchanged as pytest chaos items.

``model`` parses and validates an experiment file as chaostoolkit-lib does, ``tolerance``
judges probe outputs, ``providers`` runs http/process/python activities, ``run`` plays
the experiment and guarantees its rollbacks, ``native`` runs extension actions through
our faults (``--chaostoolkit-native``), ``extension`` reads an experiment's
``pytest-resilience`` extension (our load and SLOs). Nothing here imports pytest:
collection lives in ``collect.py``, the ledgered rollbacks in
``faults/experiment_rollbacks.py``.
"""

from __future__ import annotations

from .model import Activity, Experiment, Hypothesis, experiment_kind, load_experiment
from .providers import ActivityFailed, MissingExtension
from .run import ActivityRun, Journal, Runner, replay_rollbacks

__all__ = [
    "Activity",
    "ActivityFailed",
    "ActivityRun",
    "Experiment",
    "Hypothesis",
    "Journal",
    "MissingExtension",
    "Runner",
    "experiment_kind",
    "load_experiment",
    "replay_rollbacks",
]
