"""A real Prometheus (Debian's ``prometheus``) scraping the pods of one test session.

Targets are a file_sd file that ``update_targets`` rewrites as pods come and go; the
server notices the change by itself (inotify, with a 1 s refresh as a back-stop), so no
reload is needed. Rule files default to the packaged demo alerts (``rules/*.yml``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import (
    PrometheusSettings,
    ScrapeTarget,
    as_scrape_targets,
    render_prometheus_config,
    write_targets_file,
)
from .daemon import DaemonError, ManagedDaemon

__all__ = [
    "RULES_DIR",
    "ManagedPrometheus",
    "PrometheusAlert",
    "TargetHealth",
    "default_rule_files",
    "parse_api_time",
]

RULES_DIR = Path(__file__).parent / "rules"
_POLL_S = 0.1


def default_rule_files() -> list[Path]:
    """The packaged alert rules (the seed's alerts for the demo system)."""
    return sorted(RULES_DIR.glob("*.yml"))


def parse_api_time(text: str | None) -> float | None:
    """RFC 3339 from the API (nanoseconds, ``Z``) to unix seconds."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    tz = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, tz = frac.partition(sign)
            tz = sign + tz
    base = datetime.fromisoformat(head + (tz or "+00:00"))
    return base.timestamp() + (float("0." + frac) if frac else 0.0)


@dataclass(frozen=True)
class PrometheusAlert:
    """One alert as Prometheus reports it on ``/api/v1/alerts``."""

    name: str
    state: str  # "pending" or "firing"
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    active_at: float | None = None  # unix seconds: the evaluation that first matched
    value: float | None = None


@dataclass(frozen=True)
class TargetHealth:
    address: str
    health: str  # "up", "down" or "unknown"
    labels: Mapping[str, str]
    last_scrape: float | None
    last_error: str


class ManagedPrometheus(ManagedDaemon):
    """``with ManagedPrometheus(alertmanager=am.address) as prom: prom.update_targets(...)``"""

    binary = "prometheus"
    display_name = "Prometheus (Debian package prometheus)"

    def __init__(
        self,
        *,
        targets: Iterable[ScrapeTarget | tuple[str, Mapping[str, str]] | str] = (),
        alertmanager: str | None = None,
        rule_files: Sequence[Path | str] | None = None,
        job: str = "demo",
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0,
        binary: str | None = None,
        startup_timeout_s: float = 20.0,
    ) -> None:
        """``alertmanager``: ``host:port`` or URL of the Alertmanager to notify (None: none).

        ``rule_files``: None for the packaged demo alerts, ``[]`` for no rules.
        """
        super().__init__(binary=binary, startup_timeout_s=startup_timeout_s)
        if alertmanager and "://" in alertmanager:
            alertmanager = urllib.parse.urlsplit(alertmanager).netloc
        self.alertmanager = alertmanager
        self.rule_files = [
            Path(p).resolve() for p in (default_rule_files() if rule_files is None else rule_files)
        ]
        self.job = job
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self._targets = as_scrape_targets(targets)

    # -- configuration ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        if self.workdir is None:
            raise DaemonError("Prometheus is not started")
        return self.workdir / "prometheus.yml"

    @property
    def targets_path(self) -> Path:
        if self.workdir is None:
            raise DaemonError("Prometheus is not started")
        return self.workdir / "targets.json"

    def settings(self, workdir: Path) -> PrometheusSettings:
        return PrometheusSettings(
            targets_file=workdir / "targets.json",
            rule_files=tuple(self.rule_files),
            alertmanager_address=self.alertmanager,
            job=self.job,
            scrape_interval_s=self.scrape_interval_s,
            evaluation_interval_s=self.evaluation_interval_s,
        )

    def _prepare(self, workdir: Path) -> None:
        (workdir / "data").mkdir()
        (workdir / "prometheus.yml").write_text(render_prometheus_config(self.settings(workdir)))
        write_targets_file(workdir / "targets.json", self._targets)

    def _argv(self, path: str) -> list[str]:
        assert self.workdir is not None
        return [
            path,
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]

    def update_targets(
        self, targets: Iterable[ScrapeTarget | tuple[str, Mapping[str, str]] | str]
    ) -> None:
        """Replace the scraped targets (pods came or went); Prometheus picks it up itself."""
        self._targets = as_scrape_targets(targets)
        if self.workdir is not None:
            write_targets_file(self.targets_path, self._targets)

    @property
    def targets(self) -> list[ScrapeTarget]:
        return list(self._targets)

    # -- reading the server ----------------------------------------------------------------

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises on an error answer)."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=2.0) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise DaemonError(
                f"Prometheus /api/v1/{path} answered {exc.code}: {body.get('error', body)}"
            ) from exc
        data: dict[str, Any] = body["data"]
        return data

    def alerts(self) -> list[PrometheusAlert]:
        """Pending and firing alerts now."""
        return [
            PrometheusAlert(
                name=a["labels"].get("alertname", ""),
                state=a["state"],
                labels=a["labels"],
                annotations=a.get("annotations", {}),
                active_at=parse_api_time(a.get("activeAt")),
                value=float(a["value"]) if a.get("value") not in (None, "") else None,
            )
            for a in self.api("alerts")["alerts"]
        ]

    def target_health(self) -> list[TargetHealth]:
        return [
            TargetHealth(
                address=t["labels"].get("instance", t.get("scrapeUrl", "")),
                health=t["health"],
                labels=t["labels"],
                last_scrape=parse_api_time(t.get("lastScrape")),
                last_error=t.get("lastError", ""),
            )
            for t in self.api("targets", state="active")["activeTargets"]
        ]

    def wait_for_alert(
        self,
        name: str,
        timeout: float = 15.0,
        *,
        state: str = "firing",
        labels: Mapping[str, str] | None = None,
    ) -> PrometheusAlert:
        """Poll ``/api/v1/alerts`` until alert ``name`` is in ``state`` (and has ``labels``)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.alerts()
            for alert in seen:
                if (
                    alert.name == name
                    and alert.state == state
                    and all(alert.labels.get(k) == v for k, v in (labels or {}).items())
                ):
                    return alert
            if time.monotonic() > deadline:
                now = ", ".join(f"{a.name}({a.state})" for a in seen) or "none"
                raise TimeoutError(
                    f"alert {name!r} not {state} within {timeout:g} s at {self.url}; "
                    f"alerts now: {now}"
                )
            time.sleep(_POLL_S)

    def wait_for_no_alert(self, name: str, timeout: float = 15.0) -> None:
        """Poll until alert ``name`` is neither pending nor firing (it resolved)."""
        deadline = time.monotonic() + timeout
        while any(a.name == name for a in self.alerts()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"alert {name!r} still active after {timeout:g} s")
            time.sleep(_POLL_S)

    def wait_for_targets_up(self, timeout: float = 10.0) -> list[TargetHealth]:
        """Poll until every target in the file_sd file has been scraped successfully."""
        deadline = time.monotonic() + timeout
        want = {t.address for t in self._targets}
        while True:
            health = self.target_health()
            up = {t.address for t in health if t.health == "up"}
            if want <= up:
                return health
            if time.monotonic() > deadline:
                detail = "; ".join(f"{t.address}: {t.health} {t.last_error}" for t in health)
                raise TimeoutError(
                    f"targets {sorted(want - up)} not up within {timeout:g} s ({detail or 'none'})"
                )
            time.sleep(_POLL_S)
