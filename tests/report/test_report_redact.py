"""Secrets planted in a timeline, run_info and the environment appear in no report."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pytest_resilience import redaction
from pytest_resilience.report.console import terminal_summary_lines
from pytest_resilience.report.html_extras import html_extras
from pytest_resilience.report.junit import junit_properties
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
DB_PASSWORD = "s3cr3t-pa55"
ENV_TOKEN = "ghp_envtoken_XYZ987654321"
REGISTERED = "registered-value-42"


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch):
    redaction.clear_registered_secrets()
    monkeypatch.setenv("CHAOS_TEST_API_TOKEN", ENV_TOKEN)
    yield
    redaction.clear_registered_secrets()


def test_planted_secrets_appear_nowhere(tmp_path):
    redaction.register_secret(REGISTERED)
    result = sample_result(
        0,
        detail={
            "routing_key": ROUTING_KEY,
            "dsn": f"postgresql://chaos:{DB_PASSWORD}@127.0.0.1:5432/app",
            "note": f"engine got {ENV_TOKEN} and {REGISTERED}",
            "env": {"PD_KEY": "whatever-1234", "HOME": "/root"},
        },
    )
    result.actions[0].error = f"POST https://events.pagerduty.com?routing_key={ROUTING_KEY} failed"
    result.target = f"postgresql://chaos:{DB_PASSWORD}@db/app"
    run_info = {
        "pagerduty": {"routing_key": ROUTING_KEY},
        "db": f"redis://:{DB_PASSWORD}@h:1",
        "args": f"--token={ENV_TOKEN}",
    }
    out = tmp_path / "r.html"
    write_resilience_report(out, [result], history_dir=tmp_path / "h", run_info=run_info)

    rendered = {
        "html": out.read_text(),
        "json": out.with_suffix(".json").read_text(),
        "history": "".join(p.read_text() for p in (tmp_path / "h").iterdir()),
        "extra": html_extras(result)[0]["content"],
        "junit": repr(junit_properties(result)),
        "console": "\n".join(terminal_summary_lines([result])),
    }
    for where, text in rendered.items():
        for secret in (ROUTING_KEY, DB_PASSWORD, ENV_TOKEN, REGISTERED, "whatever-1234"):
            assert secret not in text, f"{secret!r} leaked into {where}"
    assert "[REDACTED]" in rendered["json"] and "[REDACTED]" in rendered["html"]
    assert "postgresql://chaos:[REDACTED]@127.0.0.1:5432/app" in rendered["json"]
    assert "/root" in rendered["json"]  # ordinary values stay readable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pass@host/db", "postgresql://user:[REDACTED]@host/db"),
        ("Authorization: Bearer abcdef123456", "Authorization: Bearer [REDACTED]"),
        ("PAGERDUTY_KEY=abc123 next", "PAGERDUTY_KEY=[REDACTED] next"),
        ('{"routing_key": "abc"}', '{"routing_key": "[REDACTED]"}'),
        ("https://h/x?api_key=zzz&x=1", "https://h/x?api_key=[REDACTED]&x=1"),
        ("error rate <= 1.00% over 5 s", "error rate <= 1.00% over 5 s"),
        ("dedup_key=chaos-42", "dedup_key=chaos-42"),
    ],
)
def test_redact_text_rules(text, expected):
    assert redaction.redact_text(text) == expected


def test_short_registered_values_are_refused():
    assert redaction.register_secret("db") is False
    assert redaction.redact_text("db is up") == "db is up"


def test_a_secret_in_a_node_id_is_masked_before_the_id_gets_its_line_breaks(tmp_path):
    result = sample_result(0)
    result = dataclasses.replace(result, nodeid=f"tests/test_x.py::test_login[{ENV_TOKEN}]")
    redaction.register_secret(ENV_TOKEN)  # known only now, after the result was built
    out = tmp_path / "r.html"
    write_resilience_report(out, [result], history_dir=None, run_info={})
    html = out.read_text()
    assert "<wbr>" in html  # the id does get its break chances
    assert ENV_TOKEN not in re.sub(r"<wbr>", "", html)


def test_an_environment_change_is_seen_by_the_next_redaction(monkeypatch):
    """The secret-named variables are cached on the environment: a set, a change and an
    unset must each show at once (the cache is keyed on os.environ's own mapping)."""
    late = "late-secret-token-0123456789"
    assert redaction.redact_text(f"x {late}") == f"x {late}"
    monkeypatch.setenv("LATE_DEPLOY_TOKEN", late)
    assert late not in redaction.redact_text(f"x {late}")
    monkeypatch.setenv("LATE_DEPLOY_TOKEN", late + "-rotated")
    assert redaction.redact_text(f"x {late}") == f"x {late}"
    assert late not in redaction.redact_text(f"x {late}-rotated")
    monkeypatch.delenv("LATE_DEPLOY_TOKEN")
    assert redaction.redact_text(f"x {late}-rotated") == f"x {late}-rotated"
