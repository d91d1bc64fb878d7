"""chaostoolkit-toxiproxy's actions as our faults (the table is in :mod:`.native`).

Each function follows its original in chaostoolkit-toxiproxy 0.3.1 (commit c1d7c48):
``proxy/actions.py`` create_proxy (``env:`` values, ``<name>_PORT`` into the configuration
and the environment) and delete_proxy, ``toxic/actions.py`` create_toxic, its
create_*_toxic helpers (fixed type, downstream, toxicity 1) and delete_toxic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ResilienceError
from .providers import ActivityFailed

if TYPE_CHECKING:
    from .native import _Call


def _from_env(value: Any) -> Any:
    """chaostoxi's value_from_environment_if_exists: ``env:NAME`` reads the environment."""
    if isinstance(value, str) and value.startswith("env:"):
        return os.environ[value[4:]]
    return value


def create_proxy(call: _Call) -> bool:
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


def delete_proxy(call: _Call) -> None:
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


def create_toxic(call: _Call) -> bool:
    return _toxic(
        call,
        call["toxic_type"],
        call["attributes"] or {},
        stream=call["stream"],
        toxicity=call["toxicity"],
    )


def named(type: str, **attributes: str) -> Callable[[_Call], bool]:
    """A create_*_toxic helper: fixed type, its arguments renamed to the toxic's attributes."""
    return lambda call: _toxic(call, type, {attr: call[arg] for attr, arg in attributes.items()})


def delete_toxic(call: _Call) -> bool:
    proxy, name = call["for_proxy"], call["toxic_name"]
    if call.undo(("toxic", proxy, name)):
        return True
    from ..toxiproxy.client import ToxiproxyAPIError, ToxiproxyClient

    try:
        ToxiproxyClient(call.toxiproxy_url()).remove_toxic(proxy, name)
    except ToxiproxyAPIError:
        return False  # the extension returns response.ok
    return True
