"""``mypy --strict`` holds on the modules listed here; the list only grows.

Issue 14 asks for ``mypy --strict src/``; until every module is clean, :data:`CLEAN` names
those that are, and this test keeps them so. Add a module once mypy passes on it; never
take one out to make a change pass. The configuration (strict, the untyped third-party
libraries) is ``tests/mypy.ini``. ``--follow-imports=silent``: the modules a clean one
imports are analysed for their types but their own errors are not reported here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
CONFIG = REPO / "tests" / "mypy.ini"
#: outside the repo, kept between runs: a cold run analyses the kubernetes client too
CACHE = Path(tempfile.gettempdir()) / "pytest-resilience-mypy-cache"

CLEAN = [
    "pytest_resilience",
    "pytest_resilience.baseline",
    "pytest_resilience.capabilities",
    "pytest_resilience.chaostoolkit.run",
    "pytest_resilience.demo",
    "pytest_resilience.demo.api",
    "pytest_resilience.demo.breaker",
    "pytest_resilience.demo.cache",
    "pytest_resilience.demo.locustfile",
    "pytest_resilience.demo.metrics",
    "pytest_resilience.demo.postgres",
    "pytest_resilience.demo.redis",
    "pytest_resilience.demo.store",
    "pytest_resilience.engine.actions",
    "pytest_resilience.engine.datastores",
    "pytest_resilience.engine.dispatch",
    "pytest_resilience.engine.durations",
    "pytest_resilience.engine.escalation",
    "pytest_resilience.engine.inhibition",
    "pytest_resilience.engine.inspection",
    "pytest_resilience.engine.intake",
    "pytest_resilience.engine.listing",
    "pytest_resilience.engine.pager",
    "pytest_resilience.engine.playbooks",
    "pytest_resilience.engine.postmortem",
    "pytest_resilience.engine.rbac",
    "pytest_resilience.engine.redaction",
    "pytest_resilience.engine.registry",
    "pytest_resilience.engine.remediation",
    "pytest_resilience.engine.replays",
    "pytest_resilience.engine.runner",
    "pytest_resilience.engine.targeting",
    "pytest_resilience.engine.verify",
    "pytest_resilience.engine.webhook",
    "pytest_resilience.errors",
    "pytest_resilience.faults",
    "pytest_resilience.faults._memory_hog",
    "pytest_resilience.faults.base",
    "pytest_resilience.faults.deploy",
    "pytest_resilience.faults.disk",
    "pytest_resilience.faults.injectors",
    "pytest_resilience.faults.iptables",
    "pytest_resilience.faults.memory",
    "pytest_resilience.faults.network",
    "pytest_resilience.faults.node",
    "pytest_resilience.faults.pod_kill",
    "pytest_resilience.faults.proof",
    "pytest_resilience.faults.toxics",
    "pytest_resilience.fixtures",
    "pytest_resilience.item_results",
    "pytest_resilience.ledger",
    "pytest_resilience.load_starter",
    "pytest_resilience.outcomes",
    "pytest_resilience.plugin",
    "pytest_resilience.ports",
    "pytest_resilience.preflight",
    "pytest_resilience.probes",
    "pytest_resilience.prometheus",
    "pytest_resilience.prometheus.alertmanager",
    "pytest_resilience.prometheus.config",
    "pytest_resilience.prometheus.daemon",
    "pytest_resilience.prometheus.promql",
    "pytest_resilience.prometheus.server",
    "pytest_resilience.prometheus.settable_exporter",
    "pytest_resilience.redaction",
    "pytest_resilience.report",
    "pytest_resilience.report.charts",
    "pytest_resilience.report.comparison",
    "pytest_resilience.report.console",
    "pytest_resilience.report.history",
    "pytest_resilience.report.html_extras",
    "pytest_resilience.report.impact",
    "pytest_resilience.report.journal",
    "pytest_resilience.report.junit",
    "pytest_resilience.report.model",
    "pytest_resilience.report.origin",
    "pytest_resilience.report.rendering",
    "pytest_resilience.report.sample",
    "pytest_resilience.report.score",
    "pytest_resilience.report.standalone",
    "pytest_resilience.report.svg",
    "pytest_resilience.report_redaction",
    "pytest_resilience.results",
    "pytest_resilience.settings",
    "pytest_resilience.short_failure",
    "pytest_resilience.stash_keys",
    "pytest_resilience.targets.base",
    "pytest_resilience.targets.hpa",
    "pytest_resilience.targets.hpa_spec",
    "pytest_resilience.targets.iptables",
    "pytest_resilience.targets.kubernetes",
    "pytest_resilience.targets.kubernetes.api",
    "pytest_resilience.targets.kubernetes.autoscaling",
    "pytest_resilience.targets.kubernetes.calls",
    "pytest_resilience.targets.kubernetes.conversions",
    "pytest_resilience.targets.kubernetes.deployments",
    "pytest_resilience.targets.kubernetes.disk_fill",
    "pytest_resilience.targets.kubernetes.events",
    "pytest_resilience.targets.kubernetes.fault_host",
    "pytest_resilience.targets.kubernetes.faults",
    "pytest_resilience.targets.kubernetes.load_workers",
    "pytest_resilience.targets.kubernetes.marks",
    "pytest_resilience.targets.kubernetes.network_block",
    "pytest_resilience.targets.kubernetes.nodes",
    "pytest_resilience.targets.kubernetes.pod_access",
    "pytest_resilience.targets.kubernetes.preflight",
    "pytest_resilience.targets.kubernetes.releases",
    "pytest_resilience.targets.kubernetes.safety",
    "pytest_resilience.targets.kubernetes.target",
    "pytest_resilience.targets.kubernetes.waiting",
    "pytest_resilience.targets.kubernetes.watch",
    "pytest_resilience.targets.local",
    "pytest_resilience.targets.local.autoscaler",
    "pytest_resilience.targets.local.cgroups",
    "pytest_resilience.targets.local.controller",
    "pytest_resilience.targets.local.faults",
    "pytest_resilience.targets.local.guardian",
    "pytest_resilience.targets.local.memory",
    "pytest_resilience.targets.local.mounts",
    "pytest_resilience.targets.local.pods",
    "pytest_resilience.targets.local.processes",
    "pytest_resilience.targets.local.proxies",
    "pytest_resilience.targets.local.readiness",
    "pytest_resilience.targets.local.state",
    "pytest_resilience.targets.local.supervisor",
    "pytest_resilience.targets.local.target",
    "pytest_resilience.targets.local.volumes",
    "pytest_resilience.targets.needs",
    "pytest_resilience.targets.services",
    "pytest_resilience.toxiproxy",
    "pytest_resilience.toxiproxy.__main__",
    "pytest_resilience.toxiproxy.apierrors",
    "pytest_resilience.toxiproxy.client",
    "pytest_resilience.toxiproxy.embedded",
    "pytest_resilience.toxiproxy.proxies",
    "pytest_resilience.toxiproxy.resolve",
    "pytest_resilience.toxiproxy.server",
    "pytest_resilience.toxiproxy.toxics",
    "pytest_resilience.workdirs",
    "pytest_resilience.yamlfile",
]


def _path(module: str) -> Path:
    base = SRC.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def test_every_listed_module_exists_and_is_listed_once() -> None:
    assert [m for m in CLEAN if not _path(m).is_file()] == []
    assert sorted(set(CLEAN)) == CLEAN, "keep CLEAN sorted, each module once"


def test_type_ignores_in_clean_modules_say_why() -> None:
    """A ``# type: ignore[code]`` stays only with a reason after it on the same line."""
    bare = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?\s*$")
    unexplained = [
        f"{_path(m).relative_to(REPO)}:{n}"
        for m in CLEAN
        for n, line in enumerate(_path(m).read_text().splitlines(), 1)
        if bare.search(line) or re.search(r"#\s*type:\s*ignore(?!\[)", line)
    ]
    assert unexplained == []


def test_mypy_strict_is_clean_on_the_listed_modules() -> None:
    pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    argv = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--cache-dir", str(CACHE)]
    argv += ["--follow-imports=silent", "--no-error-summary", "--hide-error-context"]
    argv += [arg for module in CLEAN for arg in ("-m", module)]
    done = subprocess.run(argv, cwd=SRC, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
