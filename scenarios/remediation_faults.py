"""Faults for the remediation scenarios, each a cause one bundled playbook is meant to fix.

They act on the demo system through its real interfaces: the API pods' admin hooks (a
connection leak, a memory hog are in-process faults), Redis' own CONFIG and keys, and the
target's pod primitives. Ledger-first like every fault: they are injected through the
scenario's FaultSession (``inject`` fixture in test_remediation.py).

Each notes the pods it is about to touch before it acts and says in ``undo_from_spec`` how
``pytest --chaos-cleanup`` settles it after a SIGKILL: through the same hooks while the
pods still run, or closed with the proof that the processes holding its state are gone.
"""

from __future__ import annotations

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import redis

from pytest_resilience.errors import FaultError, TargetError
from pytest_resilience.faults.base import Fault, FaultContext
from pytest_resilience.faults.proof import alive_pods, driver_gone, pod_ref
from pytest_resilience.targets.base import Pod, PodAdmin, Target

STALE_PREFIX = "item:stale:"


def admin(target: Target, pod: Pod | str, path: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """POST one of the pod's admin hooks, the way the target reaches its pods (the
    :class:`~pytest_resilience.targets.base.PodAdmin` capability the scenarios require)."""
    if not isinstance(target, PodAdmin):
        raise FaultError(f"target {target.name!r} has no pod admin hooks (capability pod_admin)")
    if isinstance(pod, str):
        found = [p for p in target.pods() if p.name == pod]
        if not found:
            raise TargetError(f"no pod named {pod!r} for admin hook {path}")
        pod = found[0]
    return json.loads(target.post_admin(pod, path, timeout=timeout) or b"{}")


def api_pods(target: Target, workload: str = "api") -> list[Pod]:
    return [p for p in target.pods() if p.workload == workload and p.ready]


#: Lua, run by Redis itself: ``n`` keys of 1 KiB without a TTL (one round trip, whichever
#: way the commands travel)
_FILL = (
    "local v = string.rep('s', 1024) "
    "for i = 0, tonumber(ARGV[1]) - 1 do redis.call('SET', ARGV[2] .. i, v) end "
    "return tonumber(ARGV[1])"
)
#: every key matching ARGV[1], unlinked; how many
_UNLINK = (
    "local cursor, n = '0', 0 "
    "repeat "
    "local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000) "
    "cursor = page[1] "
    "for _, key in ipairs(page[2]) do redis.call('UNLINK', key) n = n + 1 end "
    "until cursor == '0' "
    "return n"
)


class RedisCommands:
    """Redis commands where clients reach the service (the target's endpoint) or, where
    this machine cannot (a ClusterIP Service seen from a CI runner), by ``redis-cli`` in
    the service's pod (the image has it: redis:7-alpine). Both are the core Target
    protocol: no target is asked what it is."""

    def __init__(self, target: Target, service: str) -> None:
        self.target, self.service = target, service
        where = urlsplit(target.endpoint(service))
        self.address = f"{where.hostname or '127.0.0.1'}:{where.port or 6379}"
        self._client: redis.Redis | None = redis.Redis(
            host=where.hostname or "127.0.0.1",
            port=where.port or 6379,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )
        self._pod: Pod | None = None
        try:
            self._client.ping()
        except redis.ConnectionError:
            self._client = None
            ready = [p for p in target.pods() if p.workload == service and p.ready]
            if not ready:
                raise FaultError(
                    f"cache_crowd_out: {service} at {self.address} cannot be reached from this "
                    f"machine, and no ready pod of {service!r} runs redis-cli for it"
                ) from None
            self._pod = ready[0]

    @property
    def via(self) -> str:
        return self.address if self._client is not None else f"redis-cli in {self._pod.name}"  # type: ignore[union-attr]

    def call(self, *args: str | int) -> str:
        """One command; its reply as text (redis-cli's raw output for a non-tty)."""
        if self._client is not None:
            reply = self._client.execute_command(*args)
            if isinstance(reply, dict):  # redis-py parses INFO and CONFIG GET
                return "\n".join(f"{_text(k)}:{_text(v)}" for k, v in reply.items())
            if isinstance(reply, list):
                return "\n".join(_text(r) for r in reply)
            return _text(reply)
        assert self._pod is not None
        done = self.target.exec(self._pod, ["redis-cli", *map(str, args)], timeout=30.0)
        if done.exit_code != 0 or done.stdout.startswith(("ERR", "NOSCRIPT", "WRONGTYPE")):
            raise FaultError(
                f"cache_crowd_out: redis-cli {args[0]} in {self._pod.name} exited "
                f"{done.exit_code}: {(done.stderr or done.stdout).strip()}"
            )
        return done.stdout.strip()

    def config(self, name: str) -> str:
        """CONFIG GET: ``name\nvalue`` from redis-cli, ``name:value`` from redis-py."""
        return self.call("CONFIG", "GET", name).splitlines()[-1].removeprefix(f"{name}:")

    def used_memory(self) -> int:
        info = dict(
            line.split(":", 1) for line in self.call("INFO", "memory").splitlines() if ":" in line
        )
        return int(info["used_memory"].strip())


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


class CacheCrowdOut(Fault):
    """Stale keys without a TTL fill Redis past its ``maxmemory`` under ``volatile-lru``.

    A classic: a batch job writes into the cache's namespace without an expiry; with a
    memory limit and an eviction policy that only evicts keys that have one, the stale keys
    stay and every hot key the API caches is evicted (or refused) at once. The hit ratio
    collapses though Redis is up. Deleting the namespace and re-warming fixes it.

    The limit ends ``headroom_mb / 2`` *below* what the stale keys took: Redis evicts every
    key with a TTL and refuses every write while it stays over. A limit just above the fill
    left room that Redis' own buffers (the clients' query buffers, freed lazily) handed
    back within seconds: the 100 hot keys need a few KiB, so the hot set came back now and
    then and the hit ratio never stayed down (1 run in 3 on a loaded machine).
    """

    kind = "cache_crowd_out"

    def __init__(self, service: str = "redis", *, headroom_mb: float = 4.0) -> None:
        self.service = service
        self.headroom_mb = headroom_mb
        self._saved: dict[str, str] = {}
        self._redis: RedisCommands | None = None

    def describe(self) -> str:
        return f"fill {self.service} with stale keys (no TTL) under volatile-lru"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        commands = RedisCommands(ctx.target, self.service)
        self._saved = {name: commands.config(name) for name in ("maxmemory", "maxmemory-policy")}
        self._redis = commands
        pods = [pod_ref(p) for p in ctx.target.pods() if p.workload == self.service]
        self.note({"service": self.service, "saved": self._saved, "pods": pods})
        keys = int(self.headroom_mb * 1024)
        commands.call("EVAL", _FILL, 0, keys, STALE_PREFIX)
        commands.call("CONFIG", "SET", "maxmemory-policy", "volatile-lru")
        limit = commands.used_memory() - keys * 1024 // 2
        commands.call("CONFIG", "SET", "maxmemory", limit)
        return {"via": commands.via, "saved": self._saved, "stale_keys": keys, "maxmemory": limit}

    def revert(self, ctx: FaultContext) -> None:
        if self._redis is None:
            return
        _restore(self._redis, self._saved)

    @classmethod
    def undo_from_spec(cls, spec: dict[str, Any], ctx: FaultContext) -> str | None:
        alive, gone = alive_pods(ctx.target, spec.get("pods") or [])
        if not alive:  # CONFIG SET dies with the process; its keys lived in its work dir
            return "; ".join(gone) or "it never acted: no Redis pod was noted"
        _restore(RedisCommands(ctx.target, spec["service"]), spec["saved"])
        return None


def _restore(commands: RedisCommands, saved: dict[str, str]) -> None:
    for name, value in saved.items():
        commands.call("CONFIG", "SET", name, value)
    commands.call("EVAL", _UNLINK, 0, f"{STALE_PREFIX}*")


class ConnectionLeak(Fault):
    """Every API pod checks its whole pool out and never returns it (a leaking code path).

    ``keep_leaking``: the leaking path keeps running under traffic, so a reset pool or a
    restarted pod runs dry again within a second: no playbook can fix that, a human must.
    """

    kind = "connection_leak"

    def __init__(self, workload: str = "api", *, keep_leaking: bool = False) -> None:
        self.workload = workload
        self.keep_leaking = keep_leaking
        self._noted: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        how = "keeps leaking" if self.keep_leaking else "leaks once"
        return f"{self.workload}: every pod leaks its DB pool ({how})"

    def _leak_all(self, target: Target) -> int:
        def leak(pod: Pod) -> int:
            try:
                return int(admin(target, pod, "/admin/pool/leak?n=1000")["leaked"])
            except (OSError, ValueError, KeyError, TargetError):
                return 0  # a pod going away mid-leak: the next round gets its replacement

        pods = api_pods(target, self.workload)
        fresh = [pod_ref(p) for p in pods if p.name not in self._noted]
        if fresh:  # noted before they leak: a cleanup must know every pod that may hold one
            self._noted |= {ref["name"]: ref for ref in fresh}
            self.note({"pods": list(self._noted.values())})
        with ThreadPoolExecutor(max(1, len(pods))) as pool:
            return sum(pool.map(leak, pods))

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        leaked = self._leak_all(ctx.target)
        if not leaked:
            raise FaultError(f"connection_leak: no connection of {self.workload} could be leaked")
        if self.keep_leaking:

            def leak_forever() -> None:
                while not self._stop.wait(0.3):
                    self._leak_all(ctx.target)

            self._thread = threading.Thread(target=leak_forever, name="leak", daemon=True)
            self._thread.start()
        return {"workload": self.workload, "leaked": leaked, "pods": list(self._noted.values())}

    def revert(self, ctx: FaultContext) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for pod in api_pods(ctx.target, self.workload):
            try:
                admin(ctx.target, pod, "/admin/pool/unleak")
            except (OSError, TargetError):
                continue

    @classmethod
    def undo_from_spec(cls, spec: dict[str, Any], ctx: FaultContext) -> str | None:
        # A keep-leaking driver thread died with its session; the pods it leaked in may not
        # (a cluster's pods outlive the runner): give those their connections back.
        alive, gone = alive_pods(ctx.target, spec.get("pods") or [])
        for pod in alive:
            admin(ctx.target, pod, "/admin/pool/unleak")
        if alive:
            return None
        return "; ".join(gone) or "it never acted: no pod was noted"


class MemoryHog(Fault):
    """One API pod's heap grows to ``share`` of its memory limit (ballast it keeps)."""

    kind = "memory_hog"

    def __init__(self, workload: str = "api", *, share: float = 0.94) -> None:
        self.workload = workload
        self.share = share
        self.pod: str | None = None

    def describe(self) -> str:
        return f"one {self.workload} pod grows to {self.share:.0%} of its memory limit"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        from pytest_resilience.probes import BuiltinProbes

        pod = api_pods(ctx.target, self.workload)[0]
        scrape = BuiltinProbes(ctx.target, None, self.workload).scrape()[pod.name]
        used = scrape.get("demo_memory_usage_bytes", "demo_process_resident_memory_bytes") or 0
        limit = scrape.get("demo_memory_limit_bytes") or 0
        mb = int((self.share * limit - used) / (1024 * 1024))
        if mb < 1:
            raise FaultError(f"memory_hog: {pod.name} already uses {used / limit:.0%}")
        self.pod = pod.name
        self.note({"pods": [pod_ref(pod)]})
        admin(ctx.target, pod, f"/admin/memory/hog?mb={mb}", timeout=30)
        return {"pod": pod.name, "mb": mb}

    def revert(self, ctx: FaultContext) -> None:
        if self.pod is None:
            return
        if any(p.name == self.pod for p in ctx.target.pods()):
            admin(ctx.target, self.pod, "/admin/memory/release")

    @classmethod
    def undo_from_spec(cls, spec: dict[str, Any], ctx: FaultContext) -> str | None:
        alive, gone = alive_pods(ctx.target, spec.get("pods") or [])
        for pod in alive:
            admin(ctx.target, pod, "/admin/memory/release")
        if alive:
            return None
        return "; ".join(gone) or "it never acted: no pod was noted"


class CrashLoop(Fault):
    """A replica dies (SIGKILL, as an OOM kill) soon after each start, ``deaths`` times."""

    kind = "crash_loop"

    def __init__(self, workload: str = "api", *, deaths: int = 3, replicas: int = 3) -> None:
        self.workload = workload
        self.deaths = deaths
        self.replicas = replicas
        self.killed: list[str] = []
        self._seen: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"{self.workload}: a replica crashes {self.deaths} times in a row"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        target = ctx.target
        self._kill_one(target)

        def keep_crashing() -> None:
            while len(self.killed) < self.deaths and not self._stop.is_set():
                try:
                    target.wait_ready(self.workload, timeout=15, replicas=self.replicas)
                    self._kill_one(target)
                except TargetError:
                    return

        self._thread = threading.Thread(target=keep_crashing, name="crash-loop", daemon=True)
        self._thread.start()
        return {"workload": self.workload, "deaths": self.deaths}

    def _kill_one(self, target: Target) -> None:
        pods = api_pods(target, self.workload)
        if not pods:
            raise FaultError(f"crash_loop: no ready pod of {self.workload}")
        # The replacement of the previous victim (a pod not there before that kill), so one
        # replica keeps crashing; pod names are the target's (random on Kubernetes), so
        # "newest" is known from what was seen, not from a number in the name.
        fresh = [p for p in pods if p.name not in self._seen]
        newest = fresh[0] if fresh and self.killed else max(pods, key=lambda p: p.name)
        self._seen |= {p.name for p in pods}
        target.kill_pod(newest, sig=signal.SIGKILL)
        self.killed.append(newest.name)

    def revert(self, ctx: FaultContext) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=20)
        ctx.target.wait_ready(self.workload, timeout=30, replicas=self.replicas)

    @classmethod
    def undo_from_spec(cls, spec: dict[str, Any], ctx: FaultContext) -> str | None:
        """Its kills come from a thread of the test session: with the session dead,
        nothing kills any more, and the platform restarts what was killed."""
        why = driver_gone(spec)
        if why is None:
            raise FaultError(
                f"crash_loop of {spec.get('workload')!r} was driven by session pid "
                f"{spec.get('owner_pid')} on {spec.get('owner_host')}, which this machine "
                "cannot show is gone: stop that session, then run --chaos-cleanup again"
            )
        return why
