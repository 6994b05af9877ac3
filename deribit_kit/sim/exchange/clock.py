"""The embedded exchange's clock: one source of time for the market and the accounts.

The wall clock by default; any function of seconds since the epoch otherwise (a test's settable
clock, a scenario run faster than real time). The market stamps books, trades, candles and
expiries with it, the accounts time their tokens with it, and ``sim/step`` advances the market on
it, so an exchange built on a fixed clock is deterministic. No I/O: reading it never sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock"]


class Clock:
    """Seconds since the epoch from ``source`` (``time.time`` by default), also in ms and as a datetime."""

    __slots__ = ("source",)

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        self.source: Callable[[], float] = time.time if source is None else source

    def __call__(self) -> float:
        """Seconds since the epoch."""
        return self.source()

    def now_ms(self) -> int:
        """Milliseconds since the epoch (Deribit's timestamps)."""
        return int(self.source() * 1000)

    def now(self) -> datetime:
        """The time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.source(), UTC)

    @classmethod
    def of(cls, source: Clock | Callable[[], float] | None) -> Clock:
        """``source`` itself when it is a clock, else a clock over it (the wall clock for ``None``)."""
        return source if isinstance(source, Clock) else cls(source)
