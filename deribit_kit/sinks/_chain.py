"""The consumer side of a chain a sink follows (:class:`~deribit_kit.live.OptionChain`): what the
chain moves goes through the sink's consumer, and the sink hears of each channel that joins
(``hold`` before its subscribe, ``joined`` after) and leaves (``left``). Shared by the recorder and
the Kafka sink, with the rest of what both keep of the broker: the live books they hold
(:class:`HeldBooks`), their handlers on the upstream's and the broker's events
(:class:`BrokerEvents`) and the channels of their consumers (:func:`consumer_channels`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..broker.broker import Broker
from ..broker.consumer import Consumer
from ..live.livebook import LiveBook
from ..live.orderbook import LIVE
from ..wire.channels import ChannelError, parse_channel

__all__ = ["KINDS", "BrokerEvents", "ChainChannels", "HeldBooks", "check_kind", "checked_channels", "consumer_channels",
           "sink_broker"]

KINDS = ("future", "option", "spot")  # the instrument kinds a sink follows chains of (``any``: all three)


def sink_broker(broker: Broker | Any, what: str) -> Broker:
    """The broker a sink is given: a :class:`~deribit_kit.broker.Broker`, or the facade's (TypeError otherwise)."""
    if not isinstance(broker, Broker) and isinstance(getattr(broker, "broker", None), Broker):
        broker = broker.broker
    if not isinstance(broker, Broker):
        raise TypeError(f"{what} needs a Broker (or the Deribit facade)")
    return broker


def checked_channels(channels: Iterable[str]) -> list[str]:
    """``channels`` without repeats, in order; ValueError for a name that is not a channel."""
    out = list(dict.fromkeys(channels))
    for ch in out:
        try:
            parse_channel(ch)
        except ChannelError as exc:
            raise ValueError(str(exc)) from None
    return out


def check_kind(kind: str) -> None:
    """ValueError unless ``kind`` is one of :data:`KINDS` or ``any``."""
    if kind not in (*KINDS, "any"):
        raise ValueError(f"kind must be one of {[*KINDS, 'any']}, not {kind!r}")


class HeldBooks:
    """The broker's live books a sink holds: one per book channel it follows, released when the
    channel leaves (:attr:`books`: channel -> :class:`~deribit_kit.live.LiveBook`)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.books: dict[str, LiveBook] = {}

    def hold(self, channels: Iterable[str]) -> list[str]:
        """Hold the live book of each book channel of ``channels`` not held yet; returns those channels."""
        new = []
        for ch in channels:
            if ch in self.books:
                continue
            try:
                info = parse_channel(ch)
            except ChannelError:
                continue
            if info.family == "book":
                self.books[ch] = self._broker.hold_book(ch)
                new.append(ch)
        return new

    def live(self, channel: str) -> LiveBook | None:
        """The held book of ``channel`` when it is live (a snapshot can be built from it), else None."""
        live = self.books.get(channel)
        if live is None or live.book.state != LIVE:
            return None
        return live

    def release(self, channels: Iterable[str]) -> None:
        """Let go of the books of ``channels`` (those not held are passed over)."""
        for ch in channels:
            live = self.books.pop(ch, None)
            if live is not None:
                live.release()

    def release_all(self) -> None:
        """Let go of every held book."""
        for live in self.books.values():
            live.release()
        self.books.clear()

    def __contains__(self, channel: object) -> bool:
        return channel in self.books

    def __iter__(self) -> Iterator[str]:
        return iter(self.books)


class BrokerEvents:
    """A sink's handlers on the upstream's ``connected``/``disconnected`` and the broker's ``resyncing``."""

    def __init__(self, broker: Broker, connected: Callable[..., None], disconnected: Callable[..., None],
                 resyncing: Callable[[str], None]) -> None:
        self._broker = broker
        self._connected = connected
        self._disconnected = disconnected
        self._resyncing = resyncing
        self.hooked = False

    def hook(self) -> None:
        """Connect the handlers."""
        up = self._broker.upstream
        up.connected.connect(self._connected)
        up.disconnected.connect(self._disconnected)
        self._broker.resyncing.connect(self._resyncing)
        self.hooked = True

    def unhook(self) -> bool:
        """Disconnect the handlers; returns whether they were connected."""
        if not self.hooked:
            return False
        self.hooked = False
        up = self._broker.upstream
        up.connected.disconnect(self._connected)
        up.disconnected.disconnect(self._disconnected)
        self._broker.resyncing.disconnect(self._resyncing)
        return True


def consumer_channels(consumer: Consumer | None, chain_consumers: Iterable[Consumer]) -> list[str]:
    """Every channel the upstream accepted for a sink's consumers (its requested channels' and its chains'), sorted."""
    chans = list(consumer.accepted) if consumer is not None else []
    for c in chain_consumers:
        chans += c.accepted
    return sorted(set(chans))


class ChainChannels:
    """A chain's channels on a sink's consumer, with the sink told of each move."""

    def __init__(self, consumer: Consumer, hold: Callable[[list[str]], Any], joined: Callable[[list[str]], Any],
                 left: Callable[[list[str]], None]) -> None:
        self.consumer = consumer
        self._hold = hold
        self._joined = joined
        self._left = left

    @property
    def channels(self) -> list[str]:
        return self.consumer.channels

    @channels.setter
    def channels(self, value: list[str]) -> None:
        self.consumer.channels = value

    async def add_channels(self, channels: list[str]) -> None:
        self._hold(channels)
        try:
            await self.consumer.add_channels(channels)
        finally:
            done = self._joined(channels)
            if inspect.isawaitable(done):
                await done

    async def remove_channels(self, channels: list[str]) -> None:
        await self.consumer.remove_channels(channels)
        self._left(channels)

    async def close(self) -> None:
        await self.consumer.close()
