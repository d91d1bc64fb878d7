"""The three Chaos Toolkit providers: ``http``, ``process`` and ``python``.

They return what chaoslib's return, so tolerances and ``target`` keys read the same:
http ``{"status", "headers", "body"}`` (the body parsed when the response says
``application/json``), process ``{"status", "stdout", "stderr"}``, python the function's
result. A provider that cannot do its job (no connection, timeout, the function raised)
raises :class:`ActivityFailed`, which the runner records as a failed run, as chaoslib does.

The python provider calls the function in a child interpreter (``python -c``), arguments
in and result out as JSON: an extension's imports (chaostoolkit-kubernetes pulls in the
whole kubernetes client, some patch the process) cannot break the pytest process, and a
hanging call can be interrupted by Ctrl-C like any child.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ResilienceError

__all__ = ["ActivityFailed", "MissingExtension", "missing_package", "run_provider"]

#: top-level module of a Chaos Toolkit extension -> the package that installs it
EXTENSIONS = {
    "chaosk8s": "chaostoolkit-kubernetes",
    "chaostoxi": "chaostoolkit-toxiproxy",
    "chaosprometheus": "chaostoolkit-prometheus",
    "chaosaws": "chaostoolkit-aws",
    "chaosazure": "chaostoolkit-azure",
    "chaosgcp": "chaostoolkit-google-cloud-platform",
    "chaosistio": "chaostoolkit-istio",
    "chaosspring": "chaostoolkit-spring",
    "chaosaddons": "chaostoolkit-addons",
    "chaosreliably": "chaostoolkit-reliably",
    "chaosgrafana": "chaostoolkit-grafana",
    "chaosdatadog": "chaostoolkit-datadog",
    "chaoswm": "chaostoolkit-wiremock",
    "chaoslib": "chaostoolkit-lib",
}


class ActivityFailed(ResilienceError):
    """The provider ran and could not do its job: recorded as a failed run, not raised on."""


class MissingExtension(ResilienceError):
    """A python provider names a module this interpreter cannot import."""

    def __init__(self, module: str, where: str = "") -> None:
        self.module = module
        self.package = package_of(module)
        at = f" ({where})" if where else ""
        super().__init__(
            f"python provider module {module!r}{at} is not installed: pip install {self.package}"
        )


def package_of(module: str) -> str:
    top = module.split(".")[0]
    return EXTENSIONS.get(top, f"the package that provides {top!r}")


def missing_package(module: str, *, cwd: Path | None = None) -> bool:
    """Whether the module's top-level package is absent, here or beside the experiment
    (the child runs there); imports nothing of it."""
    top = module.split(".")[0]
    try:
        if importlib.util.find_spec(top) is not None:
            return False
    except (ImportError, ValueError):
        pass
    return cwd is None or importlib.machinery.PathFinder.find_spec(top, [str(cwd)]) is None


def run_provider(
    provider: Mapping[str, Any],
    *,
    cwd: Path,
    configuration: Mapping[str, Any],
    secrets: Mapping[str, Any],
    has_tolerance: bool = False,
) -> Any:
    """Run one provider (already substituted) and return its output."""
    kind = provider["type"]
    if kind == "http":
        return _http(provider)
    if kind == "process":
        return _process(provider, cwd=cwd)
    if kind == "python":
        return _python(provider, cwd=cwd, configuration=configuration, secrets=secrets)
    raise ConfigError(f"unknown provider type {kind!r}")


def _http(provider: Mapping[str, Any]) -> dict[str, Any]:
    import requests

    url = provider["url"]
    method = str(provider.get("method", "GET")).upper()
    headers = provider.get("headers") or None
    arguments = provider.get("arguments")
    timeout = provider.get("timeout")
    if isinstance(timeout, list):
        timeout = tuple(timeout)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=int(provider.get("max_retries", 0)))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options: dict[str, Any] = {
        "headers": headers,
        "timeout": timeout,
        "verify": provider.get("verify_tls", True),
    }
    try:
        if method == "GET":
            response = session.get(url, params=arguments, **options)
        elif headers and headers.get("Content-Type") == "application/json":
            response = session.request(method, url, json=arguments, **options)
        else:
            response = session.request(method, url, data=arguments, **options)
    except requests.exceptions.ConnectionError as exc:
        raise ActivityFailed(f"failed to connect to {url}: {exc}") from None
    except requests.exceptions.Timeout:
        raise ActivityFailed(f"{method} {url} took longer than its timeout {timeout}") from None
    finally:
        session.close()
    body: Any = response.text
    if response.headers.get("Content-Type") == "application/json":  # chaoslib's exact test
        with contextlib.suppress(ValueError):
            body = response.json()
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}


def _process(provider: Mapping[str, Any], *, cwd: Path) -> dict[str, Any]:
    raw_path = str(provider["path"])
    path = shutil.which(os.path.expanduser(raw_path), path=os.environ.get("PATH"))
    if path is None and os.access(cwd / raw_path, os.X_OK):
        path = str(cwd / raw_path)
    if path is None:
        raise ConfigError(
            f"process path {raw_path!r} cannot be found on PATH or in {cwd}: install it or "
            "give its absolute path"
        )
    arguments = provider.get("arguments", [])
    shell = isinstance(arguments, str)
    if shell:
        command: Any = f"{path} {arguments}"
    else:
        if isinstance(arguments, dict):
            arguments = itertools.chain.from_iterable(arguments.items())
        command = [path, *(str(a) for a in arguments if a not in (None, ""))]
    try:
        proc = subprocess.run(
            command,
            shell=shell,
            cwd=cwd,
            capture_output=True,
            timeout=provider.get("timeout"),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ActivityFailed(
            f"process {raw_path!r} took longer than its timeout {provider.get('timeout')}s"
        ) from None
    return {
        "status": proc.returncode,
        "stdout": proc.stdout.decode("utf-8", errors="replace"),
        "stderr": proc.stderr.decode("utf-8", errors="replace"),
    }


# The child: the function's own prints go to stderr, so stdout carries only the result.
_CHILD = r"""
import datetime, decimal, importlib, inspect, json, sys, traceback, uuid
request = json.load(sys.stdin)
out, sys.stdout = sys.stdout, sys.stderr

def encode(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        return f"An exception was raised: {type(value).__name__}('{value}')"
    return repr(value)

def reply(**answer):
    out.write(json.dumps(answer, default=encode))
    out.flush()
    sys.exit(0)

try:
    module = importlib.import_module(request["module"])
except ImportError as exc:
    reply(missing=exc.name or request["module"], error=f"{type(exc).__name__}: {exc}")
func = getattr(module, request["func"], None)
if not callable(func):
    reply(invalid=f"module {request['module']!r} has no function {request['func']!r}")
arguments = dict(request["arguments"])
try:
    parameters = inspect.signature(func).parameters
except (TypeError, ValueError):
    parameters = {}
if "configuration" in parameters:
    arguments["configuration"] = request["configuration"]
if "secrets" in parameters and request["scopes"]:
    arguments["secrets"] = {}
    for scope in request["scopes"]:
        arguments["secrets"].update(request["secrets"].get(scope) or {})
try:
    result = func(**arguments)
except Exception as exc:
    reply(failed=traceback.format_exception_only(type(exc), exc)[-1].strip())
reply(result=result)
"""


def _python(
    provider: Mapping[str, Any],
    *,
    cwd: Path,
    configuration: Mapping[str, Any],
    secrets: Mapping[str, Any],
) -> Any:
    module, func = str(provider["module"]), str(provider["func"])
    request = {
        "module": module,
        "func": func,
        "arguments": provider.get("arguments") or {},
        "configuration": dict(configuration),
        "secrets": dict(secrets),
        "scopes": list(provider.get("secrets") or []),
    }
    env = dict(os.environ)
    # As `chaos run` from the experiment's directory: its local modules import.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(request, default=str).encode(),
        cwd=cwd,
        env=env,
        capture_output=True,
        check=False,
        timeout=provider.get("timeout"),
    )
    try:
        answer = json.loads(proc.stdout.decode("utf-8", errors="replace") or "null")
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        stderr = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise ActivityFailed(
            f"python {module}.{func} ended with exit code {proc.returncode} and no result"
            + (f": {stderr[-1]}" if stderr else "")
        )
    if "missing" in answer:
        raise MissingExtension(str(answer["missing"]))
    if "invalid" in answer:
        raise ConfigError(str(answer["invalid"]))
    if "failed" in answer:
        raise ActivityFailed(str(answer["failed"]))
    return answer.get("result")
