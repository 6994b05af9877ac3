"""Unit tests of the embedded exchange's market: Deribit names and date codes, the expiry calendar
(08:00 UTC), listing and rolling under a fake clock, determinism under a seed, book and trade
invariants, and option pricing."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from conftest import connect_peer

from deribit_kit.sim import Simulator
from deribit_kit.sim.exchange.instruments import currency_matches, settlement_period, tick_for
from deribit_kit.sim.exchange.market import ASK, BID, Market, SimBook, round_to
from deribit_kit.sim.exchange.pricing import Smile, black76, implied_vol
from deribit_kit.wire.names import (
    PERPETUAL_EXPIRY_MS,
    date_code,
    expiry_ms,
    expiry_schedule,
    last_friday,
    parse_date_code,
    parse_instrument_name,
    parse_strike,
    strike_text,
)


class FakeClock:
    """A settable clock (seconds since the epoch) for ``Market(clock=...)``/``Simulator(clock=...)``."""

    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += seconds


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


MONDAY_0759 = utc(2025, 1, 6, 7, 59, 59)


def codes(market: Market, prefix: str, kind: str) -> set[str]:
    return {n.split("-")[1] for n, i in market.instruments.items()
            if n.startswith(prefix) and i.kind == kind and not i.perpetual}


# ---------------------------------------------------------------- names and date codes


@pytest.mark.parametrize(("d", "code"), [
    (date(2024, 12, 27), "27DEC24"), (date(2025, 1, 6), "6JAN25"), (date(2023, 8, 5), "5AUG23"),
    (date(2030, 2, 1), "1FEB30"), (date(2025, 9, 30), "30SEP25"),
])
def test_date_code(d: date, code: str) -> None:
    assert date_code(d) == code
    assert parse_date_code(code) == d


def test_date_code_round_trip_every_day() -> None:
    d = date(2024, 1, 1)
    while d < date(2027, 1, 1):
        code = date_code(d)
        assert 5 <= len(code) <= 7 and code == code.upper()
        assert parse_date_code(code) == d
        d += timedelta(days=1)


@pytest.mark.parametrize("bad", ["27Dec24", "27DEC2024", "DEC24", "32DEC24", "27XYZ24", "027DEC24", "", "PERPETUAL"])
def test_bad_date_codes(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_date_code(bad)


def test_expiry_is_0800_utc() -> None:
    ms = expiry_ms(date(2024, 12, 27))
    assert ms == 1735286400000
    assert datetime.fromtimestamp(ms / 1000, UTC) == utc(2024, 12, 27, 8)
    assert int(utc(3000, 1, 1, 8).timestamp() * 1000) == PERPETUAL_EXPIRY_MS


def test_strikes() -> None:
    assert strike_text(60000.0) == "60000"
    assert strike_text(0.625) == "0d625"
    assert parse_strike("0d625") == 0.625
    assert parse_strike("3000") == 3000.0


@pytest.mark.parametrize(("name", "kind", "base", "quote", "expiry", "strike", "otype"), [
    ("BTC-PERPETUAL", "future", "BTC", None, None, None, None),
    ("BTC-27DEC24", "future", "BTC", None, date(2024, 12, 27), None, None),
    ("BTC-5AUG23", "future", "BTC", None, date(2023, 8, 5), None, None),
    ("BTC_USDC-PERPETUAL", "future", "BTC", "USDC", None, None, None),
    ("BTC-27DEC24-60000-C", "option", "BTC", None, date(2024, 12, 27), 60000.0, "call"),
    ("ETH-28MAR25-3000-P", "option", "ETH", None, date(2025, 3, 28), 3000.0, "put"),
    ("XRP_USDC-30JUN23-0d625-C", "option", "XRP", "USDC", date(2023, 6, 30), 0.625, "call"),
    ("BTC_USDC", "spot", "BTC", "USDC", None, None, None),
    ("ETH_USDT", "spot", "ETH", "USDT", None, None, None),
])
def test_parse_instrument_name(name: str, kind: str, base: str, quote: str | None, expiry: date | None,
                               strike: float | None, otype: str | None) -> None:
    p = parse_instrument_name(name)
    assert (p.kind, p.base, p.quote, p.expiry, p.strike, p.option_type) == (kind, base, quote, expiry, strike, otype)
    assert p.perpetual == name.endswith("PERPETUAL")
    assert p.linear == (quote is not None)


@pytest.mark.parametrize("bad", ["BTC", "BTC-", "BTC-27DEC24-60000", "BTC-27DEC24-60000-X", "BTC-FOO",
                                 "-PERPETUAL", "BTC-27DEC24-60000-C-1"])
def test_bad_instrument_names(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_instrument_name(bad)


# ---------------------------------------------------------------- the expiry calendar


def test_last_friday() -> None:
    assert last_friday(2024, 12) == date(2024, 12, 27)
    assert last_friday(2025, 1) == date(2025, 1, 31)
    assert last_friday(2025, 2) == date(2025, 2, 28)
    assert last_friday(2025, 5) == date(2025, 5, 30)
    for m in range(1, 13):
        d = last_friday(2026, m)
        assert d.weekday() == 4 and d.month == m and (d + timedelta(days=7)).month != m


def test_expiry_schedule_around_0800() -> None:
    before = expiry_schedule(MONDAY_0759, dailies=3, weeklies=3, monthlies=3, quarterlies=2)
    assert [date_code(d) for d in before] == ["6JAN25", "7JAN25", "8JAN25", "10JAN25", "17JAN25", "24JAN25",
                                              "31JAN25", "28FEB25", "28MAR25", "27JUN25"]
    after = expiry_schedule(utc(2025, 1, 6, 8), dailies=3, weeklies=0, monthlies=0, quarterlies=0)
    assert [date_code(d) for d in after] == ["7JAN25", "8JAN25", "9JAN25"]
    # a Friday before 08:00: that Friday is still the first weekly (and, at month end, the monthly)
    friday = expiry_schedule(utc(2025, 1, 31, 7), dailies=0, weeklies=1, monthlies=1, quarterlies=1)
    assert [date_code(d) for d in friday] == ["31JAN25", "28MAR25"]
    assert all(d.weekday() == 4 for d in expiry_schedule(MONDAY_0759, dailies=0, weeklies=5, monthlies=4,
                                                         quarterlies=4))


def test_settlement_period() -> None:
    assert settlement_period(date(2025, 1, 7), MONDAY_0759) == "day"
    assert settlement_period(date(2025, 1, 10), MONDAY_0759) == "week"
    assert settlement_period(date(2025, 1, 31), MONDAY_0759) == "month"
    assert settlement_period(date(2025, 3, 28), MONDAY_0759) == "month"


# ---------------------------------------------------------------- listing and rolling


def test_listing_under_a_fake_clock() -> None:
    m = Market(seed=3, clock=FakeClock(MONDAY_0759))
    assert codes(m, "BTC-", "future") == {"10JAN25", "17JAN25", "31JAN25", "28MAR25", "27JUN25", "26SEP25"}
    assert codes(m, "BTC-", "option") == {"6JAN25", "7JAN25", "8JAN25", "10JAN25", "17JAN25", "24JAN25",
                                          "31JAN25", "28FEB25", "28MAR25", "27JUN25"}
    assert codes(m, "ETH-", "option") == codes(m, "BTC-", "option")
    for inst in m.instruments.values():
        info = inst.info
        assert info["creation_timestamp"] == int(MONDAY_0759.timestamp() * 1000)
        if inst.kind == "spot" or inst.perpetual:
            assert info["expiration_timestamp"] == PERPETUAL_EXPIRY_MS
            continue
        expiry = parse_instrument_name(inst.name).expiry
        assert expiry is not None
        assert info["expiration_timestamp"] == expiry_ms(expiry)
        assert info["settlement_period"] == settlement_period(expiry, MONDAY_0759)
    assert m.get("BTC-6JAN25")is None  # no daily futures
    assert m.get("BTC-10JAN25").info["settlement_period"] == "week"  # type: ignore[union-attr]
    assert m.get("BTC-31JAN25").info["settlement_period"] == "month"  # type: ignore[union-attr]
    # strikes bracket the index, calls and puts in pairs
    for code in ("6JAN25", "28MAR25"):
        strikes = sorted({i.strike for i in m.instruments.values() if i.kind == "option" and i.coin == "BTC"
                          and f"-{code}-" in i.name})
        assert strikes[0] < m.index["BTC"] < strikes[-1] and len(strikes) >= 10
        for k in strikes:
            assert m.get(f"BTC-{code}-{strike_text(k)}-C") and m.get(f"BTC-{code}-{strike_text(k)}-P")
    ids = [i.info["instrument_id"] for i in m.instruments.values()]
    assert len(ids) == len(set(ids))


def test_roll_expires_and_lists() -> None:
    clock = FakeClock(MONDAY_0759)
    m = Market(seed=3, clock=clock)
    before = set(m.instruments)
    dailies = {n for n in before if "-6JAN25-" in n}
    assert dailies
    m.step()
    assert dailies <= set(m.instruments)  # one second early: nothing expires
    clock.set(utc(2025, 1, 6, 8))
    result = m.step()
    assert {i.name for i in result.expired} == dailies
    assert not any("-6JAN25-" in n for n in m.instruments)
    assert any("-9JAN25-" in i.name for i in result.created)  # the new daily
    assert {i.name for i in result.created}.isdisjoint(before)
    assert all(i.name in m.instruments for i in result.created)
    for inst in result.expired:
        assert m.get(inst.name) is None and m.expired[inst.name] is inst
        assert inst.state == "closed" and inst.info["is_active"] is False
        assert inst.delivery_price == pytest.approx(m.index["BTC" if inst.coin == "BTC" else inst.coin], rel=0.01)
    assert {i.name for i in m.find("BTC", "option", expired=True)} == {n for n in dailies if n.startswith("BTC")}
    for inst in result.created:  # quoted at once (far out-of-the-money puts may have no bid)
        assert inst.book.best(ASK) is not None and inst.mark_price >= 0
    # Friday 08:00: the weekly future goes, the next weekly comes
    clock.set(utc(2025, 1, 10, 8))
    result = m.step()
    assert "BTC-10JAN25" in {i.name for i in result.expired}
    assert codes(m, "BTC-", "future") == {"17JAN25", "24JAN25", "31JAN25", "28MAR25", "27JUN25", "26SEP25"}
    assert "10JAN25" not in codes(m, "BTC-", "option") and "31JAN25" in codes(m, "BTC-", "option")
    assert m.get("BTC-PERPETUAL") is not None and m.get("BTC_USDC") is not None


async def test_roll_over_the_wire() -> None:
    clock = FakeClock(MONDAY_0759)
    async with Simulator(seed=5, clock=clock, autostep=False, rate_limits=False) as sim:
        p = await connect_peer(sim.ws_url)
        try:
            daily = next(n for n in sim.market.instruments if n.startswith("BTC-6JAN25-"))
            assert (await p.result("public/ticker", {"instrument_name": daily}))["state"] == "open"
            assert await p.result("public/get_instruments", {"currency": "BTC", "expired": True}) == []
            assert await p.result("public/get_time") == int(clock.t * 1000)
            clock.advance(1.0)
            sim.step()
            expired = await p.result("public/get_instruments", {"currency": "BTC", "expired": True})
            assert daily in {i["instrument_name"] for i in expired}
            assert all(i["is_active"] is False for i in expired)
            active = {i["instrument_name"] for i in await p.result("public/get_instruments", {"currency": "BTC"})}
            assert daily not in active and any("-9JAN25-" in n for n in active)
            info = await p.result("public/get_instrument", {"instrument_name": daily})
            assert info["is_active"] is False
            assert (await p.call("public/ticker", {"instrument_name": daily}))["error"]["code"] == 13020
            new = next(n for n in active if "-9JAN25-" in n)
            ch = f"book.{new}.100ms"
            assert await p.result("public/subscribe", {"channels": [ch]}) == [ch]
            snap = (await p.next_notification(ch))["data"]
            assert snap["bids"] and snap["asks"]
        finally:
            await p.close()


# ---------------------------------------------------------------- determinism


def _state(m: Market) -> dict[str, Any]:
    return {
        "index": dict(m.index),
        "books": {n: (i.book.change_id, sorted(i.book.levels[BID].items()), sorted(i.book.levels[ASK].items()))
                  for n, i in m.instruments.items()},
        "trades": {n: list(i.trades) for n, i in m.instruments.items()},
        "marks": {n: i.mark_price for n, i in m.instruments.items()},
    }


def test_same_seed_same_market() -> None:
    clocks = [FakeClock(MONDAY_0759), FakeClock(MONDAY_0759)]
    a, b = (Market(seed=11, clock=c, tick_interval=0.1) for c in clocks)
    changes_a, changes_b = [], []
    for _ in range(25):
        for c in clocks:
            c.advance(0.1)
        changes_a.append([msg for _, msg in a.step().book_changes])
        changes_b.append([msg for _, msg in b.step().book_changes])
    assert changes_a == changes_b
    sa, sb = _state(a), _state(b)
    assert sa == sb
    assert sum(len(t) for t in sa["trades"].values()) > 10
    c = Market(seed=12, clock=FakeClock(MONDAY_0759), tick_interval=0.1)
    for _ in range(25):
        c.step()
    assert _state(c)["books"] != sa["books"]


async def test_same_seed_same_answers_over_the_wire() -> None:
    books = []
    for _ in range(2):
        clock = FakeClock(MONDAY_0759)
        async with Simulator(seed=9, clock=clock, autostep=False, rate_limits=False) as sim:
            for _ in range(20):
                clock.advance(0.1)
                sim.step()
            p = await connect_peer(sim.ws_url)
            try:
                got = []
                for name in ("BTC-PERPETUAL", "ETH-10JAN25", "BTC_USDC", "BTC-28MAR25-100000-C"):
                    book = await p.result("public/get_order_book", {"instrument_name": name, "depth": 20})
                    got.append(book)
                got.append(await p.result("public/get_last_trades_by_currency", {"currency": "BTC", "count": 50}))
                books.append(got)
            finally:
                await p.close()
    assert books[0] == books[1]


# ---------------------------------------------------------------- book and trade invariants


def test_books_are_sane_after_many_steps() -> None:
    clock = FakeClock(MONDAY_0759)
    m = Market(seed=4, clock=clock, tick_interval=0.1, option_requote=0.5)
    for _ in range(15):
        clock.advance(0.1)
        m.step()
    for inst in m.instruments.values():
        bid, ask = inst.book.best(BID), inst.book.best(ASK)
        assert ask is not None, inst.name
        if bid is None:  # only far out-of-the-money options, worth less than a tick, go unbid
            assert inst.kind == "option" and inst.mark_price <= 0.0005, inst.name
        else:
            assert bid < ask, inst.name
        unit = float(inst.info["min_trade_amount"])
        for side in (BID, ASK):
            for price, amount in inst.book.levels[side].items():
                tick = tick_for(inst.info, price)
                assert math.isclose(price / tick, round(price / tick), abs_tol=1e-6), (inst.name, price)
                assert price > 0 and amount > 0
                assert math.isclose(amount / unit, round(amount / unit), abs_tol=1e-9), (inst.name, amount)
                assert amount == round(amount, 10), (inst.name, amount)  # no binary noise on the wire
        if inst.kind != "option":
            assert bid is not None and bid <= inst.mark_price * 1.01 and ask >= inst.mark_price * 0.99


def test_flushed_changes_rebuild_the_book() -> None:
    clock = FakeClock(MONDAY_0759)
    m = Market(seed=8, clock=clock, tick_interval=0.1, option_requote=0.5)
    names = ["BTC-PERPETUAL", "ETH_USDC", next(n for n, i in m.instruments.items() if i.kind == "option")]
    shadow = {n: ({**m.get(n).book.levels[BID]}, {**m.get(n).book.levels[ASK]}) for n in names}  # type: ignore[union-attr]
    ids = {n: m.get(n).book.change_id for n in names}  # type: ignore[union-attr]
    for _ in range(20):
        clock.advance(0.1)
        for inst, msg in m.step().book_changes:
            if inst.name not in shadow:
                continue
            assert msg["prev_change_id"] == ids[inst.name] and 1 <= msg["change_id"] - ids[inst.name] <= 3
            assert msg["bids"] or msg["asks"]
            ids[inst.name] = msg["change_id"]
            for side, levels in zip(shadow[inst.name], (msg["bids"], msg["asks"]), strict=True):
                for action, price, amount in levels:
                    assert (action == "new") == (price not in side)
                    if action == "delete":
                        assert amount == 0
                        del side[price]
                    else:
                        side[price] = amount
    for n in names:
        book = m.get(n).book  # type: ignore[union-attr]
        assert shadow[n] == (book.levels[BID], book.levels[ASK])
        assert book.change_id == ids[n]


def test_simbook_flush_and_snapshot() -> None:
    import random

    book = SimBook(random.Random(1))
    assert book.flush(1, "X") is None
    start = book.change_id
    book.set_mm(BID, 100.0, 5.0)
    book.set_mm(ASK, 101.0, 3.0)
    msg = book.flush(2, "X")
    assert msg is not None and msg["prev_change_id"] == start
    assert msg["bids"] == [["new", 100.0, 5.0]] and msg["asks"] == [["new", 101.0, 3.0]]
    book.set_mm(BID, 100.0, 0.0)
    book.add_user(ASK, 101.0, 2.0)
    msg = book.flush(3, "X")
    assert msg is not None and msg["bids"] == [["delete", 100.0, 0.0]] and msg["asks"] == [["change", 101.0, 5.0]]
    # touched and restored within one tick: nothing to publish, change_id unchanged
    cid = book.change_id
    book.set_mm(ASK, 102.0, 1.0)
    book.set_mm(ASK, 102.0, 0.0)
    assert book.flush(4, "X") is None and book.change_id == cid
    snap = book.snapshot(5, "X")
    assert snap == {"type": "snapshot", "timestamp": 5, "instrument_name": "X", "change_id": cid,
                    "bids": [], "asks": [["new", 101.0, 5.0]]}


def test_trades_and_stats() -> None:
    clock = FakeClock(MONDAY_0759)
    m = Market(seed=2, clock=clock, tick_interval=0.1, trade_rate=4.0)
    perp = m.get("BTC-PERPETUAL")
    assert perp is not None
    for _ in range(40):
        clock.advance(0.1)
        m.step()
    trades = list(perp.trades)
    assert len(trades) >= 10
    assert [t["trade_seq"] for t in trades] == list(range(1, len(trades) + 1))
    ids = [int(t["trade_id"]) for t in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    prev = None
    for t in trades:
        assert t["amount"] % 10 == 0 and t["contracts"] == t["amount"] / 10
        if prev is not None:
            if t["price"] > prev["price"]:
                assert t["tick_direction"] == 0
            elif t["price"] < prev["price"]:
                assert t["tick_direction"] == 2
            else:
                assert t["tick_direction"] in (1, 3)
        prev = t
    assert perp.high == max(t["price"] for t in trades) and perp.low == min(t["price"] for t in trades)
    assert perp.last_price == trades[-1]["price"]
    assert perp.volume_usd == pytest.approx(sum(t["amount"] for t in trades))  # inverse: USD amounts
    ticker = m.ticker(perp)
    assert ticker["stats"]["volume_usd"] == pytest.approx(perp.volume_usd, abs=0.01)


def test_currency_matching() -> None:
    m = Market(seed=1, clock=FakeClock(MONDAY_0759))
    assert currency_matches(m.get("BTC_USDC").info, "USDC")  # type: ignore[union-attr]
    assert currency_matches(m.get("BTC_USDC").info, "BTC")  # type: ignore[union-attr]
    assert not currency_matches(m.get("BTC-PERPETUAL").info, "USDC")  # type: ignore[union-attr]
    assert currency_matches(m.get("BTC_USDC-PERPETUAL").info, "USDC")  # type: ignore[union-attr]
    assert {i.name for i in m.find("SOL")} == {"SOL_USDC"}
    assert m.find("DOGE") == []


def test_round_to() -> None:
    assert round_to(0.1 + 0.2, 0.1) == 0.3
    assert round_to(94331.26, 0.5) == 94331.5
    assert round_to(0.01234, 0.0005) == 0.0125
    assert round_to(3401.33, 0.05) == 3401.35


# ---------------------------------------------------------------- pricing


@pytest.mark.parametrize(("f", "k", "t", "v"), [(95_000, 100_000, 0.1, 0.6), (3_400, 3_000, 0.02, 0.8),
                                                (95_000, 95_000, 1.0, 0.5)])
def test_black76_parity_and_greeks(f: float, k: float, t: float, v: float) -> None:
    c, p = black76(f, k, t, v, True), black76(f, k, t, v, False)
    assert c.price_usd - p.price_usd == pytest.approx(f - k, abs=1e-6 * f)
    assert c.delta - p.delta == pytest.approx(1.0)
    assert 0 < c.delta < 1 and -1 < p.delta < 0
    assert c.gamma == pytest.approx(p.gamma) and c.vega == pytest.approx(p.vega) and c.vega > 0
    assert c.theta < 0
    # vega is per vol point, theta per day
    bumped = black76(f, k, t, v + 0.01, True)
    assert bumped.price_usd - c.price_usd == pytest.approx(c.vega, rel=0.02)
    later = black76(f, k, t - 1 / 365, v, True)
    assert later.price_usd - c.price_usd == pytest.approx(c.theta, rel=0.05)
    for call, value in ((True, c), (False, p)):
        assert implied_vol(value.price_usd, f, k, t, call) == pytest.approx(v, abs=1e-4)
    assert implied_vol(0.0, f, k, t, True) is None


def test_smile_shape() -> None:
    s = Smile()
    f = 100.0
    assert s.iv(f, f, 0.25) == pytest.approx(s.atm(0.25))
    assert s.iv(80, f, 0.25) > s.atm(0.25) and s.iv(80, f, 0.25) > s.iv(120, f, 0.25)  # negative skew
    assert s.iv(200, f, 0.25) > s.atm(0.25)  # curvature lifts the wings
    assert s.atm(0.01) < s.atm(1.0)
    assert s.iv(1e-6, f, 0.25) >= 0.05


def test_option_marks_follow_strike() -> None:
    m = Market(seed=6, clock=FakeClock(MONDAY_0759))
    code = "28MAR25"
    for cp in ("C", "P"):
        chain = sorted((i for i in m.instruments.values() if i.coin == "BTC" and f"-{code}-" in i.name
                        and i.name.endswith(cp)), key=lambda i: i.strike)
        marks = [i.mark_price for i in chain]
        if cp == "C":
            assert marks == sorted(marks, reverse=True)
        else:
            assert marks == sorted(marks)
        for i in chain:
            t = m.ticker(i)
            assert 0 < t["mark_price"] < 1  # inverse options are quoted in the coin
            assert t["greeks"]["delta"] > 0 if cp == "C" else t["greeks"]["delta"] < 0
            assert t["underlying_index"] == f"SYN.BTC-{code}"
            tick = tick_for(i.info, t["mark_price"])
            assert math.isclose(t["mark_price"] / tick, round(t["mark_price"] / tick), abs_tol=1e-6)
