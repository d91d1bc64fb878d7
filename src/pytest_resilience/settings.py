"""The plugin's options, read once from the command line and their ini twins.

Kept out of plugin.py so the rest of the package can take a typed settings object
instead of a pytest Config, and so every option is validated in one place with an
error that names the option and the accepted values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["OPTIONS", "ChaosSettings", "add_options"]

TARGETS = ("local", "kubernetes")
_DEMO_SERVICES = Path(__file__).parent / "demo" / "services.yaml"


@dataclass(frozen=True)
class _Option:
    flag: str
    help: str
    default: str | None = None
    is_flag: bool = False
    multiple: bool = False

    @property
    def ini(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = (
    _Option("--chaos-target", f"where faults land: {' or '.join(TARGETS)}", "local"),
    _Option("--chaos-services", "services YAML for the local target (default: the demo)"),
    _Option("--chaos-entry", "service whose endpoint the load fixture hits by default", "api"),
    _Option(
        "--load-workers",
        "Locust processes the load fixture runs by default: N (a master and N workers when "
        "N > 1) or auto (one per core)",
        "1",
    ),
    _Option("--kube-context", "kubeconfig context for --chaos-target=kubernetes"),
    _Option("--chaos-namespace", "namespace to run chaos in (kubernetes)", "default"),
    _Option(
        "--kube-sigkill-by-exec",
        "kubernetes: SIGKILL a pod's app by exec (kill -KILL -1, the app under an init) "
        "instead of a grace-0 delete, whose kubelet sends SIGTERM first",
        is_flag=True,
    ),
    _Option(
        "--chaos-allow",
        "also allow a context or namespace: context:NAME or namespace:NAME (repeatable)",
        multiple=True,
    ),
    _Option("--prometheus-url", "Prometheus to evaluate PromQL SLOs against"),
    _Option("--toxiproxy-url", "Toxiproxy server to use instead of the embedded one"),
    _Option("--chaos-ledger", "ledger of injected faults", ".pytest-resilience/ledger.sqlite"),
    _Option("--chaos-cleanup", "revert every fault the ledger holds open, then exit", is_flag=True),
    _Option("--resilience-report", "write the standalone resilience report (HTML + JSON) here"),
    _Option("--resilience-history", "directory of earlier runs' summaries, for the trend"),
    _Option("--chaos-dry-run", "log what each fault would do; touch nothing", is_flag=True),
    _Option(
        "--chaos-doctor",
        "print what this machine or cluster can run, and each scenario's verdict; run nothing",
        is_flag=True,
    ),
    _Option(
        "--chaostoolkit-dir",
        "also collect the Chaos Toolkit experiments (*.json, *.yaml) in this directory",
    ),
    _Option(
        "--chaostoolkit-native",
        "run the chaostoolkit-kubernetes / chaostoolkit-toxiproxy actions of experiments that "
        "have a native equivalent (terminate pods, scale, drain/uncordon, proxies, toxics) "
        "through this plugin's faults: ledgered and reverted here, extension not needed",
        is_flag=True,
    ),
    _Option(
        "--remediation-playbooks",
        "playbooks layered over the bundled ones (default: the project's remediators/)",
    ),
    _Option(
        "--remediation-baseline",
        "run each scenario that uses the engine a second time ([baseline]) with the engine "
        "observing only, and report MTTR, pages and downtime with vs without automation",
        is_flag=True,
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("resilience", "chaos scenarios (pytest-resilience)")
    for option in OPTIONS:
        if option.is_flag:
            group.addoption(option.flag, action="store_true", default=None, help=option.help)
            parser.addini(option.ini, option.help, type="bool", default=False)
        elif option.multiple:
            group.addoption(option.flag, action="append", default=None, help=option.help)
            parser.addini(option.ini, option.help, type="args", default=[])
        else:
            group.addoption(option.flag, default=None, help=option.help)
            parser.addini(option.ini, option.help, default=option.default)


@dataclass(frozen=True)
class ChaosSettings:
    target: str = "local"
    services: Path = _DEMO_SERVICES
    entry: str = "api"
    load_workers: int = 1
    kube_context: str | None = None
    namespace: str = "default"
    sigkill_by_exec: bool = False
    allow: tuple[str, ...] = ()
    prometheus_url: str | None = None
    toxiproxy_url: str | None = None
    ledger: Path = Path(".pytest-resilience/ledger.sqlite")
    cleanup: bool = False
    report: Path | None = None
    history: Path | None = None
    dry_run: bool = False
    playbooks: Path | None = None
    doctor: bool = False
    chaostoolkit_dir: Path | None = None
    chaostoolkit_native: bool = False
    remediation_baseline: bool = False
    rootdir: Path = field(default_factory=Path.cwd)

    @classmethod
    def from_config(cls, config: pytest.Config) -> ChaosSettings:
        def get(name: str) -> Any:  # an option's value, else its ini twin's
            value = config.getoption(name)
            return config.getini(name) if value is None else value

        target = get("chaos_target")
        if target not in TARGETS:
            raise pytest.UsageError(
                f"--chaos-target={target!r} is not a known target; use one of: {', '.join(TARGETS)}"
            )
        root = Path(config.rootpath)

        def path(name: str) -> Path | None:
            value = get(name)
            return (root / value) if value else None

        services = path("chaos_services") or _DEMO_SERVICES
        if target == "local" and services != _DEMO_SERVICES and not services.is_file():
            raise pytest.UsageError(f"--chaos-services: no such file: {services}")
        load_workers = _load_workers(get("load_workers"))
        playbooks = path("remediation_playbooks")
        if playbooks is not None and not playbooks.is_dir():
            raise pytest.UsageError(f"--remediation-playbooks: no such directory: {playbooks}")
        chaostoolkit_dir = path("chaostoolkit_dir")
        if chaostoolkit_dir is not None and not chaostoolkit_dir.is_dir():
            raise pytest.UsageError(f"--chaostoolkit-dir: no such directory: {chaostoolkit_dir}")
        return cls(
            target=target,
            services=services,
            entry=get("chaos_entry"),
            load_workers=load_workers,
            kube_context=get("kube_context") or None,
            namespace=get("chaos_namespace"),
            sigkill_by_exec=bool(get("kube_sigkill_by_exec")),
            allow=tuple(get("chaos_allow") or ()),
            prometheus_url=get("prometheus_url") or None,
            toxiproxy_url=get("toxiproxy_url") or None,
            ledger=path("chaos_ledger") or root / ".pytest-resilience/ledger.sqlite",
            cleanup=bool(get("chaos_cleanup")),
            report=path("resilience_report"),
            history=path("resilience_history"),
            dry_run=bool(get("chaos_dry_run")),
            playbooks=playbooks,
            doctor=bool(get("chaos_doctor")),
            chaostoolkit_dir=chaostoolkit_dir,
            chaostoolkit_native=bool(get("chaostoolkit_native")),
            remediation_baseline=bool(get("remediation_baseline")),
            rootdir=root,
        )


def _load_workers(value: str | int) -> int:
    if str(value).strip() == "auto":
        return os.cpu_count() or 1
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = 0
    if workers < 1:
        raise pytest.UsageError(
            f"--load-workers={value!r}: use a positive integer or 'auto' (one per core)"
        )
    return workers
