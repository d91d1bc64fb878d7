"""A real Alertmanager (Debian's ``prometheus-alertmanager``) routing every alert to one webhook.

The webhook is the remediation engine's Alertmanager-compatible receiver. Grouping waits
are one second so detection time in a test is dominated by the fault, not by batching;
``repeat_interval`` is long because the engine, not Alertmanager, decides when to retry.
Clustering is disabled (``--cluster.listen-address=``): a lone instance otherwise waits
for peers before it sends anything, and would open a second port on all interfaces.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import AlertmanagerSettings, render_alertmanager_config
from .daemon import ManagedDaemon

__all__ = ["ManagedAlertmanager"]


class ManagedAlertmanager(ManagedDaemon):
    """``with ManagedAlertmanager("http://127.0.0.1:8080/alerts") as am: ... am.url``"""

    binary = "prometheus-alertmanager"
    display_name = "Alertmanager (Debian package prometheus-alertmanager)"

    def __init__(
        self,
        webhook_url: str,
        *,
        group_by: Sequence[str] = ("alertname", "service"),
        group_wait_s: float = 1.0,
        group_interval_s: float = 1.0,
        repeat_interval_s: float = 4 * 3600.0,
        send_resolved: bool = True,
        binary: str | None = None,
        startup_timeout_s: float = 20.0,
    ) -> None:
        super().__init__(binary=binary, startup_timeout_s=startup_timeout_s)
        self.settings = AlertmanagerSettings(
            webhook_url=webhook_url,
            group_by=tuple(group_by),
            group_wait_s=group_wait_s,
            group_interval_s=group_interval_s,
            repeat_interval_s=repeat_interval_s,
            send_resolved=send_resolved,
        )
        # Rendered now so a bad webhook URL fails at construction, not at start.
        self._config_text = render_alertmanager_config(self.settings)

    @property
    def config_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "alertmanager.yml"

    def _prepare(self, workdir: Path) -> None:
        (workdir / "data").mkdir()
        (workdir / "alertmanager.yml").write_text(self._config_text)

    def _argv(self, path: str) -> list[str]:
        assert self.workdir is not None
        return [
            path,
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (``/api/v2/alerts``), as it reports them."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=2.0) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)
            return alerts
