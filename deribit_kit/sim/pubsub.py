"""The embedded exchange's publishing: the registries of public channels (by name, by instrument,
trades by kind, index prices) and of private channels (per account, never shared by name), and
what goes out on them.

Where a subscription is recorded: :meth:`PubSub.add` (from ``public/subscribe``), live once its
reply has been written (:meth:`PubSub.activate`, a book's snapshot first). What leaves: a market
tick's changes (:meth:`PubSub.publish`), an order's book change and trades at once
(:meth:`PubSub.publish_instrument`), and what an operation on the engine changed for accounts
(:meth:`PubSub.commit` of a :class:`~.exchange.Changes`). Each notification is encoded and framed
once and the same bytes are written to every subscriber; a connection whose unsent output passes
``max_send_buffer`` is cut off (``connection_too_slow``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..transport.server import text_frame
from ..wire import jsonrpc
from ..wire.channels import Channel, parse_channel
from .exchange import Account, AccountState, Changes, Exchange, SimInstrument, StepResult
from .exchange.instruments import CURRENCIES, currency_matches
from .exchange.market import ASK, BID
from .exchange.orders import AccountChanges

if TYPE_CHECKING:
    from .server import Session

log = logging.getLogger("deribit_kit.sim")

USER_CURRENCIES = frozenset({str(c["currency"]) for c in CURRENCIES} | {"EURR", "ANY"})


class PubSub:
    """Who receives which channel of one exchange, and the publishing of what changed."""

    def __init__(self, exchange: Exchange, *, skip: set[str], max_send_buffer: int,
                 stats: dict[str, int]) -> None:
        self.exchange = exchange
        self.skip = skip  # instruments whose next book change is withheld (a fault: a change_id gap)
        self.max_send_buffer = max_send_buffer
        self.stats = stats
        self.subs: dict[str, set[Session]] = {}  # active public channel -> sessions
        self.by_instrument: dict[str, set[Channel]] = {}  # instrument -> active channels
        self.kind_channels: set[Channel] = set()  # trades.{kind}.{currency}.{interval}
        self.index_channels: set[Channel] = set()

    # ------------------------------------------------------------ subscriptions
    def channel_exists(self, ch: Channel) -> bool:
        """Whether the exchange has ``ch``: its instrument is listed (``perpetual.*`` for perpetuals
        only), its index is priced, its ``user.*`` currency is one the accounts hold."""
        market = self.exchange.market
        if ch.instrument is not None:
            inst = market.get(ch.instrument)
            # perpetual.{instrument}.{interval} exists for perpetuals only
            return inst is not None and (ch.family != "perpetual" or inst.perpetual)
        if ch.family == "price_index":
            return ch.index_name in market.index_names()
        if ch.user and ch.currency is not None:
            return ch.currency.upper() in USER_CURRENCIES
        return True

    def add(self, s: Session, ch: Channel) -> bool:
        """Record a subscription (False: ``s`` had it); it goes live with :meth:`activate`."""
        if ch.name in s.subscriptions:
            return False
        s.subscriptions.add(ch.name)
        return True

    def activate(self, s: Session, channels: list[Channel]) -> None:
        """Make ``s``'s new ``channels`` live (called once the subscribe reply has been written)."""
        conn = s.conn
        market = self.exchange.market
        for ch in channels:
            if ch.name not in s.subscriptions or conn is None:
                continue
            if ch.user:  # the account's own data: registered per account, never shared by name
                self._subscribe_private(s, ch)
                continue
            self.subs.setdefault(ch.name, set()).add(s)
            if ch.instrument is not None:
                self.by_instrument.setdefault(ch.instrument, set()).add(ch)
            elif ch.family == "trades_kind":
                self.kind_channels.add(ch)
            elif ch.family == "price_index":
                self.index_channels.add(ch)
            if ch.family == "book":
                inst = market.get(ch.instrument or "")
                if inst is not None:
                    snap = inst.book.snapshot(market.last_step_ms, inst.name)
                    conn.send(jsonrpc.encode_notification(ch.name, snap))

    def remove(self, s: Session, name: str) -> None:
        """Unsubscribe ``s`` from channel ``name``; a public channel nobody receives any more is no
        longer built."""
        s.subscriptions.discard(name)
        if name.startswith("user."):
            self._unsubscribe_private(s, name)
            return
        subs = self.subs.get(name)
        if subs is None:
            return
        subs.discard(s)
        if subs:
            return
        del self.subs[name]
        ch = parse_channel(name)
        if ch.instrument is not None:
            chans = self.by_instrument.get(ch.instrument)
            if chans is not None:
                chans.discard(ch)
                if not chans:
                    del self.by_instrument[ch.instrument]
        self.kind_channels.discard(ch)
        self.index_channels.discard(ch)

    def remove_all(self, s: Session) -> None:
        """Unsubscribe ``s`` from every channel (its connection closed)."""
        for name in list(s.subscriptions):
            self.remove(s, name)

    def subscriber_count(self, channel: str) -> int:
        """How many connections receive ``channel`` (tests use it to check sharing upstream)."""
        if channel.startswith("user."):
            return sum(len(st.subs[channel][1]) for st in self.exchange.engine.states if channel in st.subs)
        return len(self.subs.get(channel, ()))

    # ------------------------------------------------------------ private channels
    def _subscribe_private(self, s: Session, ch: Channel) -> None:
        if s.account is None:
            return
        st = self.exchange.state(s.account)
        entry = st.subs.get(ch.name)
        if entry is None:
            st.subs[ch.name] = (ch, {s})
        else:
            entry[1].add(s)
        if ch.family == "user.portfolio":
            for cur in _portfolio_currencies(ch, st.balances):
                self.send_to((s,), ch.name, self.exchange.engine.portfolio(st, cur))

    def _unsubscribe_private(self, s: Session, name: str) -> None:
        for st in self.exchange.engine.states:
            entry = st.subs.get(name)
            if entry is not None:
                entry[1].discard(s)
                if not entry[1]:
                    del st.subs[name]

    def sessions(self, account: Account, channel: str) -> set[Session]:
        """The connections of ``account`` subscribed to the private ``channel``."""
        st = account.state
        if not isinstance(st, AccountState):
            return set()
        entry = st.subs.get(channel)
        return entry[1] if entry is not None else set()

    # ------------------------------------------------------------ sending
    def send_to(self, subs: Iterable[Session], channel: str, data: Any) -> None:
        """Send one notification to ``subs`` (encoded once); cut off connections that lag too far."""
        subs = list(subs)
        frame = text_frame(jsonrpc.encode_notification(channel, data))
        limit = self.max_send_buffer
        for s in subs:
            conn = s.conn
            if conn is None:
                continue
            conn.send_frame(frame)
            if conn.buffered > limit:
                self._too_slow(s)
        self.stats["notifications"] += len(subs)

    def _send(self, channel: str, data: Any) -> None:
        subs = self.subs.get(channel)
        if subs:
            self.send_to(subs, channel, data)

    def publish_user(self, account: Account, channel: str, data: Any) -> None:
        """Send ``data`` on the private ``channel`` to ``account``'s connections subscribed to it
        (another account subscribed to the same channel name receives nothing)."""
        subs = self.sessions(account, channel)
        if subs:
            self.send_to(subs, channel, data)

    def _too_slow(self, s: Session) -> None:
        self.stats["slow_disconnects"] += 1
        log.warning("disconnecting %s: connection_too_slow", s.peer)
        if s.conn is not None:
            s.conn.abort()

    # ------------------------------------------------------------ public channels
    def publish(self, result: StepResult) -> None:
        """Send one tick's changes to the channels that have subscribers."""
        changes = {inst.name: msg for inst, msg in result.book_changes}
        trades = {inst.name: t for inst, t in result.trades}
        market = self.exchange.market
        ts = result.timestamp
        for name, chans in list(self.by_instrument.items()):
            inst = market.get(name)
            if inst is None:
                continue
            self._publish_instrument(inst, chans, changes.get(name), trades.get(name), ts, ticker=True)
        self._publish_kind_trades(result.trades)
        for ch in list(self.index_channels):
            price = market.index_price(ch.index_name or "")
            if price is not None:
                self._send(ch.name, {"index_name": ch.index_name, "price": round(price, 4), "timestamp": ts})

    def publish_instrument(self, inst: SimInstrument, trades: list[dict[str, Any]]) -> None:
        """Publish at once what orders and trades did to ``inst``: its book change (flushed now, so
        ``change_id`` stays chained) and its new public trades, without waiting for the next tick."""
        market = self.exchange.market
        ts = max(market.now_ms(), market.last_step_ms)
        change = inst.book.flush(ts, inst.name)
        chans = self.by_instrument.get(inst.name)
        if chans:
            self._publish_instrument(inst, chans, change, trades or None, ts, ticker=False)
        if trades:
            self._publish_kind_trades([(inst, trades)])

    def _publish_instrument(self, inst: SimInstrument, chans: set[Channel], change: dict[str, Any] | None,
                            traded: list[dict[str, Any]] | None, ts: int, *, ticker: bool) -> None:
        market = self.exchange.market
        name = inst.name
        if change is not None and name in self.skip:
            self.skip.discard(name)
            change = None  # withheld: subscribers see a change_id gap on the next one
        tick: dict[str, Any] | None = None
        for ch in list(chans):
            fam = ch.family
            if fam == "book":
                if change is not None:
                    self._send(ch.name, change)
            elif fam == "ticker" or fam == "incremental_ticker":
                if ticker:
                    if tick is None:
                        tick = market.ticker(inst, ts)
                    self._send(ch.name, tick)
            elif fam == "trades":
                if traded:
                    self._send(ch.name, traded)
            elif fam == "book_grouped":
                if change is not None:
                    self._send(ch.name, market.grouped_book(inst, ch.group or "none", ch.depth or 10))
            elif fam == "quote":
                if change is not None:
                    self._send(ch.name, _quote(inst, ts))
            elif fam == "perpetual" and inst.perpetual and ticker:
                self._send(ch.name, {"index_price": round(market.index[inst.coin], 4),
                                     "interest": round(market.premium[inst.coin] / 3, 8), "timestamp": ts})
            elif fam == "chart_trades":  # the open candle on trades, a filler when a period begins
                candle = market.candles.due(name, ch.interval or "1", ts, bool(traded))
                if candle is not None:
                    self._send(ch.name, candle)

    def _publish_kind_trades(self, trades: list[tuple[SimInstrument, list[dict[str, Any]]]]) -> None:
        for ch in list(self.kind_channels):
            batch = [t for inst, ts_ in trades for t in ts_
                     if (ch.kind == "any" or inst.kind == ch.kind)
                     and (ch.currency in ("any", inst.coin, inst.info.get("settlement_currency")))]
            if batch:
                self._send(ch.name, batch)

    # ------------------------------------------------------------ what the engine changed
    @contextmanager
    def changes(self) -> Iterator[Changes]:
        """Collect what the body changes in the engine and publish it, even when the body raises midway."""
        ch = Changes()
        try:
            yield ch
        finally:
            self.commit(ch)

    def commit(self, ch: Changes, portfolio: bool = True) -> None:
        """Publish an operation's book changes and public trades, then each account's private channels."""
        for name, inst in ch.books.items():
            self.publish_instrument(inst, ch.public.get(name, (inst, []))[1])
        for ac in ch.accounts.values():
            self._publish_account(ac, portfolio)

    def commit_step(self, ch: Changes) -> None:
        """Publish what a market tick did to orders, and refresh ``user.portfolio`` for accounts with
        positions (their PnL moved)."""
        self.commit(ch, portfolio=False)
        touched = {k: ac.currencies for k, ac in ch.accounts.items()}
        engine = self.exchange.engine
        for st in engine.states:
            chans = [(n, c) for n, (c, ss) in st.subs.items() if c.family == "user.portfolio" and ss]
            if not chans:
                continue
            curs = touched.get(id(st), set()) | engine.has_exposure(st)
            for cur in sorted(curs):
                data: dict[str, Any] | None = None
                for name, chan in chans:
                    if (chan.currency or "").upper() in ("ANY", cur):
                        data = data or engine.portfolio(st, cur)
                        self.publish_user(st.account, name, data)

    def _publish_account(self, ac: AccountChanges, portfolio: bool) -> None:
        st = ac.state
        if not st.subs:
            return
        account = st.account
        engine = self.exchange.engine
        rendered = [(o, o.to_dict()) for o in ac.orders.values()]
        for name, (chan, sessions) in list(st.subs.items()):
            if not sessions:
                continue
            fam = chan.family
            if fam in ("user.orders", "user.orders_kind"):
                sel = [d for o, d in rendered if _matches(chan, o.inst)]
                if chan.interval == "raw":
                    for d in sel:
                        self.publish_user(account, name, d)
                elif sel:
                    self.publish_user(account, name, sel)
            elif fam in ("user.trades", "user.trades_kind"):
                trades = [t for t in ac.trades if _matches(chan, ac.instruments[t["instrument_name"]])]
                if trades:
                    self.publish_user(account, name, trades)
            elif fam in ("user.changes", "user.changes_kind"):
                for inst in ac.instruments.values():
                    if not _matches(chan, inst):
                        continue
                    self.publish_user(account, name, {
                        "instrument_name": inst.name,
                        "orders": [d for o, d in rendered if o.inst is inst],
                        "trades": [t for t in ac.trades if t["instrument_name"] == inst.name],
                        "position": [] if inst.kind == "spot" else [engine.position_view(st, inst)],
                    })
            elif fam == "user.portfolio" and portfolio:
                for cur in sorted(ac.currencies):
                    if (chan.currency or "").upper() in ("ANY", cur):
                        self.publish_user(account, name, engine.portfolio(st, cur))


def _matches(chan: Channel, inst: SimInstrument) -> bool:
    if chan.instrument is not None:
        return chan.instrument == inst.name
    kind = chan.kind or "any"
    if kind != "any" and kind != inst.kind:
        return False
    cur = (chan.currency or "any").upper()
    return cur == "ANY" or currency_matches(inst.info, cur)


def _portfolio_currencies(chan: Channel, balances: dict[str, float]) -> list[str]:
    cur = (chan.currency or "any").upper()
    if cur == "ANY":
        return sorted(balances)
    return [cur]


def _quote(inst: SimInstrument, ts: int) -> dict[str, Any]:
    bid, ask = inst.book.best(BID), inst.book.best(ASK)
    return {
        "timestamp": ts,
        "instrument_name": inst.name,
        "best_bid_price": bid,
        "best_bid_amount": inst.book.levels[BID][bid] if bid is not None else 0.0,
        "best_ask_price": ask,
        "best_ask_amount": inst.book.levels[ASK][ask] if ask is not None else 0.0,
    }
