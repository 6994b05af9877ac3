"""The upstream seam: the one small protocol the broker consumes.

An upstream is where the broker's frames come from: a live Deribit-compatible connection
(:mod:`deribit_kit.upstream.live`: the embedded exchange, testnet or production), and in the same
shape a recording or a Kafka topic. The broker needs nothing else from it:

* **channels**: :meth:`Upstream.subscribe` (answers the accepted names, as Deribit does) and
  :meth:`Upstream.unsubscribe`; the broker calls them from one worker, in order, so an upstream
  never sees an unsubscribe overtake the subscribe after it. :attr:`Upstream.channels` is what is
  on the wire now.
* **notifications**: one sink, ``sink(channel, data, raw)``, called for every notification with
  the decoded ``data`` and the frame exactly as it arrived (``raw``: the text the exchange sent,
  or ``None`` when the source has none). This is the hot path: one call per frame, no queue.
* **resync**: :meth:`Upstream.resync` asks for a fresh snapshot of book channels whose chain broke
  (live: unsubscribe and subscribe again; a recording or a topic: the next snapshot it holds).
* **lookups**: instruments (the broker lays out tick ladders and follows option calendars with
  them) and index prices (option chains pick strikes around the index).
* **events**: ``connected(epoch)`` after each (re)connect with the session restored — a new
  ``epoch`` means every book must be rebuilt from a snapshot — and ``disconnected(reason)``.
  A source that knows some channels lost messages (a recording's gap marker, a topic's ``gap``
  or ``resync`` message) may also have ``interrupted(channels, gap)``: those books go resyncing
  (``gap=True`` counts a gap) and the broker asks :meth:`Upstream.resync` for them.
* **clock** (optional): a source whose notifications are not happening now (a replay) has
  ``clock_ms()``, the time of the stream in exchange milliseconds; staleness and "how old is this"
  follow it. :func:`clock_ms` reads it, or the wall clock for a source without one.
* :meth:`Upstream.call` forwards any other request (the broker port forwards private and
  uncached public methods); a source without an exchange answers with a clear error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..events import Event
from ..models import Instrument

Sink = Callable[[str, Any, "str | bytes | None"], None]
"""``sink(channel, data, raw)``: one notification, decoded, with the frame as it arrived."""


@runtime_checkable
class Upstream(Protocol):
    """A source of Deribit notifications for a :class:`~deribit_kit.broker.Broker`."""

    name: str
    connected: Event  # (epoch): (re)connected, session restored, channels on the wire again
    disconnected: Event  # (reason): books are untrusted until their next snapshot

    @property
    def state(self) -> str:
        """``open``, ``connecting``, ``reconnecting``, ``restoring``, ``ended`` or ``closed``."""
        ...

    @property
    def epoch(self) -> int:
        """Increments with each new connection (or source epoch); books resync across it."""
        ...

    @property
    def authenticated(self) -> bool:
        """Whether private and ``raw`` channels can be subscribed."""
        ...

    @property
    def channels(self) -> frozenset[str]:
        """Channels on the wire now."""
        ...

    def set_sink(self, sink: Sink | None) -> None:
        """Where every notification goes (``None``: nowhere)."""
        ...

    async def subscribe(self, channels: list[str]) -> list[str]:
        """Subscribe ``channels``; returns the accepted ones."""
        ...

    async def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe ``channels``."""
        ...

    async def resync(self, channels: list[str]) -> None:
        """Ask for a fresh snapshot of each book channel in ``channels``."""
        ...

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]:
        """Active instruments (refreshes the cache: new expiries are discovered)."""
        ...

    async def instrument(self, name: str) -> Instrument:
        """One instrument (cached)."""
        ...

    def cached_instrument(self, name: str) -> Instrument | None:
        """An instrument already known, without asking."""
        ...

    async def index_price(self, index_name: str) -> float:
        """The current value of an index (``btc_usd``)."""
        ...

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Any other request, answered by the source (or a clear error)."""
        ...

    def stats(self) -> dict[str, Any]:
        """State, reconnects, round-trip time and whatever else the source measures."""
        ...

    async def close(self) -> None:
        """Stop delivering; release what the upstream holds (not the client it was given)."""
        ...


def clock_ms(upstream: object) -> int:
    """The time of ``upstream``'s stream in milliseconds: its optional ``clock_ms()`` (a replay's
    clock), else the wall clock."""
    clock = getattr(upstream, "clock_ms", None)
    return int(clock()) if callable(clock) else int(time.time() * 1000)
