"""Kept for code that imported the iptables helpers from here: they live with the local
target now (:mod:`pytest_resilience.targets.iptables`), which is what writes the rules."""

from __future__ import annotations

from ..targets.iptables import HOOKS, FilterRule, check_privilege, install, remove, rules_of

__all__ = ["HOOKS", "FilterRule", "check_privilege", "install", "remove", "rules_of"]
