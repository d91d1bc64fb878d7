"""Native mappings: extension actions carried out by our own faults, on either target.

With ``--chaostoolkit-native`` (ini ``chaostoolkit_native``), a python-provider action of
chaostoolkit-kubernetes or chaostoolkit-toxiproxy listed in :data:`MAPPINGS` is not
called: the fault of this package that does the same runs instead, through the run's
``FaultSession``. So the action is in the ledger before it acts, reverted by us whatever
ends the run (``pytest --chaos-cleanup`` after SIGKILL), on the local target as on
Kubernetes, and the extension need not be installed.

Each mapping was read off the extension's source (chaostoolkit-kubernetes at 5d786b9,
chaostoolkit-toxiproxy 0.3.1 at c1d7c48; the functions are in :mod:`.native_kubernetes`
and :mod:`.native_toxiproxy`, the table and what they share here): the same parameters
and defaults, the same selection (terminate_pods' label selector, name pattern,
``all``/``rand``/``mode``/``qty``), the same return value, the same failures (an
``ActivityFailed`` there is a failed run here). An argument the target cannot honour is
an error naming the experiment file, the step and the argument, at collection where the
value is written out, else when the step runs; never a silent approximation.

An action that undoes an earlier mapped action of the same run (``uncordon_node`` after
``drain_nodes``, ``delete_toxic`` of a created toxic, ``delete_proxy`` of a created proxy,
``scale_deployment`` back to the count before) reverts that fault, which closes its ledger
entry. In the rollbacks, actions act on the target directly: a rollback is a repair, not a
fault to undo. What is still active when the experiment ends is reverted at teardown.

The experiment's Kubernetes credentials (``secrets`` with ``KUBERNETES_CONTEXT`` ...) are
not used: mapped actions act on the run's target (``--kube-context``, ``--chaos-namespace``),
whose safety rules apply; Toxiproxy actions on the target's Toxiproxy (``--toxiproxy-url``,
or the embedded one), else on the experiment's ``toxiproxy_url``/``toxiproxy_host``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ResilienceError, TargetError
from ..faults.base import ActiveFault, Fault, FaultContext, FaultSession
from ..targets.base import DependencyProxies, Target
from . import native_kubernetes as kubernetes
from . import native_toxiproxy as toxiproxy
from .providers import ActivityFailed

__all__ = ["MAPPINGS", "NativeAction", "NativeActions", "NativeArgumentError", "check_arguments"]

log = logging.getLogger("pytest_resilience.chaostoolkit")
_REQUIRED = object()
_OFF = kubernetes.OFF


class NativeArgumentError(ConfigError):
    """A mapped action's argument the target cannot honour (or the extension would refuse)."""


@dataclass(frozen=True)
class NativeAction:
    """One extension function and what runs in its place here."""

    #: ``module.func`` as an experiment's python provider names it
    extension: str
    #: what runs instead (fault kind and how), for docs, the timeline and the report
    ours: str
    #: the extension function's parameters and defaults (``secrets``/``configuration`` aside)
    parameters: Mapping[str, Any]
    run: Callable[[_Call], Any]
    #: (argument, value) -> why it cannot be honoured, or None
    refuse: Callable[[str, Any], str | None] = lambda name, value: None

    def problems(self, arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(argument, why) for each argument that is unknown, missing or not honoured."""
        found = [
            (name, f"is not an argument of {self.extension}; it takes {', '.join(self.parameters)}")
            for name in arguments
            if name not in self.parameters and name not in ("secrets", "configuration")
        ]
        found += [
            (name, f"is required by {self.extension}")
            for name, default in self.parameters.items()
            if default is _REQUIRED and name not in arguments
        ]
        for name in self.parameters:
            value = arguments.get(name, self.parameters[name])
            if value is _REQUIRED or _unsubstituted(value):
                continue  # missing (said above), or known only once the step runs
            why = self.refuse(name, value)
            if why:
                found.append((name, why))
        return found


@dataclass
class _Held:
    handle: ActiveFault
    key: tuple[Any, ...]


@dataclass
class _Call:
    """One mapped call: its arguments (defaults filled in) and what it acts through."""

    actions: NativeActions
    arguments: dict[str, Any]
    phase: str
    configuration: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.arguments[name]

    @property
    def target(self) -> Target:
        return self.actions.target

    def fault(self, fault: Fault, key: tuple[Any, ...]) -> Any:
        """Inject ``fault``: ledgered in the method; in the rollbacks (or a replay after
        SIGKILL, which has no session) it acts directly, as the experiment's own repair."""
        session = self.actions.session
        if self.phase == "rollback" or session is None:
            return fault.inject(FaultContext(self.target))
        handle = session.inject(fault)
        self.actions.held.append(_Held(handle, key))
        return handle.spec

    def undo(self, key: tuple[Any, ...]) -> bool:
        """Revert the active faults of this run that ``key`` names; whether there was one."""
        found = [h for h in self.actions.held if h.key == key and h.handle.active]
        for held in reversed(found):
            held.handle.revert()
        return bool(found)

    def namespace(self, ns: str) -> None:
        """The mapped action acts where the run acts; another namespace is refused."""
        where = {w.namespace for w in self.target.workloads()}
        if where and ns not in where:
            raise self.actions.refusal(
                "ns",
                ns,
                f"is not the namespace this run acts in ({', '.join(sorted(where))}); "
                f"run with --chaos-namespace {ns}, {_OFF}",
            )

    def toxiproxy_url(self) -> str:
        url = self.target.toxiproxy_server() if isinstance(self.target, DependencyProxies) else None
        if url:
            return url
        if self.configuration.get("toxiproxy_url"):  # chaostoxi's build_baseUrl, in its order
            return str(self.configuration["toxiproxy_url"])
        host = self.configuration.get("toxiproxy_host")
        if host:
            return f"http://{host}:{self.configuration.get('toxiproxy_port') or 8474}"
        raise self.actions.refusal(
            "configuration",
            None,
            "needs a Toxiproxy server: the target has none and the experiment's configuration "
            "names none (toxiproxy_url, or toxiproxy_host and toxiproxy_port); give "
            "--toxiproxy-url http://host:8474",
        )


class NativeActions:
    """The mapped actions of one experiment run, and the faults they injected."""

    def __init__(self, target: Target, session: FaultSession | None, *, source: str) -> None:
        self.target = target
        #: None when rollbacks are replayed after SIGKILL: everything acts directly
        self.session = session
        self.source = source
        self.held: list[_Held] = []
        self._where = ""
        self._step = ""
        self._extension = ""

    @staticmethod
    def maps(provider: Mapping[str, Any]) -> NativeAction | None:
        if provider.get("type") != "python":
            return None
        return MAPPINGS.get(f"{provider.get('module')}.{provider.get('func')}")

    def call(
        self,
        provider: Mapping[str, Any],
        *,
        where: str,
        step: str,
        phase: str,
        configuration: dict[str, Any],
    ) -> Any:
        """Run the mapped action of ``provider`` (substituted); its extension's result."""
        action = MAPPINGS[f"{provider['module']}.{provider['func']}"]
        self._where, self._step, self._extension = where, step, action.extension
        arguments = dict(provider.get("arguments") or {})
        for name, why in action.problems(arguments):
            raise self.refusal(name, arguments.get(name), why)
        filled = {name: arguments.get(name, default) for name, default in action.parameters.items()}
        if self.session is None and not self.target.pods_outlive_session:
            # a replay after SIGKILL on a target whose pods, nodes and embedded Toxiproxy
            # died with their session: what the action would undo is gone with them
            try:
                return action.run(_Call(self, filled, phase, configuration))
            except (ResilienceError, ActivityFailed) as exc:
                log.info("%s: nothing left to undo on %s (%s)", step, self.target.name, exc)
                return None
        try:
            return action.run(_Call(self, filled, phase, configuration))
        except (ActivityFailed, NativeArgumentError):
            raise
        except ConfigError as exc:  # a selector or attribute our faults reject
            raise self.refusal(exc.field or "arguments", None, exc.message) from None
        except (TargetError, ResilienceError) as exc:
            raise ActivityFailed(f"{action.extension} (native: {action.ours}): {exc}") from exc

    def refusal(self, argument: str, value: Any, why: str) -> NativeArgumentError:
        shown = "" if value is None else f"={value!r}"
        return NativeArgumentError(
            f"step {self._step!r} ({self._extension}): argument {argument}{shown} {why}",
            source=self.source,
            field=f"{self._where}.provider.arguments.{argument}",
        )


def check_arguments(experiment: Any) -> list[NativeArgumentError]:
    """At collection: every mapped step's written-out arguments, as :meth:`NativeActions.call`
    will judge them (values with ``${...}`` wait for the run)."""
    errors: list[NativeArgumentError] = []
    for where, provider in experiment.python_providers():
        action = NativeActions.maps(provider)
        if action is None:
            continue
        arguments = provider.get("arguments") or {}
        step = _step_name(experiment, where)
        for name, why in action.problems(arguments):
            shown = f"={arguments[name]!r}" if name in arguments else ""
            errors.append(
                NativeArgumentError(
                    f"step {step!r} ({action.extension}): argument {name}{shown} {why}",
                    source=str(experiment.path),
                    field=f"{where}.provider.arguments.{name}",
                )
            )
    return errors


def _step_name(experiment: Any, where: str) -> str:
    activities = [
        *(experiment.hypothesis.probes if experiment.hypothesis else ()),
        *experiment.method,
        *experiment.rollbacks,
    ]
    return next((a.name for a in activities if a.where == where), where)


def _unsubstituted(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _toxic_parameters(**more: Any) -> dict[str, Any]:
    return {"for_proxy": _REQUIRED, "toxic_name": _REQUIRED, **more}


_K8S = "chaosk8s"
_TOXI = "chaostoxi"

#: extension function (``module.func``) -> what runs in its place, ledgered and reverted here
MAPPINGS: dict[str, NativeAction] = {
    action.extension: action
    for action in (
        NativeAction(
            f"{_K8S}.pod.actions.terminate_pods",
            "pod_kill of the selected pods (grace_period -1: SIGTERM, 0: SIGKILL); "
            "reverted once the workload is back to its replicas",
            {
                "label_selector": None,
                "name_pattern": None,
                "all": False,
                "rand": False,
                "mode": "fixed",
                "qty": 1,
                "grace_period": -1,
                "ns": "default",
                "order": "alphabetic",
            },
            kubernetes.terminate_pods,
            kubernetes.refuse_terminate,
        ),
        NativeAction(
            f"{_K8S}.deployment.actions.scale_deployment",
            "scale the workload; reverted to the replica count before",
            {"name": _REQUIRED, "replicas": _REQUIRED, "ns": "default"},
            kubernetes.scale_deployment,
        ),
        NativeAction(
            f"{_K8S}.node.actions.drain_nodes",
            "node_drain (the target's drain: cordon, evict); reverted by uncordoning",
            {
                "name": None,
                "label_selector": None,
                "delete_pods_with_local_storage": False,
                "timeout": 120,
                "count": None,
                "pod_label_selector": None,
                "pod_namespace": None,
            },
            kubernetes.drain_nodes,
            kubernetes.refuse_drain,
        ),
        NativeAction(
            f"{_K8S}.node.actions.uncordon_node",
            "revert this run's drain of the node, then uncordon it",
            {"name": None, "label_selector": None},
            kubernetes.uncordon_node,
            kubernetes.refuse_uncordon,
        ),
        NativeAction(
            f"{_TOXI}.proxy.actions.create_proxy",
            "proxy_create on the Toxiproxy server; reverted by deleting the proxy",
            {
                "proxy_name": _REQUIRED,
                "upstream_host": _REQUIRED,
                "upstream_port": _REQUIRED,
                "listen_host": "0.0.0.0",
                "listen_port": 0,
                "enabled": True,
            },
            toxiproxy.create_proxy,
        ),
        NativeAction(
            f"{_TOXI}.proxy.actions.delete_proxy",
            "revert this run's proxy_create, else proxy_delete (reverted by re-creating it)",
            {"proxy_name": _REQUIRED},
            toxiproxy.delete_proxy,
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_toxic",
            "toxic (latency with only latency/jitter attributes) under the experiment's "
            "toxic name; reverted by removing it",
            _toxic_parameters(
                toxic_type=_REQUIRED, stream="downstream", toxicity=1.0, attributes=None
            ),
            toxiproxy.create_toxic,
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_latency_toxic",
            "latency (downstream, toxicity 1); reverted by removing the toxic",
            _toxic_parameters(latency=_REQUIRED, jitter=0),
            toxiproxy.named("latency", latency="latency", jitter="jitter"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_bandwith_degradation_toxic",
            "toxic bandwidth (rate KB/s); reverted by removing it",
            _toxic_parameters(rate=_REQUIRED),
            toxiproxy.named("bandwidth", rate="rate"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_slow_connection_close_toxic",
            "toxic slow_close (delay ms); reverted by removing it",
            _toxic_parameters(delay=_REQUIRED),
            toxiproxy.named("slow_close", delay="delay"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_timeout_toxic",
            "toxic timeout (timeout ms); reverted by removing it",
            _toxic_parameters(timeout=_REQUIRED),
            toxiproxy.named("timeout", timeout="timeout"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_slicer_toxic",
            "toxic slicer (average_size, size_variation, delay); reverted by removing it",
            _toxic_parameters(average_size=_REQUIRED, size_variation=_REQUIRED, delay=_REQUIRED),
            toxiproxy.named(
                "slicer",
                average_size="average_size",
                size_variation="size_variation",
                delay="delay",
            ),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_limiter_toxic",
            "toxic limit_data (bytes_limit as bytes); reverted by removing it",
            _toxic_parameters(bytes_limit=_REQUIRED),
            toxiproxy.named("limit_data", bytes="bytes_limit"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.delete_toxic",
            "revert this run's toxic of that name, else remove it from the server",
            _toxic_parameters(),
            toxiproxy.delete_toxic,
        ),
    )
}
