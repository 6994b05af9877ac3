"""``OptionChain``: the channels of every instrument matching a filter (a currency, a kind, an
expiry, strikes around the index), kept up to date with the exchange's calendar.

Each :meth:`OptionChain.refresh` lists the instruments again (through the upstream's lookups) and
moves its consumer's channels: new expiries and strikes join, expired ones leave. The broker owns
the consumer (one for the whole chain, chunked subscribes) and calls ``refresh`` periodically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..models import Instrument

__all__ = ["OptionChain"]


class ChainChannels(Protocol):
    """What a chain needs of its consumer: the channels it reads, and moving them."""

    channels: list[str]

    async def add_channels(self, channels: list[str]) -> None: ...

    async def remove_channels(self, channels: list[str]) -> None: ...

    async def close(self) -> None: ...


class Lookups(Protocol):
    """What a chain needs of its upstream: the instrument list and index prices."""

    async def instruments(self, currency: str = "any", kind: str | None = None) -> list[Instrument]: ...

    async def index_price(self, index_name: str) -> float: ...


@dataclass(eq=False)
class OptionChain:
    """Channels of every instrument matching a filter, kept up to date as expiries are listed."""

    lookups: Lookups
    currency: str
    expiry: str | int | None
    kind: str
    strikes_around: int | None
    channel_template: str
    consumer: ChainChannels
    on_close: Callable[[OptionChain], None] | None = None
    instruments: list[str] = field(default_factory=list)
    refreshes: int = 0

    @property
    def channels(self) -> list[str]:
        """The book or ticker channels of the chain's instruments, as subscribed now."""
        return self.consumer.channels

    async def refresh(self) -> tuple[list[str], list[str]]:
        """List instruments again; subscribe new ones, drop expired ones. Returns (added, removed)."""
        insts = await self.lookups.instruments(self.currency, self.kind)
        picked = [i for i in insts if expiry_matches(i.instrument_name, i.expiration_timestamp, self.expiry)]
        if self.strikes_around is not None and picked:
            ref = await self.lookups.index_price(f"{self.currency.lower()}_usd")
            picked = _near_strikes(picked, ref, self.strikes_around)
        names = sorted(i.instrument_name for i in picked)
        wanted = [self.channel_template.format(name=n, instrument=n) for n in names]
        have = set(self.consumer.channels)
        added = [c for c in wanted if c not in have]
        keep = set(wanted)
        removed = [c for c in self.consumer.channels if c not in keep]
        self.instruments = names
        if removed:
            await self.consumer.remove_channels(removed)
        if added:
            await self.consumer.add_channels(added)
        self.refreshes += 1
        return added, removed

    async def close(self) -> None:
        """Stop following the chain: unsubscribe its channels (the owner forgets it)."""
        if self.on_close is not None:
            self.on_close(self)
        await self.consumer.close()


def _near_strikes(insts: list[Instrument], ref: float, n: int) -> list[Instrument]:
    """Per expiry, the instruments of the ``n`` strikes closest to ``ref`` (and those without a strike)."""
    by_expiry: dict[int, list[Instrument]] = {}
    for i in insts:
        by_expiry.setdefault(i.expiration_timestamp, []).append(i)
    keep: list[Instrument] = []
    for group in by_expiry.values():
        strikes = sorted({i.strike for i in group if i.strike is not None}, key=lambda s: abs(s - ref))
        near = set(strikes[:n])
        keep += [i for i in group if i.strike is None or i.strike in near]
    return keep


def expiry_matches(name: str, expiry_ms: int, expiry: str | int | None) -> bool:
    """Whether an instrument expires at ``expiry`` (a date code such as ``27MAR26``, or ms; None: any)."""
    if expiry is None:
        return True
    if isinstance(expiry, int):
        return expiry_ms == expiry
    parts = name.split("-")
    return len(parts) > 1 and parts[1].upper() == expiry.upper()

