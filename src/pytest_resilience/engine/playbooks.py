"""Remediation playbooks: YAML files, validated when loaded.

The seed playbooks ship inside the package (:data:`BUNDLED_PLAYBOOKS`), so a project
with no ``remediators/`` of its own still gets every strategy; a project's directory
is layered on top and replaces a bundled playbook by its ``playbook`` name.

Schema (one playbook per file; every duration is ``500ms``, ``5s``, ``2m`` or a number of
seconds)::

    playbook: High Error Rate          # required, unique name
    alerts:                            # required: alert names this playbook handles
      - ErrorRateHighCritical
      - alert: KubePodCrashLooping     # an alias: a name real rule sets use (kube-prometheus)
        as: PodCrashLoop               # optional: `when: {alert: ...}` sees it as this name
        target: [pod, deployment]      # labels naming what to act on, tried in order; each
                                       # names what it says (pod, node; instance: a host),
                                       # any other label a workload; or {label: x, kind: node}
    description: free text
    rules:                             # optional: alerts the engine raises itself from probes
      - {alert: HighMemoryUsage, probe: memory_share, above: 0.9, for: 10s,
         target: api, severity: warning, labels: {resource: memory}}
    steps:                             # required, tried in order until one is verified fixed
      - name: roll back                # required
        options:                       # first option whose `when` matches the alert wins
          - when: {alert: [DeploymentFailure], labels: {error_type: [deploy, 5xx]},
                   value: ">= 0.95", severity: critical}   # all given keys must match
            actions: [rollback, {action: scale_up, by: 1}]
            verify: {...}              # optional, overrides the step's verify
          - actions: [graceful_restart]  # no `when`: the default option
        # or, without options:  actions: [...]
        verify:
          wait: 5s                     # settle time before looking
          window: 10s                  # the condition must hold over this window
          interval: 1s                 # probe sampling period
          condition: {probe: error_rate, below: 0.01}  # or {ready: true} or {resolved: true};
                                       # omitted: the alert's own rule, else workload ready
          on_fixed: resolve            # resolve
          on_not_fixed: next           # next | escalate | warn
          on_inconclusive: escalate    # next | escalate | warn | resolve (probe gave no data)
    escalate: {severity: critical, summary: "text for the page"}
    inhibit_rules:                     # optional: alerts held back while a cause is handled,
      - source_matchers: ['alertname = NodeNotReady']      # as Alertmanager's inhibit_rules
        target_matchers: ['alertname =~ "HighErrorRate|ErrorRateHighCritical"']
        equal: [target]                # labels whose values the two must share
    follow_up:                         # recorded on every incident as follow-up items
      prevention: [...]
      rca: [...]

Actions name Python functions registered with :func:`~.actions.action`; an unknown action
or parameter is a :class:`~pytest_resilience.errors.ConfigError` naming file, line, field.
Inhibit rules apply together, whichever loaded playbook carries them (:mod:`.inhibition`
has their semantics); a playbook replaced by a project's of the same name takes its
rules with it.

Size: over 500 lines: one small reader per section of the schema, all sharing ``_Reader``.

An alias's ``target`` labels are looked up on the target when the alert fires (see
:mod:`.targeting`): an alert whose labels name nothing the target has (another namespace,
an exporter's own pod, a host that is no node) opens an incident with a note saying what
was tried and is escalated, never acted on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..yamlfile import YamlDocument, load_yaml
from .actions import REGISTRY, check_params  # importing the actions registers the built-ins
from .alerts import _OPS, Alert, Rule, compare
from .durations import parse_duration
from .inhibition import InhibitRule, Matcher, is_label_name
from .targeting import KINDS, TargetLabel

__all__ = [
    "BUNDLED_PLAYBOOKS",
    "ActionCall",
    "Alias",
    "Condition",
    "Option",
    "Playbook",
    "Step",
    "VerifySpec",
    "load_playbook",
    "load_playbooks",
    "parse_duration",
]

BUNDLED_PLAYBOOKS = Path(__file__).resolve().parent.parent / "remediators"

_POLICIES_NOT_FIXED = ("next", "escalate", "warn")
_POLICIES_INCONCLUSIVE = ("next", "escalate", "warn", "resolve")
_CMP = re.compile(r"^\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_CMP_OPS = {">": "above", "<": "below", ">=": "at_least", "<=": "at_most"}


@dataclass(frozen=True)
class ActionCall:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Condition:
    """What "fixed" means: a probe bound, the workload ready, or the alert resolved."""

    kind: str  # "probe" | "ready" | "resolved" | "default"
    probe: str = ""
    op: str = ""
    threshold: float = 0.0

    def holds(self, value: float) -> bool:
        return compare(self.op, value, self.threshold)


@dataclass(frozen=True)
class VerifySpec:
    wait_s: float = 5.0
    window_s: float = 10.0
    interval_s: float = 1.0
    condition: Condition = Condition("default")
    on_fixed: str = "resolve"
    on_not_fixed: str = "next"
    on_inconclusive: str = "escalate"


@dataclass(frozen=True)
class When:
    alerts: tuple[str, ...] = ()
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    value: tuple[str, float] | None = None
    severity: tuple[str, ...] = ()

    def matches(self, alert: Alert, *, known_as: str = "") -> bool:
        """``known_as``: the name an alias stands for (options name the playbook's alerts)."""
        if self.alerts and alert.name not in self.alerts and known_as not in self.alerts:
            return False
        if self.severity and alert.severity not in self.severity:
            return False
        for key, wanted in self.labels.items():
            if str(alert.labels.get(key, alert.annotations.get(key, ""))) not in wanted:
                return False
        if self.value is not None:
            return alert.value is not None and compare(self.value[0], alert.value, self.value[1])
        return True


@dataclass(frozen=True)
class Option:
    when: When | None
    actions: tuple[ActionCall, ...]
    verify: VerifySpec | None = None


@dataclass(frozen=True)
class Step:
    name: str
    options: tuple[Option, ...]
    verify: VerifySpec = VerifySpec()

    def choose(self, alert: Alert, *, known_as: str = "") -> Option | None:
        return next(
            (o for o in self.options if o.when is None or o.when.matches(alert, known_as=known_as)),
            None,
        )


@dataclass(frozen=True)
class Alias:
    """Another name for an alert a playbook handles, and the labels that name its target."""

    name: str
    known_as: str = ""
    target: tuple[TargetLabel, ...] = ()


@dataclass(frozen=True)
class Playbook:
    name: str
    alerts: tuple[str, ...]
    steps: tuple[Step, ...]
    source: str = ""
    description: str = ""
    rules: tuple[Rule, ...] = ()
    escalate_severity: str = "critical"
    escalate_summary: str = ""
    follow_up: tuple[str, ...] = ()
    aliases: Mapping[str, Alias] = field(default_factory=dict)
    inhibit_rules: tuple[InhibitRule, ...] = ()

    def known_as(self, alert_name: str) -> str:
        """The playbook's own name for ``alert_name`` (itself unless an alias says other)."""
        alias = self.aliases.get(alert_name)
        return alias.known_as or alert_name if alias else alert_name


# -- reading a playbook file ---------------------------------------------------------------


class _Reader:
    """Reads one file and raises ConfigError naming ``file:line`` and the dotted field."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.path = doc.path

    def error(
        self, message: str, path: str, node: object = None, key: str | int | None = None
    ) -> ConfigError:
        """``node`` is the dict or list at fault (``key`` the key or index in it)."""
        line = self.doc.line_in(node, key)
        source = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(message, source=source, field=path, line=line)

    def get(
        self,
        node: dict[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        *,
        required: bool = False,
    ) -> Any:
        """``node[key]`` checked to be a ``kind`` (None when absent and not required)."""
        if key not in node:
            if required:
                raise self.error(f"missing required field {key!r}", _join(path, key), node)
            return None
        value = node[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(
                f"expected {names}, got {type(value).__name__} {value!r}",
                _join(path, key),
                node,
                key,
            )
        return value

    def known(self, node: dict[str, Any], allowed: Iterable[str], path: str) -> None:
        allowed = set(allowed)
        for key in node:
            if key not in allowed:
                raise self.error(
                    f"unknown field {key!r}; expected one of {sorted(allowed)}",
                    _join(path, str(key)),
                    node,
                    str(key),
                )


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def load_playbooks(*directories: str | Path) -> list[Playbook]:
    """Every ``*.yaml``/``*.yml`` in ``directories``, layered in the order given.

    A later directory wins: its playbook replaces one of the same name, and takes the
    alerts it names from earlier playbooks (a project's own playbook for
    ``HighMemoryUsage`` is the one that runs). Within one directory names are unique and
    each alert routes to one playbook.
    """
    by_name: dict[str, Playbook] = {}
    for directory in directories:
        layer = _load_directory(Path(directory))
        claimed = {alert for book in layer for alert in book.alerts}
        for name, book in list(by_name.items()):
            kept = tuple(alert for alert in book.alerts if alert not in claimed)
            if not kept:
                del by_name[name]
            elif kept != book.alerts:
                by_name[name] = replace(book, alerts=kept)
        by_name.update({book.name: book for book in layer})
    return list(by_name.values())


def _load_directory(directory: Path) -> list[Playbook]:
    if not directory.is_dir():
        raise ConfigError(
            f"playbook directory {str(directory)!r} does not exist", field="playbooks"
        )
    books: list[Playbook] = []
    names: dict[str, Playbook] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        book = load_playbook(path)
        if book.name in names:
            raise ConfigError(
                f"playbook name {book.name!r} also used in {names[book.name].source}",
                source=str(path),
                field="playbook",
            )
        names[book.name] = book
        books.append(book)
    by_alert: dict[str, Playbook] = {}
    for book in books:
        for alert in book.alerts:
            if alert in by_alert:
                raise ConfigError(
                    f"alert {alert!r} is already handled by playbook "
                    f"{by_alert[alert].name!r} ({by_alert[alert].source})",
                    source=str(book.source),
                    field="alerts",
                )
            by_alert[alert] = book
    return books


def load_playbook(path: str | Path) -> Playbook:
    path = Path(path)
    r = _Reader(load_yaml(path))
    doc = r.doc.data
    if not isinstance(doc, dict):
        raise ConfigError("a playbook file must be a mapping", source=str(path))
    r.known(
        doc,
        (
            "playbook",
            "alerts",
            "description",
            "rules",
            "steps",
            "escalate",
            "follow_up",
            "inhibit_rules",
        ),
        "",
    )
    name = r.get(doc, "playbook", "", str, required=True)
    alerts_node = r.get(doc, "alerts", "", list, required=True)
    if not alerts_node:
        raise r.error("must be a non-empty list of alert names", "alerts", doc, "alerts")
    alerts: list[str] = []
    aliases: dict[str, Alias] = {}
    for i, item in enumerate(alerts_node):
        entry = _alias(r, item, alerts_node, i)
        if entry.name in alerts:
            raise r.error(
                f"alert {entry.name!r} is listed twice", _join("alerts", i), alerts_node, i
            )
        alerts.append(entry.name)
        if isinstance(item, dict):
            aliases[entry.name] = entry
    plain = [a for a in alerts if a not in aliases]
    for i, item in enumerate(alerts_node):
        known = aliases[item["alert"]].known_as if isinstance(item, dict) else ""
        if known and known not in plain:
            raise r.error(
                f"'as: {known}' must name one of this playbook's own alerts {plain}",
                _join(_join("alerts", i), "as"),
                item,
                "as",
            )
    steps_node = r.get(doc, "steps", "", list, required=True)
    if not steps_node:
        raise r.error("a playbook needs at least one step", "steps", doc, "steps")
    steps = tuple(_step(r, node, _join("steps", i)) for i, node in enumerate(steps_node))
    rules = tuple(
        _rule(r, node, _join("rules", i))
        for i, node in enumerate(r.get(doc, "rules", "", list) or [])
    )
    inhibit_rules = tuple(
        _inhibit_rule(r, node, r.get(doc, "inhibit_rules", "", list), i)
        for i, node in enumerate(r.get(doc, "inhibit_rules", "", list) or [])
    )
    esc = r.get(doc, "escalate", "", dict) or {}
    r.known(esc, ("severity", "summary"), "escalate")
    follow = r.get(doc, "follow_up", "", dict) or {}
    r.known(follow, ("prevention", "rca"), "follow_up")
    items: list[str] = []
    for kind in ("prevention", "rca"):
        for item in r.get(follow, kind, "follow_up", list) or []:
            items.append(f"{kind}: {item}")
    return Playbook(
        name=name,
        alerts=tuple(alerts),
        steps=steps,
        source=str(path),
        description=str(doc.get("description", "")),
        rules=rules,
        escalate_severity=str(esc.get("severity", "critical")),
        escalate_summary=str(esc.get("summary", "")),
        follow_up=tuple(items),
        aliases=aliases,
        inhibit_rules=inhibit_rules,
    )


def _alias(r: _Reader, item: Any, seq: list[Any], index: int) -> Alias:
    """A plain alert name, or ``{alert, as, target}``: a real rule set's name for it."""
    where = _join("alerts", index)
    if isinstance(item, str) and item:
        return Alias(item)
    if not isinstance(item, dict):
        raise r.error(
            f"an alert is a name or a mapping with 'alert:', got {item!r}", where, seq, index
        )
    r.known(item, ("alert", "as", "target"), where)
    name = r.get(item, "alert", where, str, required=True)
    known_as = r.get(item, "as", where, str) or ""
    labels = r.get(item, "target", where, list) or []
    specs: list[TargetLabel] = []
    for j, spec in enumerate(labels):
        at = _join(_join(where, "target"), j)
        if isinstance(spec, str) and spec:
            specs.append(TargetLabel.inferred(spec))
            continue
        if not isinstance(spec, dict):
            raise r.error(
                f"a target label is a name or {{label, kind}}, got {spec!r}", at, labels, j
            )
        r.known(spec, ("label", "kind"), at)
        label = r.get(spec, "label", at, str, required=True)
        kind = r.get(spec, "kind", at, str) or TargetLabel.inferred(label).kind
        if kind not in KINDS:
            raise r.error(
                f"expected one of {list(KINDS)}, got {kind!r}", _join(at, "kind"), spec, "kind"
            )
        specs.append(TargetLabel(label, kind))
    if not specs:
        raise r.error(
            "an alias needs 'target': the labels that name what to act on, e.g. [pod]",
            _join(where, "target"),
            item,
            "alert",
        )
    return Alias(name, known_as, tuple(specs))


def _step(r: _Reader, node: Any, path: str) -> Step:
    if not isinstance(node, dict):
        raise r.error(f"a step must be a mapping, got {node!r}", path, node)
    r.known(node, ("name", "options", "actions", "verify"), path)
    name = r.get(node, "name", path, str, required=True)
    verify = _verify(r, node["verify"], _join(path, "verify")) if "verify" in node else VerifySpec()
    if ("options" in node) == ("actions" in node):
        raise r.error("give either 'options' or 'actions'", _join(path, "options"), node)
    options: tuple[Option, ...]
    if "actions" in node:
        options = (Option(None, _actions(r, node, _join(path, "actions"))),)
    else:
        opts = r.get(node, "options", path, list)
        options = tuple(_option(r, o, _join(_join(path, "options"), i)) for i, o in enumerate(opts))
    return Step(name=name, options=options, verify=verify)


def _option(r: _Reader, node: Any, path: str) -> Option:
    if not isinstance(node, dict):
        raise r.error(f"an option must be a mapping, got {node!r}", path, node)
    r.known(node, ("when", "actions", "verify"), path)
    when = _when(r, node["when"], _join(path, "when")) if "when" in node else None
    verify = _verify(r, node["verify"], _join(path, "verify")) if "verify" in node else None
    return Option(when, _actions(r, node, _join(path, "actions")), verify)


def _when(r: _Reader, node: Any, path: str) -> When:
    if not isinstance(node, dict):
        raise r.error("'when' must be a mapping", path, node)
    r.known(node, ("alert", "labels", "value", "severity"), path)

    def names(key: str) -> tuple[str, ...]:
        value = node.get(key)
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(str(v) for v in value)

    labels = r.get(node, "labels", path, dict) or {}
    value = None
    if "value" in node:
        match = _CMP.match(str(node["value"]))
        if not match:
            raise r.error(
                f"expected a comparison like '>= 0.95', got {node['value']!r}",
                _join(path, "value"),
                node,
                "value",
            )
        value = (_CMP_OPS[match.group(1)], float(match.group(2)))
    return When(
        alerts=names("alert"),
        labels={
            str(k): (tuple(str(x) for x in v) if isinstance(v, list) else (str(v),))
            for k, v in labels.items()
        },
        value=value,
        severity=names("severity"),
    )


def _actions(r: _Reader, node: dict[str, Any], path: str) -> tuple[ActionCall, ...]:
    items = node.get("actions")
    if not isinstance(items, list) or not items:
        raise r.error("must be a non-empty list of actions", path, node, "actions")
    calls = []
    for i, item in enumerate(items):
        where = _join(path, i)
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and isinstance(item.get("action"), str):
            name, params = item["action"], {k: v for k, v in item.items() if k != "action"}
        else:
            raise r.error(
                f"an action is a name or a mapping with 'action:', got {item!r}", where, items, i
            )
        fn = REGISTRY.get(name)
        if fn is None:
            raise r.error(
                f"unknown action {name!r}; registered: {', '.join(sorted(REGISTRY))}",
                _join(where, "action"),
                item if isinstance(item, dict) else items,
                "action" if isinstance(item, dict) else i,
            )
        try:
            check_params(name, params)
        except (TypeError, ValueError) as exc:
            raise r.error(f"bad parameters for action {name!r}: {exc}", where, item) from None
        calls.append(ActionCall(name, dict(params)))
    return tuple(calls)


def _verify(r: _Reader, node: Any, path: str) -> VerifySpec:
    if not isinstance(node, dict):
        raise r.error("'verify' must be a mapping", path, node)
    keys = (
        "wait",
        "window",
        "interval",
        "condition",
        "on_fixed",
        "on_not_fixed",
        "on_inconclusive",
    )
    r.known(node, keys, path)

    def duration(key: str, default: float) -> float:
        if key not in node:
            return default
        try:
            return parse_duration(node[key])
        except ConfigError as exc:
            raise r.error(str(exc), _join(path, key), node, key) from None

    def policy(key: str, allowed: tuple[str, ...], default: str) -> str:
        value: str = node.get(key, default)
        if value not in allowed:
            raise r.error(
                f"expected one of {list(allowed)}, got {value!r}", _join(path, key), node, key
            )
        return value

    condition = Condition("default")
    if "condition" in node:
        condition = _condition(r, node["condition"], _join(path, "condition"))
    return VerifySpec(
        wait_s=duration("wait", 5.0),
        window_s=duration("window", 10.0),
        interval_s=max(0.01, duration("interval", 1.0)),
        condition=condition,
        on_fixed=policy("on_fixed", ("resolve",), "resolve"),
        on_not_fixed=policy("on_not_fixed", _POLICIES_NOT_FIXED, "next"),
        on_inconclusive=policy("on_inconclusive", _POLICIES_INCONCLUSIVE, "escalate"),
    )


def _condition(r: _Reader, node: Any, path: str) -> Condition:
    if not isinstance(node, dict):
        raise r.error("'condition' must be a mapping", path, node)
    if node.get("ready") is True:
        r.known(node, ("ready",), path)
        return Condition("ready")
    if node.get("resolved") is True:
        r.known(node, ("resolved",), path)
        return Condition("resolved")
    r.known(node, ("probe", *_OPS), path)
    probe = r.get(node, "probe", path, str, required=True)
    ops = [k for k in _OPS if k in node]
    if len(ops) != 1:
        raise r.error(f"give exactly one of {list(_OPS)}", path, node)
    threshold = r.get(node, ops[0], path, (int, float))
    return Condition("probe", probe=probe, op=ops[0], threshold=float(threshold))


def _rule(r: _Reader, node: Any, path: str) -> Rule:
    if not isinstance(node, dict):
        raise r.error("a rule must be a mapping", path, node)
    r.known(node, ("alert", "probe", "for", "target", "severity", "labels", *_OPS), path)
    ops = [k for k in _OPS if k in node]
    if len(ops) != 1:
        raise r.error(f"give exactly one of {list(_OPS)}", path, node)
    try:
        for_s = parse_duration(node.get("for", 0))
    except ConfigError as exc:
        raise r.error(str(exc), _join(path, "for"), node, "for") from None
    labels = r.get(node, "labels", path, dict) or {}
    return Rule(
        alert=r.get(node, "alert", path, str, required=True),
        probe=r.get(node, "probe", path, str, required=True),
        op=ops[0],
        threshold=float(r.get(node, ops[0], path, (int, float))),
        target=r.get(node, "target", path, str, required=True),
        for_s=for_s,
        severity=str(node.get("severity", "warning")),
        labels={str(k): str(v) for k, v in labels.items()},
    )


_DEPRECATED = {
    "source_match": "source_matchers",
    "source_match_re": "source_matchers",
    "target_match": "target_matchers",
    "target_match_re": "target_matchers",
}


def _inhibit_rule(r: _Reader, node: Any, seq: list[Any], index: int) -> InhibitRule:
    """``{source_matchers, target_matchers, equal}``, as in Alertmanager's configuration."""
    path = _join("inhibit_rules", index)
    if not isinstance(node, dict):
        raise r.error(f"an inhibit rule must be a mapping, got {node!r}", path, seq, index)
    for old, new in _DEPRECATED.items():
        if old in node:
            raise r.error(
                f"{old!r} is Alertmanager's deprecated form; write {new}: "
                "['label = value'] (=~ for a regex)",
                _join(path, old),
                node,
                old,
            )
    r.known(node, ("source_matchers", "target_matchers", "equal"), path)
    source = _matchers(r, node, "source_matchers", path)
    target = _matchers(r, node, "target_matchers", path)
    if not target:
        raise r.error(
            "an inhibit rule needs 'target_matchers' naming the alerts it holds back "
            "(none would hold back every alert), e.g. ['alertname = HighErrorRate']",
            _join(path, "target_matchers"),
            node,
            "target_matchers" if "target_matchers" in node else None,
        )
    equal = r.get(node, "equal", path, list) or []
    for i, name in enumerate(equal):
        if not isinstance(name, str) or not is_label_name(name):
            raise r.error(
                f"expected a label name, got {name!r}", _join(_join(path, "equal"), i), equal, i
            )
    line = r.doc.line_in(seq, index)
    return InhibitRule(
        source=source,
        target=target,
        equal=tuple(equal),
        origin=f"{r.path}:{line}" if line else str(r.path),
    )


def _matchers(r: _Reader, node: dict[str, Any], key: str, path: str) -> tuple[Matcher, ...]:
    items = r.get(node, key, path, list) or []
    matchers: list[Matcher] = []
    for i, text in enumerate(items):
        where = _join(_join(path, key), i)
        if not isinstance(text, str):
            raise r.error(
                f"a matcher is a string like 'alertname = NodeNotReady', got {text!r}",
                where,
                items,
                i,
            )
        try:
            matchers.append(Matcher.parse(text))
        except ValueError as exc:
            raise r.error(str(exc), where, items, i) from None
    return tuple(matchers)
