"""The request plumbing every part of the Kubernetes target sends through.

:class:`KubeCalls` is the base of the target's mixins: a read answers plain dicts (JSON as
the API server sent it, no model deserialization), a change passes the namespace rule and
dry-run first, and both go through :func:`.api.call`, so a failure arrives as one of the
typed errors of :mod:`.api`. ``_watch_until`` is the one-shot watch the waits are built
on (list first where asked, a fresh list on 410, the deadline as the read timeout).

The attributes are set by :class:`~.target.KubernetesTarget`'s ``__init__``; they are
declared here so each mixin type-checks against the one client they share.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import TargetError
from .api import KubeConnection, call
from .safety import ChaosPolicy

__all__ = ["KubeCalls"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")


class KubeCalls:
    """Reads, changes and one-shot watches against the target's API client."""

    policy: ChaosPolicy
    conn: KubeConnection
    context: str
    namespace: str
    dry_run: bool
    #: what dry-run would have changed, in order
    dry_run_calls: list[str]
    release_env: str
    _client: Any
    _core: Any
    _apps: Any
    _net: Any

    def _dry(self, what: str) -> bool:
        if self.dry_run:
            log.info("dry-run: would %s", what)
            self.dry_run_calls.append(what)
        return self.dry_run

    def _change(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Every change goes through here: namespace rule, dry-run, error ladder."""
        if namespace:
            self.policy.check_namespace(namespace)
        if self._dry(what):
            return None
        log.info("%s", what)
        return self._read(
            fn, *args, verb=verb, resource=resource, namespace=namespace, name=name, **kwargs
        )

    def _read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        """The pod as the API server has it now (plain dicts)."""
        return self._read(
            self._core.read_namespaced_pod,
            name,
            namespace,
            verb="get",
            resource="pods",
            namespace=namespace,
            name=name,
        )

    def _read(
        self,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A call whose JSON answer comes back as plain dicts (no model deserialization)."""
        resp = call(
            fn,
            *args,
            verb=verb,
            resource=resource,
            namespace=namespace,
            name=name,
            _preload_content=False,
            **kwargs,
        )
        raw = resp.data
        return json.loads(raw) if raw else {}

    def _deployment(self, workload: str) -> dict[str, Any]:
        return self._read(
            self._apps.read_namespaced_deployment,
            workload,
            self.namespace,
            verb="get",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def _node_raw(self, node: str) -> dict[str, Any]:
        return self._read(self._core.read_node, node, verb="get", resource="nodes", name=node)

    # used by the fault primitives (marks.py)
    def _patch_meta(
        self, kind: str, name: str, namespace: str | None, meta: Mapping[str, Any]
    ) -> None:
        by_kind: dict[str, tuple[Callable[..., Any], str, tuple[Any, ...]]] = {
            "Pod": (self._core.patch_namespaced_pod, "pods", (name, namespace)),
            "Node": (self._core.patch_node, "nodes", (name,)),
        }
        fn, resource, args = by_kind[kind]
        self._change(
            f"PATCH {resource} {namespace + '/' if namespace else ''}{name} metadata {dict(meta)}",
            fn,
            *args,
            {"metadata": dict(meta)},
            verb="patch",
            resource=resource,
            namespace=namespace,
            name=name,
        )

    def _watch_until(
        self,
        list_fn: Callable[..., Any],
        accept: Callable[[Mapping[str, Any]], bool],
        done: Callable[[Mapping[str, Any]], bool],
        *,
        resource: str,
        remaining: float,
        namespace: str | None = None,
        field_selector: str | None = None,
        version: str = "",
        list_first: bool = False,
        deleted: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> Mapping[str, Any] | None:
        """One watch (plus an optional list) until ``done`` holds for an object, or timeout;
        ``deleted`` hears of each object the watch reports gone."""
        import urllib3.exceptions
        from kubernetes.watch.watch import iter_resp_lines

        ns = namespace or self.namespace
        deadline = time.monotonic() + remaining
        extra = {"field_selector": field_selector} if field_selector else {}
        obj: Mapping[str, Any]
        while time.monotonic() < deadline:
            if list_first:
                data = self._read(
                    list_fn, ns, verb="list", resource=resource, namespace=ns, **extra
                )
                for obj in data.get("items") or ():
                    if accept(obj) and done(obj):
                        return obj
                version = str((data.get("metadata") or {}).get("resourceVersion") or "")
            left = max(deadline - time.monotonic(), 0.1)
            kwargs: dict[str, Any] = dict(
                watch=True,
                timeout_seconds=max(int(left), 1),
                _preload_content=False,
                _request_timeout=(10, left),
                **extra,
            )
            if version:
                kwargs["resource_version"] = version
            resp = call(list_fn, ns, verb="watch", resource=resource, namespace=ns, **kwargs)
            try:
                for line in iter_resp_lines(resp):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            list_first, version = True, ""
                            break
                        raise TargetError(f"watch {resource}: {obj.get('message') or obj}")
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if event.get("type") in ("ADDED", "MODIFIED") and accept(obj) and done(obj):
                        return obj
                    if event.get("type") == "DELETED" and deleted is not None:
                        deleted(obj)
                    if time.monotonic() >= deadline:
                        return None
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                return None
            finally:
                resp.release_conn()
        return None
