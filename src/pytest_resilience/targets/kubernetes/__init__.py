"""The Kubernetes target, a package by seam (docs/architecture.md lists its modules).

``from pytest_resilience.targets.kubernetes import KubernetesTarget`` is the way in; the
blast-radius policy and the typed API errors are here too, for the plugin and the engine.
Importing this package imports no ``kubernetes`` client module: each function that needs
the client imports it.
"""

from __future__ import annotations

from .api import (
    KubeApiError,
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeServerError,
    KubeTooManyRequests,
    KubeUnreachable,
    describe_target,
)
from .safety import ChaosPolicy
from .target import KubernetesTarget

__all__ = [
    "ChaosPolicy",
    "KubeApiError",
    "KubeConflict",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeServerError",
    "KubeTooManyRequests",
    "KubeUnreachable",
    "KubernetesTarget",
    "describe_target",
]
