"""List-then-watch loops that turn API object changes into :class:`TargetEvent` values.

Why not ``kubernetes.watch.Watch``: with ``deserialize=False`` it crashes on an ERROR
event (it reads a key it only sets when deserializing), and deserializing every pod of a
1,000-pod namespace into models is wasted work. So this is the informer pattern in
miniature: list once (the baseline, no events), then watch from the list's
resourceVersion; when the server ends the stream (timeout) watch again from the last
version; on ``410 Gone`` (an ERROR event, or the HTTP status on the watch request) list
again. Never a polling loop over all pods.

Every watch asks the server to end it after ``timeout_s`` (``timeoutSeconds``) and sets a
client read timeout a little longer than that (``_request_timeout``): a TCP connection
that died without a FIN (node gone, NAT entry dropped) sends no byte, and without the
read timeout the thread would block in ``recv`` forever. Such a stream is closed and the
watch resumes from its last version; no re-list. ``allowWatchBookmarks`` lets the server
send BOOKMARK events (every minute and right before the deadline on kube-apiserver),
whose only content is a resourceVersion: taking it keeps the resume point recent while
nothing in the watched scope changes, so a compaction of other objects' history does not
force a re-list. The API conventions promise no bookmark at all, so nothing depends on
one arriving.

Each loop keeps the last state of every object and emits events only on transitions, so a
stream that replays objects as ADDED (servers and emulators do on re-watch) is harmless.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..base import EventKind, TargetEvent

__all__ = ["ResourceWatch", "diff_deployment", "diff_node", "diff_pod", "pod_is_ready"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

Obj = Mapping[str, Any]
Differ = Callable[[Obj | None, Obj | None], list[TargetEvent]]

_CRASH_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
    }
)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


@dataclass
class ResourceWatch:
    """One resource's list+watch loop in a daemon thread.

    ``list_fn`` is a bound client list method with its scope (namespace, selectors)
    already applied, e.g. ``functools.partial(core.list_namespaced_pod, "ns")``.
    """

    name: str
    list_fn: Callable[..., Any]
    differ: Differ
    emit: Callable[[TargetEvent], None]
    key: Callable[[Obj], str] = lambda o: o["metadata"]["name"]
    accept: Callable[[Obj], bool] = lambda o: True
    timeout_s: int = 300
    #: how long past ``timeout_s`` a silent stream is still trusted (None: a tenth of
    #: ``timeout_s``, between 2 and 30 s)
    read_grace_s: float | None = None
    connect_timeout_s: float = 10.0
    #: a list answers at once or not at all: past this its connection is dead
    list_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.state: dict[str, Obj] = {}
        self.synced = threading.Event()
        self.requests = 0
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"kube-watch-{self.name}", daemon=True
        )

    def start(self) -> ResourceWatch:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        _abort(self._resp)
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                version = self._relist()
                backoff = 0.2
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Gone:
                log.debug("watch %s: 410 Gone, listing again", self.name)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("watch %s failed (%s); retrying in %.1fs", self.name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _relist(self) -> str:
        self.requests += 1
        resp = self.list_fn(
            _preload_content=False, _request_timeout=(self.connect_timeout_s, self.list_timeout_s)
        )
        data = json.loads(resp.data)
        fresh = {self.key(o): o for o in data.get("items") or () if self.accept(o)}
        if self.synced.is_set():  # a re-list after 410: report what changed meanwhile
            for k in self.state.keys() | fresh.keys():
                self._apply(k, self.state.get(k), fresh.get(k))
        self.state = fresh
        self.synced.set()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    @property
    def read_timeout_s(self) -> float:
        grace = self.read_grace_s
        if grace is None:
            grace = min(max(self.timeout_s / 10, 2.0), 30.0)
        return self.timeout_s + grace

    def _watch(self, version: str) -> str:
        import urllib3.exceptions
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = dict(
            watch=True,
            timeout_seconds=self.timeout_s,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(self.connect_timeout_s, self.read_timeout_s),
        )
        if version:
            kwargs["resource_version"] = version
        self.requests += 1
        try:
            resp = self._resp = self.list_fn(**kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone() from None
            raise
        except urllib3.exceptions.ReadTimeoutError:
            log.info("watch %s: no answer in %.0fs, watching again", self.name, self.read_timeout_s)
            return version
        if self._stop.is_set():
            _abort(resp)
        try:
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK" or not self.accept(obj):
                    continue
                k = self.key(obj)
                new = None if kind == "DELETED" else obj
                self._apply(k, self.state.get(k), new)
                if new is None:
                    self.state.pop(k, None)
                else:
                    self.state[k] = new
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            if self._stop.is_set():
                return version
            # silent past the server's own deadline (or reset): the connection is dead
            log.info(
                "watch %s: stream broken (%s); watching again from %s", self.name, exc, version
            )
        finally:
            self._resp = None
            resp.close()  # never hand a half-read (or dead) connection back to the pool
            resp.release_conn()
        return version

    def _apply(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if old is None and new is None:
            return
        for event in self.differ(old, new):
            try:
                self.emit(event)
            except Exception:
                log.exception("event subscriber failed on %s", event)


def _abort(resp: Any) -> None:
    """Unblock a thread stuck reading a stream: shut the socket down under it."""
    if resp is None:
        return
    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None) if conn else None
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _condition(obj: Obj | None, kind: str) -> bool | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or ():
        if cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return None


def pod_is_ready(obj: Obj | None) -> bool:
    if not obj or obj.get("metadata", {}).get("deletionTimestamp"):
        return False
    return bool(_condition(obj, "Ready"))


def pod_workload(obj: Obj) -> str:
    """The owning workload's name: Deployment (via its ReplicaSet), other owner, or label."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    for ref in meta.get("ownerReferences") or ():
        owner = str(ref.get("name", ""))
        template_hash = labels.get("pod-template-hash")
        if (
            ref.get("kind") == "ReplicaSet"
            and template_hash
            and owner.endswith("-" + template_hash)
        ):
            return owner[: -len(template_hash) - 1]
        return owner
    return labels.get("app.kubernetes.io/name") or labels.get("app") or str(meta.get("name", ""))


def _restarts(obj: Obj | None) -> dict[str, int]:
    statuses = (obj or {}).get("status", {}).get("containerStatuses") or ()
    return {s.get("name", ""): int(s.get("restartCount") or 0) for s in statuses}


def _waiting_reasons(obj: Obj | None) -> set[str]:
    statuses = (obj or {}).get("status", {}).get("containerStatuses") or ()
    reasons = {((s.get("state") or {}).get("waiting") or {}).get("reason") for s in statuses}
    return {r for r in reasons if r in _CRASH_REASONS}


def diff_pod(old: Obj | None, new: Obj | None) -> list[TargetEvent]:
    """Pod transitions: started, ready/not ready (terminating too), died (deleted at once,
    restarted, failed)."""
    ref = new or old or {}
    name = ref.get("metadata", {}).get("name")
    common = dict(workload=pod_workload(ref), pod=name, node=ref.get("spec", {}).get("nodeName"))
    events: list[TargetEvent] = []
    if new is None:
        if not (old or {}).get("metadata", {}).get("deletionTimestamp"):
            events.append(TargetEvent(EventKind.POD_DIED, detail="deleted", **common))
        return events
    if old is None:
        events.append(TargetEvent(EventKind.POD_STARTED, **common))
    if new.get("metadata", {}).get("deletionTimestamp") and not (old or {}).get("metadata", {}).get(
        "deletionTimestamp"
    ):
        # A graceful deletion (rollout, scale-down, eviction) stops a pod, it does not crash
        # it: counted as a death it would feed the crash-loop alert on every rollout.
        events.append(TargetEvent(EventKind.POD_NOT_READY, detail="terminating", **common))
    before, after = _restarts(old), _restarts(new)
    for container, count in after.items():
        if old is not None and count > before.get(container, 0):
            events.append(
                TargetEvent(
                    EventKind.POD_DIED,
                    detail=f"container {container} restarted",
                    restarts=count,
                    **common,
                )
            )
    if (
        new.get("status", {}).get("phase") == "Failed"
        and (old or {}).get("status", {}).get("phase") != "Failed"
    ):
        events.append(TargetEvent(EventKind.POD_DIED, detail="phase Failed", **common))
    for reason in sorted(_waiting_reasons(new) - _waiting_reasons(old)):
        events.append(
            TargetEvent(
                EventKind.POD_FAILED_TO_START,
                detail=reason,
                restarts=max(after.values(), default=0),
                **common,
            )
        )
    was, now = pod_is_ready(old), pod_is_ready(new)
    if now and not was:
        events.append(TargetEvent(EventKind.POD_READY, **common))
    elif was and not now and not new.get("metadata", {}).get("deletionTimestamp"):
        events.append(TargetEvent(EventKind.POD_NOT_READY, **common))
    return events


def diff_node(old: Obj | None, new: Obj | None) -> list[TargetEvent]:
    name = (new or old or {}).get("metadata", {}).get("name")
    was = _condition(old, "Ready") if old else None
    now = _condition(new, "Ready") if new else False
    if now is False and was is not False and old is not None:
        return [TargetEvent(EventKind.NODE_NOT_READY, node=name)]
    if now and was is False:
        return [TargetEvent(EventKind.NODE_READY, node=name)]
    return []


_RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def diff_deployment(old: Obj | None, new: Obj | None) -> list[TargetEvent]:
    if old is None or new is None:
        return []
    name = new.get("metadata", {}).get("name")
    events: list[TargetEvent] = []
    before = old.get("spec", {}).get("replicas")
    after = new.get("spec", {}).get("replicas")
    if before != after:
        events.append(TargetEvent(EventKind.SCALED, workload=name, detail=f"{before}->{after}"))

    def stamp(o: Obj) -> Any:
        tmpl = o.get("spec", {}).get("template", {}).get("metadata") or {}
        return (tmpl.get("annotations") or {}).get(_RESTARTED_AT)

    if stamp(new) and stamp(new) != stamp(old):
        events.append(TargetEvent(EventKind.RESTARTED, workload=name, detail=str(stamp(new))))
    return events
