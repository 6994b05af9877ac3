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
        """The client's connection state (``open``, ``reconnecting``, ``restoring``, ``closed``)."""
        return self.client.state

    @property
    def epoch(self) -> int:
        """Connections so far (grows with every reconnect)."""
        return self.client.epoch

    @property
    def authenticated(self) -> bool:
        """True when the client's session is authenticated (private channels allowed)."""
        return self.client.is_authenticated

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed on the wire now."""
        return self.client.channels

    def set_sink(self, sink: Sink | None) -> None:
        """Install the broker's notification sink (one broker per upstream)."""
        if sink is not None and self._sink is not None and sink != self._sink:
            raise DeribitKitError("this upstream already feeds a broker: share that broker (dk.broker)")
        self._sink = sink
        self.client.set_sink(sink)

    async def subscribe(self, channels: list[str]) -> list[str]:
        """Subscribe ``channels`` (``private/subscribe`` for private ones, in chunks); the accepted names."""
        return await self.client.subscribe_channels(channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe ``channels``."""
        await self.client.unsubscribe_channels(channels)

    async def resync(self, channels: list[str]) -> None:
        """Unsubscribe and subscribe again: Deribit answers a subscribe with a fresh snapshot."""
        await self.client.unsubscribe_channels(channels)
        await self.client.subscribe_channels(channels)

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        """The instruments of ``currency`` and ``kind`` (``public/get_instruments``)."""
        return list(await self.client.instruments(currency, kind))

    async def instrument(self, name: str) -> Instrument:
        """One instrument by name (cached by the client)."""
        return await self.client.instrument(name)

    def cached_instrument(self, name: str) -> Instrument | None:
        """The instrument if the client already knows it, without a request."""
        return self.client._instruments.get(name)

    async def index_price(self, index_name: str) -> float:
        """The current price of an index (``public/get_index_price``)."""
        return float((await self.client.index_price(index_name)).index_price)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Any JSON-RPC method through the client."""
        return await self.client.call(method, params, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """State, epoch, URL, round-trip time and the transport's counters (requests, reconnects,
        10028s and the seconds sending was held after them)."""
        t = self.client._transport
        out: dict[str, Any] = {"state": self.state, "epoch": self.epoch, "url": self.client.ws_url,
                               "rtt_ms": getattr(t, "rtt_ms", None)}
        if t is not None:
            out.update(t.stats)
        return out

    async def close(self) -> None:
        """Stop delivering to the broker (the client stays open: its owner closes it)."""
        self.client.reconnected -= self._on_reconnected
        self.client.disconnected -= self.disconnected.emit
        self.client.set_sink(None)

    def __repr__(self) -> str:
        return f"<LiveUpstream {self.client.ws_url} {self.state} epoch={self.epoch}>"
