"""What each fault needs from the machine that runs pytest, per target kind.

The preflight (``preflight.py``) reads this to skip, at collection, a scenario whose
faults cannot act here. On the local target the faults act on this machine (iptables
rules, tmpfs volumes, memory cgroups); on Kubernetes the cluster acts, so the runner
needs nothing of its own beyond a kubeconfig.
"""

from __future__ import annotations

__all__ = ["FAULT_NEEDS"]

FAULT_NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "local": {
        "network_block": ("root", "iptables"),
        "disk_fill": ("tmpfs",),  # a bounded volume; a plain directory would fill the host
        "memory_stress": ("memory cgroup",),  # a share of a limit the kernel enforces
    },
    "kubernetes": {},
}
