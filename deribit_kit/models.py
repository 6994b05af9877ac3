"""Typed values the client returns, parsed once at the edge with msgspec.

Every Deribit result the kit hands to a caller is one of the :class:`Model` structs below, built by
:func:`convert` (from an already-decoded dict/list, e.g. a JSON-RPC ``result``) or :func:`decode`
(from raw JSON bytes). Field names are exactly Deribit's (``tests/test_models.py`` checks them
against Deribit's OpenAPI description); fields Deribit may omit are optional with a default, and
unknown fields are ignored, so new Deribit fields never break parsing. Parsing is lax
(``strict=False``): numbers sent as strings, as some captures do, are accepted.

Lists come back as :class:`FrameList`, a plain ``list`` that also renders as a pandas DataFrame::

    instruments = convert_list(result, Instrument)     # FrameList[Instrument]
    instruments.to_frame()                             # one row per instrument, + ``expiry``
    ticker = convert(result, Ticker)
    ticker.mid, ticker.greeks.delta if ticker.greeks else None

In a notebook, a model displays as a two-column table of its non-``None`` fields (tickers, books,
orders, positions, account summaries and instruments: their key fields as one row first, every
field folded under it) and a ``FrameList`` as its first 20 rows.
"""

from __future__ import annotations

import functools
import html
import types
import typing
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import msgspec
import pandas as pd

from deribit_kit.errors import ProtocolError
from deribit_kit.wire.enums import OPEN_STATES, PERPETUAL_EXPIRY_MS

__all__ = [
    "PERPETUAL_EXPIRATION_MS",
    "AccountSummary",
    "AuthResult",
    "BookStats",
    "BookSummary",
    "Candle",
    "ChartData",
    "Currency",
    "FrameList",
    "Greeks",
    "IndexPrice",
    "Instrument",
    "Model",
    "Order",
    "OrderBookSnapshot",
    "OrderResult",
    "Position",
    "PublicTrade",
    "TickSizeStep",
    "Ticker",
    "TradesPage",
    "UserTrade",
    "UserTradesPage",
    "WithdrawalPriority",
    "convert",
    "convert_list",
    "decode",
    "from_ms",
]

#: ``expiration_timestamp`` of perpetuals (and spot): 3000-01-01T00:00:00Z in milliseconds.
PERPETUAL_EXPIRATION_MS = PERPETUAL_EXPIRY_MS

#: Order states in which an order still rests (or waits for its trigger) on the book.
OPEN_ORDER_STATES = OPEN_STATES

T = TypeVar("T")
M = TypeVar("M", bound="Model")

_HTML_VALUE_LIMIT = 120


def from_ms(ms: float | None) -> datetime | None:
    """A UTC datetime from Deribit milliseconds; ``None`` for ``None`` and the year-3000 sentinel."""
    if ms is None or ms >= PERPETUAL_EXPIRATION_MS:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# --------------------------------------------------------------------------------------------
# base class and DataFrame helpers


class Model(msgspec.Struct, kw_only=True, repr_omit_defaults=True):
    """Base of every typed value: ``to_dict()`` and a notebook ``_repr_html_``."""

    #: (source millisecond column, added datetime column) pairs for :meth:`FrameList.to_frame`.
    _time_columns: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_dict(self, *, drop_none: bool = False) -> dict[str, Any]:
        """Plain builtins (nested structs as dicts); ``drop_none`` omits absent fields, as Deribit does."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return _drop_none(out) if drop_none else out

    def _flat(self) -> dict[str, Any]:
        """Fields flattened one level per nested struct (``stats.high``); ``None`` structs omitted."""
        out: dict[str, Any] = {}
        _flatten_into(self, "", out)
        return out

    #: fields (flattened keys such as ``greeks.delta``, or property names) shown first in a notebook as
    #: one row; the rest fold into an "all fields" section. Empty: every field in one table.
    _html_fields: ClassVar[tuple[str, ...]] = ()

    def _repr_html_(self) -> str:
        flat = {key: value for key, value in self._flat().items() if value is not None}
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(key)}</th>"
            f"<td style='text-align:left'>{html.escape(_short(value))}</td></tr>"
            for key, value in flat.items()
        )
        name = type(self).__name__
        if not self._html_fields:
            return f"<table><caption>{name}</caption>{rows}</table>"
        return (f"{self._html_headline(flat)}<details><summary>all {len(flat)} fields</summary>"
                f"<table>{rows}</table></details>")

    def _html_headline(self, flat: dict[str, Any]) -> str:
        """The ``_html_fields`` as a one-row table captioned with the class name."""
        heads, cells = [], []
        for key in self._html_fields:
            value = flat.get(key)
            if value is None and "." not in key and isinstance(getattr(type(self), key, None), property):
                value = getattr(self, key)
            if value is None:
                continue
            heads.append(f"<th>{html.escape(key.rsplit('.', 1)[-1])}</th>")
            cells.append(f"<td>{html.escape(_short(_round(value)))}</td>")
        return (f"<table class='deribit-kit-model'><caption style='text-align:left'><b>{type(self).__name__}</b>"
                f"</caption><tr>{''.join(heads)}</tr><tr>{''.join(cells)}</tr></table>")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _round(value: Any) -> Any:
    """Floats to 8 significant digits and datetimes to the millisecond, for display."""
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    return value


def _ladder_html(bids: list[tuple[float, float]], asks: list[tuple[float, float]], n: int = 10) -> str:
    """Top ``n`` levels side by side: bid amount, bid, ask, ask amount."""
    rows = []
    for i in range(min(max(len(bids), len(asks)), n)):
        bid = f"<td>{bids[i][1]:g}</td><td><b>{bids[i][0]:g}</b></td>" if i < len(bids) else "<td></td><td></td>"
        ask = f"<td><b>{asks[i][0]:g}</b></td><td>{asks[i][1]:g}</td>" if i < len(asks) else "<td></td><td></td>"
        rows.append(f"<tr>{bid}{ask}</tr>")
    return ("<table class='deribit-kit-book'><thead><tr><th>bid amount</th><th>bid</th><th>ask</th>"
            f"<th>ask amount</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, list | dict | tuple) else str(value)
    return text if len(text) <= _HTML_VALUE_LIMIT else text[: _HTML_VALUE_LIMIT - 1] + "…"


def _flatten_into(obj: msgspec.Struct, prefix: str, out: dict[str, Any]) -> None:
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        key = prefix + name
        if isinstance(value, msgspec.Struct):
            _flatten_into(value, key + ".", out)
        elif isinstance(value, list) and value and isinstance(value[0], msgspec.Struct):
            out[key] = msgspec.to_builtins(value)
        else:
            out[key] = value


def _nested_struct(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct class in ``tp`` when ``tp`` is ``S`` or ``S | None``, else ``None``."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
                return arg
    return None


@functools.cache
def _columns(cls: type[msgspec.Struct], prefix: str = "") -> tuple[str, ...]:
    """Flattened column names of a Struct class, matching :meth:`Model._flat` keys."""
    cols: list[str] = []
    for field in msgspec.structs.fields(cls):
        nested = _nested_struct(field.type)
        if nested is not None:
            cols.extend(_columns(nested, prefix + field.name + "."))
        else:
            cols.append(prefix + field.name)
    return tuple(cols)


def _ms_to_datetime_column(series: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(series, errors="coerce")
    numeric = numeric.where(numeric < PERPETUAL_EXPIRATION_MS)
    return pd.to_datetime(numeric, unit="ms", utc=True)


class FrameList(list[T]):
    """A ``list`` of models that also renders as a pandas DataFrame.

    ``FrameList(items)`` or ``FrameList(items, item_type=Instrument)``; the item type (else the
    type of the first item) fixes the columns, so an empty list still has the right columns.
    """

    def __init__(self, items: Iterable[T] = (), item_type: type[T] | None = None) -> None:
        super().__init__(items)
        self.item_type: type[T] | None = item_type

    def _struct_type(self) -> type[msgspec.Struct] | None:
        cls: Any = self.item_type if self.item_type is not None else (type(self[0]) if self else None)
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
            return cls
        return None

    def to_frame(self) -> pd.DataFrame:
        """One row per item; nested structs flattened as ``stats.high``/``greeks.delta``.

        Millisecond timestamps stay as they are; models add tz-aware datetime columns next to
        them (``Instrument``: ``expiry``, ``created``; trades and tickers: ``time``; ...), with
        ``NaT`` for perpetual/spot expiries.
        """
        cls = self._struct_type()
        rows: list[dict[str, Any]] = []
        for item in self:
            if isinstance(item, msgspec.Struct):
                flat: dict[str, Any] = {}
                _flatten_into(item, "", flat)
                rows.append(flat)
            elif isinstance(item, dict):
                rows.append(item)
            else:
                rows.append({"value": item})
        if cls is None:
            return pd.DataFrame(rows)
        frame = pd.DataFrame(rows, columns=list(_columns(cls)))
        if issubclass(cls, Model):
            for source, target in cls._time_columns:
                if source in frame.columns:
                    frame[target] = _ms_to_datetime_column(frame[source])
        return frame

    def _repr_html_(self) -> str:
        head = FrameList(self[:20], item_type=self.item_type).to_frame()
        more = f"<p>{len(self)} items, first 20 shown</p>" if len(self) > 20 else f"<p>{len(self)} items</p>"
        return str(head.to_html(max_cols=60)) + more

    def __repr__(self) -> str:
        return f"FrameList({list.__repr__(self)})"


# --------------------------------------------------------------------------------------------
# parse helpers


def _describe(type_: Any) -> str:
    return getattr(type_, "__name__", None) or repr(type_)


def convert(obj: Any, type_: type[T]) -> T:
    """Build ``type_`` (a Model, ``list[Model]``, ...) from already-decoded JSON.

    Raises :class:`~deribit_kit.errors.ProtocolError` when the payload does not fit.
    """
    try:
        return msgspec.convert(obj, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"cannot read {_describe(type_)} from Deribit payload: {exc}") from None


def convert_list(obj: Any, item_type: type[M]) -> FrameList[M]:
    """A :class:`FrameList` of ``item_type`` from an already-decoded JSON array."""
    return FrameList(convert(obj, list[item_type]), item_type=item_type)  # type: ignore[valid-type]


def decode(data: bytes | bytearray | memoryview | str | Any, type_: type[T]) -> T:
    """Build ``type_`` from JSON text/bytes, or from already-decoded objects (as :func:`convert`).

    Raises :class:`~deribit_kit.errors.ProtocolError` on malformed JSON or a payload that does
    not fit.
    """
    if not isinstance(data, bytes | bytearray | memoryview | str):
        return convert(data, type_)
    try:
        return msgspec.json.decode(data, type=type_, strict=False)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"cannot read {_describe(type_)} from Deribit payload: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed JSON for {_describe(type_)}: {exc}") from None


# --------------------------------------------------------------------------------------------
# reference data


class WithdrawalPriority(Model, kw_only=True):
    """One of ``Currency.withdrawal_priorities``."""

    name: str
    value: float


class Currency(Model, kw_only=True):
    """An item of ``public/get_currencies``."""

    currency: str
    currency_long: str | None = None
    coin_type: str | None = None
    withdrawal_fee: float | None = None
    min_withdrawal_fee: float | None = None
    min_confirmations: int | None = None
    fee_precision: int | None = None
    in_cross_collateral_pool: bool | None = None
    withdrawal_priorities: list[WithdrawalPriority] = []
    apr: float | None = None


class TickSizeStep(Model, kw_only=True):
    """From ``above_price`` on, prices move in steps of ``tick_size``."""

    above_price: float
    tick_size: float


class Instrument(Model, kw_only=True):
    """``public/get_instruments`` item / ``public/get_instrument`` result."""

    _time_columns = (("expiration_timestamp", "expiry"), ("creation_timestamp", "created"))
    _html_fields = ("instrument_name", "kind", "expiry", "strike", "option_type", "tick_size", "min_trade_amount",
                    "contract_size", "settlement_period")

    instrument_name: str
    kind: str  # future | option | spot | future_combo | option_combo
    base_currency: str
    quote_currency: str
    tick_size: float
    min_trade_amount: float
    contract_size: float
    creation_timestamp: int
    expiration_timestamp: int
    is_active: bool = True
    instrument_id: int | None = None
    counter_currency: str | None = None
    settlement_currency: str | None = None  # absent for spot
    price_index: str | None = None
    instrument_type: str | None = None  # linear | reversed
    future_type: str | None = None  # deprecated twin of instrument_type
    settlement_period: str | None = None  # day | week | month | perpetual; absent for spot
    tick_size_steps: list[TickSizeStep] = []
    rfq: bool = False
    maker_commission: float | None = None
    taker_commission: float | None = None
    block_trade_commission: float | None = None
    block_trade_min_trade_amount: float | None = None
    block_trade_tick_size: float | None = None
    max_leverage: int | None = None
    max_liquidation_commission: float | None = None
    strike: float | None = None
    option_type: str | None = None  # call | put

    @property
    def is_perpetual(self) -> bool:
        """True for a perpetual (``settlement_period`` is ``perpetual``)."""
        return self.settlement_period == "perpetual"

    @property
    def is_future(self) -> bool:
        """A dated future or a perpetual (``kind == "future"``)."""
        return self.kind == "future"

    @property
    def is_option(self) -> bool:
        """True for an option."""
        return self.kind == "option"

    @property
    def is_spot(self) -> bool:
        """True for a spot pair."""
        return self.kind == "spot"

    @property
    def is_combo(self) -> bool:
        """True for a future or option combo."""
        return self.kind.endswith("_combo")

    @property
    def is_linear(self) -> bool:
        """Linear (amounts in coin, settled in the quote), as opposed to inverse (``reversed``)."""
        kind = self.instrument_type or self.future_type
        if kind is not None:
            return kind == "linear"
        settlement = self.settlement_currency or self.quote_currency
        return settlement != self.base_currency

    @property
    def is_inverse(self) -> bool:
        """Inverse (amounts in USD, settled in the coin), the opposite of :attr:`is_linear`."""
        return not self.is_linear

    @property
    def expiry(self) -> datetime | None:
        """Expiry in UTC; ``None`` for perpetuals and spot (year-3000 sentinel)."""
        if self.is_perpetual or self.is_spot:
            return None
        return from_ms(self.expiration_timestamp)

    @property
    def created(self) -> datetime | None:
        """When the instrument was listed (UTC), from ``creation_timestamp``."""
        return from_ms(self.creation_timestamp)

    def tick_size_at(self, price: float) -> float:
        """The tick size that applies at ``price``, honouring ``tick_size_steps``."""
        tick = self.tick_size
        for step in sorted(self.tick_size_steps, key=lambda s: s.above_price):
            if abs(price) >= step.above_price:
                tick = step.tick_size
        return tick


# --------------------------------------------------------------------------------------------
# market data


class Greeks(Model, kw_only=True):
    """Option greeks of a ticker / order book."""

    delta: float | None = None
    gamma: float | None = None
    rho: float | None = None
    theta: float | None = None
    vega: float | None = None


class BookStats(Model, kw_only=True):
    """24-hour ``stats`` of a ticker / order book (``volume_usd`` absent for spot)."""

    high: float | None = None
    low: float | None = None
    volume: float | None = None
    price_change: float | None = None
    volume_usd: float | None = None


class _MarketState(Model, kw_only=True):
    """Fields shared by ``public/ticker`` and ``public/get_order_book``."""

    _time_columns = (("timestamp", "time"),)

    instrument_name: str
    timestamp: int
    state: str | None = None  # open | closed
    best_bid_price: float | None = None  # null when the side is empty
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    last_price: float | None = None
    min_price: float | None = None
    max_price: float | None = None
    open_interest: float | None = None
    settlement_price: float | None = None  # not for spot; only while open
    delivery_price: float | None = None  # only when closed
    stats: BookStats | None = None
    # perpetuals
    current_funding: float | None = None
    funding_8h: float | None = None
    # options
    greeks: Greeks | None = None
    mark_iv: float | None = None
    bid_iv: float | None = None
    ask_iv: float | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None  # name of the underlying future, or "index_price"
    interest_rate: float | None = None

    @property
    def mid(self) -> float | None:
        """Midpoint of the best bid and ask; ``None`` when a side is empty."""
        bid, ask = self.best_bid_price, self.best_ask_price
        if not bid or not ask:
            return None
        return (bid + ask) / 2

    @property
    def spread(self) -> float | None:
        bid, ask = self.best_bid_price, self.best_ask_price
        if not bid or not ask:
            return None
        return ask - bid

    @property
    def time(self) -> datetime | None:
        return from_ms(self.timestamp)


class Ticker(_MarketState, kw_only=True):
    """``public/ticker`` result and ``ticker.{instrument}.{interval}`` payload."""

    _html_fields = ("instrument_name", "state", "best_bid_amount", "best_bid_price", "best_ask_price",
                    "best_ask_amount", "spread", "mark_price", "index_price", "current_funding", "mark_iv",
                    "greeks.delta", "time")

    estimated_delivery_price: float | None = None
    interest_value: float | None = None  # perpetuals


class OrderBookSnapshot(_MarketState, kw_only=True):
    """``public/get_order_book`` result: ``bids`` descending, ``asks`` ascending, ``[price, amount]``."""

    change_id: int | None = None  # same sequence as the book channel
    bids: list[tuple[float, float]] = []
    asks: list[tuple[float, float]] = []

    def to_frame(self) -> pd.DataFrame:
        """Columns ``side, price, amount, cumulative``: bids best-first, then asks best-first."""
        rows: list[tuple[str, float, float, float]] = []
        for side, levels in (("bid", self.bids), ("ask", self.asks)):
            total = 0.0
            for price, amount in levels:
                total += amount
                rows.append((side, price, amount, total))
        return pd.DataFrame(rows, columns=["side", "price", "amount", "cumulative"])

    _html_fields = ("instrument_name", "state", "spread", "mark_price", "index_price", "change_id", "time")

    def _repr_html_(self) -> str:
        """A headline, the top 10 levels side by side, and how many levels each side has."""
        flat = {key: value for key, value in self._flat().items() if value is not None}
        return (f"{self._html_headline(flat)}{_ladder_html(self.bids, self.asks)}"
                f"<p>{len(self.bids)} bid / {len(self.asks)} ask levels</p>")


class IndexPrice(Model, kw_only=True):
    """``public/get_index_price`` result."""

    index_price: float
    estimated_delivery_price: float | None = None


class PublicTrade(Model, kw_only=True):
    """A public trade (``get_last_trades_*``, ``trades.*`` channels); ``direction`` is the taker's."""

    _time_columns = (("timestamp", "time"),)

    trade_id: str
    instrument_name: str
    timestamp: int
    price: float
    amount: float
    direction: str  # buy | sell
    trade_seq: int | None = None
    tick_direction: int | None = None  # 0 plus, 1 zero-plus, 2 minus, 3 zero-minus
    index_price: float | None = None
    mark_price: float | None = None
    contracts: float | None = None
    iv: float | None = None  # options
    liquidation: str | None = None  # M | T | MT
    block_trade_id: str | None = None
    block_trade_leg_count: int | None = None
    block_rfq_id: int | None = None
    combo_id: str | None = None
    combo_trade_id: int | float | None = None

    @property
    def time(self) -> datetime | None:
        """The trade's time (UTC), from ``timestamp``."""
        return from_ms(self.timestamp)


class TradesPage(Model, kw_only=True):
    """``public/get_last_trades_by_*`` result."""

    trades: list[PublicTrade] = []
    has_more: bool = False

    def to_frame(self) -> pd.DataFrame:
        """The trades as a DataFrame."""
        return FrameList(self.trades, item_type=PublicTrade).to_frame()


class Candle(Model, kw_only=True):
    """One OHLCV candle: a ``chart.trades.{instrument}.{resolution}`` message, or one period of
    ``public/get_tradingview_chart_data`` (:meth:`ChartData.candles`). ``tick`` is the period's
    start (ms); ``volume`` is in the base currency, ``cost`` in the quote currency. A period
    without trades is a filler: the previous close four times and no volume."""

    _time_columns = (("tick", "time"),)

    tick: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    cost: float = 0.0

    @property
    def time(self) -> datetime | None:
        """``tick`` as a UTC datetime."""
        return from_ms(self.tick)


class ChartData(Model, kw_only=True):
    """``public/get_tradingview_chart_data`` result: parallel columns, one entry per candle;
    ``status`` is ``"ok"``, or ``"no_data"`` with empty columns."""

    status: str = "ok"
    ticks: list[int] = []
    open: list[float] = []
    high: list[float] = []
    low: list[float] = []
    close: list[float] = []
    volume: list[float] = []
    cost: list[float] = []

    def candles(self) -> FrameList[Candle]:
        """The columns as one :class:`Candle` per period, oldest first."""
        cols = (self.ticks, self.open, self.high, self.low, self.close, self.volume, self.cost)
        n = len(self.ticks)
        if any(len(c) != n for c in cols):
            raise ProtocolError(f"chart data columns of unequal lengths: {[len(c) for c in cols]}")
        return FrameList((Candle(tick=t, open=o, high=h, low=lo, close=c, volume=v, cost=x)
                          for t, o, h, lo, c, v, x in zip(*cols, strict=True)), item_type=Candle)

    def to_frame(self) -> pd.DataFrame:
        """One row per candle (``tick, open, high, low, close, volume, cost`` and ``time``)."""
        return self.candles().to_frame()


class BookSummary(Model, kw_only=True):
    """An item of ``public/get_book_summary_by_currency`` / ``_by_instrument``."""

    instrument_name: str
    base_currency: str | None = None
    quote_currency: str | None = None
    bid_price: float | None = None
    ask_price: float | None = None
    mid_price: float | None = None
    mark_price: float | None = None
    last: float | None = None
    high: float | None = None
    low: float | None = None
    volume: float | None = None
    volume_usd: float | None = None
    volume_notional: float | None = None
    price_change: float | None = None
    open_interest: float | None = None
    creation_timestamp: int | None = None
    estimated_delivery_price: float | None = None
    current_funding: float | None = None
    funding_8h: float | None = None
    interest_rate: float | None = None
    mark_iv: float | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None


# --------------------------------------------------------------------------------------------
# trading


class Order(Model, kw_only=True):
    """The order object (buy/sell/edit results, ``get_order_state``, ``user.orders.*``)."""

    _time_columns = (("creation_timestamp", "created"), ("last_update_timestamp", "updated"))
    _html_fields = ("order_id", "instrument_name", "direction", "order_type", "order_state", "price", "amount",
                    "filled_amount", "average_price", "label", "cancel_reason")

    order_id: str
    instrument_name: str
    direction: str  # buy | sell
    order_type: str  # limit | market | stop_limit | stop_market | take_* | trailing_stop
    order_state: str  # open | filled | rejected | cancelled | untriggered | triggered
    creation_timestamp: int
    last_update_timestamp: int
    price: float | str | None = None  # a number, or "market_price" for market orders
    amount: float | None = None
    contracts: float | None = None
    filled_amount: float | None = None
    average_price: float | None = None
    label: str = ""
    time_in_force: str = "good_til_cancelled"
    post_only: bool = False
    reject_post_only: bool | None = None
    reduce_only: bool | None = None
    original_order_type: str | None = None
    api: bool | None = None
    web: bool | None = None
    mobile: bool | None = None
    app_name: str | None = None
    replaced: bool | None = None
    auto_replaced: bool | None = None
    is_liquidation: bool | None = None
    is_rebalance: bool | None = None
    risk_reducing: bool | None = None
    cancel_reason: str | None = None
    display_amount: float | None = None
    refresh_amount: float | None = None
    mmp: bool | None = None
    mmp_cancelled: bool | None = None
    mmp_group: str | None = None
    quote: bool | None = None
    quote_id: str | None = None
    quote_set_id: str | None = None
    block_trade: bool | None = None
    advanced: str | None = None  # usd | implv
    usd: float | None = None
    implv: float | None = None
    trigger: str | None = None  # index_price | mark_price | last_price
    trigger_price: float | None = None
    trigger_offset: float | None = None
    trigger_reference_price: float | None = None
    triggered: bool | None = None
    trigger_order_id: str | None = None
    trigger_fill_condition: str | None = None
    oco_ref: str | None = None
    oto_order_ids: list[str] | None = None
    primary_order_id: str | None = None
    is_primary_otoco: bool | None = None
    is_secondary_oto: bool | None = None
    # legacy fields, absent from the current order object (https://docs.deribit.com) but read by ccxt
    commission: float | None = None
    profit_loss: float | None = None
    max_show: float | None = None

    @property
    def is_open(self) -> bool:
        """Still working: resting on the book or waiting for its trigger."""
        return self.order_state in OPEN_ORDER_STATES

    @property
    def limit_price(self) -> float | None:
        """``price`` as a number; ``None`` for ``"market_price"`` or no price."""
        if self.price is None or isinstance(self.price, float | int):
            return self.price
        try:
            return float(self.price)
        except ValueError:
            return None

    @property
    def remaining(self) -> float | None:
        """The amount not filled yet (``amount - filled_amount``), or ``None`` without an amount."""
        if self.amount is None:
            return None
        return self.amount - (self.filled_amount or 0.0)


class UserTrade(Model, kw_only=True):
    """One of the caller's fills (section 6.4)."""

    _time_columns = (("timestamp", "time"),)

    trade_id: str
    instrument_name: str
    order_id: str
    timestamp: int
    direction: str  # buy | sell
    price: float
    amount: float
    trade_seq: int | None = None
    tick_direction: int | None = None
    order_type: str | None = None  # limit | market | liquidation
    contracts: float | None = None
    fee: float | None = None
    fee_currency: str | None = None
    liquidity: str | None = None  # M maker | T taker
    state: str | None = None  # the order's state
    index_price: float | None = None
    mark_price: float | None = None
    label: str | None = None
    post_only: bool | None = None
    reduce_only: bool | None = None
    mmp: bool | None = None
    api: bool | None = None
    advanced: str | None = None
    iv: float | None = None
    underlying_price: float | None = None
    profit_loss: float | None = None
    matching_id: str | None = None
    liquidation: str | None = None
    risk_reducing: bool | None = None
    quote_id: str | None = None
    quote_set_id: str | None = None
    block_trade_id: str | None = None
    block_rfq_id: int | None = None
    block_rfq_quote_id: int | None = None
    combo_id: str | None = None
    combo_trade_id: int | float | None = None
    legs: list[Any] | None = None
    trade_allocations: list[dict[str, Any]] | None = None
    # observed in real captures, absent from the spec
    self_trade: bool | None = None

    @property
    def time(self) -> datetime | None:
        """The trade's time (UTC), from ``timestamp``."""
        return from_ms(self.timestamp)


class UserTradesPage(Model, kw_only=True):
    """``private/get_user_trades_by_*`` result (except ``_by_order``, which is a plain list)."""

    trades: list[UserTrade] = []
    has_more: bool = False

    def to_frame(self) -> pd.DataFrame:
        """The user trades as a DataFrame."""
        return FrameList(self.trades, item_type=UserTrade).to_frame()


class OrderResult(Model, kw_only=True):
    """Result of ``private/buy``, ``sell``, ``edit``, ``edit_by_label``, ``close_position``."""

    _html_fields = tuple(f"order.{name}" for name in Order._html_fields)

    order: Order
    trades: list[UserTrade] = []

    @property
    def filled_amount(self) -> float:
        """Amount filled immediately by this request."""
        return sum(t.amount for t in self.trades)


# --------------------------------------------------------------------------------------------
# account


class Position(Model, kw_only=True):
    """``private/get_position(s)`` item; ``size`` is signed (negative when short)."""

    _html_fields = ("instrument_name", "direction", "size", "average_price", "mark_price", "floating_profit_loss",
                    "total_profit_loss", "delta", "estimated_liquidation_price")

    instrument_name: str
    kind: str
    direction: str  # buy | sell | zero
    size: float
    size_currency: float | None = None
    average_price: float | None = None
    average_price_usd: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    settlement_price: float | None = None
    floating_profit_loss: float | None = None
    floating_profit_loss_usd: float | None = None
    realized_profit_loss: float | None = None
    total_profit_loss: float | None = None
    realized_funding: float | None = None
    interest_value: float | None = None
    initial_margin: float | None = None
    maintenance_margin: float | None = None
    open_orders_margin: float | None = None
    leverage: int | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    estimated_liquidation_price: float | None = None

    @property
    def is_flat(self) -> bool:
        """True when the position is closed (size 0)."""
        return self.size == 0 or self.direction == "zero"


class AccountSummary(Model, kw_only=True):
    """``private/get_account_summary`` result and ``user.portfolio.*`` payload."""

    _time_columns = (("creation_timestamp", "created"),)
    _html_fields = ("currency", "balance", "equity", "available_funds", "initial_margin", "maintenance_margin",
                    "total_pl", "delta_total", "options_value")

    currency: str
    balance: float
    equity: float
    available_funds: float
    available_withdrawal_funds: float
    initial_margin: float
    maintenance_margin: float
    margin_balance: float | None = None
    projected_initial_margin: float | None = None
    projected_maintenance_margin: float | None = None
    delta_total: float | None = None
    projected_delta_total: float | None = None
    total_pl: float | None = None
    session_rpl: float | None = None
    session_upl: float | None = None
    futures_pl: float | None = None
    futures_session_rpl: float | None = None
    futures_session_upl: float | None = None
    options_pl: float | None = None
    options_session_rpl: float | None = None
    options_session_upl: float | None = None
    options_value: float | None = None
    options_delta: float | None = None
    options_gamma: float | None = None
    options_theta: float | None = None
    options_vega: float | None = None
    options_gamma_map: dict[str, Any] = {}
    options_theta_map: dict[str, Any] = {}
    options_vega_map: dict[str, Any] = {}
    delta_total_map: dict[str, Any] = {}  # user.portfolio
    estimated_liquidation_ratio_map: dict[str, Any] = {}  # user.portfolio
    fee_balance: float | None = None
    additional_reserve: float | None = None
    spot_reserve: float | None = None
    estimated_liquidation_ratio: float | None = None
    portfolio_margining_enabled: bool | None = None
    cross_collateral_enabled: bool | None = None
    margin_model: str | None = None
    deposit_address: str | None = None
    limits: dict[str, Any] = {}
    has_non_block_chain_equity: bool | None = None
    total_equity_usd: float | None = None
    total_margin_balance_usd: float | None = None
    total_initial_margin_usd: float | None = None
    total_maintenance_margin_usd: float | None = None
    total_delta_total_usd: float | None = None
    # extended=true
    id: int | None = None
    email: str | None = None
    username: str | None = None
    system_name: str | None = None
    type: str | None = None  # main | subaccount
    creation_timestamp: int | None = None
    fees: list[dict[str, Any]] | None = None
    interuser_transfers_enabled: bool | None = None
    login_enabled: bool | None = None
    mmp_enabled: bool | None = None
    security_keys_enabled: bool | None = None
    self_trading_reject_mode: str | None = None
    self_trading_extended_to_subaccounts: bool | str | None = None
    referrer_id: str | None = None


class AuthResult(Model, kw_only=True):
    """``public/auth`` result (also ``public/exchange_token`` and ``public/fork_token``)."""

    access_token: str
    refresh_token: str
    expires_in: int  # seconds
    scope: str
    token_type: str = "bearer"
    state: str | None = None
    sid: str | None = None
    enabled_features: list[str] = []
    mandatory_tfa_status: str | None = None
    google_login: bool | None = None

    @property
    def scopes(self) -> list[str]:
        """The granted scope string split into its parts."""
        return self.scope.split()

    def __repr__(self) -> str:  # never show tokens
        fields = f"token_type={self.token_type!r}, expires_in={self.expires_in}, scope={self.scope!r}"
        return f"AuthResult({fields})"

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"
