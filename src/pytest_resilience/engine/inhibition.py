"""Inhibit rules: an alert held back while the incident that explains it is handled.

A playbook's ``inhibit_rules`` (docs/playbooks.md) read as Alertmanager's ``inhibit_rules``
do (its config/config.go ``InhibitRule``, inhibit/inhibit.go): ``target_matchers`` select
the alerts that may be held back, ``source_matchers`` the alerts that hold them, and
``equal`` names labels whose values must be the same on both (a label absent on both is
equal: absent reads as the empty value). A matcher is ``label op value``, ``op`` one of
``=``, ``!=``, ``=~``, ``!~``, a regex anchored at both ends. An alert matching both sides
of a rule is not held back by a source that also matches both (Alertmanager's two-sided
exclusion: two such alerts would hold each other back for good).

Two differences, by design. A source is a cause *being handled*, an open or escalated
incident, not any firing alert: an alert that is itself held back holds nothing. And the
labels the matchers see are the alert's own plus ``alertname`` (the name the playbook
knows it by: an alias's ``as:``, so ``NodeNotReady`` covers ``KubeNodeNotReady``),
``target`` (what the engine acts on) and ``severity``. A held alert is decided once no
rule holds it any more (see :meth:`Inhibitor.released_by`).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .alerts import Alert

__all__ = ["SYMPTOM_ALERTS", "InhibitRule", "Inhibitor", "Matcher"]

#: The alerts the bundled playbooks hold back as symptoms (what users see rather than why;
#: the inhibit rules of high-error-rate.yaml): the rollback an error rate asks for must not
#: fight the pool reset that is fixing the actual cause.
SYMPTOM_ALERTS = frozenset({"ErrorRateHighCritical", "HighErrorRate"})

_OPS = ("=~", "!~", "!=", "=")  # longest first: "=~" is not "=" followed by "~..."
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")

Key = tuple[str, str]


@dataclass(frozen=True)
class Matcher:
    """``label op value``, as Alertmanager writes one: ``alertname =~ "A|B"``."""

    label: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """A matcher from its text; ValueError saying what is wrong with ``text``."""
        found = _MATCHER.fullmatch(text)
        # an unquoted value starting with an operator is a typo ('==', '=!'), not a value
        if found is None or found[3][:1] in ("=", "~", "!"):
            raise ValueError(
                f"expected 'label op value' with op one of {list(reversed(_OPS))}, "
                f"e.g. 'alertname = NodeNotReady', got {text!r}"
            )
        label, op, value = found.groups()
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"') or value.endswith('\\"'):
                raise ValueError(f"unterminated quoted value in matcher {text!r}")
            value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value[1:-1])
        elif '"' in value:
            raise ValueError(f"a value with a '\"' must be quoted whole, in matcher {text!r}")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r} in matcher {text!r}: {exc}") from None
        return cls(label, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self._regex is not None:
            return (self._regex.fullmatch(value) is not None) == (self.op == "=~")
        return (value == self.value) == (self.op == "=")

    def __str__(self) -> str:
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{quoted}"'


def _all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


@dataclass(frozen=True)
class InhibitRule:
    """Hold back alerts matching ``target`` while a ``source`` incident with ``equal``
    label values is handled; ``origin`` says where the rule was written (``file:line``)."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()
    origin: str = ""

    def matches_source(self, labels: Mapping[str, str]) -> bool:
        return _all(self.source, labels)

    def matches_target(self, labels: Mapping[str, str]) -> bool:
        return _all(self.target, labels)

    def scope(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The ``equal`` labels' values: a source holds back targets of the same scope."""
        return tuple(labels.get(name, "") for name in self.equal)


def is_label_name(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None


class Inhibitor:
    """The causes being handled, indexed by rule and scope, and the alerts held back.

    Its own lock, taken last: the engine may call in while holding its own lock, and
    nothing here calls out. Each rule keeps its causes by scope, so a decision looks up
    one entry per rule whose target side matches instead of scanning every incident.
    """

    def __init__(self, rules: Sequence[InhibitRule], known_as: Callable[[str], str]) -> None:
        self.rules = tuple(rules)
        self._known_as = known_as
        self._lock = threading.Lock()
        #: per rule: scope -> keys of the causes in it, counted (a key can be open and
        #: escalated at once)
        self._index: list[dict[tuple[str, ...], Counter[Key]]] = [{} for _ in self.rules]
        self._causes: dict[Key, tuple[Mapping[str, str], int]] = {}  # labels, times counted
        self._held: dict[Key, tuple[Alert, Mapping[str, str]]] = {}

    def labels(self, alert: Alert) -> dict[str, str]:
        """What the matchers see of ``alert`` (see the module docstring)."""
        return {
            **alert.labels,
            "alertname": self._known_as(alert.name),
            "target": alert.target,
            "severity": alert.severity,
        }

    def started(self, key: Key, alert: Alert) -> None:
        """The incident on ``key``, about ``alert``, is handled: a cause from now."""
        with self._lock:
            labels, count = self._causes.get(key, (None, 0))
            labels = labels or self.labels(alert)
            self._causes[key] = (labels, count + 1)
            self._count(key, labels, 1)

    def ended(self, key: Key) -> None:
        """The incident on ``key`` is no longer handled (closed, or no longer escalated)."""
        with self._lock:
            labels, count = self._causes.get(key, (None, 0))
            if labels is None:
                return
            if count <= 1:
                del self._causes[key]
            else:
                self._causes[key] = (labels, count - 1)
            self._count(key, labels, -1)

    def _count(self, key: Key, labels: Mapping[str, str], by: int) -> None:
        for rule, index in zip(self.rules, self._index, strict=True):
            if not rule.matches_source(labels):
                continue
            scope = rule.scope(labels)
            keys = index.get(scope)
            if keys is None:  # not setdefault: a Counter built per call costs a storm
                keys = index[scope] = Counter()
            keys[key] += by
            if keys[key] <= 0:
                del keys[key]
                if not keys:
                    del index[scope]

    def cause_of(self, alert: Alert) -> str | None:
        """Why ``alert`` is held back (the cause being handled), or None."""
        labels = self.labels(alert)
        with self._lock:
            return self._cause(labels)

    def _cause(self, labels: Mapping[str, str]) -> str | None:
        for rule, index in zip(self.rules, self._index, strict=True):
            if not rule.matches_target(labels):
                continue
            keys = index.get(rule.scope(labels))
            if not keys:
                continue
            two_sided = rule.matches_source(labels)
            for name, target in keys:
                if two_sided and rule.matches_target(self._causes[(name, target)][0]):
                    continue
                return f"{name} on {target} is being handled"
        return None

    def hold(self, alert: Alert) -> None:
        with self._lock:
            self._held[alert.key] = (alert, self.labels(alert))

    def unhold(self, key: Key) -> Alert | None:
        """Take ``key``'s held alert off hold (it resolved); None if none was held."""
        with self._lock:
            held = self._held.pop(key, None)
        return held[0] if held is not None else None

    def released_by(self, closed: Alert) -> list[Alert]:
        """The held alerts that the closed incident about ``closed`` may have held back and
        that nothing holds any more: taken off hold, for the engine to decide.

        Only a cause closing can release anything, and only what its rules reach (the
        same scope): the rest is not looked at, which keeps an alert storm linear.
        """
        labels = self.labels(closed)
        rules = [r for r in self.rules if r.matches_source(labels)]
        if not rules:
            return []
        released: list[Alert] = []
        with self._lock:
            for key, (alert, held) in list(self._held.items()):
                reached = any(
                    r.matches_target(held) and r.scope(held) == r.scope(labels) for r in rules
                )
                if reached and self._cause(held) is None:
                    del self._held[key]
                    released.append(alert)
        return released
