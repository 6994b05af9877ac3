"""``LiveUpstream``: the upstream protocol over a :class:`~deribit_kit.client.Client` — the
embedded exchange, Deribit's testnet or production.

A notification arrives in the client's transport, is decoded once there, and goes straight to the
broker's sink (:meth:`LiveUpstream.set_sink` installs it as the client's one sink). Subscribing
and unsubscribing are the client's primitives; a resync unsubscribes the book channels and
subscribes them again, so the exchange answers with fresh snapshots. The client restores the
channels on the wire after a reconnect before ``connected`` fires with the new epoch.
"""

from __future__ import annotations

from typing import Any

from ..client import Client
from ..errors import DeribitKitError
from ..events import Event
from ..models import Instrument
from .protocol import Sink

__all__ = ["LiveUpstream"]


class LiveUpstream:
    """A Deribit-compatible connection as the broker's upstream."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.name = f"live {client.ws_url}"
        self.connected = Event("connected")
        self.disconnected = Event("disconnected")
        self._sink: Sink | None = None
        client.reconnected += self._on_reconnected
        client.disconnected += self.disconnected.emit

    def _on_reconnected(self, _client: Any) -> None:
        self.connected.emit(self.client.epoch)

    @property
    def state(self) -> str:
        return self.client.state

    @property
    def epoch(self) -> int:
        return self.client.epoch

    @property
    def authenticated(self) -> bool:
        return self.client.is_authenticated

    @property
    def channels(self) -> frozenset[str]:
        return self.client.channels

    def set_sink(self, sink: Sink | None) -> None:
        if sink is not None and self._sink is not None and sink != self._sink:
            raise DeribitKitError("this upstream already feeds a broker: share that broker (dk.broker)")
        self._sink = sink
        self.client.set_sink(sink)

    async def subscribe(self, channels: list[str]) -> list[str]:
        return await self.client.subscribe_channels(channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        await self.client.unsubscribe_channels(channels)

    async def resync(self, channels: list[str]) -> None:
        """Unsubscribe and subscribe again: Deribit answers a subscribe with a fresh snapshot."""
        await self.client.unsubscribe_channels(channels)
        await self.client.subscribe_channels(channels)

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        return list(await self.client.instruments(currency, kind))

    async def instrument(self, name: str) -> Instrument:
        return await self.client.instrument(name)

    def cached_instrument(self, name: str) -> Instrument | None:
        return self.client._instruments.get(name)

    async def index_price(self, index_name: str) -> float:
        return float((await self.client.index_price(index_name)).index_price)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        return await self.client.call(method, params, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        t = self.client._transport
        out: dict[str, Any] = {"state": self.state, "epoch": self.epoch, "url": self.client.ws_url,
                               "rtt_ms": getattr(t, "rtt_ms", None)}
        if t is not None:
            out.update(t.stats)
        return out

    async def close(self) -> None:
        self.client.reconnected -= self._on_reconnected
        self.client.disconnected -= self.disconnected.emit
        self.client.set_sink(None)

    def __repr__(self) -> str:
        return f"<LiveUpstream {self.client.ws_url} {self.state} epoch={self.epoch}>"
