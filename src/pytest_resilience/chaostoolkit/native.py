"""Native mappings: extension actions carried out by our own faults, on either target.

With ``--chaostoolkit-native`` (ini ``chaostoolkit_native``), a python-provider action of
chaostoolkit-kubernetes or chaostoolkit-toxiproxy listed in :data:`MAPPINGS` is not
called: the fault of this package that does the same runs instead, through the run's
``FaultSession``. So the action is in the ledger before it acts, reverted by us whatever
ends the run (``pytest --chaos-cleanup`` after SIGKILL), on the local target as on
Kubernetes, and the extension need not be installed.

Each mapping was read off the extension's source (chaostoolkit-kubernetes at 5d786b9,
chaostoolkit-toxiproxy 0.3.1 at c1d7c48): the same parameters and defaults, the same
selection (terminate_pods' label selector, name pattern, ``all``/``rand``/``mode``/``qty``),
the same return value, the same failures (an ``ActivityFailed`` there is a failed run
here). An argument the target cannot honour is an error naming the experiment file, the
step and the argument, at collection where the value is written out, else when the step
runs; never a silent approximation.

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

import contextlib
import math
import os
import random
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ResilienceError, TargetError
from ..faults.base import ActiveFault, Fault, FaultContext, FaultSession
from ..faults.pod_kill import PodKill
from ..targets.base import DependencyProxies, Target, parse_selector
from .providers import ActivityFailed

__all__ = ["MAPPINGS", "NativeAction", "NativeActions", "NativeArgumentError", "check_arguments"]

_REQUIRED = object()
_OFF = "or run without --chaostoolkit-native to call the extension itself"


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


# -- chaostoolkit-kubernetes ---------------------------------------------------------------


class _ChosenPods(PodKill):
    """pod_kill of exactly the pods terminate_pods selected (not a random ready one)."""

    def __init__(self, names: list[str], selector: str, *, sig: int) -> None:
        super().__init__(selector or "", count=max(1, len(names)), sig=sig)
        self.names = names

    def describe(self) -> str:
        return f"{self.sig.name} pod(s) {', '.join(self.names)}"

    def plan(self) -> dict[str, Any]:
        return {**super().plan(), "pods": self.names}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        pods = [p for p in ctx.target.pods(self.selector) if p.name in self.names]
        replicas = {w.name: w.replicas for w in ctx.target.workloads()}
        self._workloads = {p.workload: replicas.get(p.workload, 1) for p in pods}
        for pod in pods:
            ctx.target.kill_pod(pod, sig=self.sig)
            self.killed.append(pod.name)
        return {"killed": self.killed, "workloads": self._workloads}


def _terminate_pods(call: _Call) -> list[str]:
    # chaosk8s.pod.actions.terminate_pods and its _select_pods, step by step
    qty, mode, order = call["qty"], call["mode"], call["order"]
    if qty < 0:
        raise ActivityFailed(f"Cannot select pods. Quantity '{qty}' is negative.")
    if mode not in ("fixed", "percentage"):
        raise ActivityFailed(f"Cannot select pods. Mode '{mode}' is invalid.")
    if order not in ("alphabetic", "oldest"):
        raise ActivityFailed(f"Cannot select pods. Order '{order}' is invalid.")
    call.namespace(call["ns"])
    selector = call["label_selector"] or ""
    parse_selector(selector)  # a set-based term is refused here, naming the argument
    pods = sorted(call.target.pods(selector, namespace=call["ns"]), key=lambda p: p.name)
    if call["name_pattern"]:
        pattern = re.compile(call["name_pattern"])
        pods = [p for p in pods if pattern.search(p.name)]
    if not call["all"]:
        if mode == "percentage":
            qty = math.ceil((qty * len(pods)) / 100)
        qty = min(qty, len(pods))
        pods = random.sample(pods, qty) if call["rand"] else pods[:qty]
    if not pods:
        return []  # the extension deletes nothing and says so by an empty list
    sig = signal.SIGKILL if call["grace_period"] == 0 else signal.SIGTERM
    names = [p.name for p in pods]
    call.fault(_ChosenPods(names, selector, sig=sig), ("pods", tuple(names)))
    return names


def _refuse_terminate(name: str, value: Any) -> str | None:
    if name == "order" and value == "oldest":
        return f"cannot be honoured: the target does not report pods' creation times; {_OFF}"
    if name == "grace_period" and value not in (-1, 0):
        return (
            "cannot be honoured: a native pod kill is SIGTERM with the pod's own grace "
            f"(grace_period -1) or SIGKILL (grace_period 0); {_OFF}"
        )
    return None


def _scale_deployment(call: _Call) -> None:
    from ..faults.scale import Scale

    call.namespace(call["ns"])
    name, replicas = call["name"], call["replicas"]
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ActivityFailed(f"failed to scale '{name}' to {replicas} replicas: not an integer")
    for held in call.actions.held:  # back to the count before an earlier scale: its undo
        fault = held.handle.fault
        if held.key == ("scale", name) and held.handle.active and fault.previous == replicas:
            held.handle.revert()
            return None
    try:
        call.fault(Scale(name, replicas), ("scale", name))
    except TargetError as exc:
        raise ActivityFailed(f"failed to scale '{name}' to {replicas} replicas: {exc}") from exc
    return None  # the extension returns nothing


def _select_nodes(call: _Call) -> list[str]:
    """chaosk8s.node.actions._select_nodes for a name and for the pods' nodes."""
    names = [n.name for n in call.target.nodes()]
    if call.arguments.get("name"):
        names = [n for n in names if n == call["name"]]
    if call.arguments.get("pod_label_selector") and call.arguments.get("pod_namespace"):
        hosting = {
            p.node
            for p in call.target.pods(call["pod_label_selector"], namespace=call["pod_namespace"])
        }
        names = [n for n in names if n in hosting]
    if not names:
        raise ActivityFailed("failed to find a node that matches selector")
    if call.arguments.get("count") is not None:
        names = random.choices(names, k=call["count"])  # with repeats, as the extension
    return names


def _drain_nodes(call: _Call) -> list[str]:
    from ..faults.drain import NodeDrain

    nodes = _select_nodes(call)
    call.fault(NodeDrain(nodes), ("drain", tuple(dict.fromkeys(nodes))))
    return nodes


def _refuse_drain(name: str, value: Any) -> str | None:
    if name == "label_selector" and value:
        return f"cannot be honoured: the target does not report node labels; name the node, {_OFF}"
    if name == "delete_pods_with_local_storage" and value is not True:
        return (
            "cannot be honoured: a native drain evicts every pod, those with local storage "
            "(emptyDir) too, as kubectl drain --delete-emptydir-data; set it to true to accept "
            f"that, {_OFF}"
        )
    if name == "timeout" and value != 120:
        return f"cannot be honoured: the target's drain has its own bound (120 s); {_OFF}"
    return None


def _uncordon_node(call: _Call) -> list[str]:
    nodes = _select_nodes(call)
    for held in call.actions.held:  # the drains of these nodes are undone, entries closed
        if held.key[0] == "drain" and set(held.key[1]) & set(nodes) and held.handle.active:
            held.handle.revert()
    for node in nodes:  # and uncordoned as asked, whoever cordoned them
        call.target.uncordon(node)
    return nodes


def _refuse_uncordon(name: str, value: Any) -> str | None:
    if name == "label_selector" and value:
        return f"cannot be honoured: the target does not report node labels; name the node, {_OFF}"
    return None


# -- chaostoolkit-toxiproxy ----------------------------------------------------------------


def _from_env(value: Any) -> Any:
    """chaostoxi's value_from_environment_if_exists: ``env:NAME`` reads the environment."""
    if isinstance(value, str) and value.startswith("env:"):
        return os.environ[value[4:]]
    return value


def _create_proxy(call: _Call) -> bool:
    from ..faults.proxies import ProxyCreate

    name = call["proxy_name"]
    upstream = f"{_from_env(call['upstream_host'])}:{_from_env(call['upstream_port'])}"
    fault = ProxyCreate(
        name,
        listen=f"{call['listen_host']}:{call['listen_port']}",
        upstream=upstream,
        enabled=bool(call["enabled"]),
        toxiproxy_url=call.toxiproxy_url(),
    )
    try:
        call.fault(fault, ("proxy", name))
    except ResilienceError as exc:
        raise ActivityFailed(f"could not create proxy {name!r}: {exc}") from exc
    port = (fault.listening or "").rpartition(":")[2]
    if not port.isdigit():
        raise ActivityFailed(f"Unable to parse port from proxy response {fault.listening!r}")
    # as the extension: later steps read ${<name>_PORT}
    call.configuration[f"{name}_PORT"] = port
    os.environ[f"{name}_PORT"] = port
    return True


def _delete_proxy(call: _Call) -> None:
    from ..faults.proxies import ProxyDelete

    name = call["proxy_name"]
    if call.undo(("proxy", name)):
        return None
    fault = ProxyDelete(name, toxiproxy_url=call.toxiproxy_url())
    if call.phase == "rollback" or call.actions.session is None:
        from ..toxiproxy.client import ToxiproxyClient

        with contextlib.suppress(ResilienceError):  # the extension only logs a failed delete
            ToxiproxyClient(fault.toxiproxy_url).delete_proxy(name)
        return None
    call.fault(fault, ("deleted-proxy", name))
    return None


def _toxic(call: _Call, type: str, attributes: Mapping[str, Any], **options: Any) -> bool:
    from ..faults.toxics import Latency, Toxic

    proxy, name = call["for_proxy"], call["toxic_name"]
    url = call.toxiproxy_url()
    fault: Toxic
    if type == "latency" and set(attributes) <= {"latency", "jitter"} and not options:
        fault = Latency(
            proxy,
            ms=attributes.get("latency", 0),
            jitter_ms=attributes.get("jitter", 0),
            toxiproxy_url=url,
        )
    else:
        fault = Toxic(proxy, type, toxiproxy_url=url, **options, **attributes)
    fault.toxic_name = name  # the experiment's name: its delete_toxic and probes find it
    call.fault(fault, ("toxic", proxy, name))
    return True


def _create_toxic(call: _Call) -> bool:
    return _toxic(
        call,
        call["toxic_type"],
        call["attributes"] or {},
        stream=call["stream"],
        toxicity=call["toxicity"],
    )


def _named(type: str, **attributes: str) -> Callable[[_Call], bool]:
    """A create_*_toxic helper: fixed type, its arguments renamed to the toxic's attributes."""
    return lambda call: _toxic(call, type, {attr: call[arg] for attr, arg in attributes.items()})


def _delete_toxic(call: _Call) -> bool:
    proxy, name = call["for_proxy"], call["toxic_name"]
    if call.undo(("toxic", proxy, name)):
        return True
    from ..toxiproxy.client import ToxiproxyAPIError, ToxiproxyClient

    try:
        ToxiproxyClient(call.toxiproxy_url()).remove_toxic(proxy, name)
    except ToxiproxyAPIError:
        return False  # the extension returns response.ok
    return True


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
            _terminate_pods,
            _refuse_terminate,
        ),
        NativeAction(
            f"{_K8S}.deployment.actions.scale_deployment",
            "scale the workload; reverted to the replica count before",
            {"name": _REQUIRED, "replicas": _REQUIRED, "ns": "default"},
            _scale_deployment,
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
            _drain_nodes,
            _refuse_drain,
        ),
        NativeAction(
            f"{_K8S}.node.actions.uncordon_node",
            "revert this run's drain of the node, then uncordon it",
            {"name": None, "label_selector": None},
            _uncordon_node,
            _refuse_uncordon,
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
            _create_proxy,
        ),
        NativeAction(
            f"{_TOXI}.proxy.actions.delete_proxy",
            "revert this run's proxy_create, else proxy_delete (reverted by re-creating it)",
            {"proxy_name": _REQUIRED},
            _delete_proxy,
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_toxic",
            "toxic (latency with only latency/jitter attributes) under the experiment's "
            "toxic name; reverted by removing it",
            _toxic_parameters(
                toxic_type=_REQUIRED, stream="downstream", toxicity=1.0, attributes=None
            ),
            _create_toxic,
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_latency_toxic",
            "latency (downstream, toxicity 1); reverted by removing the toxic",
            _toxic_parameters(latency=_REQUIRED, jitter=0),
            _named("latency", latency="latency", jitter="jitter"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_bandwith_degradation_toxic",
            "toxic bandwidth (rate KB/s); reverted by removing it",
            _toxic_parameters(rate=_REQUIRED),
            _named("bandwidth", rate="rate"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_slow_connection_close_toxic",
            "toxic slow_close (delay ms); reverted by removing it",
            _toxic_parameters(delay=_REQUIRED),
            _named("slow_close", delay="delay"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_timeout_toxic",
            "toxic timeout (timeout ms); reverted by removing it",
            _toxic_parameters(timeout=_REQUIRED),
            _named("timeout", timeout="timeout"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.create_slicer_toxic",
            "toxic slicer (average_size, size_variation, delay); reverted by removing it",
            _toxic_parameters(average_size=_REQUIRED, size_variation=_REQUIRED, delay=_REQUIRED),
            _named(
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
            _named("limit_data", bytes="bytes_limit"),
        ),
        NativeAction(
            f"{_TOXI}.toxic.actions.delete_toxic",
            "revert this run's toxic of that name, else remove it from the server",
            _toxic_parameters(),
            _delete_toxic,
        ),
    )
}
