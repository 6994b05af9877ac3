"""Deribit subscription channel names, without I/O: parse, validate, classify.

Used by the embedded exchange (what may be subscribed, and by whom), the client (routing) and the
broker (which channels conflate and which need authentication).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ChannelError as ChannelError

INTERVALS = ("raw", "100ms", "agg2")
BOOK_GROUPS = ("none", "1", "2", "5", "10", "25", "100", "250")
BOOK_DEPTHS = ("1", "10", "20")
KINDS = ("future", "option", "spot", "future_combo", "option_combo", "any")
USER_ORDER_KINDS = (*KINDS, "combo")
CHART_RESOLUTIONS = ("1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720", "1D")
"""Candle resolutions of ``chart.trades.{instrument}.{resolution}`` (minutes, or ``1D``)."""


@dataclass(slots=True, frozen=True)
class Channel:
    """A parsed channel name.

    ``family`` is one of ``book``, ``book_grouped``, ``ticker``, ``trades``, ``trades_kind``,
    ``price_index``, ``quote``, ``perpetual``, ``user.orders``, ``user.orders_kind``,
    ``user.trades``, ``user.trades_kind``, ``user.portfolio``, ``user.changes``,
    ``user.changes_kind``, ``platform_state``, ``chart_trades``.
    A ``chart_trades`` channel carries its candle resolution (one of :data:`CHART_RESOLUTIONS`)
    as its interval.
    """

    name: str
    family: str
    instrument: str | None = None
    interval: str | None = None
    kind: str | None = None
    currency: str | None = None
    index_name: str | None = None
    group: str | None = None
    depth: int | None = None

    @property
    def private(self) -> bool:
        """Needs an authenticated connection (user data, or a ``raw`` market-data interval)."""
        return self.family.startswith("user.") or self.interval == "raw"

    @property
    def user(self) -> bool:
        """Carries the account's own data."""
        return self.family.startswith("user.")

    @property
    def is_book(self) -> bool:
        """An incremental book channel whose messages chain by ``change_id``."""
        return self.family == "book"

    @property
    def conflatable(self) -> bool:
        """Only the newest message matters (state snapshots rather than events)."""
        return self.family in ("book_grouped", "ticker", "quote", "price_index", "perpetual",
                               "user.portfolio", "platform_state")


def parse_channel(name: str) -> Channel:
    """Parse a channel name; :class:`ChannelError` if it is not one Deribit offers."""
    p = name.split(".")
    head = p[0]
    n = len(p)
    if head == "book":
        if n == 3 and p[2] in INTERVALS:
            return Channel(name, "book", instrument=p[1], interval=p[2])
        if n == 5 and p[2] in BOOK_GROUPS and p[3] in BOOK_DEPTHS and p[4] in ("100ms", "agg2"):
            return Channel(name, "book_grouped", instrument=p[1], interval=p[4], group=p[2], depth=int(p[3]))
    elif head == "ticker" and n == 3 and p[2] in INTERVALS:
        return Channel(name, "ticker", instrument=p[1], interval=p[2])
    elif head == "trades":
        if n == 3 and p[2] in INTERVALS:
            return Channel(name, "trades", instrument=p[1], interval=p[2])
        if n == 4 and p[1] in KINDS and p[3] in INTERVALS:
            return Channel(name, "trades_kind", kind=p[1], currency=p[2], interval=p[3])
    elif head == "deribit_price_index" and n == 2:
        return Channel(name, "price_index", index_name=p[1])
    elif head == "quote" and n == 2:
        return Channel(name, "quote", instrument=p[1])
    elif head == "perpetual" and n == 3 and p[2] in INTERVALS:
        return Channel(name, "perpetual", instrument=p[1], interval=p[2])
    elif head == "chart" and n == 4 and p[1] == "trades" and p[3] in CHART_RESOLUTIONS:
        return Channel(name, "chart_trades", instrument=p[2], interval=p[3])
    elif head == "platform_state" and n == 1:
        return Channel(name, "platform_state")
    elif head == "user" and n >= 3:
        sub = p[1]
        if sub == "portfolio" and n == 3:
            return Channel(name, "user.portfolio", currency=p[2])
        if sub in ("orders", "trades", "changes"):
            if n == 4 and p[3] in INTERVALS:
                return Channel(name, f"user.{sub}", instrument=p[2], interval=p[3])
            if n == 5 and p[2] in USER_ORDER_KINDS and p[4] in INTERVALS:
                return Channel(name, f"user.{sub}_kind", kind=p[2], currency=p[3], interval=p[4])
    raise ChannelError(f"unknown channel {name!r}")


def book_channel(instrument: str, interval: str = "100ms") -> str:
    """``book.{instrument}.{interval}``."""
    return f"book.{instrument}.{interval}"


def ticker_channel(instrument: str, interval: str = "100ms") -> str:
    """``ticker.{instrument}.{interval}``."""
    return f"ticker.{instrument}.{interval}"


def trades_channel(instrument: str, interval: str = "100ms") -> str:
    """``trades.{instrument}.{interval}``."""
    return f"trades.{instrument}.{interval}"


def chart_resolution(value: str | int) -> str:
    """A candle resolution as Deribit spells it (one of :data:`CHART_RESOLUTIONS`): ``60`` and
    ``"60"`` -> ``"60"``; ``"1D"``, ``"1d"`` and ``1440`` -> ``"1D"``. :class:`ValueError` otherwise."""
    text = str(value).strip()
    if text.upper() == "1D" or text == "1440":
        return "1D"
    if text not in CHART_RESOLUTIONS:
        raise ValueError(f"unknown candle resolution {value!r}; one of {', '.join(CHART_RESOLUTIONS)}")
    return text


def chart_resolution_ms(resolution: str | int) -> int:
    """The length of one candle of ``resolution`` in milliseconds (``"1D"``: a UTC day)."""
    res = chart_resolution(resolution)
    return 86_400_000 if res == "1D" else int(res) * 60_000


def chart_channel(instrument: str, resolution: str | int = "1") -> str:
    """``chart.trades.{instrument}.{resolution}``."""
    return f"chart.trades.{instrument}.{chart_resolution(resolution)}"


MAX_CHANNELS_PER_CALL = 100
"""Channels per subscribe call the kit sends (Deribit publishes no limit; the embedded exchange takes 500)."""
MAX_CALL_BYTES = 32 * 1024 - 512
"""Deribit's 32 kB frame limit, minus room for the JSON-RPC envelope."""


def chunk_channels(channels: list[str], max_channels: int = MAX_CHANNELS_PER_CALL,
                   max_bytes: int = MAX_CALL_BYTES) -> list[list[str]]:
    """Split ``channels`` into calls of <= ``max_channels`` names and < ``max_bytes`` of JSON."""
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for ch in channels:
        n = len(ch) + 3  # quotes and comma
        if cur and (len(cur) >= max_channels or size + n >= max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(ch)
        size += n
    if cur:
        out.append(cur)
    return out
