"""Tolerances and ``${name}`` substitution judged as chaoslib judges them.

The cases are chaoslib's own rules (hypothesis.within_tolerance, substitute): a number
against a process or HTTP result reads its ``status``, two values are a range unless the
result has a status, a lone ``${name}`` keeps its type; jsonpath with jsonpath2's filter
semantics, as in the Chaos Toolkit tolerance tutorial.
"""

from __future__ import annotations

import pytest

from pytest_resilience.chaostoolkit.configuration import substitute
from pytest_resilience.chaostoolkit.tolerance import jsonpath_values, within_tolerance

PROCESS_OK = {"status": 0, "stdout": "welcome=hello\n", "stderr": ""}
HTTP_503 = {"status": 503, "headers": {}, "body": '{"foo": [{"baz": "hello"}, {"baz": "bonjour"}]}'}


def _no_probe(tolerance, value):
    raise AssertionError("no probe tolerance in this case")


@pytest.mark.parametrize(
    ("tolerance", "value", "met"),
    [
        (True, True, True),
        (True, 1, True),  # Python's 1 == True, as chaoslib compares
        (False, True, False),
        (0, PROCESS_OK, True),
        (1, PROCESS_OK, False),
        (200, 200, True),
        ("up", "up", True),
        ("up", "down", False),
        ([200, 503], HTTP_503, True),  # a status: membership, not a range
        ([200, 204], HTTP_503, False),
        ([1, 10], 5, True),  # two values, no status: an inclusive range
        ([1, 10], 11, False),
        (["a", "b", "c"], "b", True),
        ({"type": "range", "range": [6.4, 7.5]}, "7.1", True),
        ({"type": "range", "range": [6.4, 7.5], "target": "stdout"}, {"stdout": "8"}, False),
        ({"type": "range", "range": [0, 1]}, "not a number", False),
        ({"type": "regex", "pattern": "^welcome=hello$", "target": "stdout"}, PROCESS_OK, True),
        ({"type": "regex", "pattern": "bonjour", "target": "stdout"}, PROCESS_OK, False),
        (
            {
                "type": "jsonpath",
                "path": "$.foo.*[?(@.baz)].baz",
                "expect": ["hello", "bonjour"],
                "target": "body",
            },
            HTTP_503,
            True,
        ),
        (
            {"type": "jsonpath", "path": "$.foo.*[?(@.baz)].baz", "count": 2, "target": "body"},
            HTTP_503,
            True,
        ),
        (
            {"type": "jsonpath", "path": "$.foo.*[?(@.baz)].baz", "count": 3, "target": "body"},
            HTTP_503,
            False,
        ),
        ({"type": "jsonpath", "path": "$.version", "expect": "v1"}, {"version": "v1"}, True),
        ({"type": "jsonpath", "path": "$.missing"}, {"version": "v1"}, False),
    ],
)
def test_tolerance_forms(tolerance, value, met: bool) -> None:
    assert within_tolerance(tolerance, value, run_probe=_no_probe) is met


def test_probe_tolerance_gets_the_value() -> None:
    seen = []
    tolerance = {"type": "probe", "name": "check", "provider": {"type": "python"}}

    def run_probe(tol, value):
        seen.append((tol["name"], value))
        return value["status"] == 0

    assert within_tolerance(tolerance, PROCESS_OK, run_probe=run_probe)
    assert seen == [("check", PROCESS_OK)]


def test_jsonpath_filters_test_the_node_they_follow() -> None:
    doc = {"pods": [{"phase": "Running", "n": "a"}, {"phase": "Pending", "n": "b"}]}
    assert jsonpath_values('$.pods.*[?(@.phase = "Running")].n', doc) == ["a"]
    assert jsonpath_values('$.pods[?(@.phase = "Running")].n', doc) == []  # as jsonpath2
    assert jsonpath_values("$..n", doc) == ["a", "b"]


def test_substitution_keeps_the_type_of_a_lone_name() -> None:
    data = {"port": "${port}", "url": "http://${host}:${port}/", "keep": "${unknown}", "n": [1]}
    out = substitute(data, {"port": 8080, "host": "localhost"}, {"db": {"pass": "s3cret"}})
    assert out == {"port": 8080, "url": "http://localhost:8080/", "keep": "${unknown}", "n": [1]}
    assert substitute("${pass}", {}, {"db": {"pass": "s3cret"}}) == "s3cret"
