"""Old import path of :mod:`.kubernetes.api`, kept while ``plugin.py`` still imports
``describe_target`` from here (issue 14 moves it to ``targets.kubernetes``); then delete."""

from __future__ import annotations

from .kubernetes.api import describe_target

__all__ = ["describe_target"]
