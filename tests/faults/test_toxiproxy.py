"""The embedded Toxiproxy, driven only over HTTP through toxiproxy-python and our wrapper.

Every proxy forwards real TCP to a small echo server in this process; toxics are checked by
what a client socket sees (delay, pacing, stalls, RST, EOF, slices). Timing assertions are
lower bounds on injected delay (behaviour), never speed goals.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from pytest_resilience.errors import ConfigError, FaultError
from pytest_resilience.toxiproxy import (
    EmbeddedToxiproxy,
    ProxyInfo,
    ToxiproxyAPIError,
    ToxiproxyClient,
    ToxiproxyUnreachable,
    resolve_server,
)

SOCKET_TIMEOUT = 5.0


# -- servers --------------------------------------------------------------------------------


@dataclass
class _Echo:
    """Threaded TCP echo server; records the bytes each finished connection received."""

    server: socketserver.ThreadingTCPServer
    received: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


def _serve(handle: Callable[[socket.socket], None]) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handle(self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def echo() -> Iterator[_Echo]:
    received: list[int] = []

    def handle(sock: socket.socket) -> None:
        total = 0
        try:
            while data := sock.recv(65536):
                total += len(data)
                sock.sendall(data)
        except OSError:
            pass
        received.append(total)

    server = _serve(handle)
    yield _Echo(server, received)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def closer() -> Iterator[str]:
    """Upstream that says b"bye" and closes at once."""

    def handle(sock: socket.socket) -> None:
        sock.sendall(b"bye")

    server = _serve(handle)
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@dataclass
class _Server:
    url: str
    kind: str
    ports: set[int] = field(default_factory=set)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        pytest.param(
            "binary",
            marks=pytest.mark.skipif(
                shutil.which("toxiproxy-server") is None, reason="toxiproxy-server not on PATH"
            ),
        ),
    ],
)
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    if request.param == "embedded":
        embedded = EmbeddedToxiproxy("127.0.0.1", 0, mode="process").start()
        url, stop, process = embedded.url, embedded.stop, embedded.pid
    else:
        handle = resolve_server(None)
        assert handle.kind == "binary"
        url, stop, process = handle.url, handle.stop, None
    state = _Server(url, request.param, {int(url.rpartition(":")[2])})
    yield state
    stop()
    leftover = sorted(port for port in state.ports if not _port_is_free(port))
    assert not leftover, f"ports still listening after stop: {leftover}"
    if process is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(process, 0)


@pytest.fixture
def client(server: _Server) -> Iterator[ToxiproxyClient]:
    client = ToxiproxyClient(server.url)
    yield client
    for proxy in client.proxies().values():
        server.ports.add(proxy.port)
        client.delete_proxy(proxy.name)


@pytest.fixture
def lib(server: _Server) -> Iterator[toxiproxy.Toxiproxy]:
    """Raw toxiproxy-python, pointed at the server the way its README says."""
    saved = APIConsumer.host, APIConsumer.port
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    tp = toxiproxy.Toxiproxy()
    tp.update_api_consumer(host, int(port))
    yield tp
    tp.destroy_all()
    APIConsumer.host, APIConsumer.port = saved


_names = (f"p{n}" for n in itertools.count())


@pytest.fixture
def proxy(client: ToxiproxyClient, echo: _Echo) -> ProxyInfo:
    return client.create_proxy(next(_names), "127.0.0.1:0", echo.address)


def _connect(proxy: ProxyInfo) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=SOCKET_TIMEOUT)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    assert _recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - start


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- the HTTP API through toxiproxy-python --------------------------------------------------


def test_version(lib: toxiproxy.Toxiproxy, client: ToxiproxyClient) -> None:
    assert lib.running()
    assert lib.version()
    assert client.version().startswith("2.")


def test_create_list_get_delete_proxy(lib: toxiproxy.Toxiproxy, echo: _Echo) -> None:
    created = lib.create(upstream=echo.address, name="api")
    assert created.listen.startswith("127.0.0.1:") and not created.listen.endswith(":0")
    assert created.enabled is True
    assert set(lib.proxies()) == {"api"}
    fetched = lib.get_proxy("api")
    assert (fetched.upstream, fetched.listen) == (echo.address, created.listen)
    raw = APIConsumer.get("/proxies/api").json()
    assert raw == {
        "name": "api",
        "listen": created.listen,
        "upstream": echo.address,
        "enabled": True,
        "toxics": [],
    }
    assert lib.destroy(fetched)
    assert lib.get_proxy("api") is None
    assert _port_is_free(int(created.listen.rpartition(":")[2]))


def test_errors_have_toxiproxy_statuses_and_json(lib: toxiproxy.Toxiproxy, echo: _Echo) -> None:
    with pytest.raises(NotFound) as missing:
        APIConsumer.get("/proxies/missing")
    assert json.loads(missing.value.args[0]) == {"error": "proxy not found", "status": 404}
    body = {"name": "dup", "upstream": echo.address, "listen": "127.0.0.1:0"}
    APIConsumer.post("/proxies", json=body)
    with pytest.raises(ProxyExists) as exists:
        APIConsumer.post("/proxies", json=body)
    assert json.loads(exists.value.args[0]) == {"error": "proxy already exists", "status": 409}
    proxy = lib.get_proxy("dup")
    with pytest.raises(InvalidToxic) as invalid:
        proxy.add_toxic(type="no_such_toxic")
    assert b"invalid toxic type" in invalid.value.args[0]
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways")
    with pytest.raises(InvalidToxic):
        APIConsumer.post("/proxies", json={"name": "no-upstream"})
    proxy.add_toxic(type="latency", attributes={"latency": 10})
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency", attributes={"latency": 20})
    with pytest.raises(NotFound):
        proxy.destroy_toxic("absent")
    with pytest.raises(NotFound):
        APIConsumer.post("/proxies/missing/toxics", json={"type": "latency"})


def test_toxics_through_library(lib: toxiproxy.Toxiproxy, echo: _Echo) -> None:
    proxy = lib.create(upstream=echo.address, name="tox")
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 5})
    proxy.add_toxic(type="bandwidth", stream="upstream", name="slow", toxicity=0.5)
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "slow"}
    assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 5}
    assert (toxics["slow"].stream, toxics["slow"].toxicity) == ("upstream", 0.5)
    assert toxics["slow"].attributes == {"rate": 0}
    assert proxy.destroy_toxic("slow")
    assert set(proxy.toxics()) == {"latency_downstream"}


def test_update_proxy_upstream_and_enabled(lib: toxiproxy.Toxiproxy, echo: _Echo, closer: str):
    proxy = lib.create(upstream=closer, name="upd")
    port = int(proxy.listen.rpartition(":")[2])
    updated = APIConsumer.post("/proxies/upd", json={"upstream": echo.address}).json()
    assert updated["upstream"] == echo.address and updated["listen"] == proxy.listen
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        _round_trip(sock)
    with proxy.down():
        assert lib.get_proxy("upd").enabled is False
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    assert lib.get_proxy("upd").enabled is True


def test_reset_enables_proxies_and_removes_toxics(
    client: ToxiproxyClient, proxy: ProxyInfo
) -> None:
    client.add_toxic(proxy.name, "timeout", timeout=0)
    client.disable(proxy.name)
    client.reset()
    assert client.toxics(proxy.name) == []
    assert client.get_proxy(proxy.name).enabled is True
    with _connect(proxy) as sock:
        _round_trip(sock)


def test_populate_creates_keeps_and_replaces(client: ToxiproxyClient, echo: _Echo, closer: str):
    first = client.populate(
        [
            {"name": "pop-a", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "pop-b", "listen": "127.0.0.1:0", "upstream": echo.address, "enabled": False},
        ]
    )
    assert [(p.name, p.enabled) for p in first] == [("pop-a", True), ("pop-b", False)]
    a = first[0]
    again = client.populate([{"name": "pop-a", "listen": a.listen, "upstream": echo.address}])
    assert again == [a]  # same listen and upstream: kept as is
    replaced = client.populate([{"name": "pop-a", "listen": a.listen, "upstream": closer}])
    assert replaced[0].upstream == closer
    assert set(client.proxies()) == {"pop-a", "pop-b"}
    with pytest.raises(ToxiproxyAPIError) as bad:
        client.populate([{"name": "pop-c"}])
    assert bad.value.status == 400 and "upstream" in bad.value.error


def test_client_errors_name_the_problem(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    with pytest.raises(ConfigError, match=r"'latnecy'.*valid types: latency, bandwidth"):
        client.add_toxic(proxy.name, "latnecy", latency=100)
    with pytest.raises(ConfigError, match=r"'delay'.*valid attributes: latency, jitter"):
        client.add_toxic(proxy.name, "latency", delay=100)
    with pytest.raises(ConfigError, match="stream"):
        client.add_toxic(proxy.name, "latency", stream="both", latency=1)
    with pytest.raises(ConfigError, match="toxicity"):
        client.add_toxic(proxy.name, "latency", toxicity=1.5, latency=1)
    with pytest.raises(ConfigError, match="integer"):
        client.add_toxic(proxy.name, "latency", latency=-1)
    with pytest.raises(ToxiproxyAPIError) as missing:
        client.add_toxic("no-such-proxy", "latency", latency=1)
    assert (missing.value.status, missing.value.error) == (404, "proxy not found")
    assert client.get_proxy("no-such-proxy") is None
    with pytest.raises(ToxiproxyAPIError) as dup:
        client.create_proxy(proxy.name, "127.0.0.1:0", proxy.upstream)
    assert dup.value.status == 409
    with pytest.raises(ConfigError, match="http://host:port"):
        ToxiproxyClient("localhost:8474")


def test_client_times_out_on_a_silent_server() -> None:
    with socket.socket() as silent:  # accepts TCP (backlog) but never answers HTTP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = ToxiproxyClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        with pytest.raises(ToxiproxyUnreachable, match="/version"):
            client.version()
    assert APIConsumer.host == "127.0.0.1" and APIConsumer.port == 8474  # restored


def test_two_clients_two_servers_do_not_cross(client: ToxiproxyClient, echo: _Echo) -> None:
    with EmbeddedToxiproxy(mode="thread") as other:
        other_client = ToxiproxyClient(other.url)
        client.create_proxy("same", "127.0.0.1:0", echo.address)
        other_client.create_proxy("same", "127.0.0.1:0", echo.address)
        other_client.add_toxic("same", "latency", latency=5)
        assert client.toxics("same") == []
        assert [t.name for t in other_client.toxics("same")] == ["latency_downstream"]
        port = other_client.get_proxy("same").port
        api_port = int(other.url.rpartition(":")[2])
    assert _port_is_free(port) and _port_is_free(api_port)


# -- TCP through proxies --------------------------------------------------------------------


def test_forwards_tcp(proxy: ProxyInfo) -> None:
    with _connect(proxy) as sock:
        payload = bytes(range(256)) * 400
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload


def test_latency_with_jitter_adds_delay(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    with _connect(proxy) as sock:
        base = statistics.median(_round_trip(sock) for _ in range(5))
        client.add_toxic(proxy.name, "latency", latency=150, jitter=20)  # live connection
        delayed = [_round_trip(sock) for _ in range(5)]
    assert min(delayed) >= 0.8 * 0.150
    assert statistics.median(delayed) - base >= 0.8 * 0.150


def test_latency_upstream_only_on_new_connection(client: ToxiproxyClient, proxy: ProxyInfo):
    client.add_toxic(proxy.name, "latency", stream="upstream", latency=120)
    with _connect(proxy) as sock:
        assert _round_trip(sock) >= 0.8 * 0.120


def test_bandwidth_limits_throughput(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    payload = b"x" * 40_000
    with _connect(proxy) as sock:
        _round_trip(sock)
        client.add_toxic(proxy.name, "bandwidth", rate=100)  # KB/s downstream, live connection
        elapsed = _round_trip(sock, payload)
    assert elapsed >= 0.8 * len(payload) / 100_000


def test_removing_bandwidth_releases_a_live_transfer(
    client: ToxiproxyClient, proxy: ProxyInfo
) -> None:
    client.add_toxic(proxy.name, "bandwidth", rate=2)  # 20 KB would take 10 s
    with _connect(proxy) as sock:
        sock.sendall(b"x" * 20_000)
        first = sock.recv(65536)
        assert 0 < len(first) <= 200  # one 100 ms slice at 2 KB/s
        client.remove_toxic(proxy.name, "bandwidth_downstream")
        sock.settimeout(3.0)  # far below the 10 s the toxic would take
        assert len(first) + len(_recv_exactly(sock, 20_000 - len(first))) == 20_000


def test_timeout_zero_stalls_until_removed(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    with _connect(proxy) as sock:
        _round_trip(sock)
        client.add_toxic(proxy.name, "timeout", timeout=0)
        sock.settimeout(0.3)
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        client.remove_toxic(proxy.name, "timeout_downstream")
        sock.settimeout(SOCKET_TIMEOUT)
        assert _round_trip(sock, b"back") >= 0  # flows again; b"lost" was dropped


def test_timeout_closes_after_delay(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "timeout", timeout=200)
    with _connect(proxy) as sock:
        start = time.perf_counter()
        sock.sendall(b"dropped")
        assert sock.recv(10) == b""
        assert time.perf_counter() - start >= 0.8 * 0.200


def test_reset_peer_resets(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "reset_peer", timeout=100)
    with _connect(proxy) as sock:
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_slow_close_delays_close(client: ToxiproxyClient, closer: str) -> None:
    proxy = client.create_proxy("slow-close", "127.0.0.1:0", closer)
    client.add_toxic(proxy.name, "slow_close", delay=300)
    with _connect(proxy) as sock:
        assert _recv_exactly(sock, 3) == b"bye"
        start = time.perf_counter()
        assert sock.recv(10) == b""
        assert time.perf_counter() - start >= 0.8 * 0.300


def test_slicer_splits_data(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "slicer", average_size=100, size_variation=0, delay=20_000)
    with _connect(proxy) as sock:
        sock.sendall(b"s" * 1000)
        reads: list[int] = []
        while sum(reads) < 1000:
            reads.append(len(sock.recv(65536)))
    assert max(reads) <= 100 and len(reads) >= 5


def test_limit_data_closes_after_n_bytes(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "limit_data", bytes=10)
    with _connect(proxy) as sock:
        sock.sendall(b"y" * 100)
        assert _recv_all(sock) == b"y" * 10


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_direction(client: ToxiproxyClient, proxy: ProxyInfo, echo: _Echo, stream: str) -> None:
    before = len(echo.received)
    client.add_toxic(proxy.name, "limit_data", stream=stream, bytes=5)
    with _connect(proxy) as sock:
        sock.sendall(b"z" * 20)
        got = _recv_all(sock)
    _wait_for(lambda: len(echo.received) > before, "the echo server to see the connection end")
    if stream == "upstream":  # client -> server cut at 5 bytes
        assert echo.received[-1] == 5 and len(got) <= 5
    else:  # server got everything, client only 5 back
        assert echo.received[-1] == 20 and got == b"z" * 5


def test_disabled_proxy_refuses_and_drops_connections(
    client: ToxiproxyClient, proxy: ProxyInfo
) -> None:
    live = _connect(proxy)
    _round_trip(live)
    client.disable(proxy.name)
    assert client.get_proxy(proxy.name).enabled is False
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy)
    with live:
        assert live.recv(10) == b""
    client.enable(proxy.name)
    with _connect(proxy) as sock:  # same port again
        _round_trip(sock)


def test_toxicity_zero_never_applies(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "timeout", timeout=0, toxicity=0.0)
    for _ in range(5):
        with _connect(proxy) as sock:
            _round_trip(sock)


def test_toxicity_is_drawn_per_connection(client: ToxiproxyClient, proxy: ProxyInfo) -> None:
    client.add_toxic(proxy.name, "limit_data", bytes=0, toxicity=0.5)
    outcomes = set()
    for _ in range(40):  # P(all 40 alike) = 2 * 0.5**40
        with _connect(proxy) as sock:
            sock.sendall(b"?")
            outcomes.add(sock.recv(1))
    assert outcomes == {b"", b"?"}


def test_updating_a_toxic_reaches_live_connections(client: ToxiproxyClient, proxy: ProxyInfo):
    client.add_toxic(proxy.name, "latency", latency=0)
    with _connect(proxy) as sock:
        _round_trip(sock)
        client.update_toxic(proxy.name, "latency_downstream", latency=150)
        assert _round_trip(sock) >= 0.8 * 0.150


def test_unreachable_upstream_closes_client(client: ToxiproxyClient) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: refuses
        proxy = client.create_proxy("dead", "127.0.0.1:0", dead)
        with _connect(proxy) as sock:
            assert sock.recv(10) == b""


# -- choosing a server ----------------------------------------------------------------------


def test_resolve_server(server: _Server) -> None:
    external = resolve_server(server.url)
    assert (external.kind, external.url) == ("external", server.url)
    external.stop()  # not ours: no-op
    assert ToxiproxyClient(server.url).version()
    with pytest.raises(ConfigError, match="--toxiproxy-url"):
        resolve_server("ftp://example")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        with pytest.raises(FaultError, match="no Toxiproxy answered"):
            resolve_server(f"http://127.0.0.1:{unused.getsockname()[1]}", timeout=1)
    with resolve_server(binary="no-such-toxiproxy-binary", embedded_mode="thread") as handle:
        assert handle.kind == "embedded" and handle.version.startswith("2.")
        port = int(handle.url.rpartition(":")[2])
    assert _port_is_free(port)
