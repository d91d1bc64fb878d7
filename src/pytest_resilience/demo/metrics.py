"""Prometheus metrics of one demo API process.

Each process owns its own CollectorRegistry (not the global default one), so building a second
app in the same interpreter, as a test might, never trips over duplicated metric names.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "DemoMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DemoMetrics:
    """The metric names here are a contract: SLO queries and alert rules use them."""

    def __init__(self, *, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_cpu_seconds_total and friends, which the HighCPU alert reads.
        ProcessCollector(registry=r)
        self.requests = Counter(
            "demo_requests",
            "HTTP requests served (health probes and scrapes not counted)",
            ["route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "demo_request_duration_seconds",
            "HTTP request duration (health probes and scrapes not counted)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_in_use = Gauge(
            "demo_db_pool_in_use", "Database connections checked out of the pool", registry=r
        )
        self.pool_max = Gauge("demo_db_pool_max", "Database pool maximum size", registry=r)
        self.cache_hits = Counter("demo_cache_hits", "Item reads served from Redis", registry=r)
        self.cache_misses = Counter(
            "demo_cache_misses", "Item reads not found in (or not read from) Redis", registry=r
        )
        self.resident_memory = Gauge(
            "demo_process_resident_memory_bytes", "Resident set size of this process", registry=r
        )
        self.memory_limit = Gauge(
            "demo_memory_limit_bytes",
            "Memory limit of this process (the machine's memory when none is configured)",
            registry=r,
        )
        self.disk_used = Gauge(
            "demo_disk_used_ratio",
            "Share of the pod's data directory quota (or its filesystem) in use",
            registry=r,
        )
        self.breaker_open = Gauge(
            "demo_circuit_breaker_open",
            "1 while the database circuit breaker is open or half-open, 0 when closed",
            registry=r,
        )
        self.version_info = Gauge(
            "demo_version_info", "Running version of the demo API", ["version"], registry=r
        )
        self.version_info.labels(version=version).set(1)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.duration.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
