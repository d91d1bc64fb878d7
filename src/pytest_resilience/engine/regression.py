"""Regression scenarios from real incidents (the seed's tier 4).

An incident the engine handled is a fact about the system: this alert fired on this
workload, the engine healed it in that time. ``python -m pytest_resilience.engine scenario``
turns it into a YAML scenario (our format, see ``scenario.py``) that puts the incident's
*cause* back as a fault under load, with the engine on, and asserts the SLOs come back
within a bound taken from what the engine achieved, and (``expect:``) that the replay
raised the incident's alert again and the engine healed it as it did then: a replay that
misses the cause is healed by the fault's own revert, and must not pass for a fix.
Committed under ``scenarios/``, it keeps that incident fixed: a playbook change or a
release that heals slower, or otherwise, fails it.
Which fault stands for which alert is the table in ``replays.py``.

Everything is read from the store alone (the incident, its alert and labels, actions and
verify results), so a scenario can be written from a production engine's file; the target
is not contacted. Which workload or node the alert is about is what the engine resolved
(``targeting.py``); its pods are selected by ``app=<workload>``, the label both targets give
a workload's pods (the local target sets it, the Kubernetes manifests carry it).

Size: over 500 lines because the incident-to-fault mapping and the scenario text it writes
are one translation; apart, each fault kind would sit far from the YAML it becomes.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from ..errors import ConfigError
from .replays import HEALED_BY, LATENCY_MS, NoReplay, Replay, replay_for
from .store import ESCALATED, RESOLVED, Incident, Store
from .targeting import _POD_NAME_FORMS, TargetLabel

__all__ = [
    "FLOOR_S",
    "SAFETY_FACTOR",
    "STANDARD_SLOS",
    "Regression",
    "build_regression",
    "recovery_bound",
    "regression_command",
]

#: the recovery bound is this many times the engine's time to recover: a shared CI machine
#: is slower than the one the incident happened on, and a regression test must not flake
SAFETY_FACTOR = 2.0
#: and never below this (the scenarios' default ``recovery.within_s``): a fast recovery
#: measured once (3 s) is no promise that every run recovers in 6 s
FLOOR_S = 30.0
#: the bound is rounded up to a multiple of this, so it reads as a decision, not a reading
_ROUND_S = 5.0
_WIDTH = 96  # the written file's line length
#: a lasting fault (latency, a block, a full disk) stays in at least this long, and at most
#: the second figure, whatever the incident lasted
_HOLD_S = (10.0, 120.0)
#: what the shipped scenarios run: the demo's users, the steady state before the fault
LOAD: Mapping[str, Any] = {"users": 20, "spawn_rate": 20}
STEADY_STATE_S = 5
#: when the store holds no SLO of the incident: the shipped scenarios' pair
STANDARD_SLOS: tuple[Mapping[str, Any], ...] = (
    {"error_rate": {"below": 0.01, "window_s": 5}},
    {"latency": {"percentile": 99, "below_ms": 2000, "window_s": 5}},
)
#: kills a crash loop is replayed with: the deaths its alert counted, at least the engine's
#: own crash-loop threshold (EventAlerts' default ``restarts``, so the replay raises the
#: same alert) and at most the second figure (a longer loop adds time, not evidence)
_CRASH_DEATHS = (3, 6)
#: alert names of datastore exporters: their target *is* the dependency a proxy fronts
_DATASTORE = re.compile(r"^(postgres|redis|mysql|mongo)", re.IGNORECASE)


def recovery_bound(time_to_recover_s: float | None) -> float:
    """``recovery.within_s`` for a scenario whose engine recovered in ``time_to_recover_s``:
    :data:`SAFETY_FACTOR` times it, rounded up to 5 s, at least :data:`FLOOR_S`."""
    if time_to_recover_s is None:
        return FLOOR_S
    scaled = math.ceil(SAFETY_FACTOR * time_to_recover_s / _ROUND_S) * _ROUND_S
    return max(FLOOR_S, float(scaled))


@dataclass(frozen=True)
class Regression:
    """The scenario for one incident, and how each of its parts was decided."""

    incident: Incident
    replay: Replay
    subject: str  # the workload or node the fault acts on
    method: tuple[Mapping[str, Any], ...]
    slos: tuple[Mapping[str, Any], ...]
    slo_source: str
    time_to_recover_s: float | None
    within_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: the scenario's ``expect:`` block: the alert again, the step that ended the incident
    expect: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The scenario as our YAML format's mapping (``scenario.load_scenario`` reads it)."""
        i = self.incident
        return {
            "title": f"Regression: {i.alert_name} on {i.target} ({i.id})",
            "description": (
                f"Replays incident {i.id} ({self.replay.cause}): {self.replay.how}. The engine "
                f"healed it in {_seconds(self.time_to_recover_s)}; the SLOs must recover "
                f"within {self.within_s:g} s of the fault."
            ),
            "tags": ["regression", self.replay.fault],
            "remediation": True,
            "load": dict(LOAD),
            "steady-state-hypothesis": {
                "duration_s": STEADY_STATE_S,
                "slos": [dict(s) for s in self.slos],
            },
            "method": [dict(step) for step in self.method],
            "recovery": {"within_s": _number(self.within_s)},
            "expect": {
                k: list(v) if isinstance(v, tuple | list) else v for k, v in self.expect.items()
            },
        }

    def to_yaml(self, command: str) -> str:
        i = self.incident
        if self.time_to_recover_s is not None:
            bound = (
                f"{SAFETY_FACTOR:g} x {self.time_to_recover_s:.1f} s, rounded up to "
                f"{_ROUND_S:g} s, at least {FLOOR_S:g} s = {self.within_s:g} s"
            )
        elif i.dry_run:
            bound = f"the floor, {FLOOR_S:g} s (a dry run: the engine only observed it)"
        else:
            bound = (
                f"the floor, {FLOOR_S:g} s (the engine did not recover it: {i.status}"
                + (f", {i.reason}" if i.reason else "")
                + "); expected to fail until the fix lands"
            )
        header = [
            f"Regression scenario for incident {i.id}: {i.alert_name} on {i.target}.",
            f"Alert: {i.alert_name} ({i.alert.source}, severity {i.alert.severity}), fired "
            f"{_iso(i.alert.starts_at)}, detected {_iso(i.detected_at)}, "
            + (f"{i.status} {_iso(i.closed_at)}" if i.closed_at else f"{i.status}, still open")
            + (f" (playbook {i.playbook!r})." if i.playbook else "."),
            f"Replayed as: {self.replay.fault} on {self.subject} ({self.replay.cause}: "
            f"{self.replay.how}).",
            f"SLOs: {self.slo_source}.",
            f"Recovery bound: {bound}.",
            *(f"Note: {n}." for n in self.notes),
        ]
        body = yaml.dump(
            self.document(),
            Dumper=_PlainDumper,
            sort_keys=False,
            default_flow_style=None,
            width=_WIDTH,
        )
        lines = [
            wrapped
            for entry in header
            for wrapped in textwrap.wrap(
                entry, width=_WIDTH - 2, subsequent_indent="  ", break_on_hyphens=False
            )
        ]
        # the command on one line, unwrapped: copied as it is, it regenerates the file
        lines += ["Generated by:", f"  {command}"]
        return "".join(f"# {line}\n" for line in lines) + "\n" + body


class _PlainDumper(yaml.SafeDumper):
    """No ``&id001``/``*id001``: a scenario is read and edited by people."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def build_regression(
    store: Store,
    incident_id: str,
    *,
    proxy: str | None = None,
    volume: str | None = None,
    release: str | None = None,
) -> Regression:
    """The regression scenario of ``incident_id``.

    ``proxy``: the dependency proxy a latency or saturation replay goes through when the
    alert is about its caller; ``volume``: the service whose volume a disk alert on a node
    fills; ``release``: the faulty version a bad-release replay rolls out. Raises
    ConfigError naming the incident when it cannot be replayed.
    """
    incident = store.incident(incident_id)
    if incident is None:
        known = [i.id for i in store.incidents()][-5:]
        hint = f"; the newest are {', '.join(known)}" if known else "; it holds no incidents"
        raise ConfigError(
            f"no incident {incident_id!r} in {store.path}{hint} (list them with "
            f"`python -m pytest_resilience.engine incidents --store {store.path}`)",
            field="incident",
        )
    name = incident.alert_name
    lost = [n.message for n in store.notes(incident.id) if n.kind == "no_target"]
    if lost:  # the engine looked its labels up on the platform and found nothing there
        raise ConfigError(
            f"incident {incident.id} ({name}) has no target the engine could act on: "
            f"{lost[0]}; a scenario would hit nothing",
            field="incident",
        )
    replay = _replay(store, incident)
    kind, subject = _subject(incident, replay)
    ttr = _time_to_recover(incident)
    notes: list[str] = []
    method = _method(incident, replay, kind, subject, ttr, proxy=proxy, volume=volume,
                     release=release, notes=notes)  # fmt: skip
    slos, source = _slos(store, incident, notes)
    expect = _expect(store, incident, notes)
    where = f"{kind} {subject}"
    if replay.fault == "latency":  # the fault is on the dependency's proxy, felt by the caller
        through = method[0]["args"]["proxy"]
        where = f"proxy {through}" + ("" if through == subject else f" (called by {where})")
    return Regression(
        incident=incident,
        replay=replay,
        subject=where,
        method=tuple(method),
        slos=slos,
        slo_source=source,
        time_to_recover_s=ttr,
        within_s=recovery_bound(ttr),
        notes=tuple(notes),
        expect=expect,
    )


def _replay(store: Store, incident: Incident) -> Replay:
    """The alert's row, else the cause named by the action that healed the incident."""
    try:
        return replay_for(incident.alert_name)
    except NoReplay as exc:
        healed = [
            a.action
            for a in store.actions(incident.id)
            if a.result == "ok" and a.step == incident.step and incident.status == RESOLVED
        ]
        for action in healed:
            if action in HEALED_BY:
                return HEALED_BY[action]
        raise NoReplay(
            f"{exc.message}; nor did an action that healed incident {incident.id} name one "
            f"(healed by: {', '.join(healed) or 'nothing'}; a {' or '.join(HEALED_BY)} would)",
            field="alert",
        ) from None


# -- the target --------------------------------------------------------------------------


def _subject(incident: Incident, replay: Replay) -> tuple[str, str]:
    """("workload" | "node", name): what the engine resolved the alert to (targeting.py)."""
    target = incident.target.strip()
    labels = incident.alert.labels
    if not target:
        tried = ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items())) or "none"
        raise ConfigError(
            f"incident {incident.id} ({incident.alert_name}) has no target: its alert names "
            f"no workload, pod or node (labels: {tried}); nothing to put the fault on",
            field="incident",
        )
    # the label that named the target says what it is (pod, node, host or workload)
    named_by = next((k for k, v in labels.items() if v == target and k != "alertname"), "")
    kind = TargetLabel.inferred(named_by).kind if named_by else "workload"
    if labels.get("workload") == target:
        kind = "workload"  # the engine resolved it to one (targeting.retarget)
    if kind == "host":
        target = re.sub(r"^[a-z][a-z0-9+.-]*://", "", target)
        target = re.sub(r"(:\d+)?(/.*)?$", "", target).strip("[]")
        kind = "node" if replay.fault in ("node_failure", "disk_fill") else "workload"
    if kind == "pod":  # a pod the engine could not list any more: its controller's name
        workload = next(
            (m.group("w") for form in _POD_NAME_FORMS if (m := form.match(target))), None
        )
        if workload is None:
            raise ConfigError(
                f"incident {incident.id} ({incident.alert_name}) names pod {target!r}, whose "
                "workload its name does not tell; write the scenario by hand",
                field="incident",
            )
        target, kind = workload, "workload"
    if replay.fault == "node_failure" and kind != "node":
        kind = "node"  # a node alert's target is the node, whatever label carried it
    return kind, target


# -- the fault ---------------------------------------------------------------------------


def _method(
    incident: Incident,
    replay: Replay,
    kind: str,
    subject: str,
    ttr: float | None,
    *,
    proxy: str | None,
    volume: str | None,
    release: str | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    alert = incident.alert
    selector = f"app={subject}"
    hold = _number(_hold(incident, ttr))
    if replay.fault == "pod_kill":
        kill: dict[str, Any] = {"fault": "pod_kill", "args": {"selector": selector, "count": 1,
                                                              "replaced_within_s": 30}}  # fmt: skip
        _needs_workload(incident, kind, subject)
        if replay.cause != "crash loop":
            return [kill]
        low, high = _CRASH_DEATHS
        deaths = min(high, max(low, int(alert.value or 0)))
        notes.append(f"{deaths} kills in a row, one replacement after another (a crash loop)")
        return [{**kill, "args": dict(kill["args"])} for _ in range(deaths)]
    if replay.fault == "node_failure":
        return [{"fault": "node_failure", "args": {"node": subject, "hang": True},
                 "duration_s": hold}]  # fmt: skip
    if replay.fault == "disk_fill":
        service = volume or (subject if kind == "workload" else None)
        if service is None:
            raise ConfigError(
                f"incident {incident.id}: {incident.alert_name} is about node {subject!r}; "
                "say whose volume fills with --volume SERVICE (a service with a bounded "
                "volume on that node)",
                field="--volume",
            )
        return [{"fault": "disk_fill", "args": {"service": service, "percent": 90},
                 "duration_s": hold}]  # fmt: skip
    _needs_workload(incident, kind, subject)
    if replay.fault == "bad_deploy":
        version = release or alert.labels.get("version")
        if not version:
            raise ConfigError(
                f"incident {incident.id}: {incident.alert_name} on {subject!r} was a bad "
                "release; say which version was faulty with --release VERSION (the one the "
                "engine rolled back from, e.g. v2)",
                field="--release",
            )
        return [{"fault": "bad_deploy", "args": {"workload": subject, "version": version},
                 "duration_s": hold}]  # fmt: skip
    if replay.fault == "memory_stress":
        args: dict[str, Any] = {"selector": selector, "share": _share(alert.value)}
        if alert.labels.get("pod"):
            args["count"] = 1  # the alert read one pod (the worst), not the whole workload
        return [{"fault": "memory_stress", "args": args, "duration_s": hold}]
    if replay.fault == "network_block":
        return [{"fault": "network_block",
                 "args": {"selector": selector, "direction": "ingress", "action": "drop"},
                 "duration_s": hold}]  # fmt: skip
    # latency: on the proxy in front of the dependency
    through = proxy or (subject if _DATASTORE.match(incident.alert_name) else None)
    if through is None:
        raise ConfigError(
            f"incident {incident.id}: {incident.alert_name} on {subject!r} is felt by the "
            "caller, not the dependency that was slow; say which dependency's proxy the "
            "latency goes through with --proxy NAME (e.g. postgres)",
            field="--proxy",
        )
    return [{"fault": "latency", "args": {"proxy": through, "ms": LATENCY_MS},
             "duration_s": hold}]  # fmt: skip


def _needs_workload(incident: Incident, kind: str, subject: str) -> None:
    if kind != "workload":
        raise ConfigError(
            f"incident {incident.id}: {incident.alert_name} is about {kind} {subject!r}, but "
            "its fault acts on a workload's pods; write the scenario by hand",
            field="incident",
        )


def _share(value: float | None) -> float:
    """The memory share the alert read (a fraction or a percentage), else 95%."""
    if value is not None and 1 < value < 100:
        value = value / 100
    if value is None or not 0.5 <= value < 1:
        return 0.95
    return round(min(value, 0.97), 2)


def _hold(incident: Incident, ttr: float | None) -> float:
    """How long a lasting fault stays in: as long as the incident lasted (its time to
    recover), within :data:`_HOLD_S`; the engine must act while the cause is still there."""
    low, high = _HOLD_S
    if ttr is None:  # never recovered: what the shipped bad-release scenario holds its fault
        return 20.0
    return float(min(high, max(low, math.ceil(ttr))))


# -- what the engine did -----------------------------------------------------------------


def _expect(store: Store, incident: Incident, notes: list[str]) -> dict[str, Any]:
    """``expect:``: the incident's alert fired again, the step that ended the incident ran
    (its playbook and its actions, grouped as the engine's ``assert_strategy_ran`` groups
    them) and fixed it, and ``no_page`` when the incident paged nobody."""
    expect: dict[str, Any] = {"alert": incident.alert_name}
    if incident.alert.source == "webhook":
        notes.append(
            "expect.alert is the name Alertmanager delivered; a replay alerted by the "
            "engine's own rules may name it otherwise (its strategy and actions stay): edit "
            "it then"
        )
    last = [a for a in store.actions(incident.id) if a.step == incident.step]
    if last:
        expect["strategy"] = last[0].strategy
        expect["actions"] = [a.action for a in last]
    if incident.status != ESCALATED:
        expect["no_page"] = True
    return expect


# -- the engine's figures -----------------------------------------------------------------


def _time_to_recover(incident: Incident) -> float | None:
    """From the alert's start (the first breach or death the rule or event saw) to the
    incident closed as resolved, i.e. the engine's verify passed: the whole loop, detect +
    mitigate + verify. None if it never recovered (escalated, open, a dry run)."""
    if incident.status != RESOLVED or incident.dry_run or incident.closed_at is None:
        return None
    return round(max(0.0, incident.closed_at - incident.alert.starts_at), 1)


# -- the SLOs ----------------------------------------------------------------------------

_CONDITION = re.compile(r"^(?P<probe>[a-z0-9_]+) (?P<op>below|above|at_most|at_least) "
                        r"(?P<value>[-+0-9.e]+)$")  # fmt: skip
_LATENCY_PROBE = re.compile(r"^(latency_)?p(?P<pct>\d{2})(_latency)?(?P<ms>_ms)?$")


def _slos(
    store: Store, incident: Incident, notes: list[str]
) -> tuple[tuple[Mapping[str, Any], ...], str]:
    """The SLOs that breached, from the verify conditions and the alert's probe; the
    standard pair when the store holds none a YAML scenario can state."""
    found: dict[str, Mapping[str, Any]] = {}
    unstated: list[str] = []
    for verification in store.verifications(incident.id):
        match = _CONDITION.match(verification.condition)
        if match:
            slo = _slo(match["probe"], match["op"], float(match["value"]))
            if slo is None:
                unstated.append(verification.condition)
            else:
                found.setdefault(next(iter(slo)), slo)
    probe = incident.alert.labels.get("probe", "")  # the rule's probe: it breached
    if probe:
        slo = _slo(probe, None, None)
        if slo is None:
            unstated.append(f"{probe} (the alert's probe)")
        else:
            found.setdefault(next(iter(slo)), slo)
    if unstated:
        notes.append(
            "the incident was judged on " + ", ".join(dict.fromkeys(unstated)) + ", which "
            "a YAML scenario's SLOs (error_rate, latency, availability) cannot state"
        )
    if found:
        return tuple(found.values()), (
            "those the incident breached (its alert's probe and the bounds its verify "
            "checked; a bound the store does not hold is the standard one)"
        )
    return STANDARD_SLOS, "none recorded for this incident: the standard error-rate/p99 pair"


def _slo(probe: str, op: str | None, value: float | None) -> Mapping[str, Any] | None:
    if probe == "error_rate" and op in (None, "below", "at_most"):
        return {"error_rate": {"below": value if value is not None else 0.01, "window_s": 5}}
    if probe == "availability" and op in (None, "above", "at_least"):
        return {"availability": {"above": value if value is not None else 0.99, "window_s": 5}}
    match = _LATENCY_PROBE.match(probe)
    if match and op in (None, "below", "at_most"):
        ms = 2000.0 if value is None else value if match["ms"] else value * 1000
        return {"latency": {"percentile": int(match["pct"]), "below_ms": _number(ms),
                            "window_s": 5}}  # fmt: skip
    return None


# -- formatting --------------------------------------------------------------------------


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _seconds(value: float | None) -> str:
    return "no time (it did not recover)" if value is None else f"{value:.1f} s"


def _iso(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def regression_command(argv: Sequence[str]) -> str:
    """The command line that generated a file, for its header (re-run it to regenerate)."""
    import shlex

    return "python -m pytest_resilience.engine " + shlex.join(list(argv))
