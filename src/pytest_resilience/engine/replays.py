"""Which fault replays which alert: the table ``engine scenario`` reads (see regression.py).

An alert says what users or an exporter saw; a regression scenario needs the *cause*, as a
fault of the catalogue. The table maps the alert names the engine raises itself and those
real rule sets use (kube-prometheus-stack, node-exporter, postgres_exporter, redis_exporter,
awesome-prometheus-alerts) to the fault that causes what they report; a name no row lists
is matched by the word that says what broke. An alert that is only a symptom (an error rate)
is replayed by what healed it, if that names a cause (:data:`HEALED_BY`), else refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["HEALED_BY", "LATENCY_MS", "REPLAYS", "NoReplay", "Replay", "replay_for"]

#: how much latency a latency or pool-saturation replay adds (the README's example)
LATENCY_MS = 500


class NoReplay(ConfigError):
    """The incident cannot be replayed as a fault; the message says why and what to do."""


@dataclass(frozen=True)
class Replay:
    """One row of :data:`REPLAYS`: the alerts that mean one cause, and the fault that is it.

    ``alerts`` are exact names (the engine's own and those real rule sets use);
    ``pattern`` catches the names no row lists, by the word that says what broke.
    """

    cause: str
    fault: str  # one of scenario.FAULTS
    alerts: tuple[str, ...]
    pattern: str
    how: str


#: Alert -> fault, the table the generator reads. Exact names first (any row), then the
#: patterns in this order (``KubeNodeNotReady`` is a node, before ``NotReady`` is a pod).
#: A symptom of something else (an error rate, a cold cache, CPU) has no row: which fault
#: caused it is not in the alert, and guessing would test the wrong thing; the action that
#: healed it may say (:data:`HEALED_BY`).
REPLAYS: tuple[Replay, ...] = (
    Replay(
        "crash loop",
        "pod_kill",
        ("PodCrashLoop", "KubePodCrashLooping", "KubernetesPodCrashLooping"),
        r"CrashLoop",
        "a replica killed again each time it is replaced, as many times as the incident saw",
    ),
    Replay(
        "node down",
        "node_failure",
        ("NodeNotReady", "KubeNodeNotReady", "KubeNodeUnreachable", "KubernetesNodeNotReady"),
        r"Node(NotReady|Unreachable|Down)",
        "every pod on the node hangs (capability node_outage)",
    ),
    Replay(
        "pod not ready",
        "pod_kill",
        (
            "KubePodNotReady",
            "KubernetesPodNotHealthy",
            "KubeDeploymentReplicasMismatch",
            "KubeStatefulSetReplicasMismatch",
        ),
        r"NotReady|NotHealthy|ReplicasMismatch",
        "one replica killed: the workload is short of ready pods until it is replaced",
    ),
    Replay(
        "disk full",
        "disk_fill",
        (
            "NodeFilesystemSpaceFillingUp",
            "NodeFilesystemAlmostOutOfSpace",
            "NodeFilesystemFilesFillingUp",
            "NodeFilesystemAlmostOutOfFiles",
            "HostOutOfDiskSpace",
            "HostOutOfInodes",
            "KubePersistentVolumeFillingUp",
        ),
        r"Filesystem|Disk|Inodes|Volume.*Filling|OutOfSpace",
        "the service's bounded volume filled to 90%",
    ),
    Replay(
        "memory pressure",
        "memory_stress",
        (
            "HighMemoryUsage",
            "ContainerHighMemoryUsage",
            "KubernetesContainerOomKiller",
            "RedisOutOfMemory",
            "RedisOutOfSystemMemory",
            "RedisOutOfConfiguredMaxmemory",
            "HostOutOfMemory",
        ),
        r"Memory|Oom",
        "the pods' memory grown to the share the alert read (else 95%) of their limit",
    ),
    Replay(
        "connections saturated",
        "latency",
        (
            "DatabaseConnectionPoolExhaustion",
            "PostgreSQLMaxConnectionsReached",
            "PostgreSQLHighConnections",
            "PostgresqlTooManyConnections",
            "RedisTooManyConnections",
        ),
        r"Connections|ConnectionPool|PoolExhaust",
        f"{LATENCY_MS} ms on the database's proxy: each connection is held longer; under a "
        "light load the pool may not run dry (a leak is no fault of the catalogue)",
    ),
    Replay(
        "connection lost",
        "network_block",
        ("PostgresqlDown", "PostgreSQLDown", "RedisDown", "MysqlDown", "TargetDown"),
        r"Down$|Unreachable|ConnectionRefused|ConnectionErrors?$",
        "ingress to the service's pods dropped (iptables)",
    ),
    Replay(
        "slow responses",
        "latency",
        ("HighLatency", "LatencyHigh", "HighRequestLatency", "KubeAPILatencyHigh"),
        r"Latency|Slow",
        f"{LATENCY_MS} ms on the dependency's proxy",
    ),
    Replay(
        "bad release",
        "bad_deploy",
        ("DeploymentFailure", "KubeDeploymentRolloutStuck", "KubeDeploymentGenerationMismatch"),
        r"Rollout|DeploymentFail|ReleaseFail",
        "the faulty release rolled out again (capability releases)",
    ),
)

#: An alert that names no cause (an error rate) whose incident an action of this name healed:
#: that action says what the cause was. A rollback that fixed it: the release was bad.
HEALED_BY: Mapping[str, Replay] = {
    "rollback": Replay(
        "bad release",
        "bad_deploy",
        (),
        r"(?!)",
        "the release the engine rolled back, rolled out again (capability releases)",
    ),
}


def replay_for(alert_name: str) -> Replay:
    """The row of :data:`REPLAYS` for ``alert_name``; :class:`NoReplay` naming it if none."""
    for replay in REPLAYS:
        if alert_name in replay.alerts:
            return replay
    for replay in REPLAYS:
        if re.search(replay.pattern, alert_name):
            return replay
    causes = "; ".join(f"{r.cause} -> {r.fault}" for r in REPLAYS)
    raise NoReplay(
        f"no fault replays alert {alert_name!r}: it names no cause this generator knows "
        f"({causes}). Write the scenario by hand with the fault that caused it",
        field="alert",
    )
