"""Toxiproxy faults against a real embedded Toxiproxy (child process) and a real TCP server.

Every check reads the Toxiproxy API (what the server holds) or a client socket (what traffic
sees): a toxic is there while the fault is active and gone after it, whatever ended the test.
Delay checks are lower bounds on the injected delay (behaviour), never speed goals.
"""

from __future__ import annotations

import signal
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_resilience.errors import ConfigError, FaultError, SelectorMatchedNothing
from pytest_resilience.faults.base import FaultContext, FaultSession, revert_entries
from pytest_resilience.faults.toxics import Latency, ProxyDown, Toxic
from pytest_resilience.ledger import Ledger
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED, Timeline
from pytest_resilience.toxiproxy import EmbeddedToxiproxy, ToxiproxyClient

SOCKET_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxiedTarget:
    """Where the faults land. Toxiproxy faults use only ``name`` and the DependencyProxies
    capability of a target, so this is the whole interface they use, not a stand-in for
    project code."""

    toxiproxy_url: str | None
    name: str = "local"

    def toxiproxy_server(self) -> str | None:
        return self.toxiproxy_url


# -- real servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """A threaded TCP echo server: the dependency behind the proxy."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                while data := self.request.recv(65536):
                    self.request.sendall(data)
            except OSError:
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def toxiproxy_url() -> Iterator[str]:
    with EmbeddedToxiproxy(mode="process") as server:
        yield server.url


@pytest.fixture
def client(toxiproxy_url: str) -> ToxiproxyClient:
    return ToxiproxyClient(toxiproxy_url)


@pytest.fixture
def proxy(client: ToxiproxyClient, echo: str) -> Iterator[str]:
    """A fresh proxy in front of the echo server, deleted after the test."""
    name = f"dep-{uuid.uuid4().hex[:6]}"
    client.create_proxy(name, "127.0.0.1:0", echo)
    yield name
    client.delete_proxy(name)


@pytest.fixture
def target(toxiproxy_url: str) -> ProxiedTarget:
    return ProxiedTarget(toxiproxy_url)


@pytest.fixture
def timeline() -> Timeline:
    return Timeline("toxics")


@pytest.fixture
def session(target: ProxiedTarget, ledger: Ledger, timeline: Timeline) -> Iterator[FaultSession]:
    session = FaultSession(target, ledger=ledger, timeline=timeline)
    yield session
    session.revert_all()


def _round_trip(client: ToxiproxyClient, proxy: str, payload: bytes = b"ping") -> float:
    """Seconds for one echo through the proxy on a new connection (toxics apply per link)."""
    port = client.get_proxy(proxy).port  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "proxy closed the connection"
            got += chunk
        return time.monotonic() - start


def _open_entries(ledger: Ledger) -> list[Any]:
    return ledger.open_entries(include_live_owners=True)


# -- latency ----------------------------------------------------------------------------------


def test_latency_delays_while_active_and_is_gone_after(
    session: FaultSession,
    client: ToxiproxyClient,
    proxy: str,
    ledger: Ledger,
    timeline: Timeline,
    toxiproxy_url: str,
) -> None:
    assert client.toxics(proxy) == []
    _round_trip(client, proxy)

    fault = Latency(proxy, ms=250)
    handle = session.inject(fault)
    (toxic,) = client.toxics(proxy)
    assert (toxic.name, toxic.type, toxic.stream) == (fault.toxic_name, "latency", "downstream")
    assert toxic.attributes == {"latency": 250, "jitter": 0} and toxic.toxicity == 1.0
    assert toxic.name.startswith("pyres-")
    assert _round_trip(client, proxy) >= 0.25
    spec = ledger.get(handle.entry_id).spec  # type: ignore[arg-type]
    assert spec["proxy"] == proxy and spec["toxic"] == fault.toxic_name
    assert spec["url"] == toxiproxy_url

    handle.revert()
    handle.revert()  # idempotent
    assert client.toxics(proxy) == []
    assert _round_trip(client, proxy) < 0.25
    assert ledger.get(handle.entry_id).outcome == "reverted"  # type: ignore[arg-type]
    assert [e.kind for e in timeline.events()] == [FAULT_INJECTED, FAULT_REVERTED]
    assert timeline.events()[0].detail["description"] == fault.describe()


def test_describe_is_one_clear_line() -> None:
    assert (
        Latency("postgres", ms=500).describe()
        == "latency 500±0 ms downstream on proxy 'postgres' (toxicity 1)"
    )
    assert (
        Latency("redis", ms=100, jitter_ms=20, stream="upstream", toxicity=0.5).describe()
        == "latency 100±20 ms upstream on proxy 'redis' (toxicity 0.5)"
    )
    assert (
        Toxic("postgres", "bandwidth", rate=64).describe()
        == "bandwidth rate=64 downstream on proxy 'postgres' (toxicity 1)"
    )
    assert ProxyDown("redis").describe() == "proxy 'redis' down (connections refused and closed)"


# -- every other toxic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toxic_type", "attributes", "stream"),
    [
        ("bandwidth", {"rate": 64}, "downstream"),
        ("timeout", {"timeout": 0}, "upstream"),
        ("reset_peer", {"timeout": 100}, "downstream"),
        ("slow_close", {"delay": 100}, "downstream"),
        ("slicer", {"average_size": 8, "size_variation": 2, "delay": 10}, "downstream"),
        ("limit_data", {"bytes": 4}, "downstream"),
    ],
)
def test_toxic_is_on_the_proxy_while_active_and_gone_after(
    session: FaultSession,
    client: ToxiproxyClient,
    proxy: str,
    ledger: Ledger,
    toxic_type: str,
    attributes: dict[str, int],
    stream: str,
) -> None:
    fault = Toxic(proxy, toxic_type, stream=stream, toxicity=0.5, **attributes)
    with session.inject(fault) as handle:
        (toxic,) = client.toxics(proxy)
        assert (toxic.name, toxic.type, toxic.stream) == (fault.toxic_name, toxic_type, stream)
        assert toxic.attributes == attributes and toxic.toxicity == 0.5
        assert [e.id for e in _open_entries(ledger)] == [handle.entry_id]
    assert client.toxics(proxy) == []
    assert _open_entries(ledger) == []


def test_limit_data_really_cuts_the_connection(
    session: FaultSession, client: ToxiproxyClient, proxy: str
) -> None:
    with session.inject(Toxic(proxy, "limit_data", bytes=4)):
        port = client.get_proxy(proxy).port  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
            sock.sendall(b"0123456789")
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        assert got == b"0123"
    _round_trip(client, proxy, b"0123456789")  # the whole echo comes back again


# -- whatever ends the test, nothing stays injected ----------------------------------------


def test_context_manager_reverts_on_exception(
    session: FaultSession, client: ToxiproxyClient, proxy: str, ledger: Ledger
) -> None:
    with pytest.raises(ZeroDivisionError), session.inject(Latency(proxy, ms=50)):
        assert len(client.toxics(proxy)) == 1
        1 / 0  # noqa: B018
    assert client.toxics(proxy) == []
    assert _open_entries(ledger) == []


def test_revert_all_on_failure_undoes_every_fault(
    target: ProxiedTarget, client: ToxiproxyClient, proxy: str, ledger: Ledger
) -> None:
    session = FaultSession(target, ledger=ledger)
    with pytest.raises(AssertionError, match="SLO"):
        try:
            session.inject(Latency(proxy, ms=100, jitter_ms=10))
            session.inject(Toxic(proxy, "bandwidth", rate=10))
            session.inject(ProxyDown(proxy))
            assert len(client.toxics(proxy)) == 2
            assert not client.get_proxy(proxy).enabled  # type: ignore[union-attr]
            raise AssertionError("SLO did not recover")  # the test fails here
        finally:
            session.revert_all()  # what the fixture teardown does
    assert client.toxics(proxy) == []
    assert client.get_proxy(proxy).enabled  # type: ignore[union-attr]
    assert session.active == [] and _open_entries(ledger) == []


# -- proxy down --------------------------------------------------------------------------------


def test_proxy_down_refuses_connections_then_works_after(
    session: FaultSession, client: ToxiproxyClient, proxy: str, ledger: Ledger
) -> None:
    port = client.get_proxy(proxy).port  # type: ignore[union-attr]
    _round_trip(client, proxy)
    live = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    with live, session.inject(ProxyDown(proxy)) as handle:
        assert not client.get_proxy(proxy).enabled  # type: ignore[union-attr]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT).close()
        assert live.recv(1) == b""  # the open connection was closed too
        assert ledger.get(handle.entry_id).spec["was_enabled"] is True  # type: ignore[arg-type]
    assert client.get_proxy(proxy).enabled  # type: ignore[union-attr]
    _round_trip(client, proxy)  # served again
    assert _open_entries(ledger) == []


def test_nested_proxy_down_leaves_it_down_until_the_outer_one_reverts(
    session: FaultSession, client: ToxiproxyClient, proxy: str
) -> None:
    with session.inject(ProxyDown(proxy)):
        with session.inject(ProxyDown(proxy)):
            pass
        assert not client.get_proxy(proxy).enabled  # type: ignore[union-attr]
    assert client.get_proxy(proxy).enabled  # type: ignore[union-attr]


# -- dry run -------------------------------------------------------------------------------


def test_dry_run_touches_nothing(
    target: ProxiedTarget, client: ToxiproxyClient, proxy: str, ledger: Ledger
) -> None:
    line = Timeline("dry")
    session = FaultSession(target, ledger=ledger, timeline=line, dry_run=True)
    with session.inject(Latency(proxy, ms=500)), session.inject(ProxyDown(proxy)):
        assert client.toxics(proxy) == []
        assert client.get_proxy(proxy).enabled  # type: ignore[union-attr]
    assert _open_entries(ledger) == []
    assert [e.detail.get("dry_run") for e in line.events()] == [True] * 4


# -- after SIGKILL: the ledger alone is enough ----------------------------------------------


@pytest.mark.parametrize("fault", ["Latency(PROXY, ms=300)", "ProxyDown(PROXY)"])
def test_sigkilled_run_is_undone_from_the_ledger(
    client: ToxiproxyClient, proxy: str, ledger: Ledger, toxiproxy_url: str, fault: str
) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from pytest_resilience.faults.base import FaultSession
        from pytest_resilience.faults.toxics import Latency, ProxyDown
        from pytest_resilience.ledger import Ledger

        class Target:  # what Toxiproxy faults use of a target
            name = "local"

            def toxiproxy_server(self):
                return {toxiproxy_url!r}

        PROXY = {proxy!r}
        session = FaultSession(Target(), ledger=Ledger(Path({str(ledger.path)!r})))
        session.inject({fault})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()
    left = client.get_proxy(proxy)
    assert left is not None
    if fault.startswith("Latency"):
        assert [t.type for t in left.toxics] == ["latency"] and left.enabled
    else:
        assert left.toxics == () and not left.enabled

    (entry,) = ledger.open_entries()
    assert entry.spec["proxy"] == proxy and entry.spec["url"] == toxiproxy_url
    # Cleanup runs with a target that has no server of its own: the ledger's URL is used.
    outcomes = revert_entries([entry], ledger, FaultContext(target=ProxiedTarget(None)))
    assert [o for _, o in outcomes] == ["reverted"]
    assert client.toxics(proxy) == []
    assert client.get_proxy(proxy).enabled  # type: ignore[union-attr]
    assert ledger.open_entries() == []


def test_cleanup_of_a_toxic_already_gone_and_of_an_entry_that_never_acted(
    client: ToxiproxyClient, proxy: str, ledger: Ledger, toxiproxy_url: str
) -> None:
    # Killed between opening its entry and naming its server: it sent nothing to any server,
    # which the cleanup proves from the entry alone (no server, no server version), with a
    # target that has no Toxiproxy of its own (issue 10, item 11).
    fault = Latency(proxy, ms=100)
    early = ledger.open("latency", target="local", description="x", spec=fault.plan())
    # Named its server, then the toxic was gone already (404 is fine).
    server = {"url": toxiproxy_url, "server_version": client.version()}
    gone = ledger.open("toxic", target="local", description="y", spec={**fault.plan(), **server})
    entries = [ledger.get(early), ledger.get(gone)]
    outcomes = revert_entries(entries, ledger, FaultContext(target=ProxiedTarget(None)))
    assert [o for _, o in outcomes] == [
        "closed, nothing left to undo: it never acted: its run ended before it sent "
        "anything to a Toxiproxy server",
        "reverted",
    ]
    assert ledger.get(early).outcome.startswith("closed by cleanup: it never acted")  # type: ignore[union-attr]
    assert _open_entries(ledger) == []
    assert client.toxics(proxy) == []


def test_cleanup_against_a_silent_server(ledger: Ledger) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    spec = {"proxy": "postgres", "toxic": "pyres-00000000", "url": url, "server_version": "2.9.0"}
    external = ledger.open("latency", target="local", description="x", spec=spec)
    embedded = ledger.open(
        "latency",
        target="local",
        description="y",
        spec={**spec, "server_version": "2.9.0+pytest-resilience"},
    )
    ctx = FaultContext(target=ProxiedTarget(None))
    (ext, emb) = revert_entries([ledger.get(external), ledger.get(embedded)], ledger, ctx)
    # An external server may still hold the toxic: say so and keep the entry open.
    assert ext[1].startswith("revert failed") and "does not answer" in ext[1]
    assert "--chaos-cleanup" in ext[1]
    # The embedded server died with its run, and its toxics with it: closed, saying why.
    assert emb[1].startswith("closed, nothing left to undo: the embedded Toxiproxy at")
    assert "died with its run" in emb[1]
    assert [e.id for e in _open_entries(ledger)] == [external]


# -- clear errors --------------------------------------------------------------------------


def test_unknown_toxic_type_names_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown toxic type 'latnecy'.*bandwidth") as info:
        Toxic("postgres", "latnecy")
    assert info.value.field == "type"


def test_unknown_attribute_names_it_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown attribute 'rat' .*'bandwidth'.*: rate"):
        Toxic("postgres", "bandwidth", rat=10)
    with pytest.raises(ConfigError, match=r"'rate'.*integer >= 0, got -1"):
        Toxic("postgres", "bandwidth", rate=-1)
    with pytest.raises(ConfigError, match=r"stream must be one of upstream, downstream"):
        Latency("postgres", ms=1, stream="sideways")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ms must be a whole number .* got 0.5") as info:
        Latency("postgres", ms=0.5)  # type: ignore[arg-type]
    assert info.value.field == "ms"
    with pytest.raises(ConfigError, match=r"toxicity must be in \[0, 1\], got 2"):
        Latency("postgres", ms=1, toxicity=2)


def test_unknown_proxy_lists_the_proxies_that_exist(
    session: FaultSession, client: ToxiproxyClient, proxy: str, ledger: Ledger
) -> None:
    for fault in (Latency("postgress", ms=10), ProxyDown("postgress")):
        with pytest.raises(SelectorMatchedNothing, match=r"no proxy 'postgress'") as info:
            session.inject(fault)
        assert proxy in str(info.value).rpartition("proxies there: ")[2]
    assert client.toxics(proxy) == []
    assert _open_entries(ledger) == []


def test_missing_toxiproxy_url_says_how_to_get_one(ledger: Ledger) -> None:
    session = FaultSession(ProxiedTarget(None, name="kubernetes"), ledger=ledger)
    with pytest.raises(FaultError, match=r"needs a Toxiproxy server") as info:
        session.inject(Latency("postgres", ms=100))
    message = str(info.value)
    assert "'kubernetes'" in message and "--toxiproxy-url" in message
    assert "proxied: true" in message
    assert _open_entries(ledger) == []
