"""The Chaos Toolkit experiment model, parsed and validated as chaostoolkit-lib defines it.

The rules are chaoslib's own (``experiment.ensure_experiment_is_valid``,
``activity.ensure_activity_is_valid``, ``hypothesis.ensure_hypothesis_tolerance_is_valid``),
so a file that ``chaos validate`` accepts is accepted here; what differs is the error: it
names the file, the line where we can tell, and the JSON path of the offending value
(``$.method[1].provider.type``), not only the broken rule.

Activities keep their JSON as written (``raw``): providers take JSON arguments, ``${name}``
substitution works on JSON, and the ledger stores resolved rollbacks as JSON.

Size: over 500 lines because it follows chaoslib's validation rule by rule (experiment,
activity, provider, tolerance), so each check sits beside the chaoslib rule it mirrors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Any, cast

import yaml

from ..errors import ConfigError
from ..yamlfile import YamlDocument, dotted, load_yaml

__all__ = [
    "ROLLBACK_STRATEGIES",
    "Activity",
    "Experiment",
    "Hypothesis",
    "experiment_kind",
    "load_experiment",
    "parse_experiment",
]

PROVIDERS = ("http", "process", "python")
ROLLBACK_STRATEGIES = ("default", "always", "never", "deviated")
HYPOTHESIS_STRATEGIES = (
    "default",
    "before-method-only",
    "after-method-only",
    "during-method-only",
    "continuously",
)
_TOLERANCE_TYPES = ("probe", "regex", "jsonpath", "range")
#: keys only a Chaos Toolkit experiment has (our scenario format has none of them)
_CTK_KEYS = {
    "version",
    "contributions",
    "configuration",
    "secrets",
    "extensions",
    "controls",
    "runtime",
    "rollbacks",
}
#: keys only our own YAML scenario format has
_OUR_KEYS = {"load", "recovery", "remediation"}


@dataclass(frozen=True)
class Activity:
    """A probe or an action, or a ``ref`` to one declared elsewhere in the experiment."""

    where: str  #: JSON path, e.g. ``$.method[2]``
    raw: Mapping[str, Any]
    name: str = ""
    type: str = ""  #: "probe" or "action"; empty for a ref
    ref: str | None = None

    @property
    def provider(self) -> Mapping[str, Any]:
        return cast("Mapping[str, Any]", self.raw.get("provider", {}))  # checked a dict on load

    @property
    def background(self) -> bool:
        return bool(self.raw.get("background", False))


@dataclass(frozen=True)
class Hypothesis:
    title: str
    probes: tuple[Activity, ...] = ()


@dataclass(frozen=True)
class Experiment:
    path: Path
    title: str
    description: str
    tags: tuple[str, ...] = ()
    configuration: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, Any] = field(default_factory=dict)
    hypothesis: Hypothesis | None = None
    method: tuple[Activity, ...] = ()
    rollbacks: tuple[Activity, ...] = ()
    #: names of the declared controls: they are logged, never loaded (see run.py)
    controls: tuple[str, ...] = ()
    rollback_strategy: str = "default"
    hypothesis_strategy: str = "default"
    hypothesis_frequency_s: float = 1.0
    #: our ``extensions`` entry (load and SLOs, :mod:`.extension`), None when not opted in
    resilience: Any = None

    @property
    def cwd(self) -> Path:
        """Where providers run: relative paths in experiments are written from here."""
        return self.path.parent

    def resolve(self, activity: Activity) -> Activity:
        """The activity a ``ref`` names (chaoslib looks in the method and hypothesis probes)."""
        if activity.ref is None:
            return activity
        for candidate in (*(self.hypothesis.probes if self.hypothesis else ()), *self.method):
            if candidate.ref is None and candidate.name == activity.ref:
                return candidate
        raise ConfigError(
            f"referenced activity {activity.ref!r} is not declared", field=activity.where
        )

    def python_modules(self) -> list[tuple[str, str]]:
        """(JSON path, module) of every python provider, tolerance probes included."""
        return [(where, str(p.get("module"))) for where, p in self.python_providers()]

    def python_providers(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(JSON path of the activity, provider) of every python provider, tolerance
        probes and dynamic configuration included, as written (not substituted)."""
        found: list[tuple[str, Mapping[str, Any]]] = []
        activities = [*(self.hypothesis.probes if self.hypothesis else ()), *self.method]
        for activity in [*activities, *self.rollbacks]:
            provider = activity.provider
            if provider.get("type") == "python":
                found.append((activity.where, provider))
            tolerance = activity.raw.get("tolerance")
            if isinstance(tolerance, dict) and tolerance.get("type") == "probe":
                inner = tolerance.get("provider", {})
                if inner.get("type") == "python":
                    found.append((f"{activity.where}.tolerance", inner))
        for key, value in self.configuration.items():
            provider = value.get("provider", {}) if isinstance(value, dict) else {}
            if provider.get("type") == "python" and value.get("type") == "probe":
                found.append((f"$.configuration.{key}", provider))
        return found


def experiment_kind(data: Any, *, suffix: str) -> str | None:
    """The format, told by the keys: "chaostoolkit", "scenario" (ours) or None (neither).

    Both formats share ``title``, ``steady-state-hypothesis`` and ``method``; ours has
    ``fault:`` steps and SLOs, Chaos Toolkit's has activities (``type``/``ref``) and probes.
    """
    if not isinstance(data, dict):
        return None
    if suffix == ".json":
        return "chaostoolkit" if _looks_like_ctk(data) else None
    if _OUR_KEYS & set(data) or _has_fault_steps(data):
        return "scenario"
    if _looks_like_ctk(data):
        return "chaostoolkit"
    if not {"title", "description", "tags", "method", "steady-state-hypothesis"} & set(data):
        return None  # nothing of either format: a stray data file
    return "scenario"  # our loader names what is missing or misspelt


def _has_fault_steps(data: dict[str, Any]) -> bool:
    method = data.get("method")
    steady = data.get("steady-state-hypothesis")
    if isinstance(steady, dict) and ("slos" in steady or "duration_s" in steady):
        return True
    return isinstance(method, list) and any(isinstance(s, dict) and "fault" in s for s in method)


def _looks_like_ctk(data: dict[str, Any]) -> bool:
    if _CTK_KEYS & set(data):
        return True
    steady = data.get("steady-state-hypothesis")
    if isinstance(steady, dict) and "probes" in steady:
        return True
    method = data.get("method")
    return isinstance(method, list) and any(
        isinstance(s, dict) and ("type" in s or "ref" in s or "provider" in s) for s in method
    )


def load_experiment(path: Path) -> Experiment:
    """Read and validate one experiment file (JSON or YAML)."""
    return parse_experiment(read_document(path))


def read_document(path: Path) -> YamlDocument:
    """The file's data, with line numbers where the text lets YAML compose it (JSON too)."""
    path = Path(path)
    if path.suffix != ".json":
        return load_yaml(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg}", source=f"{path}:{exc.lineno}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)  # JSON is YAML: for line numbers
    except yaml.YAMLError:
        root = None  # tabs and the like: errors then name the JSON path without a line
    return YamlDocument(path, data, root)


class _Checker:
    """Errors that name the file, the line and the JSON path of the value at fault."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc

    def error(self, message: str, where: Sequence[str | int]) -> ConfigError:
        line = self.doc.line_of(where) if where else None
        source = f"{self.doc.path}:{line}" if line else str(self.doc.path)
        return ConfigError(message, source=source, field=json_path(where))

    def typed(
        self,
        mapping: Mapping[str, Any],
        where: list[str | int],
        kind: type | tuple[type, ...],
        *,
        required: bool = False,
        default: Any = None,
    ) -> Any:
        key = cast(str, where[-1])  # a field path ends at the key of a mapping
        if key not in mapping:
            if required:
                raise self.error("is required", where)
            return default
        value = mapping[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise self.error(f"must be {_json_type(names)}, got {value!r}", where)
        return value


def json_path(where: Sequence[str | int]) -> str:
    """``$.method[1].provider.type``; keys that are not identifiers are quoted."""
    parts: list[str | int] = [
        p if isinstance(p, int) or re.fullmatch(r"[A-Za-z_][\w-]*", p) else json.dumps(p)
        for p in where
    ]
    return "$." + dotted(parts) if parts else "$"


def _json_type(names: str) -> str:
    return (
        names.replace("dict", "an object")
        .replace("list", "a list")
        .replace("str", "a string")
        .replace("bool", "a boolean")
    )


def parse_experiment(doc: YamlDocument) -> Experiment:
    check = _Checker(doc)
    data = doc.data
    if not isinstance(data, dict) or not data:
        raise check.error(
            "an experiment is a JSON object with a title, a description and a method", []
        )
    title = check.typed(data, ["title"], str, required=True)
    if not title:
        raise check.error("experiment requires a title", ["title"])
    description = check.typed(data, ["description"], str, required=True)
    if not description:
        raise check.error("experiment requires a description", ["description"])
    tags = check.typed(data, ["tags"], list, default=[])
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag:
            raise check.error("experiment tags must be non-empty strings", ["tags", i])
    configuration = check.typed(data, ["configuration"], dict, default={})
    for key, value in configuration.items():
        _check_configuration(check, key, value)
    secrets = check.typed(data, ["secrets"], dict, default={})
    for scope in secrets:
        check.typed(secrets, ["secrets", scope], dict)
    hypothesis = None
    steady = check.typed(data, ["steady-state-hypothesis"], dict, default=None)
    if steady is not None:
        where: list[str | int] = ["steady-state-hypothesis"]
        hypo_title = check.typed(steady, [*where, "title"], str, required=True)
        if not hypo_title:
            raise check.error("hypothesis requires a title", [*where, "title"])
        probes = []
        for i, raw in enumerate(check.typed(steady, [*where, "probes"], list, default=[])):
            at: list[str | int] = [*where, "probes", i]
            probe = _activity(check, raw, at)
            if "tolerance" not in raw:
                raise check.error(
                    "hypothesis probe must have a tolerance entry", [*at, "tolerance"]
                )
            _check_tolerance(check, raw["tolerance"], [*at, "tolerance"])
            probes.append(probe)
        hypothesis = Hypothesis(hypo_title, tuple(probes))
    if "method" not in data:
        raise check.error(
            "an experiment requires a method, which can be empty for only checking the "
            "steady-state hypothesis",
            ["method"],
        )
    method = tuple(
        _activity(check, raw, ["method", i])
        for i, raw in enumerate(check.typed(data, ["method"], list))
    )
    rollbacks = tuple(
        _activity(check, raw, ["rollbacks", i])
        for i, raw in enumerate(check.typed(data, ["rollbacks"], list, default=[]))
    )
    names = {p.name for p in (hypothesis.probes if hypothesis else ()) if p.ref is None}
    names |= {a.name for a in method if a.ref is None}
    for activity in (*method, *rollbacks):
        if activity.ref is not None and activity.ref not in names:
            where_ref = [*_path_of(activity.where), "ref"]
            raise check.error(
                f"referenced activity {activity.ref!r} could not be found in the experiment; "
                f"declared activities: {sorted(names)}",
                where_ref,
            )
    controls = check.typed(data, ["controls"], list, default=[])
    control_names = []
    for i, control in enumerate(controls):
        if not isinstance(control, dict) or not control.get("name"):
            raise check.error("a control is an object with a name and a provider", ["controls", i])
        control_names.append(str(control["name"]))
    runtime = check.typed(data, ["runtime"], dict, default={})
    rollback_strategy = _strategy(check, runtime, "rollbacks", ROLLBACK_STRATEGIES)
    hypothesis_strategy = _strategy(check, runtime, "hypothesis", HYPOTHESIS_STRATEGIES)
    frequency = 1.0
    if isinstance(runtime.get("hypothesis"), dict):
        frequency = float(
            check.typed(
                runtime["hypothesis"],
                ["runtime", "hypothesis", "frequency"],
                (int, float),
                default=1,
            )
        )
    resilience = None
    if "extensions" in data:
        from .extension import parse_extensions

        resilience = parse_extensions(doc, data)
    return Experiment(
        path=doc.path,
        title=title,
        description=description,
        tags=tuple(tags),
        configuration=configuration,
        secrets=secrets,
        hypothesis=hypothesis,
        method=method,
        rollbacks=rollbacks,
        controls=tuple(control_names),
        rollback_strategy=rollback_strategy,
        hypothesis_strategy=hypothesis_strategy,
        hypothesis_frequency_s=frequency,
        resilience=resilience,
    )


def _path_of(where: str) -> list[str | int]:
    """``$.method[2]`` back into the parts the line lookup takes."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([\w-]+)|\[(\d+)\]", where):
        parts.append(int(index) if index else name)
    return parts


def _strategy(check: _Checker, runtime: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    block = check.typed(runtime, ["runtime", key], dict, default={})
    value: str = check.typed(block, ["runtime", key, "strategy"], str, default="default")
    if value not in allowed:
        raise check.error(
            f"unknown {key} strategy {value!r}; use one of {', '.join(allowed)}",
            ["runtime", key, "strategy"],
        )
    return value


def _check_configuration(check: _Checker, key: str, value: Any) -> None:
    where: list[str | int] = ["configuration", key]
    if not isinstance(value, dict) or "type" not in value:
        return  # a plain value, used as it is
    if value["type"] == "env":
        check.typed(value, [*where, "key"], str, required=True)
    elif value["type"] == "probe":
        _activity(check, value, where)


def _activity(check: _Checker, raw: Any, where: list[str | int]) -> Activity:
    path = json_path(where)
    if not isinstance(raw, dict) or not raw:
        raise check.error("empty activity is no activity", where)
    if "ref" in raw:
        ref = raw["ref"]
        if not isinstance(ref, str) or not ref:
            raise check.error("reference to activity must be a non-empty string", [*where, "ref"])
        return Activity(where=path, raw=raw, ref=ref)
    kind = check.typed(raw, [*where, "type"], str, required=True)
    if kind not in ("probe", "action"):
        raise check.error(
            f"{kind!r} is not a supported activity type; use 'probe' or 'action'", [*where, "type"]
        )
    name = check.typed(raw, [*where, "name"], str, required=True)
    if not name:
        raise check.error("an activity must have a name", [*where, "name"])
    provider = check.typed(raw, [*where, "provider"], dict, required=True)
    _check_provider(check, provider, [*where, "provider"], name)
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, Number)):
        raise check.error("activity timeout must be a number", [*where, "timeout"])
    pauses = check.typed(raw, [*where, "pauses"], dict, default={})
    for moment in ("before", "after"):
        pause = pauses.get(moment)
        if pause is None:
            continue
        if isinstance(pause, str):
            if not (pause.startswith("${") and pause.endswith("}")):
                raise check.error(
                    f"activity {moment} pause must be a number or a ${{name}} of the "
                    "configuration or secrets",
                    [*where, "pauses", moment],
                )
        elif isinstance(pause, bool) or not isinstance(pause, Number):
            raise check.error(
                f"activity {moment} pause must be a number", [*where, "pauses", moment]
            )
    check.typed(raw, [*where, "background"], bool, default=False)
    return Activity(where=path, raw=raw, name=name, type=kind)


def _check_provider(
    check: _Checker, provider: dict[str, Any], where: list[str | int], name: str
) -> None:
    kind = provider.get("type")
    if not kind:
        raise check.error("a provider must have a type", [*where, "type"])
    if kind not in PROVIDERS:
        raise check.error(
            f"unknown provider type {kind!r}; use one of {', '.join(PROVIDERS)}", [*where, "type"]
        )
    if kind == "python":
        check.typed(provider, [*where, "module"], str, required=True)
        check.typed(provider, [*where, "func"], str, required=True)
        check.typed(provider, [*where, "arguments"], dict, default={})
        check.typed(provider, [*where, "secrets"], list, default=[])
    elif kind == "process":
        if not check.typed(provider, [*where, "path"], str, required=True):
            raise check.error("a process activity must have a path", [*where, "path"])
        check.typed(provider, [*where, "arguments"], (str, list, dict), default=[])
        timeout = provider.get("timeout")
        if timeout is not None and not isinstance(timeout, Number):
            raise check.error("process timeout must be a number of seconds", [*where, "timeout"])
    else:
        if not check.typed(provider, [*where, "url"], str, required=True):
            raise check.error("a HTTP activity must have a URL", [*where, "url"])
        check.typed(provider, [*where, "method"], str, default="GET")
        check.typed(provider, [*where, "headers"], dict, default={})
        timeout = provider.get("timeout")
        if timeout is not None and not (
            isinstance(timeout, Number | str) or (isinstance(timeout, list) and len(timeout) == 2)
        ):
            raise check.error(
                "HTTP timeout is a number of seconds or [connect, read]", [*where, "timeout"]
            )


def _check_tolerance(check: _Checker, tolerance: Any, where: list[str | int]) -> None:
    if not isinstance(tolerance, bool | int | float | list | str | dict):
        raise check.error(
            "hypothesis probe tolerance must be a boolean, a number, a string, a list of values "
            "or [low, high], or an object of type probe, regex, jsonpath or range",
            where,
        )
    if not isinstance(tolerance, dict):
        return
    kind = tolerance.get("type")
    if kind not in _TOLERANCE_TYPES:
        raise check.error(
            f"hypothesis probe tolerance type {kind!r} is unsupported; use one of "
            f"{', '.join(_TOLERANCE_TYPES)}",
            [*where, "type"],
        )
    if kind == "probe":
        _activity(check, tolerance, where)
    elif kind == "regex":
        pattern = check.typed(tolerance, [*where, "pattern"], str, required=True)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise check.error(
                f"regex pattern {pattern!r} is invalid: {exc}", [*where, "pattern"]
            ) from None
    elif kind == "jsonpath":
        from .tolerance import check_jsonpath

        path = check.typed(tolerance, [*where, "path"], str, required=True)
        problem = check_jsonpath(path)
        if problem:
            raise check.error(problem, [*where, "path"])
        check.typed(tolerance, [*where, "count"], int, default=None)
    else:
        bounds = check.typed(tolerance, [*where, "range"], list, required=True)
        if len(bounds) != 2:
            raise check.error("hypothesis range must be made of two values", [*where, "range"])
        for i, bound in enumerate(bounds):
            if isinstance(bound, bool) or not isinstance(bound, Number):
                raise check.error(
                    f"hypothesis range {('lower', 'upper')[i]} boundary must be a number",
                    [*where, "range", i],
                )
