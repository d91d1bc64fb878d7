"""Prometheus metrics of one demo API process.

Each process owns its own CollectorRegistry (not the global default one), so building a second
app in the same interpreter, as a test might, never trips over duplicated metric names.

Memory and disk are read the way a kubelet would see them, so alerts fire on what the faults
really change: memory is the charge of this process's memory cgroup (a helper the chaos tool
starts in the pod counts too), disk is the used share of the filesystem behind a path (the
database's bounded volume on the local target).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "DemoMetrics", "disk_used_ratio", "memory_usage_file"]

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
        self.memory_usage = Gauge(
            "demo_memory_usage_bytes",
            "Memory charged to this pod's memory cgroup (resident set size when unreadable)",
            registry=r,
        )
        self.memory_limit = Gauge(
            "demo_memory_limit_bytes",
            "Memory limit of this process (the machine's memory when none is configured)",
            registry=r,
        )
        self.disk_used = Gauge(
            "demo_disk_used_ratio",
            "Used share of the filesystem holding the watched path (the database volume)",
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


def disk_used_ratio(path: Path) -> float:
    """Used over total blocks of the filesystem holding ``path``, as ``df`` shows them."""
    stats = os.statvfs(path)
    if stats.f_blocks == 0:
        return 0.0
    return (stats.f_blocks - stats.f_bfree) / stats.f_blocks


def memory_usage_file(
    proc_cgroup: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo"
) -> Path | None:
    """The file holding this process's memory cgroup charge, or None if there is none to read.

    cgroup v1: ``memory.usage_in_bytes`` of the memory hierarchy's directory; v2:
    ``memory.current`` of the unified one. A process in the root cgroup has no own charge
    (the root's is the whole machine's), so that gives None too.
    """
    try:
        with open(proc_cgroup) as table:
            lines = [line.rstrip("\n").split(":", 2) for line in table if line.count(":") >= 2]
        with open(mountinfo) as info:
            mounts = [_mount_fields(line) for line in info]
    except OSError:
        return None
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            found = _in_mount(mounts, "cgroup", path, "memory.usage_in_bytes", needs="memory")
            if found is not None:
                return found
    for _, controllers, path in lines:
        if controllers == "":
            found = _in_mount(mounts, "cgroup2", path, "memory.current")
            if found is not None:
                return found
    return None


def _mount_fields(line: str) -> tuple[str, str, str, str]:
    """(fstype, super options, mount point, root inside the filesystem) of a mountinfo line."""
    pre, _, post = line.partition(" - ")
    fields, tail = pre.split(), post.split()
    if len(fields) < 5 or len(tail) < 3:
        return ("", "", "", "")
    return (tail[0], tail[2], fields[4].replace("\\040", " "), fields[3])


def _in_mount(
    mounts: list[tuple[str, str, str, str]], fstype: str, path: str, name: str, needs: str = ""
) -> Path | None:
    if path in ("", "/"):
        return None
    for kind, options, point, root in mounts:
        if kind != fstype or (needs and needs not in options.split(",")):
            continue
        relative = os.path.relpath(path, root)
        if relative.startswith(".."):
            continue
        candidate = Path(point) / relative / name
        if candidate.exists():
            return candidate
    return None
