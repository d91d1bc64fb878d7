"""The auto-remediation engine: alerts in, playbook actions out, verified or escalated.

No pytest here: the same engine runs under the ``remediation_engine`` fixture and on its
own as ``python -m pytest_resilience.engine serve``.
"""

from __future__ import annotations

from .actions import REGISTRY, ActionContext, action, default_admin_url
from .alerts import Alert, EventAlerts, Rule, RuleEvaluator
from .escalation import GenericWebhook, Outbox, PagerDuty
from .playbooks import BUNDLED_PLAYBOOKS, Playbook, load_playbook, load_playbooks
from .postmortem import Postmortem, build_postmortem
from .runner import Engine, StrategyRun, make_engine
from .safety import SafetyPolicy
from .store import ActionRecord, Incident, OutboxItem, Store

__all__ = [
    "BUNDLED_PLAYBOOKS",
    "REGISTRY",
    "ActionContext",
    "ActionRecord",
    "Alert",
    "Engine",
    "EventAlerts",
    "GenericWebhook",
    "Incident",
    "Outbox",
    "OutboxItem",
    "PagerDuty",
    "Playbook",
    "Postmortem",
    "Rule",
    "RuleEvaluator",
    "SafetyPolicy",
    "Store",
    "StrategyRun",
    "action",
    "build_postmortem",
    "default_admin_url",
    "load_playbook",
    "load_playbooks",
    "make_engine",
]
