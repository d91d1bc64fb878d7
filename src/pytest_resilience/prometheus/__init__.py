"""Real Prometheus and Alertmanager in the loop, and PromQL probes.

The servers are Debian's ``prometheus`` and ``prometheus-alertmanager`` binaries, started
on loopback ports with generated configuration; ``available()`` says whether they are
installed. Probes read any Prometheus, managed or not, through prometheus-api-client
(imported on first query, not here).
"""

from __future__ import annotations

from .alertmanager import ManagedAlertmanager
from .config import ScrapeTarget
from .daemon import DaemonError
from .promql import (
    CACHE_HIT_RATIO,
    DEMO_SLOS,
    DISK_USE,
    ERROR_RATE,
    LATENCY_P99,
    MEMORY_SHARE,
    POOL_USE,
    PrometheusQueryError,
    PrometheusUnreachable,
    PromQLProbe,
)
from .server import RULES_DIR, ManagedPrometheus, PrometheusAlert, TargetHealth, default_rule_files

__all__ = [
    "CACHE_HIT_RATIO",
    "DEMO_SLOS",
    "DISK_USE",
    "ERROR_RATE",
    "LATENCY_P99",
    "MEMORY_SHARE",
    "POOL_USE",
    "RULES_DIR",
    "DaemonError",
    "ManagedAlertmanager",
    "ManagedPrometheus",
    "PromQLProbe",
    "PrometheusAlert",
    "PrometheusQueryError",
    "PrometheusUnreachable",
    "ScrapeTarget",
    "TargetHealth",
    "default_rule_files",
]
