"""The embedded exchange's market: seeded random-walk indices, futures and perpetuals priced
around them with basis and funding, options priced from a volatility smile, and market makers
whose quotes move every tick, so books change continuously; plus public trades.

Everything is driven by :meth:`Market.step`, one tick at a time, from one seeded random
generator, so two markets with the same seed and the same clock evolve identically.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .candles import CandleStore
from .clock import Clock
from .instruments import (
    UNDERLYINGS,
    Underlying,
    currency_matches,
    dated_instruments,
    static_instruments,
    tick_for,
)
from .pricing import YEAR_MS, Smile, black76

BID, ASK = 0, 1


def round_to(price: float, tick: float) -> float:
    """``price`` on the tick grid, without binary noise (``0.30000000000000004`` -> ``0.3``)."""
    n = round(price / tick)
    decimals = max(0, -math.floor(math.log10(tick)) + 1)
    return round(n * tick, decimals)


class SimBook:
    """An exchange-side L2 book: market-maker liquidity plus resting user orders per price.

    Every visible change is recorded and published by :meth:`flush` as one Deribit ``change``
    (``new`` / ``change`` / ``delete`` per level), chained by ``change_id``.
    """

    __slots__ = ("_touched", "change_id", "levels", "mm", "rng", "user")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.levels: tuple[dict[float, float], dict[float, float]] = ({}, {})  # visible amounts
        self.mm: tuple[dict[float, float], dict[float, float]] = ({}, {})  # market-maker amounts
        self.user: tuple[dict[float, float], dict[float, float]] = ({}, {})  # resting user amounts
        self._touched: tuple[dict[float, bool], dict[float, bool]] = ({}, {})  # price -> existed before
        self.change_id = rng.randrange(10_000_000, 90_000_000)

    def _touch(self, side: int, price: float) -> None:
        touched = self._touched[side]
        if price not in touched:
            touched[price] = price in self.levels[side]

    def _refresh(self, side: int, price: float) -> None:
        amount = self.mm[side].get(price, 0.0) + self.user[side].get(price, 0.0)
        self._touch(side, price)
        if amount > 1e-12:
            self.levels[side][price] = amount
        else:
            self.levels[side].pop(price, None)

    def set_mm(self, side: int, price: float, amount: float) -> None:
        """Set the market makers' amount at ``price`` on ``side`` (``BID``/``ASK``; 0 removes it)."""
        if amount > 1e-12:
            self.mm[side][price] = amount
        else:
            self.mm[side].pop(price, None)
        self._refresh(side, price)

    def add_user(self, side: int, price: float, delta: float) -> None:
        """Add (or with a negative ``delta`` remove) resting user quantity at ``price``."""
        left = self.user[side].get(price, 0.0) + delta
        if left > 1e-12:
            self.user[side][price] = left
        else:
            self.user[side].pop(price, None)
        self._refresh(side, price)

    def sorted_side(self, side: int, depth: int | None = None) -> list[list[float]]:
        """``[[price, amount], ...]`` of the visible levels of ``side``, best first, at most ``depth``."""
        prices = sorted(self.levels[side], reverse=(side == BID))
        if depth is not None:
            prices = prices[:depth]
        book = self.levels[side]
        return [[p, book[p]] for p in prices]

    def best(self, side: int) -> float | None:
        """The best price of ``side`` (highest bid, lowest ask), or None when it is empty."""
        lv = self.levels[side]
        if not lv:
            return None
        return max(lv) if side == BID else min(lv)

    def pending(self) -> bool:
        """Whether levels were touched since the last :meth:`flush`."""
        return bool(self._touched[0] or self._touched[1])

    def flush(self, timestamp: int, instrument: str) -> dict[str, Any] | None:
        """The ``change`` message for everything touched since the last flush, or None."""
        if not self.pending():
            return None
        sides: list[list[list[Any]]] = []
        for side in (BID, ASK):
            out: list[list[Any]] = []
            lv = self.levels[side]
            for price, existed in sorted(self._touched[side].items(), reverse=(side == BID)):
                amount = lv.get(price)
                if amount is None:
                    if existed:
                        out.append(["delete", price, 0.0])
                elif existed:
                    out.append(["change", price, amount])
                else:
                    out.append(["new", price, amount])
            self._touched[side].clear()
            sides.append(out)
        if not sides[0] and not sides[1]:
            return None
        prev = self.change_id
        self.change_id = prev + 1 + self.rng.randrange(3)
        return {
            "type": "change",
            "timestamp": timestamp,
            "prev_change_id": prev,
            "instrument_name": instrument,
            "change_id": self.change_id,
            "bids": sides[0],
            "asks": sides[1],
        }

    def snapshot(self, timestamp: int, instrument: str) -> dict[str, Any]:
        """The ``snapshot`` message of the whole book at the current ``change_id`` (what a new
        ``book.*`` subscriber gets first)."""
        return {
            "type": "snapshot",
            "timestamp": timestamp,
            "instrument_name": instrument,
            "change_id": self.change_id,
            "bids": [["new", p, a] for p, a in self.sorted_side(BID)],
            "asks": [["new", p, a] for p, a in self.sorted_side(ASK)],
        }


@dataclass(slots=True)
class SimInstrument:
    """Live state of one instrument in the embedded exchange."""

    info: dict[str, Any]
    name: str
    kind: str
    coin: str
    index_name: str
    linear: bool
    expiry_ms: int
    book: SimBook
    strike: float = 0.0
    call: bool = False
    mark_price: float = 0.0
    iv: float = 0.0
    greeks: dict[str, float] = field(default_factory=dict)
    forward: float = 0.0
    last_price: float | None = None
    high: float | None = None
    low: float | None = None
    open_price: float | None = None
    volume: float = 0.0
    volume_usd: float = 0.0
    open_interest: float = 0.0
    trade_seq: int = 0
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))
    state: str = "open"
    halted: bool = False
    delivery_price: float | None = None
    funding: float = 0.0

    @property
    def perpetual(self) -> bool:
        """Whether it is a perpetual (``settlement_period`` ``perpetual``)."""
        return self.info.get("settlement_period") == "perpetual"

    @property
    def tick(self) -> float:
        """The base ``tick_size`` (see :meth:`tick_at` for ``tick_size_steps``)."""
        return float(self.info["tick_size"])

    def tick_at(self, price: float) -> float:
        """The tick size that applies at ``price`` (``tick_size_steps`` above their thresholds)."""
        return tick_for(self.info, price)


@dataclass(slots=True)
class StepResult:
    """What one tick changed: book changes to publish, new public trades, listings."""

    timestamp: int
    book_changes: list[tuple[SimInstrument, dict[str, Any]]]
    trades: list[tuple[SimInstrument, list[dict[str, Any]]]]
    created: list[SimInstrument]
    expired: list[SimInstrument]


class Market:
    """All instruments, indices and market makers of the embedded exchange."""

    def __init__(self, *, seed: int = 0, clock: Clock | Callable[[], float] | None = None,
                 tick_interval: float = 0.1, option_requote: float = 0.1, trade_rate: float = 1.0,
                 smile: Smile | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = Clock.of(clock)
        self.dt_years = tick_interval / (365.0 * 86400.0)
        self.option_requote = option_requote
        self.trade_rate = trade_rate
        self.smile = smile or Smile()
        self.underlyings: dict[str, Underlying] = {u.coin: u for u in UNDERLYINGS}
        self.index: dict[str, float] = {
            u.coin: u.start_price * (1.0 + 0.02 * (self.rng.random() - 0.5)) for u in UNDERLYINGS
        }
        self.premium: dict[str, float] = dict.fromkeys(self.index, 0.0002)
        self.instruments: dict[str, SimInstrument] = {}
        self.expired: dict[str, SimInstrument] = {}
        self.candles = CandleStore()  # OHLCV of every instrument from its trades (candles.py)
        self._next_id = 100_000
        self._trade_id = 300_000_000
        self.last_step_ms = self.now_ms()
        self._list(static_instruments(self.last_step_ms))
        self._list(dated_instruments(self._now_dt(), self.index))
        for inst in self.instruments.values():
            self._requote(inst, fresh=True)
            inst.book.flush(self.last_step_ms, inst.name)
            inst.open_price = inst.mark_price

    # ------------------------------------------------------------ clock and listing
    def now_ms(self) -> int:
        """The market's clock, in milliseconds since the epoch."""
        return self.clock.now_ms()

    def _now_dt(self) -> datetime:
        return self.clock.now()

    def _list(self, infos: Iterable[dict[str, Any]]) -> list[SimInstrument]:
        created: list[SimInstrument] = []
        for info in sorted(infos, key=lambda i: i["instrument_name"]):
            name = info["instrument_name"]
            if name in self.instruments or name in self.expired:
                continue
            self._next_id += 1
            info["instrument_id"] = self._next_id
            coin = info["base_currency"]
            inst = SimInstrument(
                info=info, name=name, kind=info["kind"], coin=coin, index_name=info["price_index"],
                linear=info["instrument_type"] == "linear", expiry_ms=info["expiration_timestamp"],
                book=SimBook(random.Random(self.rng.random())),
                strike=float(info.get("strike", 0.0)), call=info.get("option_type") == "call",
            )
            self.instruments[name] = inst
            created.append(inst)
        return created

    def roll(self) -> tuple[list[SimInstrument], list[SimInstrument]]:
        """Expire what the clock has passed and list the expiries that are now due."""
        now = self.now_ms()
        gone = [i for i in self.instruments.values() if i.expiry_ms <= now]
        for inst in gone:
            inst.state = "closed"
            inst.info["is_active"] = False
            inst.delivery_price = self.index[inst.coin]
            del self.instruments[inst.name]
            self.expired[inst.name] = inst
            self.candles.forget(inst.name)
        created: list[SimInstrument] = []
        if gone:
            created = self._list(dated_instruments(self._now_dt(), self.index))
            for inst in created:
                self._requote(inst, fresh=True)
                inst.book.flush(now, inst.name)
                inst.open_price = inst.mark_price
        return created, gone

    # ------------------------------------------------------------ queries
    def get(self, name: str) -> SimInstrument | None:
        """A listed (not expired) instrument, or None."""
        return self.instruments.get(name)

    def find(self, currency: str, kind: str | None = None, expired: bool = False) -> list[SimInstrument]:
        """The instruments ``public/get_instruments`` lists for ``currency`` (``any``: all) and ``kind``;
        the expired ones with ``expired``."""
        pool = self.expired if expired else self.instruments
        return [i for i in pool.values()
                if currency_matches(i.info, currency) and (kind is None or i.kind == kind)]

    def index_price(self, index_name: str) -> float | None:
        """The current value of ``index_name`` (``btc_usd``; ``btc_usdc`` is the same value), or None."""
        coin = index_name.split("_")[0].upper()
        return self.index.get(coin)

    def index_names(self) -> list[str]:
        """The priced indices, sorted: ``{coin}_usd`` and ``{coin}_usdc`` of every underlying."""
        return sorted({f"{c.lower()}_usd" for c in self.index} | {f"{c.lower()}_usdc" for c in self.index})

    # ------------------------------------------------------------ pricing
    def _fair(self, inst: SimInstrument, now_ms: int) -> float:
        spot = self.index[inst.coin]
        if inst.kind == "spot":
            return spot
        if inst.kind == "future":
            if inst.perpetual:
                return spot * (1.0 + self.premium[inst.coin])
            t = max(0.0, (inst.expiry_ms - now_ms) / YEAR_MS)
            return spot * math.exp(0.06 * t)
        t = max(1e-5, (inst.expiry_ms - now_ms) / YEAR_MS)
        fwd = spot * math.exp(0.06 * t)
        iv = self.smile.iv(inst.strike, fwd, t)
        v = black76(fwd, inst.strike, t, iv, inst.call)
        inst.forward = fwd
        inst.iv = iv
        inst.greeks = {"delta": round(v.delta, 5), "gamma": round(v.gamma, 8), "vega": round(v.vega, 5),
                       "theta": round(v.theta, 5), "rho": round(v.rho, 5)}
        return v.price_usd / spot  # inverse options are quoted in the coin

    def _requote(self, inst: SimInstrument, fresh: bool = False) -> None:
        now = self.last_step_ms
        fair = self._fair(inst, now)
        inst.mark_price = round_to(fair, inst.tick_at(fair)) if inst.kind == "option" else round(fair, 4)
        if inst.halted or inst.state != "open":
            return
        rng = inst.book.rng
        book = inst.book
        if inst.kind == "option":
            n_levels, half = 5, max(fair * 0.015, inst.tick)
        elif inst.kind == "spot":
            n_levels, half = 10, inst.tick * 2
        else:
            n_levels, half = 20, inst.tick * (1 if inst.perpetual else 2)
        u = self.underlyings[inst.coin]
        unit = float(inst.info["min_trade_amount"])
        for side in (BID, ASK):
            target: dict[float, float] = {}
            px = fair - half if side == BID else fair + half
            for i in range(n_levels):
                tick = inst.tick_at(px)
                p = round_to(px, tick)
                if p <= 0:
                    break
                if side == BID and p >= fair:
                    p = round_to(p - tick, tick)
                if side == ASK and p <= fair:
                    p = round_to(p + tick, tick)
                target[p] = 0.0
                step = tick * (1 + (i > 5) + (i > 12))
                px = p - step if side == BID else p + step
            mm = book.mm[side]
            for p in list(mm):
                if p not in target:
                    book.set_mm(side, p, 0.0)
            for p in target:
                old = mm.get(p)
                if old is None or fresh or rng.random() < 0.15:
                    # rounded: whole lots of ``unit`` without binary noise (0.1 * 6 = 0.6000000000000001)
                    size = round(unit * max(1, int(rng.lognormvariate(2.5 if u.inverse else 3.0, 0.9))), 8)
                    if old is None or abs(size - old) > 1e-12:
                        book.set_mm(side, p, size)

    # ------------------------------------------------------------ evolution
    def step(self) -> StepResult:
        """Advance one tick: move indices, requote, trade; return what changed.

        The tick's prices are of its start; its book changes are stamped when the tick is done and
        they leave (requoting hundreds of instruments takes milliseconds, more on a busy machine):
        like Deribit's, a change's ``timestamp`` is when the exchange produced it, not some time
        before it was sent. That moment is the result's ``timestamp`` and ``last_step_ms``."""
        rng = self.rng
        self.last_step_ms = now = max(self.now_ms(), self.last_step_ms + 1)
        sq = math.sqrt(self.dt_years)
        for coin, u in self.underlyings.items():
            self.index[coin] *= math.exp(u.vol * sq * rng.gauss(0.0, 1.0))
            p = self.premium[coin]
            self.premium[coin] = p + 0.05 * (0.0002 - p) + 0.00005 * rng.gauss(0.0, 1.0)
        changes: list[tuple[SimInstrument, dict[str, Any]]] = []
        trades: list[tuple[SimInstrument, list[dict[str, Any]]]] = []
        for inst in self.instruments.values():
            if inst.kind != "option" or rng.random() < self.option_requote:
                self._requote(inst)
            if not inst.halted and rng.random() < self._trade_prob(inst):
                t = self._public_trade(inst, now)
                if t is not None:
                    trades.append((inst, [t]))
            msg = inst.book.flush(now, inst.name)
            if msg is not None:
                changes.append((inst, msg))
        created, gone = self.roll()
        done = max(self.now_ms(), now)
        if done != now:
            for _, msg in changes:
                msg["timestamp"] = done
            self.last_step_ms = done
        return StepResult(done, changes, trades, created, gone)

    def _trade_prob(self, inst: SimInstrument) -> float:
        base = 0.25 if inst.perpetual else 0.08 if inst.kind != "option" else 0.01
        return min(1.0, base * self.trade_rate)

    def _public_trade(self, inst: SimInstrument, now: int) -> dict[str, Any] | None:
        rng = inst.book.rng
        side_hit = ASK if rng.random() < 0.5 else BID
        best = inst.book.best(side_hit)
        if best is None:
            return None
        avail = inst.book.mm[side_hit].get(best, 0.0)
        unit = float(inst.info["min_trade_amount"])
        if avail < unit:
            return None
        amount = min(avail, round(unit * max(1, int(rng.expovariate(0.3))), 8))
        inst.book.set_mm(side_hit, best, round(avail - amount, 8))
        return self.record_trade(inst, best, amount, "buy" if side_hit == ASK else "sell", now)

    def record_trade(self, inst: SimInstrument, price: float, amount: float, direction: str,
                     now: int) -> dict[str, Any]:
        """Record a public trade (market makers' or a user's) and update the stats."""
        self._trade_id += 1
        inst.trade_seq += 1
        last = inst.last_price
        if last is None or price == last:
            tick_dir = 1 if (inst.trades and inst.trades[-1]["tick_direction"] in (0, 1)) else 3
        else:
            tick_dir = 0 if price > last else 2
        inst.last_price = price
        inst.high = price if inst.high is None else max(inst.high, price)
        inst.low = price if inst.low is None else min(inst.low, price)
        inst.volume += amount if not (inst.kind == "future" and not inst.linear) else amount / price
        inst.volume_usd += amount if (inst.kind == "future" and not inst.linear) else amount * self.index[inst.coin]
        inst.open_interest += amount * 0.5
        inverse = inst.kind == "future" and not inst.linear  # amounts in USD: volume in coin, cost in USD
        self.candles.on_trade(inst.name, now, price, amount / price if inverse else amount,
                              amount if inverse else amount * price)
        contract = float(inst.info["contract_size"])
        trade: dict[str, Any] = {
            "trade_id": str(self._trade_id),
            "trade_seq": inst.trade_seq,
            "timestamp": now,
            "tick_direction": tick_dir,
            "price": price,
            "mark_price": inst.mark_price,
            "index_price": round(self.index[inst.coin], 2),
            "instrument_name": inst.name,
            "direction": direction,
            "amount": amount,
            "contracts": round(amount / contract, 8),
        }
        if inst.kind == "option":
            trade["iv"] = round(inst.iv * 100, 2)
        inst.trades.append(trade)
        return trade

    # ------------------------------------------------------------ views
    def ticker(self, inst: SimInstrument, now: int | None = None) -> dict[str, Any]:
        """``public/ticker`` for ``inst``."""
        now = now or self.last_step_ms
        book = inst.book
        bid, ask = book.best(BID), book.best(ASK)
        index = round(self.index[inst.coin], 4)
        mark = inst.mark_price
        band = 0.05 if inst.kind != "option" else 0.5
        tick = inst.tick_at(mark)
        out: dict[str, Any] = {
            "timestamp": now,
            "state": inst.state,
            "instrument_name": inst.name,
            "best_bid_price": bid if bid is not None else 0.0,
            "best_bid_amount": book.levels[BID][bid] if bid is not None else 0.0,
            "best_ask_price": ask if ask is not None else 0.0,
            "best_ask_amount": book.levels[ASK][ask] if ask is not None else 0.0,
            "mark_price": mark,
            "index_price": index,
            "last_price": inst.last_price if inst.last_price is not None else mark,
            "min_price": round_to(mark * (1 - band), tick) if inst.kind != "option" else tick,
            "max_price": round_to(mark * (1 + band), tick),
            "open_interest": round(inst.open_interest, 4),
            "estimated_delivery_price": index,
            "stats": {
                "high": inst.high,
                "low": inst.low,
                "volume": round(inst.volume, 6),
                "volume_usd": round(inst.volume_usd, 2),
                "price_change": (round((inst.last_price / inst.open_price - 1) * 100, 4)
                                 if inst.last_price and inst.open_price else None),
            },
        }
        if inst.kind != "spot":
            out["settlement_price"] = round(mark, 4)
        if inst.delivery_price is not None:
            out["delivery_price"] = inst.delivery_price
        if inst.perpetual:
            fund = round(self.premium[inst.coin], 8)
            out["current_funding"] = fund
            out["funding_8h"] = round(fund / 3, 8)
            out["interest_value"] = round(fund * 0.5, 8)
        if inst.kind == "option":
            mark_iv = round(inst.iv * 100, 2)
            out["greeks"] = dict(inst.greeks)
            out["mark_iv"] = mark_iv
            out["bid_iv"] = round(mark_iv - 1.5, 2) if bid is not None else 0.0
            out["ask_iv"] = round(mark_iv + 1.5, 2) if ask is not None else 0.0
            out["underlying_price"] = round(inst.forward, 4)
            out["underlying_index"] = f"SYN.{inst.info['instrument_name'].rsplit('-', 2)[0]}"
            out["interest_rate"] = 0.0
        return out

    def order_book(self, inst: SimInstrument, depth: int | None) -> dict[str, Any]:
        """``public/get_order_book`` for ``inst``."""
        out = self.ticker(inst)
        out.pop("interest_value", None)  # a ticker field; the order book has none (spec, real captures)
        out["change_id"] = inst.book.change_id
        out["bids"] = inst.book.sorted_side(BID, depth)
        out["asks"] = inst.book.sorted_side(ASK, depth)
        return out

    def book_summary(self, inst: SimInstrument) -> dict[str, Any]:
        """One item of ``public/get_book_summary_by_currency``."""
        t = self.ticker(inst)
        bid = t["best_bid_price"] or None
        ask = t["best_ask_price"] or None
        out: dict[str, Any] = {
            "instrument_name": inst.name,
            "base_currency": inst.info["base_currency"],
            "quote_currency": inst.info["quote_currency"],
            "bid_price": bid,
            "ask_price": ask,
            "mid_price": (bid + ask) / 2 if bid and ask else None,
            "mark_price": t["mark_price"],
            "last": t["last_price"],
            "high": t["stats"]["high"],
            "low": t["stats"]["low"],
            "volume": t["stats"]["volume"],
            "volume_usd": t["stats"]["volume_usd"],
            "volume_notional": t["stats"]["volume_usd"],
            "price_change": t["stats"]["price_change"],
            "open_interest": t["open_interest"],
            "creation_timestamp": t["timestamp"],
            "estimated_delivery_price": t["estimated_delivery_price"],
        }
        if inst.perpetual:
            out["current_funding"] = t["current_funding"]
            out["funding_8h"] = t["funding_8h"]
        if inst.kind == "option":
            out["mark_iv"] = t["mark_iv"]
            out["underlying_price"] = t["underlying_price"]
            out["underlying_index"] = t["underlying_index"]
            out["interest_rate"] = 0.0
        return out

    def grouped_book(self, inst: SimInstrument, group: str, depth: int) -> dict[str, Any]:
        """``book.{instrument}.{group}.{depth}.{interval}`` data: a top-``depth`` snapshot."""
        sides = []
        for side in (BID, ASK):
            levels = inst.book.sorted_side(side)
            if group != "none":
                g = float(group) / (100.0 if inst.coin == "ETH" else 1.0)
                merged: dict[float, float] = {}
                for p, a in levels:
                    key = (math.floor(p / g) if side == BID else math.ceil(p / g)) * g
                    key = round(key, 8)
                    merged[key] = merged.get(key, 0.0) + a
                levels = [[p, merged[p]] for p in sorted(merged, reverse=(side == BID))]
            sides.append(levels[:depth])
        return {"timestamp": self.last_step_ms, "instrument_name": inst.name, "change_id": inst.book.change_id,
                "bids": sides[0], "asks": sides[1]}
