"""Chaos Toolkit experiments run unchanged as pytest chaos items.

Real published experiments (tests/chaostoolkit/README.md names each source) are copied
into a pytester project's scenarios/ and run by the plugin against a tiny local target,
their HTTP probes against a server this module starts; each outcome is checked from the
outside: pytest's verdict, the files the providers change, the ledger.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pytest_resilience.ledger import Ledger

DATA = Path(__file__).parent


class _Server(ThreadingHTTPServer):
    exchange: Path  # the file the chapter-5 service reads
    resilient: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/entities":
            self._send(200, json.dumps({"foo": [{"baz": "hello"}, {"baz": "bonjour"}]}), "json")
        elif self.path == "/text":
            self._send(200, "welcome=bonjour", "plain")
        elif self.server.exchange.exists():
            self._send(200, self.server.exchange.read_text(), "plain")
        else:  # the book's service fails with 500; its resilient version answers 503
            self._send(503 if self.server.resilient else 500, "no exchange file", "plain")

    def _send(self, status: int, body: str, kind: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"application/{kind}" if kind == "json" else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "scenarios").mkdir()
    shutil.copy(DATA / "services.yaml", pytester.path / "services.yaml")
    return pytester


@pytest.fixture
def server(project: pytest.Pytester) -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.exchange = project.path / "scenarios" / "exchange.dat"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _add(project: pytest.Pytester, name: str, *, replace: tuple[str, str] | None = None) -> Path:
    text = (DATA / name).read_text()
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    path = project.path / "scenarios" / name
    path.write_text(text)
    return path


def _run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Out of process: requests and numpy (report charts) cannot be imported twice in one.
    return project.runpytest_subprocess(
        "--chaos-services=services.yaml",
        "--chaos-ledger=ledger.sqlite",
        "-p",
        "no:cacheprovider",
        *args,
    )


def _entries(project: pytest.Pytester) -> list:
    ledger = Ledger(project.path / "ledger.sqlite")
    try:
        return ledger.open_entries(include_live_owners=True), [
            ledger.get(i) for i in range(1, 100) if _exists(ledger, i)
        ]
    finally:
        ledger.close_db()


def _exists(ledger: Ledger, entry_id: int) -> bool:
    try:
        ledger.get(entry_id)
    except KeyError:
        return False
    return True


def test_experiments_are_collected_by_title_beside_our_scenarios(project: pytest.Pytester) -> None:
    _add(project, "default_language.json")
    (project.path / "scenarios" / "kill.yaml").write_text(
        "title: x\nmethod: [{fault: pod_kill, args: {selector: app=web}}]\n"
    )
    experiments = project.path / "experiments"
    experiments.mkdir()
    (experiments / "http.yaml").write_text(
        "title: Served\ndescription: d\nsteady-state-hypothesis:\n  title: up\n  probes:\n"
        "    - {type: probe, name: p, tolerance: 200, provider: {type: http, url: 'http://x'}}\n"
        "method: []\n"
    )
    result = _run(project, "--collect-only", "-q", "-m", "chaos", "--chaostoolkit-dir=experiments")
    result.stdout.fnmatch_lines(
        [
            "experiments/http.yaml::Served",
            "scenarios/default_language.json::Our default language is English",
            "scenarios/kill.yaml::kill",
            "*3 tests collected*",
        ],
        consecutive=False,
    )


def test_tolerance_tutorial_deviates_and_its_rollback_restores_the_file(
    project: pytest.Pytester,
) -> None:
    _add(project, "default_language.json")
    locale = project.path / "scenarios" / "default.locale.txt"
    locale.write_text("welcome=hello\n")

    result = _run(project)

    # sed switched it to bonjour: the hypothesis after the method finds no hello (exit 1)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*experiment 'Our default language is English' ended deviated",
            "*hypothesis-after probe 'lookup-text-in-lang-file': succeeded, not within tolerance*",
            "*rollback action 'switch-language-back-to-english': succeeded",
        ]
    )
    assert locale.read_text() == "welcome=hello\n"
    open_entries, entries = _entries(project)
    assert open_entries == []
    (entry,) = entries
    assert (entry.kind, entry.outcome) == ("chaostoolkit_rollbacks", "reverted")
    assert entry.spec["rollbacks"][0]["name"] == "switch-language-back-to-english"


@pytest.mark.parametrize(("resilient", "outcome"), [(True, "passed"), (False, "failed")])
def test_exchange_file_experiment_judges_the_service(
    project: pytest.Pytester, server: _Server, resilient: bool, outcome: str
) -> None:
    server.resilient = resilient
    _add(project, "exchange_file.json", replace=("http://localhost:8080/", _url(server) + "/"))
    exchange = project.path / "scenarios" / "exchange.dat"
    exchange.write_text("2024-01-01T00:00:00")

    result = _run(project)

    result.assert_outcomes(**{outcome: 1})
    # the python provider (os.rename in a child interpreter) moved it, in the experiment's dir
    assert not exchange.exists()
    assert (project.path / "scenarios" / "exchange.dat.old").exists()
    if not resilient:
        result.stdout.fnmatch_lines(["*ended deviated*", "*'service-is-unavailable'*status': 500*"])


def test_every_tolerance_form_holds_against_the_server(
    project: pytest.Pytester, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(DATA / "ctk_checks.py", project.path / "scenarios" / "ctk_checks.py")
    _add(project, "http_tolerances.json")
    monkeypatch.setenv("CTK_TEST_BASE_URL", _url(server))

    result = _run(project, "-rA")

    result.assert_outcomes(passed=1)


def test_a_value_out_of_tolerance_deviates(
    project: pytest.Pytester, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(DATA / "ctk_checks.py", project.path / "scenarios" / "ctk_checks.py")
    _add(project, "http_tolerances.json", replace=('"expect": "v1"', '"expect": "v2"'))
    monkeypatch.setenv("CTK_TEST_BASE_URL", _url(server))

    result = _run(project)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*hypothesis-before probe 'python-returns-mapping'*not within*"])


def test_an_extension_that_is_not_installed_skips_naming_the_package(
    project: pytest.Pytester,
) -> None:
    _add(project, "drain_node.json")

    result = _run(project, "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*'chaosk8s.pod.probes'*steady-state-hypothesis.probes[[]1]*"
            "pip install chaostoolkit-kubernetes"
        ]
    )


def test_a_failed_steady_state_stops_before_the_method_and_still_rolls_back(
    project: pytest.Pytester,
) -> None:
    _add(project, "default_language.json")
    locale = project.path / "scenarios" / "default.locale.txt"
    locale.write_text("welcome=bonjour\n")  # not in English: the gate fails

    result = _run(project)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ended failed*", "*rollback action*: succeeded"])
    # the method (sed to French) never ran; the rollback (sed to English) did
    assert locale.read_text() == "welcome=hello\n"


def test_an_abort_is_an_error_and_rollbacks_still_run(project: pytest.Pytester) -> None:
    path = _add(project, "default_language.json")
    data = json.loads(path.read_text())
    data["method"][0]["provider"]["path"] = "no-such-tool-here"
    path.write_text(json.dumps(data))
    locale = project.path / "scenarios" / "default.locale.txt"
    locale.write_text("welcome=bonjour\n")
    data["steady-state-hypothesis"]["probes"] = []
    path.write_text(json.dumps(data))

    result = _run(project)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*ExperimentAborted*ended aborted", "*'no-such-tool-here' cannot be found*"]
    )
    assert locale.read_text() == "welcome=hello\n"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["steady-state-hypothesis"]["probes"][1].pop("tolerance"),
            "default_language.json:*, field '$.steady-state-hypothesis.probes[[]1].tolerance': "
            "hypothesis probe must have a tolerance entry",
        ),
        (
            lambda d: d["method"][0]["provider"].update(type="grpc"),
            "default_language.json:*, field '$.method[[]0].provider.type': unknown provider type "
            "'grpc'; use one of http, process, python",
        ),
        (
            lambda d: d["method"].append({"ref": "lookup-lang-fil"}),
            "default_language.json:*, field '$.method[[]1].ref': referenced activity "
            "'lookup-lang-fil' could not be found*",
        ),
        (
            lambda d: d["steady-state-hypothesis"]["probes"][0].update(
                tolerance={"type": "jsonpath", "path": "$.a[?("}
            ),
            "*field '$.steady-state-hypothesis.probes[[]0].tolerance.path': hypothesis probe "
            "tolerance JSON path '$.a[[]?(' is invalid*",
        ),
        (lambda d: d.pop("description"), "*field '$.description': is required"),
    ],
    ids=["missing-tolerance", "unknown-provider", "bad-ref", "bad-jsonpath", "no-description"],
)
def test_malformed_experiments_name_file_and_json_path(
    project: pytest.Pytester, change, expected: str
) -> None:
    path = _add(project, "default_language.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))

    result = _run(project, "--collect-only")

    result.stdout.fnmatch_lines([f"*{expected}*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_a_file_that_is_neither_format_is_named(project: pytest.Pytester) -> None:
    (project.path / "scenarios" / "data.json").write_text('{"users": [1, 2]}')

    result = _run(project, "--collect-only")

    result.stdout.fnmatch_lines(
        ["*scenarios/data.json: is neither a pytest-resilience scenario*nor a Chaos Toolkit*"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_a_yaml_file_of_neither_format_is_named(project: pytest.Pytester) -> None:
    (project.path / "scenarios" / "settings.yaml").write_text(
        "auths: {example.com: {type: basic}}\n"
    )

    result = _run(project, "--collect-only")

    result.stdout.fnmatch_lines(["*scenarios/settings.yaml: is neither a pytest-resilience*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_dry_run_runs_no_activity_and_touches_nothing(project: pytest.Pytester) -> None:
    path = _add(project, "default_language.json")
    data = json.loads(path.read_text())
    # a dynamic configuration probe too: a dry run runs it no more than the rest
    data["configuration"] = {
        "lang_file": {
            "type": "probe",
            "name": "which-lang-file",
            "provider": {"type": "process", "path": "echo", "arguments": "default.locale.txt"},
        }
    }
    path.write_text(json.dumps(data))
    locale = project.path / "scenarios" / "default.locale.txt"
    locale.write_text("welcome=bonjour\n")  # were the hypothesis probed, it would not hold

    result = _run(project, "--chaos-dry-run", "-rA")

    result.assert_outcomes(passed=1)
    assert locale.read_text() == "welcome=bonjour\n"  # neither method nor rollback ran
    open_entries, entries = _entries(project)
    assert open_entries == [] and entries == []  # a dry run writes no ledger entry


def test_an_unexpected_error_is_reported_not_an_internal_error(project: pytest.Pytester) -> None:
    path = _add(project, "default_language.json")
    data = json.loads(path.read_text())
    data["configuration"] = {  # a pause no configuration resolves: float("${nowhere}")
        "lang_file": {
            "type": "probe",
            "name": "which-lang-file",
            "pauses": {"before": "${nowhere}"},
            "provider": {"type": "process", "path": "echo", "arguments": "x"},
        }
    }
    path.write_text(json.dumps(data))

    result = _run(project)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: could not convert string to float*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
