"""The services YAML of the local target, loaded into checked dataclasses.

Everything a user can get wrong in that file is found here, before any process starts,
and reported as a :class:`ConfigError` naming the file, the dotted field
(``services[2].replicas``) and the YAML line, so a typo never surfaces later as a pod
that "just does not come up". The format is described in docs/services.md.

Resource keys (what the fault catalogue acts on), beyond that format:

``proxied: true``
    Route the service through Toxiproxy: the local target starts a Toxiproxy server (the
    ``toxiproxy_url`` it is given, else ``toxiproxy-server`` on PATH, else the embedded one)
    and a proxy named after the service, listening on a free loopback port and forwarding to
    the service's port. Other services reach it with ``{proxies.<name>.port}``, so latency,
    bandwidth and reset toxics on that proxy hurt exactly their traffic to it. Needs a port.
``volume: {size_mb: N}``
    The service's data_dir becomes a filesystem of N MiB (a tmpfs mount), so disk_fill fills
    something small and the service sees ENOSPC for real. Implies ``data_dir: true``;
    unmounted at close. Mounting needs root: without it the data_dir is a plain directory
    (logged at start), the service runs all the same, and disk_fill on it is refused with a
    PrivilegeError, since it would fill the host's own filesystem.
``memory_limit_mb: N``
    Each pod is limited to N MiB by its own memory cgroup (cgroup v2 ``memory.max``, or the
    v1 memory controller), else by RLIMIT_AS; exceeding it gets the pod OOM-killed. Pods get
    ``MEMORY_LIMIT_MB``.

Placeholders beyond the format: ``{proxies.<name>.port}`` (the proxy in front of a proxied
service) and ``{services.<name>.data_dir}`` (another service's data directory, e.g. so an API
can report how full the database's volume is).

Size: over 500 lines because _Checker is the services format's grammar, one check and
message per key, kept beside the dataclasses it fills.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..yamlfile import YamlDocument, YamlSyntaxError, dotted, parse_yaml

__all__ = [
    "DEFAULT_NODE",
    "MIN_MEMORY_LIMIT_MB",
    "DependencyCycle",
    "HealthCheck",
    "RestartPolicy",
    "ServiceSpec",
    "dependency_order",
    "expand_placeholders",
    "load_services",
    "parse_services",
    "placeholders_in",
]

DEFAULT_NODE = "local-node"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_SERVICE_PORT = re.compile(r"^services\.([a-z0-9-]+)\.port$")
_SERVICE_DATA_DIR = re.compile(r"^services\.([a-z0-9-]+)\.data_dir$")
_PROXY_PORT = re.compile(r"^proxies\.([a-z0-9-]+)\.port$")
_ALWAYS = ("python", "pod_name", "service", "version", "work_dir", "host")
_POLICIES = ("always", "on-failure", "never")
_SERVICE_KEYS = (
    "name",
    "labels",
    "replicas",
    "port",
    "pod_port",
    "health",
    "node",
    "version",
    "versions",
    "env",
    "restart",
    "data_dir",
    "depends_on",
    "start_timeout_s",
    "user",
    "proxied",
    "volume",
    "memory_limit_mb",
)
#: Below this a Python pod cannot even start; a smaller limit is a typo (KiB, not MiB).
MIN_MEMORY_LIMIT_MB = 16


@dataclass(frozen=True)
class HealthCheck:
    """How a pod proves it is ready: ``http`` GET of ``path``, ``tcp`` connect, or alive."""

    kind: Literal["http", "tcp", "process"]
    path: str = ""


@dataclass(frozen=True)
class RestartPolicy:
    """Kubelet-style restarts: the delay doubles per death up to ``max_backoff_s`` and
    falls back to ``backoff_s`` once a pod has stayed ready for ``reset_after_s``."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    reset_after_s: float = 10.0


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the YAML, checked; ``port`` is an int, ``"auto"`` or ``None``."""

    name: str
    versions: Mapping[str, tuple[str, ...]]
    version: str
    labels: Mapping[str, str] = field(default_factory=dict)
    replicas: int = 1
    port: int | Literal["auto"] | None = None
    pod_port: bool = False
    health: HealthCheck = HealthCheck("process")
    nodes: tuple[str, ...] = (DEFAULT_NODE,)
    env: Mapping[str, str] = field(default_factory=dict)
    restart: RestartPolicy = RestartPolicy()
    data_dir: bool = False
    depends_on: tuple[str, ...] = ()
    start_timeout_s: float = 30.0
    user: str | None = None
    #: reached by other services through a Toxiproxy proxy named after it
    proxied: bool = False
    #: size of the bounded filesystem mounted as its data_dir, None for a plain directory
    volume_mb: int | None = None
    memory_limit_mb: int | None = None
    source: str | None = None
    line: int | None = None


def load_services(path: str | Path) -> list[ServiceSpec]:
    """Read and check a services YAML file; raises ConfigError naming file, field and line."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read services file: {exc.strerror}", source=source) from exc
    return parse_services(text, source=source)


def parse_services(text: str, *, source: str = "<services>") -> list[ServiceSpec]:
    """Check services YAML given as text (``source`` names it in errors)."""
    try:
        doc = parse_yaml(text, source=source)
    except YamlSyntaxError as exc:
        line = exc.line
        raise ConfigError(
            f"malformed YAML{f' at line {line}' if line else ''}: {exc.problem}",
            source=source,
            line=line,
        ) from exc
    return _Checker(source, doc).services(doc.data)


def placeholders_in(text: str) -> list[str]:
    """The ``{name}`` placeholders of a command argument or env value (``{{`` escapes)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1) is not None]


def expand_placeholders(text: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` by ``values[name]``; ``{{`` and ``}}`` give literal braces."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _PLACEHOLDER.sub(replace, text)


class _Checker:
    """Walks the parsed data; the document tells the line of each field."""

    def __init__(self, source: str, doc: YamlDocument) -> None:
        self.source = source
        self.doc = doc

    def fail(self, message: str, path: Sequence[str | int]) -> ConfigError:
        line = self._line(path)
        return ConfigError(
            f"{message}{f' (line {line})' if line else ''}",
            source=self.source,
            field=dotted(path) or None,
            line=line,
        )

    def _line(self, path: Sequence[str | int]) -> int | None:
        return self.doc.line_of(path)

    def services(self, data: Any) -> list[ServiceSpec]:
        duplicate = self.doc.duplicate_key()
        if duplicate is not None:
            # PyYAML silently keeps the last of two equal keys; a duplicated key is a typo
            path, line = duplicate
            raise ConfigError(
                f"duplicate key {path[-1]!r} (line {line})",
                source=self.source,
                field=dotted(path),
                line=line,
            )
        if not isinstance(data, dict):
            raise self.fail("the file must be a mapping with a 'services' list", [])
        unknown = sorted(set(data) - {"services"})
        if unknown:
            raise self.fail(f"unknown top-level key {unknown[0]!r}; expected 'services'", [])
        items = data.get("services")
        if not isinstance(items, list) or not items:
            raise self.fail("'services' must be a non-empty list of services", ["services"])
        specs = [self.service(item, i) for i, item in enumerate(items)]
        self._cross_check(specs)
        return specs

    def service(self, item: Any, i: int) -> ServiceSpec:
        at: list[str | int] = ["services", i]
        if not isinstance(item, dict):
            raise self.fail("each service must be a mapping", at)
        for key in item:
            if key not in _SERVICE_KEYS:
                raise self.fail(
                    f"unknown key {key!r}; known keys: {', '.join(_SERVICE_KEYS)}", [*at, key]
                )
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail(
                f"name must match [a-z0-9-]+ (a DNS label), got {name!r}", [*at, "name"]
            )
        labels = self._str_map(item.get("labels", {}), [*at, "labels"])
        labels.setdefault("app", name)
        replicas = item.get("replicas", 1)
        if not _is_int(replicas) or replicas < 0:
            raise self.fail(
                f"replicas must be an integer >= 0, got {replicas!r}", [*at, "replicas"]
            )
        port = item.get("port")
        if port is not None and port != "auto" and (not _is_int(port) or not 0 < port < 65536):
            raise self.fail(f"port must be 1-65535, 'auto' or omitted, got {port!r}", [*at, "port"])
        pod_port = self._bool(item.get("pod_port", False), [*at, "pod_port"])
        health = self._health(item, at, has_port=port is not None or pod_port)
        nodes = self._nodes(item.get("node", DEFAULT_NODE), [*at, "node"])
        versions = self._versions(item.get("versions"), [*at, "versions"])
        version = item.get("version", next(iter(versions)))
        if not isinstance(version, str) or version not in versions:
            raise self.fail(
                f"version {version!r} has no entry in versions ({', '.join(versions)})",
                [*at, "version"],
            )
        env = self._str_map(item.get("env", {}), [*at, "env"])
        restart = self._restart(item.get("restart", {}), [*at, "restart"])
        data_dir = self._bool(item.get("data_dir", False), [*at, "data_dir"])
        proxied = self._bool(item.get("proxied", False), [*at, "proxied"])
        if proxied and port is None:
            raise self.fail(
                "proxied: true needs a port (the proxy forwards to it); set port: auto",
                [*at, "proxied"],
            )
        volume_mb = self._volume(item, at)
        if volume_mb is not None:
            if item.get("data_dir") is False:
                raise self.fail(
                    "a volume is mounted as the service's data_dir; drop data_dir: false",
                    [*at, "data_dir"],
                )
            data_dir = True
        memory = item.get("memory_limit_mb")
        if memory is not None and (not _is_int(memory) or memory < MIN_MEMORY_LIMIT_MB):
            raise self.fail(
                f"memory_limit_mb must be an integer >= {MIN_MEMORY_LIMIT_MB} (MiB), "
                f"got {memory!r}",
                [*at, "memory_limit_mb"],
            )
        depends = item.get("depends_on", [])
        if isinstance(depends, str):
            depends = [depends]
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise self.fail("depends_on must be a list of service names", [*at, "depends_on"])
        timeout = item.get("start_timeout_s", 30.0)
        if not _is_number(timeout) or timeout <= 0:
            raise self.fail(
                f"start_timeout_s must be a number > 0, got {timeout!r}", [*at, "start_timeout_s"]
            )
        user = item.get("user")
        if user is not None and (not isinstance(user, str) or not user):
            raise self.fail(f"user must be a user name, got {user!r}", [*at, "user"])
        return ServiceSpec(
            name=name,
            versions=versions,
            version=version,
            labels=labels,
            replicas=replicas,
            port=port,
            pod_port=pod_port,
            health=health,
            nodes=nodes,
            env=env,
            restart=restart,
            data_dir=data_dir,
            depends_on=tuple(depends),
            start_timeout_s=float(timeout),
            user=user,
            proxied=proxied,
            volume_mb=volume_mb,
            memory_limit_mb=memory,
            source=self.source,
            line=self._line(at),
        )

    def _cross_check(self, specs: list[ServiceSpec]) -> None:
        by_name: dict[str, int] = {}
        for i, spec in enumerate(specs):
            if spec.name in by_name:
                raise self.fail(
                    f"duplicate service name {spec.name!r} "
                    f"(first at services[{by_name[spec.name]}])",
                    ["services", i, "name"],
                )
            by_name[spec.name] = i
        for i, spec in enumerate(specs):
            for j, dep in enumerate(spec.depends_on):
                if dep not in by_name or dep == spec.name:
                    raise self.fail(
                        f"depends_on names {dep!r}, which is "
                        + ("the service itself" if dep == spec.name else "not a service here")
                        + f"; services: {', '.join(by_name)}",
                        ["services", i, "depends_on", j],
                    )
        try:
            dependency_order(specs)
        except DependencyCycle as exc:
            at = next(i for i, spec in enumerate(specs) if spec.name == exc.cycle[0])
            raise self.fail(exc.message, ["services", at]) from None
        ports = {s.name: s.port for s in specs}
        proxied = {s.name for s in specs if s.proxied}
        data_dirs = {s.name for s in specs if s.data_dir}
        for i, spec in enumerate(specs):
            allowed = set(_ALWAYS)
            if spec.port is not None:
                allowed.add("port")
            if spec.pod_port:
                allowed.add("pod_port")
            if spec.data_dir:
                allowed.add("data_dir")
            texts: list[tuple[str, list[str | int]]] = [
                (arg, ["services", i, "versions", v, k])
                for v, argv in spec.versions.items()
                for k, arg in enumerate(argv)
            ]
            texts += [(value, ["services", i, "env", key]) for key, value in spec.env.items()]
            for text, path in texts:
                for name in placeholders_in(text):
                    if name in allowed:
                        continue
                    other = _SERVICE_PORT.match(name)
                    if other and ports.get(other.group(1)) is not None:
                        continue
                    proxy = _PROXY_PORT.match(name)
                    if proxy and proxy.group(1) in proxied:
                        continue
                    data = _SERVICE_DATA_DIR.match(name)
                    if data and data.group(1) in data_dirs:
                        continue
                    raise self.fail(_placeholder_problem(name, spec, ports), path)

    def _health(self, item: dict[str, Any], at: list[str | int], *, has_port: bool) -> HealthCheck:
        raw = item.get("health")
        path = [*at, "health"]
        if raw is None:
            return HealthCheck("tcp") if has_port else HealthCheck("process")
        if raw == "process":
            return HealthCheck("process")
        if not isinstance(raw, dict) or len(raw) != 1:
            raise self.fail(
                f"health must be {{http: /path}}, {{tcp: true}} or 'process', got {raw!r}", path
            )
        ((kind, value),) = raw.items()
        if kind == "http":
            if not isinstance(value, str) or not value.startswith("/"):
                raise self.fail(
                    f"health.http must be a path starting with '/', got {value!r}", path
                )
        elif kind == "tcp":
            if value is not True:
                raise self.fail(f"health.tcp must be true, got {value!r}", path)
        else:
            raise self.fail(f"unknown health check {kind!r}; use http or tcp", [*path, kind])
        if not has_port:
            raise self.fail(f"a {kind} health check needs a port or pod_port: true", path)
        return HealthCheck(kind, value if kind == "http" else "")

    def _volume(self, item: dict[str, Any], at: list[str | int]) -> int | None:
        raw = item.get("volume")
        if raw is None:
            return None
        path = [*at, "volume"]
        if not isinstance(raw, dict) or set(raw) != {"size_mb"}:
            raise self.fail(f"volume must be {{size_mb: <MiB>}}, got {raw!r}", path)
        size = raw["size_mb"]
        if not _is_int(size) or size < 1:
            raise self.fail(
                f"volume.size_mb must be an integer >= 1 (MiB), got {size!r}", [*path, "size_mb"]
            )
        return int(size)

    def _nodes(self, raw: Any, path: list[str | int]) -> tuple[str, ...]:
        nodes = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(nodes, list)
            or not nodes
            or not all(isinstance(n, str) and _NAME.match(n) for n in nodes)
        ):
            raise self.fail(f"node must be a node name or a list of node names, got {raw!r}", path)
        return tuple(dict.fromkeys(nodes))

    def _versions(self, raw: Any, path: list[str | int]) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail("versions must map each version to its command (an argv list)", path)
        versions: dict[str, tuple[str, ...]] = {}
        for key, argv in raw.items():
            if not isinstance(key, str):
                raise self.fail(f"version names must be strings, got {key!r}", [*path, str(key)])
            if (
                not isinstance(argv, list)
                or not argv
                or not all(
                    isinstance(a, str | int | float) and not isinstance(a, bool) for a in argv
                )
            ):
                raise self.fail(
                    f"the command must be a non-empty list of strings, got {argv!r}", [*path, key]
                )
            versions[key] = tuple(str(a) for a in argv)
        return versions

    def _restart(self, raw: Any, path: list[str | int]) -> RestartPolicy:
        if not isinstance(raw, dict):
            raise self.fail(f"restart must be a mapping, got {raw!r}", path)
        known = ("policy", "backoff_s", "max_backoff_s", "reset_after_s")
        for key in raw:
            if key not in known:
                raise self.fail(
                    f"unknown key {key!r}; known keys: {', '.join(known)}", [*path, key]
                )
        default = RestartPolicy()
        policy = raw.get("policy", default.policy)
        if policy not in _POLICIES:
            raise self.fail(
                f"policy must be one of {', '.join(_POLICIES)}, got {policy!r}", [*path, "policy"]
            )
        numbers = {}
        for key in known[1:]:
            value = raw.get(key, getattr(default, key))
            if not _is_number(value) or value <= 0:
                raise self.fail(f"{key} must be a number > 0, got {value!r}", [*path, key])
            numbers[key] = float(value)
        if numbers["max_backoff_s"] < numbers["backoff_s"]:
            raise self.fail(
                f"max_backoff_s ({numbers['max_backoff_s']:g}) is below backoff_s "
                f"({numbers['backoff_s']:g})",
                [*path, "max_backoff_s"],
            )
        return RestartPolicy(policy=policy, **numbers)

    def _str_map(self, raw: Any, path: list[str | int]) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise self.fail(f"must be a mapping of names to strings, got {raw!r}", path)
        result: dict[str, str] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key:
                raise self.fail(f"keys must be non-empty strings, got {key!r}", path)
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.fail(f"value must be a string or number, got {value!r}", [*path, key])
            result[key] = str(value)
        return result

    def _bool(self, raw: Any, path: list[str | int]) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(f"must be true or false, got {raw!r}", path)
        return raw


class DependencyCycle(ConfigError):
    """``depends_on`` goes round in a circle; ``cycle`` names it, its first name repeated last."""

    def __init__(self, cycle: Sequence[str], *, source: str | None, line: int | None) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            f"depends_on forms a cycle: {' -> '.join(self.cycle)}", source=source, line=line
        )


def dependency_order(specs: Sequence[ServiceSpec]) -> list[str]:
    """The services' names, each after every service it depends on: the start order.

    The one place a ``depends_on`` cycle is found, both when a file is checked and when a
    target is given specs built in Python. An unknown name is the checker's to report (it
    knows the field); here it is skipped.
    """
    by_name = {spec.name: spec for spec in specs}
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order or name not in by_name:
            return
        if name in visiting:
            spec = by_name[name]
            cycle = [*visiting[visiting.index(name) :], name]
            raise DependencyCycle(cycle, source=spec.source, line=spec.line)
        visiting.append(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        visiting.pop()
        order.append(name)

    for spec in specs:
        visit(spec.name)
    return order


def _placeholder_problem(name: str, spec: ServiceSpec, ports: Mapping[str, Any]) -> str:
    other = _SERVICE_PORT.match(name) or _PROXY_PORT.match(name) or _SERVICE_DATA_DIR.match(name)
    if other:
        if other.group(1) not in ports:
            return f"placeholder {{{name}}} names an unknown service {other.group(1)!r}"
        if name.startswith("proxies."):
            return f"placeholder {{{name}}}: service {other.group(1)!r} is not proxied: true"
        if name.endswith(".data_dir"):
            return f"placeholder {{{name}}}: service {other.group(1)!r} has no data_dir"
        return f"placeholder {{{name}}}: service {other.group(1)!r} has no port"
    if name == "port":
        return "placeholder {port} used but the service has no port (set port: auto)"
    if name == "pod_port":
        return "placeholder {pod_port} used but the service has no pod_port: true"
    if name == "data_dir":
        return "placeholder {data_dir} used but the service has no data_dir: true"
    known = [
        *_ALWAYS,
        "port",
        "pod_port",
        "data_dir",
        "services.<name>.port",
        "services.<name>.data_dir",
        "proxies.<name>.port",
    ]
    return (
        f"unknown placeholder {{{name}}}; known: {', '.join('{' + k + '}' for k in known)} "
        "(write {{ and }} for literal braces)"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
