"""Toxic types of Toxiproxy v2: the table of their attributes and how each acts on a stream.

The table is shared by the embedded server (to parse and serialise toxics) and by the client
wrapper (to reject a misspelt type or attribute before any request is sent). The behaviour
follows Shopify's Go toxics, one ``ToxicRun`` per toxic per connection direction, so adding,
updating or removing a toxic reaches live connections as it does in toxiproxy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, final

from pytest_resilience.errors import ConfigError
from pytest_resilience.toxiproxy import apierrors

#: Every toxic type toxiproxy v2 knows, with its integer attributes (all default to 0).
TOXIC_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),  # ms
    "bandwidth": ("rate",),  # KB/s
    "slow_close": ("delay",),  # ms
    "timeout": ("timeout",),  # ms, 0 = hold forever
    "reset_peer": ("timeout",),  # ms
    "slicer": ("average_size", "size_variation", "delay"),  # bytes, bytes, us
    "limit_data": ("bytes",),
    "noop": (),
}

#: ``upstream`` is client -> upstream server, ``downstream`` is upstream server -> client.
STREAMS: tuple[str, ...] = ("upstream", "downstream")


def check_toxic(
    toxic_type: str, stream: str, toxicity: float, attributes: Mapping[str, object]
) -> None:
    """Reject an unknown type or attribute, a bad stream or toxicity, before any request.

    Toxiproxy itself ignores unknown attributes, so a misspelt ``latnecy`` would be a silent
    no-op; this names the offending value and lists the valid ones instead. Lives next to the
    table (not in the client) so faults can validate without importing requests.
    """
    if toxic_type not in TOXIC_ATTRIBUTES:
        raise ConfigError(
            f"unknown toxic type {toxic_type!r}; valid types: {', '.join(TOXIC_ATTRIBUTES)}",
            field="type",
        )
    valid = TOXIC_ATTRIBUTES[toxic_type]
    for attr, value in attributes.items():
        if attr not in valid:
            raise ConfigError(
                f"unknown attribute {attr!r} for toxic {toxic_type!r}; valid attributes: "
                f"{', '.join(valid) or '(none)'}",
                field=attr,
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"attribute {attr!r} of toxic {toxic_type!r} must be an integer >= 0, "
                f"got {value!r}",
                field=attr,
            )
    if stream not in STREAMS:
        raise ConfigError(
            f"stream must be one of {', '.join(STREAMS)}, got {stream!r}", field="stream"
        )
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        raise ConfigError(
            f"toxicity must be a number in [0, 1], got {toxicity!r}", field="toxicity"
        )
    if not 0.0 <= toxicity <= 1.0:
        raise ConfigError(f"toxicity must be in [0, 1], got {toxicity!r}", field="toxicity")


@final
@dataclass
class ServedToxic:
    """One toxic as the embedded server holds and serves it (the fault that asks for one is
    faults.toxics.Toxic); mutable because POST .../toxics/{name} updates it."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


def parse_toxic(body: object) -> ServedToxic:
    """A new toxic from a request body, with toxiproxy's defaults; raises ApiError (400)."""
    if not isinstance(body, dict):
        raise apierrors.BAD_REQUEST_BODY.detail("expected a JSON object")
    stream = body.get("stream") or "downstream"
    if not isinstance(stream, str) or stream.lower() not in STREAMS:
        raise apierrors.INVALID_STREAM
    stream = stream.lower()
    toxic_type = body.get("type")
    if not isinstance(toxic_type, str) or toxic_type not in TOXIC_ATTRIBUTES:
        raise apierrors.INVALID_TOXIC_TYPE
    name = body.get("name") or f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise apierrors.BAD_REQUEST_BODY.detail("name must be a string")
    toxic = ServedToxic(name=name, type=toxic_type, stream=stream)
    toxic.attributes = {attr: 0 for attr in TOXIC_ATTRIBUTES[toxic_type]}
    apply_update(toxic, body)
    return toxic


def apply_update(toxic: ServedToxic, body: object) -> None:
    """Set toxicity and attributes from a body; unknown attributes are ignored, as in Go."""
    if not isinstance(body, dict):
        raise apierrors.BAD_REQUEST_BODY.detail("expected a JSON object")
    toxicity = body.get("toxicity", toxic.toxicity)
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        raise apierrors.BAD_REQUEST_BODY.detail(f"toxicity must be a number, got {toxicity!r}")
    if not 0.0 <= toxicity <= 1.0:
        raise apierrors.BAD_REQUEST_BODY.detail(f"toxicity must be in [0, 1], got {toxicity!r}")
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise apierrors.BAD_REQUEST_BODY.detail("attributes must be an object")
    updated = dict(toxic.attributes)
    for attr in TOXIC_ATTRIBUTES[toxic.type]:
        if attr not in attributes:
            continue
        value = attributes[attr]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise apierrors.BAD_REQUEST_BODY.detail(f"attribute {attr!r} must be an integer")
        updated[attr] = int(value)
    toxic.toxicity = float(toxicity)
    toxic.attributes = updated


class Link(Protocol):
    """What a toxic may do to the connection it sits on."""

    def close_connection(self, *, reset: bool = False) -> None: ...


Emit = Callable[[bytes], Awaitable[None]]


class ToxicRun:
    """One toxic acting on one direction of one connection (Go's ToxicStub + Pipe).

    Subclasses override ``data`` (a chunk passing through) and ``close`` (the stream's EOF
    passing through). ``pause`` ends early once the toxic is removed, so removal releases
    whatever the toxic was holding back, as toxiproxy's Interrupt channel does.
    """

    def __init__(self, toxic: ServedToxic, link: Link) -> None:
        self.toxic = toxic
        self.link = link
        self.detached = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    def attach(self) -> None:
        """Called once the run joins a live direction; timers start here."""

    def detach(self) -> None:
        self.detached.set()
        if self._timer is not None:
            self._timer.cancel()

    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        await emit(chunk)

    async def close(self) -> None:
        """Runs before EOF is passed on to the next toxic."""

    @property
    def attrs(self) -> dict[str, int]:
        return self.toxic.attributes

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the toxic was removed meanwhile."""
        if self.detached.is_set():
            return False
        if seconds <= 0:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self.detached.wait()
        except TimeoutError:
            return True
        return False

    def _start_timer(self, seconds: float, *, reset: bool) -> None:
        async def fire() -> None:
            if await self.pause(seconds):
                self.link.close_connection(reset=reset)

        self._timer = asyncio.get_running_loop().create_task(fire())


class _Latency(ToxicRun):
    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        delay_ms = float(self.attrs["latency"])
        jitter = self.attrs["jitter"]
        if jitter > 0:
            delay_ms += random.uniform(-jitter, jitter)
        # From the chunk's arrival, so pipelined chunks do not queue up their delays.
        await self.pause(arrived + delay_ms / 1000.0 - asyncio.get_running_loop().time())
        await emit(chunk)


class _Bandwidth(ToxicRun):
    """Paces bytes at ``rate`` KB/s; large chunks leave in 100 ms slices, as in Go."""

    _due = 0.0

    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(chunk)
        while view:
            rate = self.attrs["rate"]
            if rate <= 0 or self.detached.is_set():
                await emit(bytes(view))
                return
            piece, view = view[: rate * 100], view[rate * 100 :]
            self._due = max(self._due, loop.time()) + len(piece) / (rate * 1000.0)
            await self.pause(self._due - loop.time())
            await emit(bytes(piece))


class _SlowClose(ToxicRun):
    async def close(self) -> None:
        await self.pause(self.attrs["delay"] / 1000.0)


class _Timeout(ToxicRun):
    """Drops data; closes the connection after ``timeout`` ms, or holds it while 0."""

    def attach(self) -> None:
        if self.attrs["timeout"] > 0:
            self._start_timer(self.attrs["timeout"] / 1000.0, reset=False)

    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        return None  # dropped on the floor

    async def close(self) -> None:
        await self.detached.wait()  # nothing passes, not even EOF


class _ResetPeer(_Timeout):
    """Drops data; after ``timeout`` ms resets the connection (RST, SO_LINGER 0)."""

    def attach(self) -> None:
        self._start_timer(self.attrs["timeout"] / 1000.0, reset=True)


class _Slicer(ToxicRun):
    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        average, variation = self.attrs["average_size"], self.attrs["size_variation"]
        if average <= 0:
            await emit(chunk)
            return
        view = memoryview(chunk)
        while view:
            size = average + (random.randint(-variation, variation) if variation > 0 else 0)
            piece, view = view[: max(1, size)], view[max(1, size) :]
            await emit(bytes(piece))
            if view and not await self.pause(self.attrs["delay"] / 1_000_000.0):
                await emit(bytes(view))
                return


class _LimitData(ToxicRun):
    """Passes ``bytes`` bytes in this direction, then closes the connection."""

    sent = 0

    async def data(self, chunk: bytes, arrived: float, emit: Emit) -> None:
        remaining = max(0, self.attrs["bytes"] - self.sent)
        if remaining:
            piece = chunk[:remaining]
            await emit(piece)
            self.sent += len(piece)
        if self.sent >= self.attrs["bytes"] and not self.detached.is_set():
            self.link.close_connection()


_RUNS: Mapping[str, type[ToxicRun]] = {
    "latency": _Latency,
    "bandwidth": _Bandwidth,
    "slow_close": _SlowClose,
    "timeout": _Timeout,
    "reset_peer": _ResetPeer,
    "slicer": _Slicer,
    "limit_data": _LimitData,
    "noop": ToxicRun,
}


def draw_run(toxic: ServedToxic, link: Link) -> ToxicRun | None:
    """The toxic's run on one direction, or None when its toxicity draw says it skips."""
    if toxic.toxicity < 1.0 and random.random() >= toxic.toxicity:
        return None
    return _RUNS[toxic.type](toxic, link)
