"""What the Kubernetes fault primitives use of the target they are mixed into.

The primitives are mixins of :class:`~.target.KubernetesTarget`, one module per family
(:mod:`.network_block`, :mod:`.disk_fill`, :mod:`.marks`, the rest and the
seam in :mod:`.faults`). Each method takes ``self: KubeHost``: the protocol below names
what they call on the target, each other's methods included, so none of them imports the
target (which imports them) or another family's class. Also the helpers they share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ...errors import SelectorMatchedNothing
from ..base import ChangeLog, ChangeRecord, ObjectRef, Pod
from .safety import ChaosPolicy

if TYPE_CHECKING:
    from .disk_fill import VolumeBound
    from .network_block import Direction

__all__ = ["TARGET", "KubeHost"]

#: the ``target`` of every change record made here (the local target's records say "local")
TARGET = "kubernetes"


class KubeHost(Protocol):
    """The target as the fault primitives see it (no import of it: the target imports them)."""

    name: str
    policy: ChaosPolicy
    context: str
    namespace: str
    dry_run: bool
    net_image: str
    _core: Any
    _net: Any

    # the target's own
    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]: ...
    def select(
        self, selector: str | Mapping[str, str], *, namespace: str | None = None
    ) -> list[Pod]: ...
    def exec(
        self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0, container: str | None = None
    ) -> Any: ...
    def drain(self, node: str, *, timeout: float = 120.0) -> list[Pod]: ...
    def uncordon(self, node: str) -> None: ...
    def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]: ...
    def _read_pod(self, name: str, namespace: str) -> dict[str, Any]: ...
    def _change(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
    def _watch_until(self, *args: Any, **kwargs: Any) -> Mapping[str, Any] | None: ...
    def _node_raw(self, node: str) -> dict[str, Any]: ...
    def _patch_meta(
        self, kind: str, name: str, namespace: str | None, meta: Mapping[str, Any]
    ) -> None: ...

    # the primitives' own, called across families (faults.py)
    def block_pod_network(
        self,
        pod: Pod,
        *,
        ledger_id: str,
        ports: Sequence[int] = (),
        hosts: Sequence[str] = (),
        direction: Direction = "both",
        action: Literal["drop", "reject"] = "drop",
        timeout: float = 60.0,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord: ...
    def fill_pod_disk(
        self,
        pod: Pod,
        *,
        ledger_id: str,
        path: str,
        size_mb: int,
        container: str | None = None,
        changes: ChangeLog | None = None,
        bound: VolumeBound | None = None,
    ) -> ChangeRecord: ...
    def stress_pod_memory(
        self,
        pod: Pod,
        *,
        ledger_id: str,
        mb: int,
        duration_s: float = 300.0,
        container: str | None = None,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord: ...
    def fail_node(
        self,
        node: str,
        *,
        ledger_id: str,
        timeout: float = 120.0,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord: ...
    def undo(self, record: ChangeRecord | Mapping[str, Any]) -> str | None: ...
    def _exec_undo(self, pod: Pod, script: str, container: str | None) -> None: ...
    # network (network_block.py)
    def _add_ephemeral(self, pod: Pod, container: str) -> None: ...
    def _wait_container_running(self, pod: Pod, container: str, timeout: float) -> None: ...
    def _network_policy_block(
        self,
        pod: Pod,
        ledger_id: str,
        direction: Direction,
        refusal: Exception,
        *,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord: ...
    def _ephemeral_never_ran(self, pod: Pod, container: str) -> str | None: ...
    # disk (disk_fill.py)
    def volume_mounts(
        self, pod: Pod, obj: Mapping[str, Any] | None = None
    ) -> list[tuple[str, str]]: ...
    def volume_bound(
        self, pod: Pod, obj: Mapping[str, Any], container: str | None, directory: str
    ) -> VolumeBound: ...
    def volume_used(self, pod: Pod, mount: str, *, container: str | None = None) -> int | None: ...
    # marks (marks.py)
    def find_marked(self) -> list[ChangeRecord]: ...
    def _mark(self, record: ChangeRecord, *, extra_labels: Mapping[str, str] = ...) -> None: ...
    def _unmark(self, record: ChangeRecord) -> None: ...
    def _fault_ids(self, ref: ObjectRef) -> set[str]: ...


def _ahead(changes: ChangeLog | None, record: ChangeRecord) -> None:
    """The record reaches the ledger before the object is touched (annotated, then changed)."""
    if changes is not None:
        changes.put(record)


def _drop(changes: ChangeLog | None, record: ChangeRecord) -> None:
    """A primitive undid its own half-done change: the record describes nothing any more."""
    if changes is not None:
        changes.discard(record)


def _workload_pods(target: KubeHost, name: str | Mapping[str, str]) -> list[Pod]:
    """A workload (Deployment) name or a label selector, as the local target takes both."""
    if isinstance(name, str) and "=" not in name:
        pods = [p for p in target.pods() if p.workload == name]
        if not pods:
            raise SelectorMatchedNothing(
                f"no pod of workload {name!r} in namespace {target.namespace!r} "
                f"(context {target.context!r}); give a label selector such as 'app={name}'"
            )
        return pods
    return target.select(name)


def _short(ledger_id: str) -> str:
    """A DNS-label-safe key for names (container, chain, annotation): 10 hex chars."""
    return hashlib.sha1(ledger_id.encode()).hexdigest()[:10]
