"""Marks on the cluster: each changed object carries the change records made on it.

``pytest-resilience/fault: <ledger ids>`` and ``pytest-resilience/record-<hash>: <record
JSON>`` on every pod, node or NetworkPolicy a primitive changes; :meth:`KubeMarks.find_marked`
reads them back, so a cleanup without the ledger file (a lost CI runner) still finds what to
revert, and a fault killed between marking and ledgering is undone by its ledger id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import FaultError
from ..base import ChangeRecord, ObjectRef
from .api import KubeNotFound
from .fault_host import _short

if TYPE_CHECKING:
    from .fault_host import KubeHost

__all__ = ["FAULT_ANNOTATION", "RECORD_ANNOTATION_PREFIX", "KubeMarks"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

FAULT_ANNOTATION = "pytest-resilience/fault"
RECORD_ANNOTATION_PREFIX = "pytest-resilience/record-"


class KubeMarks:
    """The marking half of :class:`~.faults.KubeFaults` (a mixin of the target)."""

    def find_marked(self: KubeHost) -> list[ChangeRecord]:
        """Every change record annotated on pods and NetworkPolicies of the namespace and on
        nodes: what a cleanup must revert when the ledger file is not at hand."""
        # One fault may change several pods under one ledger id: one record per object.
        found: dict[tuple[str, str, tuple[ObjectRef, ...]], ChangeRecord] = {}
        ns = self.namespace
        sources = [
            (self._core.list_namespaced_pod, (ns,), "pods", ns),
            (self._net.list_namespaced_network_policy, (ns,), "networkpolicies", ns),
            (self._core.list_node, (), "nodes", None),
        ]
        for fn, args, resource, where in sources:
            try:
                data = self._read(fn, *args, verb="list", resource=resource, namespace=where)
            except KubeNotFound:
                continue
            for obj in data.get("items") or ():
                for k, v in (obj.get("metadata", {}).get("annotations") or {}).items():
                    if k.startswith(RECORD_ANNOTATION_PREFIX):
                        try:
                            rec = ChangeRecord.from_dict(json.loads(v))
                        except (ValueError, FaultError):
                            log.warning("ignoring unreadable annotation %s on %s", k, resource)
                            continue
                        found.setdefault((rec.kind, rec.ledger_id, rec.objects), rec)
        return list(found.values())

    def _mark(
        self: KubeHost, record: ChangeRecord, *, extra_labels: Mapping[str, str] = {}
    ) -> None:
        ref = record.objects[0]
        ids = self._fault_ids(ref) | {record.ledger_id}
        meta: dict[str, Any] = {
            "annotations": {
                FAULT_ANNOTATION: " ".join(sorted(ids)),
                RECORD_ANNOTATION_PREFIX + _short(record.ledger_id): json.dumps(record.to_dict()),
            }
        }
        if extra_labels:
            meta["labels"] = dict(extra_labels)
        self._patch_meta(ref.kind, ref.name, ref.namespace, meta)

    def _unmark(self: KubeHost, record: ChangeRecord) -> None:
        ref = record.objects[0]
        try:
            ids = self._fault_ids(ref) - {record.ledger_id}
            meta: dict[str, Any] = {
                "annotations": {
                    FAULT_ANNOTATION: " ".join(sorted(ids)) or None,
                    RECORD_ANNOTATION_PREFIX + _short(record.ledger_id): None,
                }
            }
            label = record.detail.get("label")
            if label:
                meta["labels"] = {label: None}
            self._patch_meta(ref.kind, ref.name, ref.namespace, meta)
        except KubeNotFound:
            pass

    def _fault_ids(self: KubeHost, ref: ObjectRef) -> set[str]:
        if ref.kind == "Node":
            obj = self._node_raw(ref.name)
        else:
            obj = self._read_pod(ref.name, ref.namespace or self.namespace)
        value = (obj.get("metadata", {}).get("annotations") or {}).get(FAULT_ANNOTATION, "")
        return set(value.split())
