"""An HTTP pod whose every request costs CPU, for the local autoscaler's tests.

``GET /work`` spins ``--work-ms`` of CPU before it answers, so the load a test sends
becomes CPU the autoscaler measures, as a real service's requests do. Binds the shared
port with SO_REUSEPORT like every replica; ``/readyz`` for the readiness probe.
"""

from __future__ import annotations

import argparse
import socketserver
import time
from http.server import BaseHTTPRequestHandler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-ms", type=float, default=5.0)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/work":
                end = time.process_time() + args.work_ms / 1000
                while time.process_time() < end:
                    pass
            body = b"ok"
            self.send_response(200 if self.path in ("/work", "/readyz") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        allow_reuse_address = True
        allow_reuse_port = True
        daemon_threads = True

    with Server(("127.0.0.1", args.port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
