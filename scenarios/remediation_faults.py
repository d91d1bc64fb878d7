"""Faults for the remediation scenarios, each a cause one bundled playbook is meant to fix.

They act on the demo system through its real interfaces: the API pods' admin hooks (a
connection leak, a memory hog are in-process faults), Redis' own CONFIG and keys, and the
target's pod primitives. Ledger-first like every fault: they are injected through the
scenario's FaultSession (``inject`` fixture in test_remediation.py).
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
        self._address: tuple[str, int] | None = None

    def describe(self) -> str:
        return f"fill {self.service} with stale keys (no TTL) under volatile-lru"

    def _client(self) -> redis.Redis:
        assert self._address is not None
        host, port = self._address
        return redis.Redis(host=host, port=port, socket_timeout=2.0)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        # Where clients reach the service (core Target protocol): a local port, or on
        # Kubernetes the Service's address, which this machine may not reach.
        where = urlsplit(ctx.target.endpoint(self.service))
        self._address = (where.hostname or "127.0.0.1", where.port or 6379)
        client = self._client()
        try:
            config = client.config_get("maxmemory*")
        except redis.ConnectionError as exc:
            self._address = None
            raise FaultError(
                f"cache_crowd_out: {self.service} at {where.netloc} cannot be reached from "
                f"this machine ({exc}); its Redis must be reachable to fill it"
            ) from None
        self._saved = {
            "maxmemory": str(config["maxmemory"]),
            "maxmemory-policy": str(config["maxmemory-policy"]),
        }
        stale = int(self.headroom_mb * 1024 * 1024)
        value = b"s" * 1024
        for start in range(0, stale // len(value), 256):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + 256):
                pipe.set(f"{STALE_PREFIX}{i}", value)
            pipe.execute(raise_on_error=False)  # a limit set already: fill what fits
        client.config_set("maxmemory-policy", "volatile-lru")
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used - stale // 2))
        return {
            "address": list(self._address),
            "saved": self._saved,
            "stale_keys": stale // len(value),
            "maxmemory": used - stale // 2,
        }

    def revert(self, ctx: FaultContext) -> None:
        if self._address is None:
            return
        client = self._client()
        for key, value in self._saved.items():
            client.config_set(key, value)
        batch = list(client.scan_iter(match=f"{STALE_PREFIX}*", count=1000))
        for start in range(0, len(batch), 1000):
            client.unlink(*batch[start : start + 1000])


class ConnectionLeak(Fault):
    """Every API pod checks its whole pool out and never returns it (a leaking code path).

    ``keep_leaking``: the leaking path keeps running under traffic, so a reset pool or a
    restarted pod runs dry again within a second: no playbook can fix that, a human must.
    """

    kind = "connection_leak"

    def __init__(self, workload: str = "api", *, keep_leaking: bool = False) -> None:
        self.workload = workload
        self.keep_leaking = keep_leaking
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
        return {"workload": self.workload, "leaked": leaked}

    def revert(self, ctx: FaultContext) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for pod in api_pods(ctx.target, self.workload):
            try:
                admin(ctx.target, pod, "/admin/pool/unleak")
            except (OSError, TargetError):
                continue


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
        admin(ctx.target, pod, f"/admin/memory/hog?mb={mb}", timeout=30)
        return {"pod": pod.name, "mb": mb}

    def revert(self, ctx: FaultContext) -> None:
        if self.pod is None:
            return
        if any(p.name == self.pod for p in ctx.target.pods()):
            admin(ctx.target, self.pod, "/admin/memory/release")


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
