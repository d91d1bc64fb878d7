"""What the fault fixtures return: one typed injector per fault, as pytest's ``MonkeyPatch``.

``pod_kill``, ``network_block``, ``latency``, ``toxic``, ``proxy_down``, ``disk_fill``,
``memory_stress``, ``node_failure`` and ``bad_deploy`` each give the test an injector of this
module. Calling it injects the fault through the test's :class:`~.base.FaultSession` (ledger
first, reverted at teardown) and returns the :class:`~.base.ActiveFault`, which is also a
context manager::

    def test_api_survives_a_pod_kill(pod_kill: PodKillInjector) -> None:
        with pod_kill("app=api", count=1):
            ...

The signatures are the fault classes' own (``tests/plugin/test_fixtures_injectors.py`` keeps them
so), options keyword-only, so an editor completes them and a type checker catches a wrong
keyword. Each fault module is imported on the first call, not here: a suite that never
injects a toxic never imports the Toxiproxy client.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, final

if TYPE_CHECKING:
    import random

    from .base import ActiveFault, FaultSession
    from .network import Direction
    from .toxics import Stream

__all__ = [
    "BadDeployInjector",
    "DiskFillInjector",
    "LatencyInjector",
    "MemoryStressInjector",
    "NetworkBlockInjector",
    "NodeFailureInjector",
    "PodKillInjector",
    "ProxyDownInjector",
    "ToxicInjector",
]


class _Injector:
    """Holds the test's fault session; each subclass is one fixture's callable."""

    __slots__ = ("_session",)

    def __init__(self, session: FaultSession) -> None:
        self._session = session

    @property
    def active(self) -> list[ActiveFault]:
        """The faults of this test still injected (of every kind), oldest first."""
        return self._session.active

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.active)} active fault(s) in this test>"


@final
class PodKillInjector(_Injector):
    """The ``pod_kill`` fixture: kill pods as a crashed node or an OOM kill would."""

    __slots__ = ()

    def __call__(
        self,
        selector: str | Mapping[str, str],
        *,
        count: int = 1,
        sig: int = signal.SIGKILL,
        replaced_within_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> ActiveFault:
        """Kill ``count`` ready pods matching ``selector`` (``"app=api"`` or a label mapping)
        with signal ``sig``; the revert waits up to ``replaced_within_s`` seconds until the
        workload has its replicas back, ready. ``rng`` picks the victims (tests pin it)."""
        from .pod_kill import PodKill

        fault = PodKill(
            selector, count=count, sig=sig, replaced_within_s=replaced_within_s, rng=rng
        )
        return self._session.inject(fault)


@final
class NetworkBlockInjector(_Injector):
    """The ``network_block`` fixture: drop or reject a pod's, a service's or a port's traffic."""

    __slots__ = ()

    def __call__(
        self,
        selector: str | Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        direction: Direction = "ingress",
        action: Literal["drop", "reject"] = "drop",
    ) -> ActiveFault:
        """Block the traffic of the pods matching ``selector``, of ``port``, or of both:
        ``network_block("app=postgres", direction="ingress", action="drop")``,
        ``network_block(port=5432)``."""
        from .network import NetworkBlock

        fault = NetworkBlock(selector, port=port, direction=direction, action=action)
        return self._session.inject(fault)


@final
class LatencyInjector(_Injector):
    """The ``latency`` fixture: delay a dependency through its Toxiproxy proxy."""

    __slots__ = ()

    def __call__(
        self,
        proxy: str,
        *,
        ms: int,
        jitter_ms: int = 0,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        toxiproxy_url: str | None = None,
    ) -> ActiveFault:
        """Delay every chunk on ``proxy`` by ``ms`` (± ``jitter_ms``) milliseconds:
        ``latency("postgres", ms=500, jitter_ms=50)``. ``toxicity``: the share of
        connections hit; ``toxiproxy_url``: a server other than the target's."""
        from .toxics import Latency

        fault = Latency(
            proxy,
            ms=ms,
            jitter_ms=jitter_ms,
            stream=stream,
            toxicity=toxicity,
            toxiproxy_url=toxiproxy_url,
        )
        return self._session.inject(fault)


@final
class ToxicInjector(_Injector):
    """The ``toxic`` fixture: any Toxiproxy toxic, its type and attributes checked by name."""

    __slots__ = ()

    def __call__(
        self,
        proxy: str,
        type: str,  # the Toxiproxy API's own field name
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        toxiproxy_url: str | None = None,
        **attributes: int,
    ) -> ActiveFault:
        """Add toxic ``type`` with its ``attributes`` on ``proxy``:
        ``toxic("redis", "bandwidth", rate=64)``, ``toxic("db", "timeout", timeout=0)``."""
        from .toxics import Toxic

        fault = Toxic(
            proxy,
            type,
            stream=stream,
            toxicity=toxicity,
            toxiproxy_url=toxiproxy_url,
            **attributes,
        )
        return self._session.inject(fault)


@final
class ProxyDownInjector(_Injector):
    """The ``proxy_down`` fixture: a dependency's proxy refuses and drops connections."""

    __slots__ = ()

    def __call__(self, proxy: str, *, toxiproxy_url: str | None = None) -> ActiveFault:
        """Take ``proxy`` down: ``proxy_down("postgres")``; a proxy already down stays so."""
        from .toxics import ProxyDown

        return self._session.inject(ProxyDown(proxy, toxiproxy_url=toxiproxy_url))


@final
class DiskFillInjector(_Injector):
    """The ``disk_fill`` fixture: a real file on a service's bounded volume."""

    __slots__ = ()

    def __call__(
        self, service: str, *, percent: float = 90, path: str | None = None
    ) -> ActiveFault:
        """Fill ``service``'s volume (or the one mounted at ``path``) to ``percent`` (1..99):
        ``disk_fill("postgres", percent=90)``."""
        from .disk import DiskFill

        return self._session.inject(DiskFill(service, percent=percent, path=path))


@final
class MemoryStressInjector(_Injector):
    """The ``memory_stress`` fixture: a helper in each pod grows its memory."""

    __slots__ = ()

    def __call__(
        self,
        selector: str | Mapping[str, str],
        *,
        share: float = 0.8,
        hold: bool = True,
        mb: int | None = None,
        count: int | None = None,
    ) -> ActiveFault:
        """Grow the memory of the pods matching ``selector`` to ``share`` of their limit
        (``memory_stress("api", share=0.8)``) or by ``mb`` MiB; ``hold=False`` is a spike;
        ``count`` stresses only the first pods."""
        from .memory import MemoryStress

        fault = MemoryStress(selector, share=share, hold=hold, mb=mb, count=count)
        return self._session.inject(fault)


@final
class NodeFailureInjector(_Injector):
    """The ``node_failure`` fixture: a node's pods hang (local) or are drained (Kubernetes)."""

    __slots__ = ()

    def __call__(self, node: str, *, hang: bool = False) -> ActiveFault:
        """Fail ``node``; ``hang=True`` insists on the hang (capability ``node_outage``)."""
        from .node import NodeFailure

        return self._session.inject(NodeFailure(node, hang=hang))


@final
class BadDeployInjector(_Injector):
    """The ``bad_deploy`` fixture: roll out a faulty release; the revert rolls it back."""

    __slots__ = ()

    def __call__(self, workload: str, *, version: str = "v2") -> ActiveFault:
        """Roll ``workload`` out at ``version``: ``bad_deploy("api", version="v2")``."""
        from .deploy import BadDeploy

        return self._session.inject(BadDeploy(workload, version))
