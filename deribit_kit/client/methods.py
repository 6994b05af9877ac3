"""The typed request methods of the Deribit API, shared by the client and the facade.

:class:`Methods` turns each call into the typed values of :mod:`deribit_kit.models`: it needs
only :meth:`Methods.call` (the raw JSON-RPC call, provided by :class:`~deribit_kit.client.Client`
or, through an upstream, by the :class:`~deribit_kit.Deribit` facade). Orders are checked against
the instrument's rules before they are sent (:mod:`deribit_kit.client.rules`) and placed
idempotently by label (:mod:`deribit_kit.client.placement`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..errors import ValidationError
from ..models import (
    AccountSummary,
    BookSummary,
    Candle,
    ChartData,
    Currency,
    FrameList,
    IndexPrice,
    Instrument,
    Order,
    OrderBookSnapshot,
    OrderResult,
    Position,
    PublicTrade,
    Ticker,
    UserTrade,
    convert,
    convert_list,
)
from ..wire.channels import chart_resolution, chart_resolution_ms
from .placement import PlacedOrder, place
from .rules import check_amount, check_price, order_params

__all__ = ["DEFAULT_CANDLES", "Methods"]

DEFAULT_CANDLES = 200
"""How many periods :meth:`Methods.candles` asks for when no ``start`` is given."""


class Methods:
    """Typed Deribit requests over :meth:`call`, with a cache of the instruments seen."""

    def __init__(self) -> None:
        self._instruments: dict[str, Instrument] = {}

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """Call any API method by name and return its raw ``result``."""
        raise NotImplementedError

    # ------------------------------------------------------------ public market data
    async def get_time(self) -> int:
        """Exchange time in milliseconds."""
        return int(await self.call("public/get_time"))

    async def test(self) -> str:
        """``public/test``: the API version string."""
        return str((await self.call("public/test"))["version"])

    async def currencies(self) -> FrameList[Currency]:
        """Every currency the exchange lists (``public/get_currencies``), with withdrawal fees and limits."""
        return convert_list(await self.call("public/get_currencies"), Currency)

    async def instruments(self, currency: str = "any", kind: str | None = None, *,
                          expired: bool = False) -> FrameList[Instrument]:
        """Instruments of every kind and currency (``currency="any"``), active or recently expired.

        Each call refreshes the client's instrument cache, so new expiries are discovered as
        the exchange lists them.
        """
        params: dict[str, Any] = {"currency": currency, "expired": expired}
        if kind is not None:
            params["kind"] = kind
        items = convert_list(await self.call("public/get_instruments", params), Instrument)
        if not expired:
            for inst in items:
                self._instruments[inst.instrument_name] = inst
        return items

    async def instrument(self, name: str, *, refresh: bool = False) -> Instrument:
        """One instrument (cached; ``refresh=True`` asks the exchange again)."""
        inst = None if refresh else self._instruments.get(name)
        if inst is None:
            inst = convert(await self.call("public/get_instrument", instrument_name=name), Instrument)
            self._instruments[name] = inst
        return inst

    async def order_book(self, instrument: str, depth: int | None = None) -> OrderBookSnapshot:
        """A snapshot of the order book (``depth`` levels per side)."""
        params: dict[str, Any] = {"instrument_name": instrument}
        if depth is not None:
            params["depth"] = depth
        return convert(await self.call("public/get_order_book", params), OrderBookSnapshot)

    async def ticker(self, instrument: str) -> Ticker:
        """The ticker of one instrument (``public/ticker``): best prices, mark, index, stats; greeks for options."""
        return convert(await self.call("public/ticker", instrument_name=instrument), Ticker)

    async def index_price(self, index_name: str) -> IndexPrice:
        """An index value (``public/get_index_price``), e.g. ``"btc_usd"``."""
        return convert(await self.call("public/get_index_price", index_name=index_name), IndexPrice)

    async def trades(self, instrument: str, count: int = 100, *, sorting: str = "desc") -> FrameList[PublicTrade]:
        """The most recent public trades of an instrument."""
        page = await self.call("public/get_last_trades_by_instrument", instrument_name=instrument, count=count,
                               sorting=sorting)
        return convert_list(page["trades"], PublicTrade)

    async def candles(self, instrument: str, resolution: str | int = "1", start: datetime | int | None = None,
                      end: datetime | int | None = None) -> FrameList[Candle]:
        """OHLCV candles of ``instrument`` (``public/get_tradingview_chart_data``), oldest first.

        ``resolution`` is one of Deribit's: ``1, 3, 5, 10, 15, 30, 60, 120, 180, 360, 720`` minutes
        or ``"1D"``. ``start`` and ``end`` are datetimes (naive ones are UTC) or milliseconds;
        ``end`` defaults to the exchange's time and ``start`` to :data:`DEFAULT_CANDLES` periods
        before it. Periods without trades come as filler candles (the previous close, no volume);
        ``to_frame()`` gives one row per candle with a ``time`` column.
        """
        try:
            res = chart_resolution(resolution)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        end_ms = _ms(end) if end is not None else await self.get_time()
        start_ms = _ms(start) if start is not None else end_ms - DEFAULT_CANDLES * chart_resolution_ms(res)
        result = await self.call("public/get_tradingview_chart_data", instrument_name=instrument,
                                 start_timestamp=start_ms, end_timestamp=end_ms, resolution=res)
        return convert(result, ChartData).candles()

    async def book_summary(self, currency: str, kind: str | None = None) -> FrameList[BookSummary]:
        """One summary row per instrument of ``currency`` (``public/get_book_summary_by_currency``)."""
        params: dict[str, Any] = {"currency": currency}
        if kind is not None:
            params["kind"] = kind
        return convert_list(await self.call("public/get_book_summary_by_currency", params), BookSummary)

    # ------------------------------------------------------------ trading (rules in rules.py)
    async def buy(self, instrument: str, amount: float | None = None, price: float | None = None, *,
                  type: str = "limit", label: str | None = None, time_in_force: str = "good_til_cancelled",
                  post_only: bool = False, reject_post_only: bool = False, reduce_only: bool = False,
                  trigger_price: float | None = None, trigger: str | None = None, contracts: float | None = None,
                  strict: bool = True, **extra: Any) -> PlacedOrder:
        """Buy ``amount`` (USD for inverse futures, coin otherwise) or ``contracts``; checked before
        sending (see :mod:`deribit_kit.client.rules`), labelled, and reconciled by label after a drop."""
        inst = await self.instrument(instrument)
        params = order_params(inst, amount, price, type=type, label=label, time_in_force=time_in_force,
                              post_only=post_only, reject_post_only=reject_post_only, reduce_only=reduce_only,
                              trigger_price=trigger_price, trigger=trigger, contracts=contracts, strict=strict,
                              **extra)
        return await place(self, "buy", params)

    async def sell(self, instrument: str, amount: float | None = None, price: float | None = None, *,
                   type: str = "limit", label: str | None = None, time_in_force: str = "good_til_cancelled",
                   post_only: bool = False, reject_post_only: bool = False, reduce_only: bool = False,
                   trigger_price: float | None = None, trigger: str | None = None, contracts: float | None = None,
                   strict: bool = True, **extra: Any) -> PlacedOrder:
        """Sell; the same rules as :meth:`buy`."""
        inst = await self.instrument(instrument)
        params = order_params(inst, amount, price, type=type, label=label, time_in_force=time_in_force,
                              post_only=post_only, reject_post_only=reject_post_only, reduce_only=reduce_only,
                              trigger_price=trigger_price, trigger=trigger, contracts=contracts, strict=strict,
                              **extra)
        return await place(self, "sell", params)

    async def edit(self, order_id: str, amount: float | None, price: float | None, *, instrument: str | None = None,
                   strict: bool = True, **kw: Any) -> OrderResult:
        """``private/edit``: new amount and/or price, checked against the order's instrument."""
        name = instrument or (await self.order_state(order_id)).instrument_name
        inst = await self.instrument(name)
        params: dict[str, Any] = {"order_id": order_id, **{k: v for k, v in kw.items() if v is not None}}
        if amount is not None:
            params["amount"] = check_amount(inst, amount)
        if price is not None:
            params["price"] = check_price(inst, price, strict=strict)
        return convert(await self.call("private/edit", params), OrderResult)

    async def cancel(self, order_id: str) -> Order:
        """Cancel one open order (``private/cancel``); the order as it ended."""
        return convert(await self.call("private/cancel", order_id=order_id), Order)

    async def cancel_all(self, *, instrument: str | None = None, currency: str | None = None, kind: str | None = None,
                         label: str | None = None) -> int:
        """Cancel open orders (all, or of an instrument, a currency [+ kind], or a label); the count."""
        if label is not None:
            return int(await self.call("private/cancel_by_label", _opt(label=label, currency=currency)))
        if instrument is not None:
            return int(await self.call("private/cancel_all_by_instrument", instrument_name=instrument))
        if currency is not None:
            return int(await self.call("private/cancel_all_by_currency", _opt(currency=currency, kind=kind)))
        if kind is not None:
            return int(await self.call("private/cancel_all_by_kind_or_type", currency="any", kind=kind))
        return int(await self.call("private/cancel_all"))

    async def open_orders(self, instrument: str | None = None, currency: str | None = None,
                          kind: str | None = None) -> FrameList[Order]:
        """Open orders of an instrument, a currency (and kind), or the whole account."""
        if instrument is not None:
            raw = await self.call("private/get_open_orders_by_instrument", instrument_name=instrument)
        elif currency is not None:
            raw = await self.call("private/get_open_orders_by_currency", _opt(currency=currency, kind=kind))
        else:
            raw = await self.call("private/get_open_orders", _opt(kind=kind))
        return convert_list(raw, Order)

    async def order_state(self, order_id: str) -> Order:
        """One order of the account, open or closed (``private/get_order_state``)."""
        return convert(await self.call("private/get_order_state", order_id=order_id), Order)

    async def positions(self, currency: str = "any", kind: str | None = None) -> FrameList[Position]:
        """The account's positions (``private/get_positions``), of every currency by default."""
        return convert_list(await self.call("private/get_positions", _opt(currency=currency, kind=kind)), Position)

    async def account_summary(self, currency: str) -> AccountSummary:
        """Balance, equity, margins and greeks of one currency (``private/get_account_summary``)."""
        return convert(await self.call("private/get_account_summary", currency=currency), AccountSummary)

    async def user_trades(self, instrument: str, count: int = 100, *, sorting: str = "desc") -> FrameList[UserTrade]:
        """The account's most recent fills in one instrument (``private/get_user_trades_by_instrument``)."""
        page = await self.call("private/get_user_trades_by_instrument", instrument_name=instrument, count=count,
                               sorting=sorting)
        return convert_list(page["trades"], UserTrade)

    async def close_position(self, instrument: str, type: str = "market", price: float | None = None, *,
                             strict: bool = True) -> OrderResult:
        """Close a position with one order (``private/close_position``): market by default, or limit at ``price``."""
        params: dict[str, Any] = {"instrument_name": instrument, "type": type}
        if price is not None:
            params["price"] = check_price(await self.instrument(instrument), price, strict=strict)
        return convert(await self.call("private/close_position", params), OrderResult)


def _ms(when: datetime | int) -> int:
    """Milliseconds since the epoch of a datetime (naive: UTC) or of milliseconds already."""
    if isinstance(when, datetime):
        return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
    return int(when)


def _opt(**params: Any) -> dict[str, Any]:
    """Params without the ``None`` ones."""
    return {k: v for k, v in params.items() if v is not None}
