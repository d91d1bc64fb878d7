"""The API server's list and watch, as kube-apiserver serves them, on top of kmock's store.

kmock's emulator answers every list with ``resourceVersion: "..."``, ignores selectors,
replays every object as ADDED on each watch and never ends a watch. A client tested
against that would pass things a real cluster does not. This module stands in for:

- etcd's revision counter: one cluster-wide, increasing, numeric ``resourceVersion``
  stamped on every write (staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go, the
  ModRevision of the write), also ``uid``/``creationTimestamp`` on create
  (staging/src/k8s.io/apiserver/pkg/registry/rest/create.go FillObjectMetaSystemFields);
- the watch cache (staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go and
  cache_watcher.go): a watch from resourceVersion N replays the events after N, or sends
  an ERROR event ``410 Expired "too old resource version: N (M)"`` when N fell out of the
  history (etcd compaction); without a resourceVersion it starts with the current
  objects as ADDED; it honours ``timeoutSeconds`` (closing the stream at the deadline),
  sends BOOKMARK events when ``allowWatchBookmarks=true`` (every minute and once right
  before the deadline, cacher.go defaultBookmarkFrequency; interval scaled here), and
  filters by selector with the old object as well (an object leaving the selector
  arrives as DELETED, one entering it as ADDED: cache_watcher.go convertToWatchEvent);
- label selectors (staging/src/k8s.io/apimachinery/pkg/labels/selector.go: =, ==, !=,
  in, notin, key, !key) and field selectors (fields/selector.go: =, ==, !=) evaluated
  server-side, with the selectable fields each registry declares
  (pkg/registry/core/pod/strategy.go ToSelectableFields, node/strategy.go, ...); an
  unknown field is ``400 field label not supported``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import kmock

# ------------------------------------------------------------------------ selectors

_SELECTABLE: dict[str, frozenset[str]] = {
    # pkg/registry/core/pod/strategy.go ToSelectableFields
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "nodes": frozenset({"spec.unschedulable"}),  # pkg/registry/core/node/strategy.go
    "replicasets": frozenset({"status.replicas"}),  # pkg/registry/apps/replicaset/strategy.go
}
_GENERIC_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


class SelectorError(ValueError):
    """A selector the API server would answer 400 to."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has, value = self.key in labels, labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        return not has or value not in self.values  # "!=" and "notin"


_LABEL_TERM = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*(?:,|$)"
)


def parse_label_selector(text: str) -> list[Requirement]:
    """labels.Parse: comma-separated requirements; commas inside ``( )`` belong to a set."""
    reqs: list[Requirement] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _LABEL_TERM.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        pos = m.end()
        if m["not"]:
            reqs.append(Requirement(m["nkey"], "!"))
        elif m["op"]:
            reqs.append(Requirement(m["key"], "!=" if m["op"] == "!=" else "=", (m["value"],)))
        elif m["setop"]:
            values = tuple(v.strip() for v in m["set"].split(",") if v.strip())
            reqs.append(Requirement(m["key"], m["setop"], values))
        else:
            reqs.append(Requirement(m["key"], "exists"))
    return reqs


def parse_field_selector(text: str, plural: str) -> list[tuple[str, str, str]]:
    """fields.ParseSelector: ``key=value``, ``key==value``, ``key!=value``, comma-separated."""
    terms: list[tuple[str, str, str]] = []
    allowed = _GENERIC_FIELDS | _SELECTABLE.get(plural, frozenset())
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        key, op, value = m.groups()
        if key not in allowed:
            raise SelectorError(f"field label not supported: {key}")
        terms.append((key, "!=" if op == "!=" else "=", value))
    return terms


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


@dataclass(frozen=True)
class Selector:
    labels: tuple[Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_query(cls, query: Any, plural: str) -> Selector:
        """The request's selectors; a bad one is the API server's 400."""
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        try:
            return cls(
                tuple(parse_label_selector(labels)), tuple(parse_field_selector(fields, plural))
            )
        except SelectorError as exc:
            raise bad_request(
                f'Unable to find "{plural}" that match label selector "{labels}", '
                f'field selector "{fields}": {exc}'
            ) from None

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        labels = obj.get("metadata", {}).get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        for key, op, value in self.fields:
            actual = _field_value(obj, key)
            if key == "spec.unschedulable" and not actual:
                actual = "false"
            if (actual == value) != (op == "="):
                return False
        return True


# ------------------------------------------------------------------------- history


@dataclass
class Event:
    rv: int
    resource: Any
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass
class History:
    """etcd's revision counter and the watch cache's window of recent events."""

    limit: int = 20_000
    rv: int = 1
    events: list[Event] = field(default_factory=list)
    #: the oldest resourceVersion a watch can start from (older: 410 Gone)
    horizon: int = 0
    latest: dict[tuple[Any, str | None, str], dict[str, Any]] = field(default_factory=dict)
    changed: asyncio.Condition | None = None

    def record(self, resource: Any, event: dict[str, Any]) -> None:
        """Stamp the write's revision into the stored object and keep the event."""
        self.rv += 1
        obj = event["object"]
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)
        if event["type"] == "ADDED":
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
        key = (resource, meta.get("namespace"), meta.get("name", ""))
        prev = self.latest.get(key)
        snapshot = json.loads(json.dumps(obj))
        if event["type"] == "DELETED":
            self.latest.pop(key, None)
        else:
            self.latest[key] = snapshot
        self.events.append(Event(self.rv, resource, event["type"], snapshot, prev))
        if len(self.events) > self.limit:
            dropped = self.events[: len(self.events) - self.limit]
            del self.events[: len(dropped)]
            self.horizon = dropped[-1].rv
        if self.changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    def compact(self) -> None:
        """etcd compaction: every event so far is gone; older watches get 410."""
        self.events.clear()
        self.horizon = self.rv

    def since(self, rv: int) -> list[Event]:
        i = bisect.bisect_right([e.rv for e in self.events], rv)
        return self.events[i:]


def now(offset_s: float = 0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class StampingBus:
    """Stands where kmock keeps a per-resource event bus: every write passes ``put``."""

    def __init__(self, history: History, resource: Any) -> None:
        self.history, self.resource = history, resource

    async def put(self, event: dict[str, Any]) -> None:
        self.history.record(self.resource, event)


# ------------------------------------------------------------------------ serving

_KINDS = {
    "pods": ("v1", "Pod"),
    "nodes": ("v1", "Node"),
    "services": ("v1", "Service"),
    "deployments": ("apps/v1", "Deployment"),
    "replicasets": ("apps/v1", "ReplicaSet"),
    "poddisruptionbudgets": ("policy/v1", "PodDisruptionBudget"),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy"),
}


def _in_scope(request: Any, resource: Any, obj: dict[str, Any]) -> bool:
    if resource != request.resource:
        return False
    ns = obj.get("metadata", {}).get("namespace")
    return request.namespace is None or ns == request.namespace


def bad_request(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=400, reason="BadRequest", message=message)


def serve_list(emu: Any, history: History, request: Any) -> aiohttp.web.Response:
    """GET a collection: the current objects in key order, with the list's revision."""
    plural = request.resource.plural
    selector = Selector.from_query(request._raw_request.query, plural)
    items = [
        obj
        for (res, ns, name), obj in sorted(
            history.latest.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
        )
        if _in_scope(request, res, obj) and selector.matches(obj)
    ]
    api_version, kind = _KINDS.get(plural, ("v1", plural.title()))
    return aiohttp.web.json_response(
        {
            "apiVersion": api_version,
            "kind": kind + "List",
            "metadata": {"resourceVersion": str(history.rv)},
            "items": items,
        }
    )


@dataclass
class WatchOptions:
    """Test knobs; defaults are the real apiserver's, scaled to test time."""

    bookmark_interval_s: float = 1.0  # real: 60 s (cacher.go defaultBookmarkFrequency)
    bookmark_before_deadline_s: float = 0.2  # real: 2 s (cache_watcher.go nextBookmarkTime)
    default_timeout_s: float = 1800.0  # real: --min-request-timeout 1800 s, randomised x1..2


async def serve_watch(
    emu: Any, history: History, request: Any, options: WatchOptions, *, hang: bool = False
) -> aiohttp.web.StreamResponse:
    """A watch stream as the watch cache serves it; ``hang``: a dead TCP connection."""
    query = request._raw_request.query
    plural = request.resource.plural
    selector = Selector.from_query(query, plural)
    raw_rv = query.get("resourceVersion", "")
    try:
        start = int(raw_rv) if raw_rv not in ("", "0") else None
    except ValueError:
        raise bad_request(f"invalid resource version: {raw_rv!r}") from None
    timeout_s = float(query.get("timeoutSeconds") or options.default_timeout_s)
    bookmarks = query.get("allowWatchBookmarks") == "true"
    response = aiohttp.web.StreamResponse(
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    await response.prepare(request._raw_request)
    if hang:  # the peer vanished: no byte, no FIN, and no server-side timeout either
        assert history.changed is not None
        while True:
            await asyncio.sleep(3600)
    deadline = time.monotonic() + timeout_s
    api_version, kind = _KINDS.get(plural, ("v1", plural.title()))

    async def send(kind_: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": kind_, "object": obj}).encode() + b"\n")

    try:
        if start is None:  # "Get State and Start at Most Recent": the current objects first
            pos = history.rv
            for (res, _, _), obj in sorted(
                history.latest.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
            ):
                if _in_scope(request, res, obj) and selector.matches(obj):
                    await send("ADDED", obj)
        else:
            pos = start
            if pos < history.horizon:
                await send(
                    "ERROR",
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": f"too old resource version: {pos} ({history.horizon})",
                        "reason": "Expired",
                        "code": 410,
                    },
                )
                await response.write_eof()
                return response
        next_bookmark = time.monotonic() + options.bookmark_interval_s
        final_bookmark_sent = False
        assert history.changed is not None
        while True:
            for ev in history.since(pos):
                pos = ev.rv
                if not _in_scope(request, ev.resource, ev.obj):
                    continue
                now_ok = ev.type != "DELETED" and selector.matches(ev.obj)
                was_ok = ev.prev is not None and selector.matches(ev.prev)
                if now_ok and not was_ok:
                    await send("ADDED", ev.obj)
                elif now_ok:
                    await send("MODIFIED", ev.obj)
                elif was_ok:
                    gone = json.loads(json.dumps(ev.prev if ev.type != "DELETED" else ev.obj))
                    gone["metadata"]["resourceVersion"] = str(ev.rv)
                    await send("DELETED", gone)
            pos = max(pos, history.rv)
            t = time.monotonic()
            if t >= deadline:
                break
            if bookmarks and (
                t >= next_bookmark
                or (not final_bookmark_sent and t >= deadline - options.bookmark_before_deadline_s)
            ):
                if t >= deadline - options.bookmark_before_deadline_s:
                    final_bookmark_sent = True
                await send(
                    "BOOKMARK",
                    {
                        "kind": kind,
                        "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(pos)},
                    },
                )
                next_bookmark = t + options.bookmark_interval_s
            wake = deadline
            if bookmarks:
                wake = min(wake, next_bookmark)
                if not final_bookmark_sent:
                    wake = min(wake, deadline - options.bookmark_before_deadline_s)
            async with history.changed:
                if not history.since(pos):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            history.changed.wait(), max(wake - time.monotonic(), 0.001)
                        )
        await response.write_eof()
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        pass
    return response
