"""Generated configuration for the managed Prometheus and Alertmanager.

Everything is generated rather than shipped as templates because the ports, paths and the
engine's receiver URL are only known at start time. Intervals are seconds, not minutes:
these servers exist to close the detection loop inside one test.

The scrape targets live in a ``file_sd`` file, not in ``prometheus.yml``: Prometheus
watches that file itself, so pods can come and go without a reload.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = [
    "AlertmanagerSettings",
    "PrometheusSettings",
    "ScrapeTarget",
    "as_scrape_targets",
    "render_alertmanager_config",
    "render_prometheus_config",
    "write_targets_file",
]

# Prometheus label names: the same rule the server enforces, checked here so the error
# names the target instead of surfacing as a silently ignored file_sd file.
_LABEL_FIRST = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_LABEL_REST = _LABEL_FIRST | set("0123456789")


@dataclass(frozen=True)
class ScrapeTarget:
    """One ``host:port`` Prometheus scrapes, with the labels its series get (pod, node, ...)."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(
                f"scrape target address {self.address!r} is not host:port",
                source="update_targets",
                field="address",
            )
        for name, value in self.labels.items():
            if not name or name[0] not in _LABEL_FIRST or set(name) - _LABEL_REST:
                raise ConfigError(
                    f"label name {name!r} of target {self.address} is not a valid "
                    "Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    source="update_targets",
                    field="labels",
                )
            if name.startswith("__"):
                raise ConfigError(
                    f"label {name!r} of target {self.address}: names starting with '__' are "
                    "reserved for Prometheus",
                    source="update_targets",
                    field="labels",
                )
            if not isinstance(value, str):
                raise ConfigError(
                    f"label {name}={value!r} of target {self.address} must be a string",
                    source="update_targets",
                    field="labels",
                )


def as_scrape_targets(
    targets: Iterable[ScrapeTarget | tuple[str, Mapping[str, str]] | str],
) -> list[ScrapeTarget]:
    """Accept ``ScrapeTarget``, ``(address, labels)`` pairs or bare addresses."""
    result = []
    for item in targets:
        if isinstance(item, ScrapeTarget):
            result.append(item)
        elif isinstance(item, str):
            result.append(ScrapeTarget(item))
        else:
            address, labels = item
            result.append(ScrapeTarget(address, dict(labels)))
    return result


def write_targets_file(path: Path, targets: Iterable[ScrapeTarget]) -> None:
    """Rewrite the file_sd file atomically (write aside, fsync, rename).

    Prometheus re-reads the file on change; a rename means it never sees half a file,
    which it would log as an error and then drop every target of the file.
    """
    groups = [{"targets": [t.address], "labels": dict(t.labels)} for t in targets]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".targets-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(groups, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class PrometheusSettings:
    """What goes into the generated ``prometheus.yml``."""

    targets_file: Path
    rule_files: Sequence[Path] = ()
    alertmanager_address: str | None = None  # host:port
    job: str = "demo"
    scrape_interval_s: float = 1.0
    evaluation_interval_s: float = 1.0
    file_sd_refresh_s: float = 1.0


def _duration(seconds: float) -> str:
    """Prometheus durations take integer units: 1.5 s is written ``1500ms``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ConfigError(f"duration must be positive, got {seconds!r} s")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render_prometheus_config(settings: PrometheusSettings) -> str:
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": _duration(settings.scrape_interval_s),
            "scrape_timeout": _duration(settings.scrape_interval_s),
            "evaluation_interval": _duration(settings.evaluation_interval_s),
        },
        "rule_files": [str(p) for p in settings.rule_files],
        "scrape_configs": [
            {
                "job_name": settings.job,
                "file_sd_configs": [
                    {
                        "files": [str(settings.targets_file)],
                        "refresh_interval": _duration(settings.file_sd_refresh_s),
                    }
                ],
            }
        ],
    }
    if settings.alertmanager_address:
        config["alerting"] = {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "timeout": "2s",
                    "static_configs": [{"targets": [settings.alertmanager_address]}],
                }
            ]
        }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class AlertmanagerSettings:
    """What goes into the generated ``alertmanager.yml``: one route, one webhook receiver."""

    webhook_url: str
    receiver: str = "remediation-engine"
    group_by: Sequence[str] = ("alertname", "service")
    group_wait_s: float = 1.0
    group_interval_s: float = 1.0
    repeat_interval_s: float = 4 * 3600.0
    send_resolved: bool = True


def render_alertmanager_config(settings: AlertmanagerSettings) -> str:
    if not settings.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"webhook URL {settings.webhook_url!r} must start with http:// or https://",
            source="alertmanager.yml",
            field="webhook_url",
        )
    config = {
        "route": {
            "receiver": settings.receiver,
            "group_by": list(settings.group_by),
            "group_wait": _duration(settings.group_wait_s),
            "group_interval": _duration(settings.group_interval_s),
            "repeat_interval": _duration(settings.repeat_interval_s),
        },
        "receivers": [
            {
                "name": settings.receiver,
                "webhook_configs": [
                    {
                        "url": settings.webhook_url,
                        "send_resolved": settings.send_resolved,
                        "max_alerts": 0,
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
