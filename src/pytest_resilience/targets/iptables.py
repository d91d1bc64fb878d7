"""The iptables rules of a network block, written so that nothing else is touched.

Each block gets a chain of its own (``PYRES-<id>``) holding the match rules, and one
jump from INPUT and/or OUTPUT into it. Reverting removes exactly those jumps and that
chain, so other rules on the machine, and other blocks, stay as they were; and a
cleanup after SIGKILL needs nothing but the chain name from the ledger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FaultError, PrivilegeError

__all__ = ["FilterRule", "check_privilege", "install", "remove", "rules_of"]

HOOKS = ("INPUT", "OUTPUT")


@dataclass(frozen=True)
class FilterRule:
    """One rule of the filter table: the hook it joins and what it matches."""

    hook: str  # INPUT (ingress on this host) or OUTPUT (egress of a local process)
    match: tuple[str, ...]


def check_privilege() -> str:
    """Path of the iptables binary, or a PrivilegeError that says what is missing."""
    binary = shutil.which("iptables")
    if binary is None:
        raise PrivilegeError(
            "network_block needs the iptables binary (Debian: apt-get install iptables)"
        )
    if os.geteuid() != 0:
        raise PrivilegeError(
            "network_block writes iptables rules and needs root (CAP_NET_ADMIN); "
            f"this process runs as uid {os.geteuid()}"
        )
    return binary


def install(chain: str, rules: Sequence[FilterRule], *, action: str) -> None:
    """Create ``chain`` with ``rules`` and jump to it; half-done work is undone on error."""
    if action not in ("DROP", "REJECT"):
        raise FaultError(f"network_block action must be 'drop' or 'reject', got {action!r}")
    target = ["-j", "DROP"] if action == "DROP" else ["-j", "REJECT", "--reject-with", "tcp-reset"]
    try:
        _iptables("-N", chain)
        for rule in rules:
            _iptables("-A", chain, *rule.match, *target)
        for hook in sorted({r.hook for r in rules}):
            _iptables("-I", hook, "1", "-j", chain)
    except FaultError:
        remove(chain)
        raise


def remove(chain: str) -> None:
    """Idempotent: remove every jump to ``chain``, then the chain itself."""
    if shutil.which("iptables") is None:
        # Without the binary nothing here could have installed the chain; but a chain made
        # before the binary went away cannot be seen, so this is no proof it is gone.
        raise FaultError(
            f"cannot remove iptables chain {chain}: no iptables binary on this machine "
            "(Debian: apt-get install iptables), so whether the chain is still there "
            "cannot be checked"
        )
    for hook in HOOKS:
        while _iptables("-D", hook, "-j", chain, check=False) == 0:
            pass
    if _iptables("-F", chain, check=False) == 0:
        _iptables("-X", chain, check=False)


def rules_of(chain: str) -> list[str]:
    """``iptables -S`` lines that mention ``chain`` (empty once removed)."""
    out = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if chain in line]


def _iptables(*args: str, check: bool = True) -> int:
    # -w: wait for the xtables lock instead of failing when another tool holds it
    try:
        proc = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise FaultError("iptables binary not found (Debian: apt-get install iptables)") from None
    if check and proc.returncode != 0:
        raise FaultError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.returncode
