"""``Portfolio``: the account as a live object — open orders, positions and balances kept up to date
from the private channels, and resynced from REST after every reconnect.

    pf = await dk.portfolio()
    pf.positions_frame()
    await pf.wait_for(lambda p: "BTC-PERPETUAL" in p.positions, timeout=5)
    pf.position_updated += lambda pos: print(pos.instrument_name, pos.size)

Channels: ``user.orders.any.any.raw`` (one order per message), ``user.trades.any.any.raw`` (fills:
positions are refreshed with ``private/get_positions``), ``user.changes.any.any.raw`` (orders,
trades and the instrument's position together) and ``user.portfolio.{currency}`` for each currency
the account holds (at least BTC, ETH and USDC).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import pandas as pd

from ..errors import DeribitKitError
from ..events import Event
from ..models import AccountSummary, FrameList, Order, Position, UserTrade, convert, convert_list
from ._common import Once

log = logging.getLogger("deribit_kit.live.portfolio")

DEFAULT_CURRENCIES = ("BTC", "ETH", "USDC")
ORDERS_CHANNEL = "user.orders.any.any.raw"
TRADES_CHANNEL = "user.trades.any.any.raw"
CHANGES_CHANNEL = "user.changes.any.any.raw"


class Account(Protocol):
    """What a portfolio needs of its owner (the :class:`~deribit_kit.Deribit` facade): requests,
    broker streams and the reconnect event."""

    reconnected: Event

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   **kwargs: Any) -> Any: ...

    async def positions(self, currency: str = "any", kind: str | None = None) -> FrameList[Position]: ...

    async def account_summary(self, currency: str) -> AccountSummary: ...

    def subscribe(self, *channels: str, callback: Callable[[Any], Any] | None = None,
                  maxsize: int = 10_000) -> Any: ...


class Portfolio:
    """Open orders, positions and balances of the client's account, updated in place.

    Events: ``updated`` (the portfolio, after any change), ``order_updated`` (:class:`Order`),
    ``position_updated`` (:class:`Position`), ``balance_updated`` (:class:`AccountSummary`),
    ``trade`` (:class:`UserTrade`), ``resynced`` (after a REST resync).
    """

    def __init__(self, client: Account, currencies: tuple[str, ...] | None = None) -> None:
        self.client = client
        self.currencies: list[str] = list(currencies or ())
        self.orders: dict[str, Order] = {}  # open orders by order_id
        self.positions: dict[str, Position] = {}  # non-flat positions by instrument
        self.balances: dict[str, AccountSummary] = {}
        self.trades: list[UserTrade] = []  # fills seen since start (most recent last, bounded)
        self.max_trades = 1000
        self.updated = Event("updated")
        self.order_updated = Event("order_updated")
        self.position_updated = Event("position_updated")
        self.balance_updated = Event("balance_updated")
        self.trade = Event("trade")
        self.resynced = Event("resynced")
        self.last_update = 0.0
        self.resyncs = 0
        self._sub: Any = None  # broker consumers
        self._changes_sub: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = Once()
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_again = False

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Portfolio:
        """Subscribe and load the state from REST (once; later calls wait for the first)."""
        await self._started.run(self._start)
        return self

    async def _start(self) -> None:
        if not self.currencies:
            self.currencies = await self._account_currencies()
        channels = [ORDERS_CHANNEL, TRADES_CHANNEL, *(f"user.portfolio.{c.lower()}" for c in self.currencies)]
        # user.changes is optional (not every exchange offers it): subscribe it on its own
        self._sub = self.client.subscribe(*channels, callback=self._on_message)
        await self._sub.start()
        changes = self.client.subscribe(CHANGES_CHANNEL, callback=self._on_message)
        with contextlib.suppress(DeribitKitError):
            await changes.start()
            self._changes_sub = changes
        self.client.reconnected += self._on_reconnected
        await self.resync()

    async def close(self) -> None:
        """Stop following the account: close its subscriptions and forget the reconnect handler."""
        self.client.reconnected -= self._on_reconnected
        for sub in (self._sub, self._changes_sub):
            if sub is not None:
                await sub.close()
        if self._refresh is not None:
            self._refresh.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _account_currencies(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(DeribitKitError):
            res = await self.client.call("private/get_account_summaries")
            found = [str(s["currency"]).upper() for s in res.get("summaries", [])]
        return sorted(set(found) | set(DEFAULT_CURRENCIES))

    # ------------------------------------------------------------ REST
    async def resync(self) -> None:
        """Reload open orders, positions and balances from REST (done on every reconnect)."""
        orders = convert_list(await self.client.call("private/get_open_orders"), Order)
        positions = await self.client.positions("any")
        balances = {}
        for cur in self.currencies:
            with contextlib.suppress(DeribitKitError):
                balances[cur] = await self.client.account_summary(cur)
        self.orders = {o.order_id: o for o in orders}
        self.positions = {p.instrument_name: p for p in positions if not p.is_flat}
        self.balances = balances
        self.resyncs += 1
        self._touch()
        self.resynced.emit(self)

    def _on_reconnected(self, _client: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._resync_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync_logged(self) -> None:
        try:
            await self.resync()
            log.info("portfolio resynced after reconnect")
        except DeribitKitError as exc:
            log.warning("portfolio resync failed: %s", exc)

    def _schedule_positions(self) -> None:
        """Refresh positions from REST (coalesced: one request in flight, one more if asked meanwhile)."""
        if self._refresh is not None and not self._refresh.done():
            self._refresh_again = True
            return
        self._refresh = asyncio.ensure_future(self._refresh_positions())

    async def _refresh_positions(self) -> None:
        while True:
            self._refresh_again = False
            try:
                positions = await self.client.positions("any")
            except DeribitKitError as exc:
                log.warning("position refresh failed: %s", exc)
                return
            for p in positions:
                self._set_position(p)
            live = {p.instrument_name for p in positions if not p.is_flat}
            for name in [n for n in self.positions if n not in live]:
                gone = self.positions.pop(name)
                self.position_updated.emit(gone)
            self._touch()
            if not self._refresh_again:
                return

    # ------------------------------------------------------------ notifications
    def _on_message(self, n: Any) -> None:
        ch, data = n.channel, n.data
        if ch == ORDERS_CHANNEL:
            for item in data if isinstance(data, list) else [data]:
                self._set_order(convert(item, Order))
        elif ch == TRADES_CHANNEL:
            for t in convert_list(data, UserTrade):
                self._add_trade(t)
            self._schedule_positions()
        elif ch == CHANGES_CHANNEL:
            for item in data if isinstance(data, list) else [data]:
                for o in convert_list(item.get("orders", []), Order):
                    self._set_order(o)
                for p in convert_list(item.get("position", []), Position):
                    self._set_position(p)
        elif ch.startswith("user.portfolio."):
            summary = convert(data, AccountSummary)
            self.balances[summary.currency.upper()] = summary
            self.balance_updated.emit(summary)
        else:
            return
        self._touch()

    def _set_order(self, o: Order) -> None:
        if o.is_open:
            self.orders[o.order_id] = o
        else:
            self.orders.pop(o.order_id, None)
        self.order_updated.emit(o)

    def _set_position(self, p: Position) -> None:
        old = self.positions.get(p.instrument_name)
        if p.is_flat:
            if old is None:
                return
            del self.positions[p.instrument_name]
        else:
            if old == p:
                return
            self.positions[p.instrument_name] = p
        self.position_updated.emit(p)

    def _add_trade(self, t: UserTrade) -> None:
        if any(x.trade_id == t.trade_id for x in self.trades[-50:]):
            return  # user.trades and user.changes both carry it
        self.trades.append(t)
        del self.trades[:-self.max_trades]
        self.trade.emit(t)

    def _touch(self) -> None:
        self.last_update = time.time()
        self.updated.emit(self)

    # ------------------------------------------------------------ waiting
    async def wait_for(self, predicate: Callable[[Portfolio], bool], timeout: float = 10.0) -> Portfolio:
        """Wait (at most ``timeout`` s) until ``predicate(portfolio)`` holds."""
        async def until() -> Portfolio:
            while not predicate(self):
                await self.updated.wait()
            return self

        return await asyncio.wait_for(until(), timeout)

    # ------------------------------------------------------------ views
    def orders_frame(self) -> pd.DataFrame:
        """The open orders as a DataFrame."""
        return FrameList(self.orders.values(), item_type=Order).to_frame()

    def positions_frame(self) -> pd.DataFrame:
        """The positions as a DataFrame."""
        return FrameList(self.positions.values(), item_type=Position).to_frame()

    def balances_frame(self) -> pd.DataFrame:
        """The account summaries (one per currency) as a DataFrame."""
        return FrameList(self.balances.values(), item_type=AccountSummary).to_frame()

    def to_frame(self) -> pd.DataFrame:
        """Positions (the usual view); see also :meth:`orders_frame` and :meth:`balances_frame`."""
        return self.positions_frame()

    def __repr__(self) -> str:
        return (f"<Portfolio {len(self.orders)} open order(s), {len(self.positions)} position(s), "
                f"{len(self.balances)} balance(s)>")

    def _repr_html_(self) -> str:
        parts = [f"<b>{html.escape(repr(self))}</b>"]
        for title, frame in (("Balances", self._balances_view()), ("Positions", self._positions_view()),
                             ("Open orders", self._orders_view())):
            body = frame.to_html(index=False) if len(frame) else "<i>none</i>"
            parts.append(f"<h4>{title}</h4>{body}")
        return "".join(parts)

    def _balances_view(self) -> pd.DataFrame:
        cols = ["currency", "balance", "equity", "available_funds", "initial_margin", "maintenance_margin",
                "total_pl"]
        return self._pick(self.balances_frame(), cols)

    def _positions_view(self) -> pd.DataFrame:
        cols = ["instrument_name", "direction", "size", "average_price", "mark_price", "floating_profit_loss",
                "total_profit_loss"]
        return self._pick(self.positions_frame(), cols)

    def _orders_view(self) -> pd.DataFrame:
        cols = ["order_id", "instrument_name", "direction", "order_type", "price", "amount", "filled_amount",
                "label", "order_state"]
        return self._pick(self.orders_frame(), cols)

    @staticmethod
    def _pick(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
        return frame[[c for c in cols if c in frame.columns]]


__all__ = ["Portfolio"]
