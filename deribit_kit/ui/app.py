"""Process-wide state of the dashboards: one client, one broker, and live feeds shared by every session.

    hub = get_hub()                 # in a served app: one per server process (and target)
    hub = Hub.for_client(dk)        # in a notebook: around a client you already have

A browser session never talks to the exchange for market data itself. It *acquires* a feed
(``hub.market("BTC-PERPETUAL")``, ``hub.chain("BTC", "27MAR26")``, ``hub.term("BTC")``,
``hub.account()``), reads the feed's latest state from its own periodic callback (a few times a
second), and *releases* it when it switches to something else or closes. Every session that shows
the same thing shares one feed, and a feed renders each new state once (memoised by version) for
all of them, so ten open tabs cost ten cheap comparisons and ten small Bokeh updates per refresh.

The target comes from the environment like the client's (``DERIBIT_TARGET``: ``sim`` by default,
``test``, ``prod`` or a ``ws://`` URL; keys from ``DERIBIT_CLIENT_ID``/``DERIBIT_CLIENT_SECRET``).
Everything runs on the server's event loop (Panel's Tornado loop, or the notebook kernel's): no
threads, no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..broker.consumer import Notification
from ..deribit import Deribit
from ..errors import DeribitError, DeribitKitError, TransportError
from ..live.candles import LiveCandles
from ..models import Candle, Instrument, Order, Position, PublicTrade, Ticker, convert, convert_list
from ..transport.ws import WsTransport
from ..upstream.protocol import clock_ms
from . import render

if TYPE_CHECKING:
    from ..broker import Broker, Consumer, LiveBook, OptionChain
    from ..broker.port import BrokerServer
    from ..live.portfolio import Portfolio

log = logging.getLogger("deribit_kit.ui")

T = TypeVar("T")

REFRESH_MS = int(os.environ.get("DERIBIT_UI_REFRESH_MS", "200"))
"""How often each session copies the shared state into its widgets (ms); 200 ms = 5 updates/s."""
STALE_AFTER_MS = 10_000
"""A live book with no update for this long is shown as ``stale`` (the next update makes it live)."""
TRADES_KEPT = 30
CANDLES_SHOWN = 120
"""Candles a chart shows (and fetches as history) at any resolution."""
CHAIN_MIN_INTERVAL = 0.25  # s between two renders of an option chain (its tickers arrive ~100/s)
TERM_REFRESH = 2.0  # s between two book-summary polls for the term structure
POSITIONS_REFRESH = 2.0  # s between two position polls while positions are open (live PnL)
LINGER = 3.0  # s a feed stays open after its last holder left (page reloads, quick switches)
STATS_FILE_ENV = "DERIBIT_UI_STATS_FILE"
"""When set, the hub writes :attr:`Hub.stats` there as JSON every second (benchmarks, ops)."""


def describe_error(exc: BaseException) -> str:
    """One line for a person: what was refused, by whom, and why."""
    if isinstance(exc, DeribitError):
        return f"Rejected by the exchange: {exc}"
    if isinstance(exc, TransportError):
        return f"Connection problem (order state unknown until it reconnects): {exc}"
    if isinstance(exc, DeribitKitError):
        return f"Not sent: {exc}"
    return f"{type(exc).__name__}: {exc}"


class Feed:
    """Something live that sessions share: refcounted, started on first use, closed after the last."""

    def __init__(self, hub: Hub, key: tuple[Any, ...]) -> None:
        self.hub = hub
        self.key = key
        self.refs = 0
        self.status = "connecting"
        self.error: str | None = None
        self.version = 0
        self._task: asyncio.Task[None] | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._memo: dict[str, tuple[Any, Any]] = {}
        self._memo_at: dict[str, float] = {}

    # ------------------------------------------------------------ lifecycle
    def acquire(self) -> None:
        """Hold the feed (it starts on the first hold; a pending close is called off)."""
        self.refs += 1
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        if self._task is None:
            self._task = self.hub._spawn(self._run_safe())

    def release(self) -> None:
        """Give the feed back; it closes :data:`LINGER` seconds after its last holder left."""
        self.refs = max(0, self.refs - 1)
        if self.refs == 0 and self._close_handle is None:
            loop: asyncio.AbstractEventLoop | None
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = self.hub.loop
            if loop is None or loop.is_closed():
                return
            self._close_handle = loop.call_later(self.hub.linger, self._expire)

    def _expire(self) -> None:
        self._close_handle = None
        if self.refs == 0:
            self.hub._feeds.pop(self.key, None)
            self.hub._spawn(self.close())

    async def _run_safe(self) -> None:
        try:
            await self.hub.wait_ready()
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = render.DASH if not str(exc) else str(exc)
            self.status = "error"
            self.version += 1
            log.warning("feed %s failed: %s", self.key, exc)

    async def run(self) -> None:  # pragma: no cover - overridden
        """Keep the feed's state up to date until it is closed (each kind of feed does its own)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the feed's task and release what it holds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(DeribitKitError):
            await self._close()
        self.status = "closed"

    async def _close(self) -> None:
        pass

    # ------------------------------------------------------------ views
    def memo(self, name: str, key: Any, make: Callable[[], T], min_interval: float = 0.0) -> T:
        """``make()`` once per ``key`` (and at most every ``min_interval`` s), shared by every session."""
        hit = self._memo.get(name)
        if hit is not None:
            if hit[0] == key:
                return hit[1]
            if min_interval and time.monotonic() - self._memo_at.get(name, 0.0) < min_interval:
                return hit[1]
        value = make()
        self._memo[name] = (key, value)
        self._memo_at[name] = time.monotonic()
        return value

    def memo_key(self, name: str) -> Any:
        """The key of the value :meth:`memo` last made under ``name`` (what the sessions compare)."""
        hit = self._memo.get(name)
        return None if hit is None else hit[0]


# ---------------------------------------------------------------- market
class MarketFeed(Feed):
    """Book (from the broker), ticker and recent trades of one instrument."""

    def __init__(self, hub: Hub, name: str) -> None:
        super().__init__(hub, ("market", name))
        self.name = name
        self.live: LiveBook | None = None
        self.ticker: Ticker | None = None
        self.ticker_version = 0
        self.trades: deque[PublicTrade] = deque(maxlen=TRADES_KEPT)
        self.trades_version = 0
        self.rate = 0.0  # book updates per second (measured by the hub)
        self._rate_mark = (time.monotonic(), 0)
        self._consumer: Consumer | None = None

    @property
    def instrument(self) -> Instrument | None:
        """The feed's instrument, once the hub has loaded the instruments."""
        return self.hub.instruments.get(self.name)

    async def run(self) -> None:
        """Hold the instrument's live book and read its ticker and trades from the broker."""
        broker = self.hub.broker
        name = self.name
        self._consumer = broker.consumer([f"ticker.{name}.100ms", f"trades.{name}.100ms"], "drop_oldest",
                                         callback=self._on_note, name=f"ui-{name}")
        await self._consumer.start()
        self.status = "syncing"
        with contextlib.suppress(DeribitError):
            seen = {t.trade_id for t in self.trades}
            for t in await self.hub.client_or_raise.trades(name, TRADES_KEPT):
                if t.trade_id not in seen:
                    self.trades.append(t)
            self.trades_version += 1
        self.live = await broker.book(name, timeout=None)
        self.status = "live"

    async def _close(self) -> None:
        if self._consumer is not None:
            await self._consumer.close()
        if self.live is not None:
            await self.live.close()

    def _on_note(self, item: Any) -> None:
        if not isinstance(item, Notification):
            return
        if item.channel.startswith("ticker."):
            self.ticker = convert(item.data, Ticker)
            self.ticker_version += 1
        else:
            for t in convert_list(item.data, PublicTrade):
                self.trades.appendleft(t)
            self.trades_version += 1

    # ------------------------------------------------------------ state
    @property
    def book_version(self) -> int:
        """The live book's version (grows with every change; -1 before it exists)."""
        return self.live.version if self.live is not None else -1

    @property
    def state(self) -> str:
        """``live`` / ``syncing`` / ``resyncing`` / ``stale`` from the broker's book, else the feed's status."""
        if self.live is not None:
            return self.live.book.state
        return self.status

    def housekeeping(self, now: float) -> None:
        """Once per refresh: mark a silent book stale (on the upstream's clock) and measure the update rate."""
        live = self.live
        if live is None:
            return
        live.book.check_stale(clock_ms(self.hub.broker.upstream), STALE_AFTER_MS)  # a replay's clock on a replay
        t0, v0 = self._rate_mark
        if now - t0 >= 1.0:
            self.rate = (live.version - v0) / (now - t0)
            self._rate_mark = (now, live.version)

    # ------------------------------------------------------------ views (shared by every session)
    def ladder(self, levels: int = 10) -> tuple[Any, str]:
        """``(key, html)`` of the ladder's top ``levels``, rendered once per book version."""
        key = (self.book_version, levels)

        def make() -> str:
            if self.live is None:
                return render.message_html(self.error or f"waiting for the {self.name} book…",
                                           "err" if self.error else "info")
            inst = self.instrument
            book = self.live.book
            return render.ladder_html(book.bids(levels), book.asks(levels), price_dp=render.price_decimals(inst),
                                      amount_dp=render.amount_decimals(inst), unit=render.amount_unit(inst))

        return key, self.memo(f"ladder{levels}", key, make)

    def depth(self, levels: int = 50) -> tuple[Any, tuple[dict[str, Any], dict[str, Any]]]:
        """``(key, (bids, asks))`` column data of the depth chart, rendered once per book version."""
        key = (self.book_version, levels)

        def make() -> tuple[dict[str, Any], dict[str, Any]]:
            if self.live is None:
                return render.depth_data([], [])
            book = self.live.book
            return render.depth_data(book.bids(levels), book.asks(levels))

        return key, self.memo(f"depth{levels}", key, make)

    def ticker_view(self) -> tuple[Any, str]:
        """``(key, html)`` of the ticker stats."""
        key = self.ticker_version
        return key, self.memo("ticker", key, lambda: render.ticker_html(self.ticker, self.instrument))

    def trades_view(self, n: int = 15) -> tuple[Any, str]:
        """``(key, html)`` of the ``n`` most recent trades."""
        key = (self.trades_version, n)
        return key, self.memo(f"trades{n}", key, lambda: render.trades_html(self.trades, self.instrument, n))

    def state_view(self) -> tuple[Any, str]:
        """``(key, html)`` of the book's state and counters (and the upstream's state)."""
        live = self.live
        up = self.hub.upstream_state
        key = (self.book_version, self.state, up, round(self.rate, 1), self.error)

        def make() -> str:
            if live is None:
                state = "error" if self.error else self.state
                return render.book_state_html(state, {"upstream": up, **({"error": self.error} if self.error else {})})
            b = live.book
            counters = {"updates/s": f"{self.rate:.1f}", "change_id": b.change_id, "changes": b.changes,
                        "snapshots": b.snapshots, "resyncs": b.resyncs, "gaps": b.gaps, "crossed": b.crossed,
                        "levels": f"{b.n_bids}/{b.n_asks}", "upstream": up}
            return render.book_state_html(b.state, counters)

        return key, self.memo("state", key, make)


# ---------------------------------------------------------------- candles
class CandleFeed(Feed):
    """Candles of one instrument at one resolution: the history plus the open candle, kept live by a
    :class:`~deribit_kit.live.candles.LiveCandles` (``chart.trades.{instrument}.{resolution}`` from
    the broker)."""

    def __init__(self, hub: Hub, name: str, resolution: str) -> None:
        super().__init__(hub, ("candles", name, resolution))
        self.name = name
        self.resolution = resolution
        self.live: LiveCandles | None = None

    async def run(self) -> None:
        """Start the live candles (history, then ``chart.trades`` through the broker) and follow them."""
        live = LiveCandles(self.hub.client_or_raise, self.name, self.resolution, history=CANDLES_SHOWN,
                           max_candles=2 * CANDLES_SHOWN)
        await live.start()
        self.live = live
        self.status = "live"
        self.version += 1

    async def _close(self) -> None:
        if self.live is not None:
            await self.live.close()

    @property
    def candles(self) -> list[Candle]:
        """The newest :data:`CANDLES_SHOWN` candles, oldest first."""
        return self.live.candles[-CANDLES_SHOWN:] if self.live is not None else []

    def view(self) -> tuple[Any, dict[str, Any]]:
        """``data`` (the chart's columns, :func:`render.candle_data`), ``window`` (the time axis,
        :func:`render.candle_window`) and ``status`` (one HTML line)."""
        key = (self.live.version if self.live is not None else -1, self.status, self.error)

        def make() -> dict[str, Any]:
            live = self.live
            candles = self.candles
            period = live.period_ms if live is not None else 60_000
            inst = self.hub.instruments.get(self.name)
            if self.error:
                status = render.message_html(f"no candles: {self.error}", "err")
            else:
                status = render.candle_status_html(candles, self.resolution, inst, self.status)
            return {"data": render.candle_data(candles, period), "status": status,
                    "window": render.candle_window(candles, period)}

        return key, self.memo("view", key, make)


# ---------------------------------------------------------------- options
class ChainFeed(Feed):
    """Tickers of every option of one currency and expiry (calls and puts by strike)."""

    def __init__(self, hub: Hub, currency: str, expiry: str) -> None:
        super().__init__(hub, ("chain", currency, expiry))
        self.currency = currency
        self.expiry = expiry
        self.tickers: dict[str, Ticker] = {}
        self._chain: OptionChain | None = None

    async def run(self) -> None:
        """Follow the chain's tickers through the broker."""
        self._chain = await self.hub.broker.subscribe_chain(
            self.currency, self.expiry, channel_template="ticker.{name}.100ms", callback=self._on_note,
            refresh_interval=0)
        self.status = "live"
        self.version += 1

    async def _close(self) -> None:
        if self._chain is not None:
            await self._chain.close()

    def _on_note(self, item: Any) -> None:
        if isinstance(item, Notification):
            name = item.channel.split(".")[1]
            self.tickers[name] = convert(item.data, Ticker)
            self.version += 1

    def view(self) -> tuple[Any, dict[str, Any]]:
        """``rows`` (by strike), ``html`` (the chain table), ``smile`` (plot columns), ``underlying``, ``index``."""

        def make() -> dict[str, Any]:
            rows = render.chain_rows(self.tickers)
            und = next((r["underlying"] for r in rows if r.get("underlying")), None)
            index = next((t.index_price for t in self.tickers.values() if t.index_price), None)
            inst = next((self.hub.instruments.get(n) for n in self.tickers), None)
            dp = render.price_decimals(inst) if inst is not None else 4
            if not rows:
                table = render.message_html(self.error or f"waiting for the {self.currency} {self.expiry} chain…",
                                            "err" if self.error else "info")
            else:
                table = render.chain_html(rows, price_dp=dp, atm=und)
            return {"rows": rows, "html": table, "smile": render.smile_data(rows), "underlying": und, "index": index}

        self.memo("view", self.version, make, CHAIN_MIN_INTERVAL)
        key = self.memo_key("view")
        return key, self._memo["view"][1]


class TermFeed(Feed):
    """At-the-money implied volatility per expiry of one currency, from option book summaries."""

    def __init__(self, hub: Hub, currency: str) -> None:
        super().__init__(hub, ("term", currency))
        self.currency = currency
        self.data: dict[str, list[Any]] = {"expiry": [], "days": [], "iv": []}

    async def run(self) -> None:
        """Poll the book summaries of the currency's options for the ATM IV of each expiry."""
        client = self.hub.client_or_raise
        while True:
            try:
                summaries = await client.book_summary(self.currency, "option")
                expiries = {i.instrument_name.split("-")[1]: i.expiration_timestamp
                            for i in self.hub.instruments.values()
                            if i.kind == "option" and i.base_currency == self.currency}
                self.data = render.term_structure(summaries, expiries)
                self.status = "live"
                self.error = None
                self.version += 1
            except DeribitKitError as exc:
                self.error = str(exc)
                log.warning("term structure of %s: %s", self.currency, exc)
            await asyncio.sleep(TERM_REFRESH)


# ---------------------------------------------------------------- account
class AccountFeed(Feed):
    """The account's live portfolio (open orders, positions, balances) from the private channels."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub, ("account",))
        self.portfolio: Portfolio | None = None
        self._polled: tuple[float, list[Position]] | None = None

    async def run(self) -> None:
        """Follow the account's orders, positions and balances (a live portfolio); refuse without an API key."""
        client = self.hub.client_or_raise
        if not client.is_authenticated:
            self.status = "no-keys"
            self.error = ("no API key: set DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET to trade "
                          f"on {client.settings.target}")
            self.version += 1
            return
        pf = await client.portfolio()
        self.portfolio = pf
        pf.updated += self._bump
        self.status = "live"
        self.version += 1
        while True:  # mark prices move: refresh open positions' PnL and greeks
            await asyncio.sleep(POSITIONS_REFRESH)
            if pf.positions:
                with contextlib.suppress(DeribitKitError):
                    positions = await client.positions("any")
                    self._polled = (time.time(), [p for p in positions if not p.is_flat])
                    self.version += 1

    async def _close(self) -> None:
        if self.portfolio is not None:
            self.portfolio.updated -= self._bump

    def _bump(self, *_: Any) -> None:
        self.version += 1

    @property
    def orders(self) -> list[Order]:
        """The open orders."""
        return list(self.portfolio.orders.values()) if self.portfolio is not None else []

    @property
    def positions(self) -> list[Position]:
        """The open positions."""
        pf = self.portfolio
        if pf is None:
            return []
        polled = self._polled
        if polled is not None and polled[0] > pf.last_update:
            return polled[1]
        return list(pf.positions.values())

    def view(self) -> tuple[Any, dict[str, Any]]:
        """``(key, view)``: the orders, positions and account rows the trading page shows."""
        def make() -> dict[str, Any]:
            pf = self.portfolio
            balances = [] if pf is None else [pf.balances[c] for c in sorted(pf.balances)]
            return {"orders": render.orders_table(self.orders), "positions": render.positions_table(self.positions),
                    "account": render.account_html(balances)}

        key = (self.version, self.status)
        return key, self.memo("view", key, make)


# ---------------------------------------------------------------- the hub
class Hub:
    """One upstream client and its broker for every dashboard session of a process."""

    def __init__(self, target: str | None = None, *, client: Deribit | None = None, broker_port: int | None = None,
                 linger: float = LINGER, **options: Any) -> None:
        self.target = target
        self.client = client
        self.options = options
        self.broker_port = broker_port
        self.broker_server: BrokerServer | None = None
        self.linger = linger
        self.owns_client = client is None
        self.status = "connecting"
        self.message = "connecting…"
        self.instruments: dict[str, Instrument] = {}
        self.instruments_version = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._feeds: dict[tuple[Any, ...], Feed] = {}
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.sessions: weakref.WeakSet[Any] = weakref.WeakSet()  # live dashboards (one per browser tab)
        self.stats: dict[str, float] = {"upstream_frames": 0, "upstream_cpu_s": 0.0, "refreshes": 0,
                                        "refresh_cpu_s": 0.0, "sessions": 0, "feeds": 0}
        self.stats_file = os.environ.get(STATS_FILE_ENV) or None

    @classmethod
    def for_client(cls, client: Deribit) -> Hub:
        """The hub of an existing client (a notebook's ``dk``); one per client, never closes it."""
        hub = _HUBS.get(("client", id(client)))
        if hub is None or hub.client is not client:
            hub = _HUBS[("client", id(client))] = cls(client=client)
        return hub

    def __repr__(self) -> str:
        target = self.target or (self.client.settings.target if self.client is not None else "?")
        return f"<Hub {target} {self.status} feeds={len(self._feeds)}>"

    # ------------------------------------------------------------ lifecycle
    def ensure_started(self) -> None:
        """Start connecting (idempotent; call it on the event loop that serves the sessions)."""
        if self._task is not None or self._closed:
            return
        self.loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._task = self._spawn(self._run())

    async def start(self) -> Hub:
        """Start the hub (connect, load the instruments) and wait until it is ready."""
        self.ensure_started()
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` s) until the hub is connected and knows the instruments."""
        self.ensure_started()
        assert self._ready is not None
        await asyncio.wait_for(self._ready.wait(), timeout)

    @property
    def ready(self) -> bool:
        """True once the hub is connected and knows the instruments."""
        return self._ready is not None and self._ready.is_set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro) if self.loop is None else self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self) -> None:
        delay = 0.5
        while self.client is None:
            try:
                self.client = await Deribit.connect(self.target, **self.options)
            except TransportError as exc:
                self.message = f"cannot reach the exchange ({exc}); retrying in {delay:.0f} s"
                log.warning("%s", self.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except DeribitKitError as exc:
                self.status, self.message = "error", f"cannot connect: {exc}"
                log.error("%s", self.message)
                return
        while True:
            try:
                await self.load_instruments()
                break
            except DeribitKitError as exc:
                self.message = f"cannot list instruments ({exc}); retrying"
                await asyncio.sleep(delay)
        self._account_upstream_cpu()
        if self.broker_port is not None:
            from ..broker.port import BrokerServer

            self.broker_server = await BrokerServer(self.broker, port=self.broker_port).start()
        self.status, self.message = "ready", ""
        assert self._ready is not None
        self._ready.set()
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            now = time.monotonic()
            for feed in list(self._feeds.values()):
                if isinstance(feed, MarketFeed):
                    feed.housekeeping(now)
            self.stats["upstream_frames"], self.stats["upstream_cpu_s"] = self.upstream_cpu()
            self.stats["sessions"] = len(self.sessions)
            self.stats["feeds"] = len(self._feeds)
            if self.stats_file:
                with contextlib.suppress(OSError):
                    Path(self.stats_file).write_text(json.dumps({**self.stats, "time": time.time()}))
            if n % 60 == 0:
                with contextlib.suppress(DeribitKitError):
                    await self.load_instruments()

    def _account_upstream_cpu(self) -> None:
        """Count the CPU time this thread spends handling upstream notifications (broker, live
        books, shared feeds; the JSON decode before it is not included): the transport's hook."""
        t = self.client.client._transport if self.client is not None and self.client.client is not None else None
        if isinstance(t, WsTransport):
            t.time_notifications()

    def upstream_cpu(self) -> tuple[float, float]:
        """(notifications handled, CPU seconds spent on them) since the hub started."""
        t = self.client.client._transport if self.client is not None and self.client.client is not None else None
        if not isinstance(t, WsTransport):
            return 0.0, 0.0
        return float(t.stats["notifications"]), float(t.stats.get("notification_cpu_s", 0.0))

    async def load_instruments(self) -> None:
        """Load every instrument of the target (the pickers and the feeds look them up)."""
        client = self.client_or_raise
        insts = await client.instruments("any")
        new = {i.instrument_name: i for i in insts if not i.is_combo}
        if set(new) != set(self.instruments):
            self.instruments_version += 1
        self.instruments = new

    async def close(self) -> None:
        """Close every feed, the broker port and (if the hub opened it) the client."""
        self._closed = True
        for feed in list(self._feeds.values()):
            await feed.close()
        self._feeds.clear()
        if self._task is not None:
            self._task.cancel()
        if self.broker_server is not None:
            await self.broker_server.stop()
        if self.client is not None and self.owns_client:
            await self.client.close()
        for key, hub in list(_HUBS.items()):
            if hub is self:
                del _HUBS[key]

    # ------------------------------------------------------------ accessors
    @property
    def client_or_raise(self) -> Deribit:
        """The hub's client; raises while the dashboards are not connected yet."""
        if self.client is None:
            raise DeribitKitError("the dashboards are not connected yet")
        return self.client

    @property
    def broker(self) -> Broker:
        """The client's broker (every feed reads from it)."""
        return self.client_or_raise.broker

    @property
    def upstream_state(self) -> str:
        """The upstream's state (a connection's, a replay's or a topic's), ``connecting`` before it exists."""
        up = self.client.upstream if self.client is not None else None
        return up.state if up is not None else "connecting"

    @property
    def can_trade(self) -> bool:
        """True when the client is authenticated (an API key was given)."""
        return self.client is not None and self.client.is_authenticated

    # ------------------------------------------------------------ feeds (acquire; the caller releases)
    def _feed(self, key: tuple[Any, ...], make: Callable[[], Feed]) -> Feed:
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = make()
        feed.acquire()
        return feed

    def market(self, instrument: str) -> MarketFeed:
        """The shared feed of ``instrument``'s book, ticker and trades (held: call ``release()``)."""
        feed = self._feed(("market", instrument), lambda: MarketFeed(self, instrument))
        assert isinstance(feed, MarketFeed)
        return feed

    def candles(self, instrument: str, resolution: str = "1") -> CandleFeed:
        """The shared candle feed of ``instrument`` at ``resolution`` (acquire it through a dashboard's ``hold``)."""
        feed = self._feed(("candles", instrument, resolution), lambda: CandleFeed(self, instrument, resolution))
        assert isinstance(feed, CandleFeed)
        return feed

    def chain(self, currency: str, expiry: str) -> ChainFeed:
        """The shared feed of an option chain (one currency and expiry)."""
        feed = self._feed(("chain", currency, expiry), lambda: ChainFeed(self, currency, expiry))
        assert isinstance(feed, ChainFeed)
        return feed

    def term(self, currency: str) -> TermFeed:
        """The shared feed of a currency's ATM IV term structure."""
        feed = self._feed(("term", currency), lambda: TermFeed(self, currency))
        assert isinstance(feed, TermFeed)
        return feed

    def account(self) -> AccountFeed:
        """The shared feed of the account (orders, positions, balances)."""
        feed = self._feed(("account",), lambda: AccountFeed(self))
        assert isinstance(feed, AccountFeed)
        return feed

    @property
    def feeds(self) -> dict[tuple[Any, ...], Feed]:
        """The feeds open now, by key."""
        return dict(self._feeds)

    # ------------------------------------------------------------ instrument lists
    def expiries(self, currency: str) -> list[str]:
        """Option expiry codes of ``currency``, nearest first."""
        seen: dict[str, int] = {}
        for i in self.instruments.values():
            if i.kind == "option" and i.base_currency == currency:
                seen[i.instrument_name.split("-")[1]] = i.expiration_timestamp
        return sorted(seen, key=lambda c: seen[c])

    def option_currencies(self) -> list[str]:
        """The currencies that have options."""
        return sorted({i.base_currency for i in self.instruments.values() if i.kind == "option"})


_HUBS: dict[tuple[Any, ...], Hub] = {}


def get_hub(target: str | None = None) -> Hub:
    """The process-wide hub for ``target`` (default: ``DERIBIT_TARGET`` or ``sim``), on the running loop.

    One per target and event loop: a served app gets the same hub in every session.
    """
    target = target or os.environ.get("DERIBIT_TARGET") or "sim"
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    key = ("target", target)
    hub = _HUBS.get(key)
    if hub is not None and hub.loop is not None and loop is not None and hub.loop is not loop:
        hub = None  # a previous loop's hub (tests that serve on several loops)
    if hub is None:
        hub = _HUBS[key] = Hub(target)
    if loop is not None:
        hub.ensure_started()
    return hub


async def close_hubs() -> None:
    """Close every hub of this process (tests, shutdown)."""
    for hub in list(_HUBS.values()):
        await hub.close()
    _HUBS.clear()
