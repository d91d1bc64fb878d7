"""Old import path of :mod:`.kubernetes.safety`, kept while ``engine/__main__.py`` still
imports ``ChaosPolicy`` from here (issue 14 moves it to ``targets.kubernetes``); then delete."""

from __future__ import annotations

from .kubernetes.safety import ChaosPolicy

__all__ = ["ChaosPolicy"]
