"""Disk fill on Kubernetes: a file sized against the volume's own bound.

An emptyDir's ``sizeLimit`` (the kubelet evicts the pod past it) or a PersistentVolumeClaim's
capacity (writes fail with ENOSPC), its usage by ``du`` as the kubelet counts it. Never
``df``: on an emptyDir that is the node's disk; a volume without a bound is refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ...errors import FaultError, SelectorMatchedNothing
from ..base import ChangeLog, ChangeRecord, ObjectRef, Pod
from .fault_host import TARGET, _ahead, _drop, _short

if TYPE_CHECKING:
    from .fault_host import KubeHost

__all__ = ["KubeDiskFill", "VolumeBound", "quantity_bytes"]


class KubeDiskFill:
    """The disk half of :class:`~.faults.KubeFaults` (a mixin of the target)."""

    def volume_mounts(
        self: KubeHost, pod: Pod, obj: Mapping[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        """``(container, mountPath)`` of the pod's writable volume mounts, in spec order;
        the service account token and other read-only mounts are left out."""
        if obj is None:
            obj = self._read_pod(pod.name, pod.namespace)
        return [
            (c.get("name", ""), m["mountPath"])
            for c in obj.get("spec", {}).get("containers") or ()
            for m in c.get("volumeMounts") or ()
            if m.get("mountPath")
            and not m.get("readOnly")
            and not m["mountPath"].startswith("/var/run/secrets/")
        ]

    def volume_bound(
        self: KubeHost,
        pod: Pod,
        obj: Mapping[str, Any],
        container: str | None,
        directory: str,
    ) -> VolumeBound:
        """What bounds the volume holding ``directory``: an emptyDir's ``sizeLimit`` (the
        kubelet evicts the pod past it) or a PVC's capacity (writes fail with ENOSPC).
        Anything else would be filled against the node's disk: refused, saying so."""
        spec = obj.get("spec") or {}
        mounts = [
            (m.get("mountPath", ""), m.get("name", ""))
            for c in spec.get("containers") or ()
            if container is None or c.get("name") == container
            for m in c.get("volumeMounts") or ()
            if m.get("mountPath") and PurePosixPath(directory).is_relative_to(m["mountPath"])
        ]
        where = f"pod {pod.namespace}/{pod.name}"
        if not mounts:
            raise FaultError(
                f"disk_fill: {directory} is on no volume of {where}, i.e. on the container's "
                "root filesystem (the node's disk, counted against ephemeral-storage): give a "
                "path on an emptyDir with a sizeLimit or on a PersistentVolumeClaim"
            )
        mount, name = max(mounts, key=lambda m: len(m[0]))  # the innermost mount
        volume: Mapping[str, Any] = next(
            (v for v in spec.get("volumes") or () if v.get("name") == name), {}
        )
        if "emptyDir" in volume:
            limit = (volume.get("emptyDir") or {}).get("sizeLimit")
            if not limit:
                raise FaultError(
                    f"disk_fill: emptyDir {name!r} has no sizeLimit in {where}: it shares the "
                    "node's disk, so a percentage of it would be a percentage of the node's "
                    f"disk; give the volume a sizeLimit (emptyDir: {{sizeLimit: 512Mi}})"
                )
            return VolumeBound(
                mount,
                quantity_bytes(limit),
                f"emptyDir {name} sizeLimit {limit}",
                f"the kubelet evicts the pod once the volume's usage exceeds its sizeLimit "
                f"{limit} (its replacement starts with an empty {name})",
            )
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            pvc = self._read(
                self._core.read_namespaced_persistent_volume_claim,
                claim,
                pod.namespace,
                verb="get",
                resource="persistentvolumeclaims",
                namespace=pod.namespace,
                name=claim,
            )
            size = (pvc.get("status") or {}).get("capacity", {}).get("storage") or (
                (pvc.get("spec") or {}).get("resources", {}).get("requests", {}).get("storage")
            )
            if not size:
                raise FaultError(f"disk_fill: PersistentVolumeClaim {claim!r} states no size")
            return VolumeBound(
                mount,
                quantity_bytes(size),
                f"PersistentVolumeClaim {claim} capacity {size}",
                "no eviction: at its capacity the app's writes fail with ENOSPC (no space left "
                "on device)",
            )
        kind = next((k for k in volume if k != "name"), "unknown")
        raise FaultError(
            f"disk_fill: volume {name!r} of {where} is a {kind}, which has no size of its own "
            "to fill against; use an emptyDir with a sizeLimit or a PersistentVolumeClaim"
        )

    def volume_used(
        self: KubeHost, pod: Pod, mount: str, *, container: str | None = None
    ) -> int | None:
        """Bytes in the volume at ``mount`` (``du -sk``, what the kubelet's eviction
        manager measures for an emptyDir); None in a dry run, where nothing is exec'd."""
        result = self.exec(pod, ["du", "-sk", mount], container=container)
        if self.dry_run:
            return None
        try:
            return int(result.stdout.split()[0]) * 1024
        except (IndexError, ValueError):
            raise FaultError(
                f"disk_fill: du -sk {mount} in {pod.namespace}/{pod.name} exited "
                f"{result.exit_code} with no size ({result.stderr.strip() or result.stdout!r}); "
                "does the container have du?"
            ) from None

    def fill_pod_disk(
        self: KubeHost,
        pod: Pod,
        *,
        ledger_id: str,
        path: str,
        size_mb: int,
        container: str | None = None,
        changes: ChangeLog | None = None,
        bound: VolumeBound | None = None,
    ) -> ChangeRecord:
        """``fallocate`` a file of ``size_mb`` in ``path`` (a volume mount) inside the pod;
        running out of space on the way counts as filled. ``bound`` (what it was sized
        against, what the kubelet does at the limit) goes into the record."""
        self.policy.check_namespace(pod.namespace)
        if size_mb <= 0:
            raise FaultError(f"disk_fill: size_mb must be > 0, got {size_mb}")
        target = f"{path.rstrip('/') or ''}/.pytest-resilience-fill-{_short(ledger_id)}"
        record = ChangeRecord(
            kind="disk_fill",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Pod", pod.name, pod.namespace),),
            detail={
                "container": container,
                "file": target,
                "size_mb": size_mb,
                **({"limit": bound.what, "kubelet": bound.kubelet} if bound else {}),
            },
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record)
        f = shlex.quote(target)
        script = (
            f"fallocate -l {size_mb}M {f} 2>/dev/null || "
            f"{{ dd if=/dev/zero of={f} bs=1M count={size_mb} 2>/dev/null; test -s {f}; }}"
        )
        result = self.exec(pod, ["sh", "-c", script], container=container)
        if result.exit_code != 0:
            self._unmark(record)
            _drop(changes, record)
            raise FaultError(
                f"disk_fill: could not write {target} in {pod.namespace}/{pod.name} (exit "
                f"{result.exit_code}): {result.stderr.strip()}; is {path!r} a writable mount?"
            )
        return record


def _measure_volume(
    target: KubeHost, pod: Pod, path: str | None
) -> tuple[str | None, str, Any, int | None]:
    """(container, directory, its volume's bound, bytes used) for ``path`` in ``pod``."""
    obj = target._read_pod(pod.name, pod.namespace)
    container, directory = _fill_dir(target, pod, path, obj)
    bound = target.volume_bound(pod, obj, container, directory)
    used = target.volume_used(pod, bound.mount, container=container)
    return container, directory, bound, used


def _fill_dir(
    target: KubeHost, pod: Pod, path: str | None, obj: Mapping[str, Any] | None = None
) -> tuple[str | None, str]:
    """(container, directory) to fill: ``path`` inside a mount, or the first writable mount."""
    mounts = target.volume_mounts(pod, obj)
    if path is None:
        if not mounts:
            raise SelectorMatchedNothing(
                f"disk_fill: pod {pod.namespace}/{pod.name} mounts no writable volume; "
                "give path= (a directory on the filesystem to fill)"
            )
        return mounts[0]
    chosen = PurePosixPath(path)
    if not chosen.is_absolute():
        if not mounts:
            raise FaultError(
                f"disk_fill: relative path {path!r} but pod {pod.name} mounts no volume; "
                "give an absolute path"
            )
        container, mount = mounts[0]
        return container, str(PurePosixPath(mount) / chosen)
    for container, mount in mounts:
        if chosen.is_relative_to(mount):
            return container, str(chosen)
    return None, str(chosen)


@dataclass(frozen=True)
class VolumeBound:
    """The size a disk fill is measured against, and what the kubelet does at it."""

    mount: str
    bytes: int
    what: str  # e.g. "emptyDir data sizeLimit 512Mi"
    kubelet: str  # what happens at the limit


_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "": 1,
}


def quantity_bytes(quantity: Any) -> int:
    """A Kubernetes quantity (``512Mi``, ``1G``, ``1.5Gi``, ``2e9``) in bytes
    (apimachinery/pkg/api/resource/quantity.go, the suffixes storage uses)."""
    text = str(quantity).strip()
    m = re.fullmatch(r"([0-9.]+(?:[eE][0-9]+)?)([KMGTPE]i|[kMGTPE])?", text)
    if not m:
        raise FaultError(f"disk_fill: not a storage quantity: {quantity!r} (e.g. 512Mi, 1Gi)")
    return int(float(m[1]) * _SUFFIXES[m[2] or ""])
