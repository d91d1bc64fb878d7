"""What this machine (or cluster) can run, before anything runs: the preflight.

A fault that needs a tool the machine lacks (iptables, root for a tmpfs volume) would
fail halfway through a scenario, after load and steady state cost a minute. The
preflight knows each fault's needs up front, so such a scenario is skipped at collection
with the reason and the exact install line; under ``CI`` it fails instead, so a CI job
cannot go green by skipping. ``pytest --chaos-doctor`` prints the same verdicts, plus
every check, and runs nothing.

The checks read the machine only (PATH, euid, /proc, /sys); none starts a server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .settings import ChaosSettings
from .targets.needs import FAULT_NEEDS

__all__ = ["Check", "Verdict", "all_checks", "doctor_lines", "in_ci", "verdicts_for"]


@dataclass(frozen=True)
class Check:
    """One thing a scenario may need: present or not, and how to get it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "MISS"
        fix = "" if self.ok or not self.fix else f"  -> {self.fix}"
        return f"  {mark} {self.name:<24} {self.detail}{fix}"


@dataclass(frozen=True)
class Verdict:
    """What happens to one collected scenario on this machine."""

    nodeid: str
    missing: tuple[Check, ...] = ()
    #: why the target cannot run it at all (a capability it lacks), or ""
    unsupported: str = ""

    @property
    def runs(self) -> bool:
        return not self.missing and not self.unsupported

    def reason(self) -> str:
        """``needs iptables (apt-get install -y iptables)``: the skip reason, one line."""
        if self.unsupported:
            return self.unsupported
        parts = [f"{c.name}: {c.detail} ({c.fix})" if c.fix else c.name for c in self.missing]
        return "this machine lacks what the scenario needs: " + "; ".join(parts)


def in_ci() -> bool:
    """CI sets ``CI`` (GitHub Actions, GitLab, ...): there a skip would hide a missing install."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _binary(name: str, package: str, *, what: str) -> Check:
    path = shutil.which(name)
    if path:
        return Check(name, True, path)
    return Check(name, False, f"not on PATH ({what})", f"apt-get install -y {package}")


def _root() -> Check:
    uid = os.geteuid()
    if uid == 0:
        return Check("root", True, "uid 0")
    return Check("root", False, f"runs as uid {uid}", "run pytest as root (sudo -E pytest ...)")


def _tmpfs() -> Check:
    """A bounded volume is a tmpfs mount: root, and tmpfs known to the kernel."""
    try:
        known = "tmpfs" in Path("/proc/filesystems").read_text()
    except OSError:
        known = False
    if not known:
        return Check("tmpfs", False, "the kernel lists no tmpfs in /proc/filesystems")
    if os.geteuid() != 0:
        return Check("tmpfs", False, "mounting tmpfs needs root", _root().fix)
    return Check("tmpfs", True, "root may mount bounded volumes")


def _cgroups() -> Check:
    """Memory limits are cgroups (v2, or v1's memory hierarchy) where root may write them."""
    from .targets.local.cgroups import cgroup2_root

    v2 = cgroup2_root()
    controllers: list[str] = []
    if v2 is not None:
        try:
            controllers = (v2 / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
    v1_memory = any(
        line.split(":", 2)[1:2] and "memory" in line.split(":", 2)[1].split(",")
        for line in _read_lines("/proc/self/cgroup")
    )
    where = f"v2 at {v2} ({' '.join(controllers) or 'no controllers'})" if v2 else "no v2"
    where += ", v1 memory hierarchy" if v1_memory else ""
    ok = ("memory" in controllers or v1_memory) and os.geteuid() == 0
    if ok:
        return Check("memory cgroup", True, where)
    why = "not root" if os.geteuid() != 0 else "no memory controller"
    return Check(
        "memory cgroup",
        False,
        f"{where}; {why}: memory limits fall back to RLIMIT_AS",
        "run as root on a host with the memory controller",
    )


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _toxiproxy() -> Check:
    path = shutil.which("toxiproxy-server")
    if path:
        return Check("toxiproxy", True, f"{path} (latency faults use it)")
    return Check("toxiproxy", True, "embedded, API-compatible server (no toxiproxy-server on PATH)")


# Every check the doctor knows, by name; FAULT_NEEDS (targets/needs.py) refers to these.
_CHECKS: dict[str, Callable[[], Check]] = {
    "root": _root,
    "iptables": lambda: _binary("iptables", "iptables", what="network_block writes rules"),
    "tc": lambda: _binary("tc", "iproute2", what="traffic control"),
    "tmpfs": _tmpfs,
    "memory cgroup": _cgroups,
    "prometheus": lambda: _binary("prometheus", "prometheus", what="PromQL SLOs, the real loop"),
    "alertmanager": lambda: _binary(
        "prometheus-alertmanager", "prometheus-alertmanager", what="alerts through Alertmanager"
    ),
    "chromium": lambda: _binary("chromium", "chromium", what="report rendering checks"),
    "toxiproxy": _toxiproxy,
}


def all_checks() -> list[Check]:
    return [check() for check in _CHECKS.values()]


def needs_of(target: str, faults: Iterable[str]) -> list[str]:
    """The check names the given fault fixtures need on ``target`` (local, kubernetes)."""
    table = FAULT_NEEDS.get(target, {})
    return [need for fault in faults for need in table.get(fault, ())]


def check_names(names: Iterable[object], *, where: str) -> list[str]:
    """``@pytest.mark.chaos(needs=[...])`` values, each a known check; else a ValueError
    naming ``where`` and every known name."""
    names = list(names)
    unknown = [n for n in names if n not in _CHECKS]
    if unknown:
        raise ValueError(
            f"{where}: @pytest.mark.chaos(needs=...) names unknown check(s) "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(_CHECKS)}"
        )
    return [str(n) for n in names]


def verdicts_for(
    target: str,
    scenarios: Iterable[tuple[str, Iterable[str], Iterable[str]]],
    unsupported: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """One verdict per (nodeid, fault fixtures, checks it names itself) on ``target``;
    each check runs once. ``unsupported`` maps a nodeid to why the target cannot run it
    at all (capabilities.py)."""
    known: dict[str, Check] = {}
    verdicts = []
    for nodeid, faults, named in scenarios:
        needed = dict.fromkeys([*needs_of(target, faults), *named])
        for name in needed:
            if name not in known:
                known[name] = _CHECKS[name]()
        missing = tuple(known[n] for n in needed if not known[n].ok)
        verdicts.append(Verdict(nodeid, missing, (unsupported or {}).get(nodeid, "")))
    return verdicts


def doctor_lines(settings: ChaosSettings, verdicts: Sequence[Verdict]) -> list[str]:
    """The doctor's screen: every check, the cluster when the target is one, then each
    scenario's verdict on this machine."""
    ci = "CI is set: a scenario that cannot run fails" if in_ci() else "not CI"
    lines = [f"chaos doctor: target {settings.target}; {ci}", "machine:"]
    lines += [c.line() for c in all_checks()]
    if settings.target == "kubernetes":
        from .targets.kubernetes.preflight import cluster_lines

        lines += cluster_lines(settings)
    runs = [v for v in verdicts if v.runs]
    unsupported = [v for v in verdicts if v.unsupported]
    held = [v for v in verdicts if not v.runs and not v.unsupported]
    word = "fail" if in_ci() else "skip"
    lines.append(
        f"scenarios: {len(runs)} run, {len(held)} {word} (this machine), "
        f"{len(unsupported)} skip (target lacks a capability)"
    )
    lines += [f"  run   {v.nodeid}" for v in runs]
    lines += [f"  {word:<5} {v.nodeid}: {v.reason()}" for v in held]
    lines += [f"  skip  {v.nodeid}: {v.reason()}" for v in unsupported]
    return lines
