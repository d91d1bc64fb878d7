"""The Kubernetes fault primitives, split by family, keep the one import path users know."""

from __future__ import annotations

from pathlib import Path

import pytest_resilience.targets.kube_faults as kube_faults
from pytest_resilience.targets.kube_faults import (  # noqa: F401  the names of before the split
    BLOCK_LABEL_PREFIX,
    FAULT_ANNOTATION,
    NETWORK_POLICY_LIMITS,
    RECORD_ANNOTATION_PREFIX,
    TARGET,
    ChangeRecord,
    Direction,
    KubeFaults,
    ObjectRef,
    VolumeBound,
    quantity_bytes,
)
from pytest_resilience.targets.kubernetes import KubernetesTarget

FAMILY = ["kube_faults", "kube_fault_host", "kube_marks", "kube_network_block", "kube_disk_fill"]
PRIMITIVES = [
    # the seam (FaultPrimitives) and the per-pod primitives, as the target offers them
    "network_block", "disk_fill", "volume_usage", "memory_stress", "node_failure",
    "undo_unrecorded", "block_pod_network", "fill_pod_disk", "stress_pod_memory", "fail_node",
    "undo", "find_marked", "volume_mounts", "volume_bound", "volume_used",
]  # fmt: skip


def test_every_primitive_is_still_on_the_target() -> None:
    assert [name for name in PRIMITIVES if not hasattr(KubernetesTarget, name)] == []
    assert issubclass(KubernetesTarget, KubeFaults)


def test_each_module_of_the_family_holds_one_idea_of_a_readable_size() -> None:
    here = Path(kube_faults.__file__).parent
    sizes = {name: len((here / f"{name}.py").read_text().splitlines()) for name in FAMILY}
    assert {name: n for name, n in sizes.items() if n > 500} == {}
