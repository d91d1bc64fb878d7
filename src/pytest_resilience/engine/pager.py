"""A local page receiver: where escalations go in chaos scenarios, never the internet.

A real HTTP server on a free loopback port that answers 202 (as PagerDuty Events v2 does)
and keeps every page it received, so a scenario can assert "paged exactly once" on what
actually arrived over the wire rather than on what the engine meant to send.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .escalation import GenericWebhook

__all__ = ["LocalPager"]


class LocalPager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: list[dict[str, Any]] = []
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with pager._lock:
                    pager._pages.append(body if isinstance(body, dict) else {"body": body})
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success"}')

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: the engine logs deliveries itself

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/page"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="local-pager", daemon=True
        )
        self._thread.start()

    def channel(self) -> GenericWebhook:
        """The engine's escalation channel that delivers here."""
        return GenericWebhook(self.url, name="local-pager")

    @property
    def pages(self) -> list[dict[str, Any]]:
        """Every body received, in order (triggers and resolves)."""
        with self._lock:
            return list(self._pages)

    def triggers(self) -> list[dict[str, Any]]:
        """The pages that woke someone up (``event: trigger``)."""
        return [p for p in self.pages if p.get("event", "trigger") == "trigger"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalPager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
