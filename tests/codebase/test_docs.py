"""The docs in docs/ stay true to the code: what the loaders accept is documented, and what
the docs show is accepted.

Keys are asked of the validators themselves (a key they refuse makes them list the known
ones), so a key added to the code without a line in the docs fails here, and every YAML
example in the docs is loaded with the project's own loader. Nothing starts a target.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import pytest_resilience
from pytest_resilience.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PACKAGE = Path(pytest_resilience.__file__).resolve().parent


def _doc(name: str) -> str:
    path = DOCS / name
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing: the docs of issue 14 live in docs/")
    return path.read_text()


def _yaml_blocks(text: str) -> list[tuple[int, str]]:
    """Each ```yaml block of a markdown text, with the line its body starts on."""
    return [
        (text.count("\n", 0, m.start(1)) + 1, m.group(1))
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    ]


def _missing(names: Iterable[object], text: str) -> list[str]:
    """The names that no inline code span of ``text`` shows (`name`, `{name: x}`)."""
    spans = re.findall(r"`([^`\n]+)`", text)
    return sorted(
        str(n)
        for n in names
        if not any(re.search(rf"(?<![\w-]){re.escape(str(n))}(?![\w-])", s) for s in spans)
    )


def _section(text: str, heading: str) -> str:
    """The part of a markdown text from ``heading`` to the next heading of its level."""
    level = len(heading.split(" ", 1)[0])
    assert f"\n{heading}\n" in text, f"no section {heading!r}"
    return re.split(rf"\n#{{1,{level}}} ", text.split(f"\n{heading}\n", 1)[1], maxsplit=1)[0]


def _listed(message: str, after: str) -> list[str]:
    """The Python list literal that follows ``after`` in an error message."""
    match = re.search(re.escape(after) + r"\s*(\[[^\]]*\])", message)
    assert match, f"no list after {after!r} in {message!r}"
    return list(ast.literal_eval(match.group(1)))


def _row(text: str, name: str) -> str:
    """The table row of ``text`` whose first cell is `name`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    assert rows, f"no table row for `{name}`"
    return rows[0]


# -- playbooks ---------------------------------------------------------------------------


def _playbook() -> dict[str, Any]:
    return {
        "playbook": "Probe",
        "alerts": ["A", {"alert": "B", "as": "A", "target": [{"label": "pod"}]}],
        "rules": [{"alert": "A", "probe": "error_rate", "above": 0.5, "target": "api"}],
        "steps": [
            {
                "name": "s",
                "options": [{"when": {"alert": "A"}, "actions": ["rollback"]}],
                "verify": {"condition": {"probe": "error_rate", "below": 0.1}},
            }
        ],
        "escalate": {"severity": "critical"},
        "follow_up": {"prevention": ["p"]},
        "inhibit_rules": [
            {"source_matchers": ["alertname = A"], "target_matchers": ["x = y"], "equal": ["t"]}
        ],
    }


#: where a playbook mapping sits -> how to reach it in :func:`_playbook`
_PLAYBOOK_LEVELS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "top": lambda p: p,
    "alias": lambda p: p["alerts"][1],
    "target label": lambda p: p["alerts"][1]["target"][0],
    "rule": lambda p: p["rules"][0],
    "step": lambda p: p["steps"][0],
    "option": lambda p: p["steps"][0]["options"][0],
    "when": lambda p: p["steps"][0]["options"][0]["when"],
    "verify": lambda p: p["steps"][0]["verify"],
    "condition": lambda p: p["steps"][0]["verify"]["condition"],
    "escalate": lambda p: p["escalate"],
    "follow_up": lambda p: p["follow_up"],
    "inhibit rule": lambda p: p["inhibit_rules"][0],
}


def _load_playbook_error(tmp_path: Path, data: dict[str, Any]) -> str:
    from pytest_resilience.engine.playbooks import load_playbook

    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_playbook(path)
    return str(caught.value)


def _playbook_fields(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(level, the keys the validator accepts there), asked of the validator."""
    for level, reach in _PLAYBOOK_LEVELS.items():
        data = _playbook()
        reach(data)["no_such_key"] = 1
        yield level, _listed(_load_playbook_error(tmp_path, data), "expected one of")
    for ready in ({"ready": True}, {"resolved": True}):
        data = _playbook()
        data["steps"][0]["verify"]["condition"] = {**ready, "no_such_key": 1}
        yield f"condition {ready}", _listed(_load_playbook_error(tmp_path, data), "one of")


def _playbook_values(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(field, the values the validator accepts there): policies and target label kinds."""
    for policy in ("on_fixed", "on_not_fixed", "on_inconclusive"):
        data = _playbook()
        data["steps"][0]["verify"][policy] = "no_such_policy"
        yield policy, _listed(_load_playbook_error(tmp_path, data), "expected one of")
    data = _playbook()
    data["alerts"][1]["target"][0]["kind"] = "no_such_kind"
    yield "target kind", _listed(_load_playbook_error(tmp_path, data), "expected one of")


def test_every_playbook_key_the_validator_accepts_is_documented(tmp_path: Path) -> None:
    text = _doc("playbooks.md")
    found = dict(_playbook_fields(tmp_path))
    assert len(found) == len(_PLAYBOOK_LEVELS) + 2
    undocumented = {level: _missing(keys, text) for level, keys in found.items()}
    assert not any(undocumented.values()), (
        f"docs/playbooks.md does not mention these keys: {undocumented}"
    )


def test_every_verify_policy_and_target_kind_is_documented(tmp_path: Path) -> None:
    text = _doc("playbooks.md")
    undocumented = {f: _missing(v, text) for f, v in _playbook_values(tmp_path)}
    assert not any(undocumented.values()), f"docs/playbooks.md lacks: {undocumented}"


def test_every_registered_action_is_documented_with_its_parameters() -> None:
    from pytest_resilience.engine.actions import REGISTRY

    text = _doc("playbooks.md")
    section = _section(text, "## Built-in actions")
    lacking = {}
    for name, fn in REGISTRY.items():
        params = list(inspect.signature(fn).parameters)[1:]  # after the ActionContext
        try:
            row = _row(section, name)
        except AssertionError:
            lacking[name] = ["(no row)"]
            continue
        if missing := _missing(params, row):
            lacking[name] = missing
    assert not lacking, f"docs/playbooks.md's built-in actions table lacks: {lacking}"


def test_the_bundled_playbooks_are_named_in_the_docs() -> None:
    from pytest_resilience.engine.playbooks import BUNDLED_PLAYBOOKS, load_playbooks

    text = _doc("playbooks.md")
    files = sorted(p.name for p in BUNDLED_PLAYBOOKS.glob("*.yaml"))
    names = sorted(book.name for book in load_playbooks(BUNDLED_PLAYBOOKS))
    assert _missing(files, text) == []
    assert [n for n in names if n not in text] == []


def test_every_yaml_example_in_the_playbook_docs_loads(tmp_path: Path) -> None:
    from pytest_resilience.engine.playbooks import load_playbook

    blocks = _yaml_blocks(_doc("playbooks.md"))
    assert len(blocks) >= 3
    for line, body in blocks:
        path = tmp_path / f"line{line}.yaml"
        path.write_text(body)
        try:
            load_playbook(path)
        except ConfigError as exc:
            pytest.fail(f"docs/playbooks.md, the example at line {line}: {exc}")


# -- scenarios ---------------------------------------------------------------------------


def _scenario_error(tmp_path: Path, data: dict[str, Any]) -> str:
    from pytest_resilience.scenario import load_scenario

    path = tmp_path / "scenarios" / "probe.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    return str(caught.value)


def _scenario() -> dict[str, Any]:
    return {"title": "t", "method": [{"fault": "pod_kill", "args": {"selector": "app=api"}}]}


def _not_in_literals(module: Any) -> set[str]:
    """Strings of the literal tuples a module checks keys against (``key not in (...)``)."""
    tree = ast.parse(inspect.getsource(module))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.NotIn):
            right = node.comparators[0]
            if isinstance(right, ast.Tuple | ast.Set | ast.List):
                found.update(
                    e.value
                    for e in right.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return found


def _fault_classes() -> dict[str, type]:
    """Fault kind -> its class, for every fault module of the package."""
    from pytest_resilience.faults import load_all
    from pytest_resilience.faults.base import Fault

    load_all()
    classes: dict[str, type] = {}
    todo = list(Fault.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        kind = cls.__dict__.get("kind")
        if isinstance(kind, str):
            classes[kind] = cls
    return classes


def test_every_scenario_key_the_loader_accepts_is_documented(tmp_path: Path) -> None:
    from pytest_resilience import scenario

    text = _doc("scenarios.md")
    data = {**_scenario(), "no_such_key": 1}
    top = _listed(_scenario_error(tmp_path, data), "expected one of")
    nested = _not_in_literals(scenario)  # load options and method step keys
    assert {"users", "fault", "hold_during"} <= nested
    # the keys of steady-state-hypothesis and recovery are read one by one (_typed)
    inner = ["duration_s", "slos", "within_s", "failed_requests_budget"]
    assert _missing([*top, *sorted(nested), *inner], text) == []


def test_every_slo_form_and_its_arguments_are_documented(tmp_path: Path) -> None:
    text = _doc("scenarios.md")
    data = _scenario()
    data["steady-state-hypothesis"] = {"slos": [{"no_such_slo": {}}]}
    forms = _listed(_scenario_error(tmp_path, data), "use one of")
    assert {"error_rate", "latency", "availability"} <= set(forms)
    lacking = {}
    for form in forms:
        data["steady-state-hypothesis"] = {"slos": [{form: {"no_such_argument": 1}}]}
        args = _listed(_scenario_error(tmp_path, data), "takes")
        if missing := _missing(args, _row(_section(text, "## SLOs"), form)):
            lacking[form] = missing
    assert not lacking, f"docs/scenarios.md's SLO table lacks: {lacking}"


def test_every_fault_is_documented_with_its_arguments() -> None:
    from pytest_resilience.scenario import FAULTS

    text = _section(_doc("scenarios.md"), "## Method steps and the faults")
    classes = _fault_classes()
    lacking = {}
    for fault in FAULTS:
        # a step the scenario runner carries out itself (no Fault class): its row only
        cls = classes.get(fault)
        signature = inspect.signature(cls).parameters if cls is not None else {}
        params = [p for p in signature if p not in ("rng", "toxiproxy_url", "attributes")]
        try:
            row = _row(text, fault)
        except AssertionError:
            lacking[fault] = ["(no row)"]
            continue
        if missing := _missing(params, row):
            lacking[fault] = missing
    assert not lacking, f"docs/scenarios.md's fault table lacks: {lacking}"


def test_how_chaos_toolkit_experiments_are_told_apart_is_documented() -> None:
    from pytest_resilience.chaostoolkit.model import _CTK_KEYS, _OUR_KEYS

    text = _doc("scenarios.md")
    assert _missing([*sorted(_CTK_KEYS), *sorted(_OUR_KEYS)], text) == []


def test_every_yaml_example_in_the_scenario_docs_loads_and_its_faults_construct(
    tmp_path: Path,
) -> None:
    from pytest_resilience.chaostoolkit.model import experiment_kind
    from pytest_resilience.scenario import load_scenario

    classes = _fault_classes()
    blocks = _yaml_blocks(_doc("scenarios.md"))
    assert len(blocks) >= 3
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "deploy").symlink_to(REPO / "deploy")  # as if in the repo's scenarios/
    for line, body in blocks:
        where = f"docs/scenarios.md, the example at line {line}"
        path = tmp_path / "scenarios" / f"line{line}.yaml"
        path.write_text(body)
        assert experiment_kind(yaml.safe_load(body), suffix=".yaml") == "scenario", where
        try:
            loaded = load_scenario(path)
            for step in loaded.method:  # the fault's own checks, no target touched
                if step.fault in classes:
                    classes[step.fault](**step.args)
        except Exception as exc:
            pytest.fail(f"{where}: {type(exc).__name__}: {exc}")


# -- services ----------------------------------------------------------------------------


def _services_error(text: str) -> str:
    from pytest_resilience.targets.services import parse_services

    with pytest.raises(ConfigError) as caught:
        parse_services(text, source="probe.yaml")
    return str(caught.value)


def _known_keys(message: str) -> list[str]:
    match = re.search(r"known keys: ([\w, -]+)", message)
    assert match, message
    return [k.strip() for k in match.group(1).split(",")]


_SERVICE = "services:\n  - name: web\n    versions: {v1: [x]}\n"


def test_every_service_key_the_checker_accepts_is_documented() -> None:
    text = _doc("services.md")
    keys = _known_keys(_services_error(_SERVICE + "    no_such_key: 1\n"))
    restart = _known_keys(_services_error(_SERVICE + "    restart: {no_such_key: 1}\n"))
    assert "replicas" in keys and "backoff_s" in restart
    lacking = {
        "service keys": [k for k in keys if not _row_exists(text, k)],
        "restart keys": [k for k in restart if not _row_exists(text, k)],
    }
    assert not any(lacking.values()), f"docs/services.md has no table row for: {lacking}"


def _row_exists(text: str, name: str) -> bool:
    return any(line.startswith(f"| `{name}` |") for line in text.splitlines())


def test_every_placeholder_is_documented() -> None:
    text = _doc("services.md")
    message = _services_error(_SERVICE.replace("[x]", '[x, "{no_such_placeholder}"]'))
    match = re.search(r"known: (.*?) \(write", message)
    assert match, message
    placeholders = [p.strip() for p in match.group(1).split(",")]
    assert "{python}" in placeholders
    assert [p for p in placeholders if f"`{p}`" not in text] == []


def test_every_yaml_example_in_the_services_docs_loads() -> None:
    from pytest_resilience.targets.services import parse_services

    for line, body in _yaml_blocks(_doc("services.md")):
        try:
            parse_services(body, source=f"docs/services.md, the example at line {line}")
        except ConfigError as exc:
            pytest.fail(str(exc))


def test_the_worked_example_is_the_shipped_demo() -> None:
    demo = yaml.safe_load((PACKAGE / "demo" / "services.yaml").read_text())
    examples = [yaml.safe_load(body) for _, body in _yaml_blocks(_doc("services.md"))]
    assert demo in examples, (
        "docs/services.md's worked example differs from src/pytest_resilience/demo/"
        "services.yaml: copy the file's services (without comments) into it"
    )


# -- architecture ------------------------------------------------------------------------


def test_every_capability_is_in_the_table_with_what_each_target_offers() -> None:
    from pytest_resilience.capabilities import offered, target_class
    from pytest_resilience.targets.base import CAPABILITIES, ConfiguredCapabilities

    text = _doc("architecture.md")
    section = _section(text, "### Capabilities")
    rows = {
        m.group(1): [cell.strip() for cell in m.group(2).split("|")]
        for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", section, re.M)
    }
    assert sorted(rows) == sorted(CAPABILITIES), "capability rows != targets.base.CAPABILITIES"
    wrong = []
    for column, kind in ((-2, "local"), (-1, "kubernetes")):
        cls = target_class(kind)
        has = offered(cls)
        for name, cells in rows.items():
            documented = cells[column].startswith("yes")
            if documented != (name in has):
                wrong.append(f"{name} on {kind}: docs say {cells[column]!r}")
            if "(with" in cells[column]:  # a capability this run's settings may take away
                assert issubclass(cls, ConfiguredCapabilities), f"{name} on {kind}"
        assert cells[0] == f"`{CAPABILITIES[name].__name__}`", name
    assert not wrong, "docs/architecture.md's capability table is wrong: " + "; ".join(wrong)


def test_every_module_of_the_package_is_in_the_rooms_and_every_room_exists() -> None:
    text = _doc("architecture.md")
    modules = sorted(
        p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
    )
    assert [m for m in modules if f"`{m}`" not in text] == [], (
        "docs/architecture.md does not list these modules (add each to its room's table)"
    )


def test_every_file_the_docs_name_exists() -> None:
    """A path in a doc (`engine/verify.py`, `scenarios/pod_kill_api.yaml`) is one of the
    repository's, or of the package's."""
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
        for name in sorted(set(re.findall(r"`([\w./-]+/[\w.-]+)`", doc.read_text()))):
            if "*" in name or name.startswith((".", "/")):
                continue
            if not ((PACKAGE / name).exists() or (REPO / name).exists()):
                stale.append(f"{doc.name}: {name}")
    assert stale == [], "the docs name files that do not exist"


def test_links_between_the_docs_resolve() -> None:
    docs = {"architecture.md", "services.md", "playbooks.md", "scenarios.md"}
    assert docs <= {p.name for p in DOCS.glob("*.md")}, f"docs/ must hold {sorted(docs)}"
    broken = []
    for doc in sorted(DOCS.glob("*.md")):
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)", doc.read_text()):
            path = DOCS / target
            if not path.is_file():
                broken.append(f"{doc.name} -> {target}")
                continue
            headings = {
                re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)
            }
            if anchor and anchor not in headings:
                broken.append(f"{doc.name} -> {target}#{anchor}")
    assert broken == []


def test_the_readme_sends_readers_to_docs_not_outside_the_repo() -> None:
    """Issue 14: a user of the package never has ../shared/DESIGN.md."""
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme, "README.md links a file outside the repository"
    docs = ["architecture.md", "scenarios.md", "playbooks.md", "services.md"]
    assert [d for d in docs if f"(docs/{d})" not in readme] == [], "README.md: link docs/"


# -- defaults ----------------------------------------------------------------------------


def _cell(section: str, key: str, column: int) -> str:
    """A cell of the table row of ``section`` whose first cell is `key`."""
    return _row(section, key).split("|")[column + 1].strip()


def test_the_documented_defaults_are_the_code_s() -> None:
    from pytest_resilience.engine.playbooks import VerifySpec
    from pytest_resilience.engine.runner import SYMPTOM_ALERTS
    from pytest_resilience.engine.safety import SafetyPolicy
    from pytest_resilience.scenario import Scenario
    from pytest_resilience.targets.services import RestartPolicy, ServiceSpec

    verify = _section(_doc("playbooks.md"), "### `verify`")
    spec = VerifySpec()
    assert _cell(verify, "wait", 2) == f"`{spec.wait_s:g}s`"
    assert _cell(verify, "window", 2) == f"`{spec.window_s:g}s`"
    assert _cell(verify, "interval", 2) == f"`{spec.interval_s:g}s`"
    for policy in ("on_fixed", "on_not_fixed", "on_inconclusive"):
        assert _cell(verify, policy, 2) == f"`{getattr(spec, policy)}`", policy
    assert _missing(SYMPTOM_ALERTS, _doc("playbooks.md")) == []

    safety = SafetyPolicy()
    arch = _doc("architecture.md")
    assert safety.window_s == 3600, "docs/architecture.md says 'per hour'"
    for phrase in (
        f"({safety.cooldown_s:g} s)",
        f"at most {safety.max_actions_per_target} actions per target and "
        f"{safety.max_actions_total} overall per hour",
        f"after {safety.breaker_failures} remediations in a row",
        f"reset after {safety.breaker_reset_s:g} s",
    ):
        assert phrase in " ".join(arch.split()), phrase

    services = _doc("services.md")
    restart = _section(services, "### `restart`")
    for key in ("policy", "backoff_s", "max_backoff_s", "reset_after_s"):
        value = getattr(RestartPolicy(), key)
        expected = f"`{value}`" if isinstance(value, str) else f"`{value:g}`"
        assert _cell(restart, key, 2) == expected, key
    fields = {f.name: f.default for f in ServiceSpec.__dataclass_fields__.values()}
    keys = _section(services, "## Service keys")
    assert _cell(keys, "replicas", 2) == f"`{fields['replicas']}`"
    assert _cell(keys, "start_timeout_s", 2) == f"`{fields['start_timeout_s']:g}`"

    scenarios = _section(_doc("scenarios.md"), "## The format")
    defaults = {f.name: f.default for f in Scenario.__dataclass_fields__.values()}
    assert _cell(scenarios, "duration_s", 2) == f"`{defaults['steady_state_s']:g}`"
    assert _cell(scenarios, "within_s", 2) == f"`{defaults['recover_within_s']:g}`"
