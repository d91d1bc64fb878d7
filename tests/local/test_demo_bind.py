"""The demo API as a pod runs it: reachable on the pod IP, not only on loopback.

In a pod the kubelet's probes, the Service's endpoints and Prometheus connect to the pod
IP. A server bound to 127.0.0.1 refuses them all, the pod never turns Ready and
``kubectl rollout status`` times out. Here the API starts with exactly the environment the
image (deploy/Dockerfile.demo) and the Deployment (deploy/k8s/api.yaml) give it, and is
probed on this machine's non-loopback address, which plays the pod IP.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from pytest_resilience.demo.api import ApiSettings
from pytest_resilience.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pod_ip() -> str:
    """A local address other than 127.0.0.1, as the pod IP is to a pod's loopback."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return "127.0.0.2"  # still not 127.0.0.1: a socket bound there refuses it too


def _image_env() -> dict[str, str]:
    """ENV lines of the Dockerfile, then the Deployment's container env (kubelet order)."""
    env: dict[str, str] = {}
    text = (ROOT / "deploy" / "Dockerfile.demo").read_text()
    for block in re.findall(r"^ENV (.+?)(?<!\\)$", text, flags=re.M | re.S):
        for key, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            env[key] = value
    for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "api.yaml").read_text()):
        if doc and doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            for item in container["env"]:
                if "value" in item:
                    env[item["name"]] = item["value"]
    return env


@pytest.fixture
def pod_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    env = dict(os.environ)
    env.update(_image_env())
    env.update(PORT=str(port), DATA_DIR=str(tmp_path), DEMO_DISK_PATH=str(tmp_path))
    # Postgres/Redis as named in the manifest do not resolve here: the API starts degraded,
    # which is what a pod does before its dependencies are up; /healthz still answers.
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_resilience.demo.api"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _get(host: str, port: int, path: str) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_pod_answers_the_kubelet_on_its_pod_ip(
    pod_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = pod_process
    deadline = time.monotonic() + 30
    while True:  # poll with a deadline: the server is up once loopback answers
        assert proc.poll() is None, "the demo API exited"
        try:
            _get("127.0.0.1", port, "/healthz")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # what the kubelet's httpGet probe, the Service and Prometheus do: connect to the pod IP
    assert _get(_pod_ip(), port, "/healthz") == 200


def test_loopback_stays_the_local_default() -> None:
    assert ApiSettings.from_env({"PORT": "8080"}).bind_address == "127.0.0.1"
    assert ApiSettings.from_env({"PORT": "8080", "DEMO_BIND_ADDRESS": "0.0.0.0"}).bind_address == (
        "0.0.0.0"
    )
    assert ApiSettings.from_env({"PORT": "8080", "DEMO_BIND_ADDRESS": "::"}).bind_address == "::"


def test_a_bad_bind_address_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"DEMO_BIND_ADDRESS.*'localhost:80'"):
        ApiSettings.from_env({"PORT": "8080", "DEMO_BIND_ADDRESS": "localhost:80"})
