"""An upstream with no exchange behind it, for benchmarks of the broker's own path: every
subscribe is accepted at once, and the benchmark feeds notifications straight into the sink the
broker installed (``upstream.sink(channel, data, raw)``)."""

from __future__ import annotations

from typing import Any

from deribit_kit.events import Event
from deribit_kit.models import Instrument
from deribit_kit.upstream.protocol import Sink


class OfflineUpstream:
    """Implements :class:`deribit_kit.upstream.Upstream` with nothing on the wire but names."""

    name = "offline"

    def __init__(self, instruments: dict[str, Instrument] | None = None) -> None:
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self.sink: Sink | None = None
        self._wire: set[str] = set()
        self._instruments = dict(instruments or {})

    state = "open"
    epoch = 1
    authenticated = True

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._wire)

    def set_sink(self, sink: Sink | None) -> None:
        self.sink = sink

    async def subscribe(self, channels: list[str]) -> list[str]:
        self._wire.update(channels)
        return list(channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        self._wire.difference_update(channels)

    async def resync(self, channels: list[str]) -> None:
        return None

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        return list(self._instruments.values())

    async def instrument(self, name: str) -> Instrument:
        return self._instruments[name]

    def cached_instrument(self, name: str) -> Instrument | None:
        return self._instruments.get(name)

    async def index_price(self, index_name: str) -> float:
        return 0.0

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        raise NotImplementedError(method)

    def stats(self) -> dict[str, Any]:
        return {"state": self.state}

    async def close(self) -> None:
        self.sink = None
