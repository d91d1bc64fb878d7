"""The bundled system under test for the local target: API replicas, Postgres and Redis.

Only paths live here, so importing the package stays cheap: the programs themselves are run
as ``python -m pytest_resilience.demo.{api,postgres,redis}`` by services.yaml, and the
locustfile is loaded by Locust in its own process (importing locust here would monkey-patch
this interpreter with gevent).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOCUSTFILE", "SERVICES_YAML"]

SERVICES_YAML = Path(__file__).with_name("services.yaml")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
