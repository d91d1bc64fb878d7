"""A /metrics endpoint whose values are set over stdin, at an instant the caller knows.

Tests and the detection benchmark need a metric that crosses a threshold exactly when
they say so, from a separate process (a real scrape over HTTP, as from a pod). Run as
``python -m pytest_resilience.prometheus.settable_exporter``; it prints ``port <n>`` once
listening, then for each stdin line answers ``ok`` (or ``error: ...``) after applying it:

    gauge NAME VALUE [label=value ...]
    counter NAME AMOUNT [label=value ...]     # increments; NAME without ``_total``

Label names of a metric are fixed by its first line. EOF on stdin ends the process.
"""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


def main() -> int:
    registry = CollectorRegistry()
    metrics: dict[str, Gauge | Counter] = {}
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(f"port {server.server_port}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        try:
            kind, name, value, *pairs = parts
            labels = dict(pair.split("=", 1) for pair in pairs)
            metric = metrics.get(name)
            if metric is None:
                cls = {"gauge": Gauge, "counter": Counter}[kind]
                metric = cls(name, name, sorted(labels), registry=registry)
                metrics[name] = metric
            if kind == "gauge":
                if not isinstance(metric, Gauge):
                    raise ValueError(f"{name} is a counter: only 'counter' lines add to it")
                (metric.labels(**labels) if labels else metric).set(float(value))
            else:
                (metric.labels(**labels) if labels else metric).inc(float(value))
        except (ValueError, KeyError) as exc:
            print(f"error: {exc!r} in {line.strip()!r}", flush=True)
            continue
        print("ok", flush=True)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
