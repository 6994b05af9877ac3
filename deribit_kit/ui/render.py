"""Pure rendering helpers of the dashboards: plain data in, HTML strings or column dicts out.

Nothing here imports Panel or Bokeh, so the shared feeds (:mod:`deribit_kit.ui.app`) can render a
view once and hand the same string to every browser session, and the tests can check the output
without a browser.
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..client import rules as orders
from ..models import AccountSummary, Candle, Instrument, Order, Position, PublicTrade, Ticker

Level = tuple[float, float]

STYLE = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 13px; }
table.dk { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.dk th { font-weight: 600; color: #555; text-align: right; padding: 2px 8px;
              border-bottom: 1px solid #ddd; white-space: nowrap; }
table.dk td { text-align: right; padding: 1px 8px; white-space: nowrap; }
table.dk td.l, table.dk th.l { text-align: left; }
table.dk td.c, table.dk th.c { text-align: center; }
.bid { color: #0a7d3b; } .ask { color: #c62828; }
.buy { color: #0a7d3b; } .sell { color: #c62828; }
tr.spread td { color: #777; font-size: 12px; border-top: 1px dashed #ccc; border-bottom: 1px dashed #ccc; }
tr.atm td { background: #fff6d6; }
td.strike { font-weight: 600; background: #f4f4f4; text-align: center; }
.muted { color: #888; }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 4px 12px; }
.stat .k { color: #777; font-size: 11px; text-transform: uppercase; letter-spacing: .03em; }
.stat .v { font-size: 15px; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600; }
.state-live { background: #0a7d3b; } .state-syncing, .state-resyncing { background: #e08a00; }
.state-stale, .state-error { background: #c62828; } .state-connecting, .state-closed { background: #888; }
.counters { color: #444; margin-left: 8px; }
.counters span { margin-right: 10px; white-space: nowrap; }
.msg { padding: 6px 10px; border-radius: 4px; }
.msg.ok { background: #e7f5ec; color: #0a5d2c; border: 1px solid #9fd3b2; }
.msg.err { background: #fdecea; color: #8e1c14; border: 1px solid #f1a9a0; }
.msg.info { background: #eef3fb; color: #1c3d6e; border: 1px solid #b3c7e8; }
.msg.warn { background: #fff4e0; color: #6b4500; border: 1px solid #f0c777; }
"""

DASH = "\u2013"  # en dash


# ---------------------------------------------------------------- number formats
def decimals_for(step: float | None, *, cap: int = 8) -> int:
    """Decimal places needed to print multiples of ``step`` (0.5 -> 1, 0.0005 -> 4, 10 -> 0)."""
    if not step or step <= 0 or not math.isfinite(step):
        return 2
    for d in range(cap + 1):
        if abs(round(step * 10**d) - step * 10**d) < 1e-9 * max(1.0, step * 10**d):
            return d
    return cap


def price_decimals(inst: Instrument | None) -> int:
    """Decimal places of the instrument's prices (its finest tick); 2 without one."""
    if inst is None:
        return 2
    return decimals_for(min([inst.tick_size, *(s.tick_size for s in inst.tick_size_steps)]))


def amount_decimals(inst: Instrument | None) -> int:
    """Decimal places of the instrument's amounts (its amount step); 4 without one."""
    if inst is None:
        return 4
    return decimals_for(min(inst.min_trade_amount, inst.contract_size) or inst.min_trade_amount)


def amount_unit(inst: Instrument | None) -> str:
    """The unit order amounts are given in: USD for inverse futures and perpetuals, else the coin."""
    if inst is None:
        return ""
    return orders.amount_unit(inst)


def price_unit(inst: Instrument | None) -> str:
    """The unit of prices: the base coin for options (BTC/ETH premiums), else the quote currency."""
    if inst is None:
        return ""
    if inst.kind.startswith("option") and inst.is_inverse:
        return inst.base_currency
    return inst.quote_currency


def fmt(value: float | None, decimals: int = 2, *, sign: bool = False, pct: bool = False) -> str:
    """A number with thousands separators; a dash for ``None``/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    text = f"{value:+,.{decimals}f}" if sign else f"{value:,.{decimals}f}"
    return text + ("%" if pct else "")


def fmt_compact(value: float | None) -> str:
    """Large numbers shortened: 1,234,567 -> 1.23M."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    a = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e4, "k")):
        if a >= limit:
            return f"{value / limit:,.2f}{suffix}"
    return f"{value:,.4g}" if a < 1 else f"{value:,.2f}"


def esc(value: Any) -> str:
    """``value`` escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)


def hhmmss(ts_ms: int | None) -> str:
    """``HH:MM:SS`` (UTC) of a timestamp in ms; a dash for none."""
    if not ts_ms:
        return DASH
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%H:%M:%S")


# ---------------------------------------------------------------- ladder and depth
def cumulate(levels: Sequence[Level]) -> list[float]:
    """Running totals of the levels' amounts (the ladder's cumulative column)."""
    out: list[float] = []
    total = 0.0
    for _, amount in levels:
        total += amount
        out.append(total)
    return out


def ladder_html(bids: Sequence[Level], asks: Sequence[Level], *, price_dp: int = 2, amount_dp: int = 4,
                unit: str = "") -> str:
    """The ladder: asks above (best ask lowest), the spread, bids below; price, size, cumulative,
    with a bar showing each level's cumulative size against the deeper side's total."""
    cum_b, cum_a = cumulate(bids), cumulate(asks)
    top = max([*cum_b[-1:], *cum_a[-1:], 1e-12])
    size_head = f"size ({esc(unit)})" if unit else "size"
    rows = [f'<table class="dk ladder"><thead><tr><th class="l">side</th><th>price</th><th>{size_head}</th>'
            '<th>cumulative</th></tr></thead><tbody>']
    for (price, amount), cum in reversed(list(zip(asks, cum_a, strict=True))):
        w = 100.0 * cum / top
        rows.append(f'<tr class="ask-row" style="background:linear-gradient(to left, rgba(198,40,40,.13) {w:.1f}%,'
                    f' transparent {w:.1f}%)"><td class="l ask">ask</td><td class="ask price">{fmt(price, price_dp)}'
                    f'</td><td>{fmt(amount, amount_dp)}</td><td>{fmt(cum, amount_dp)}</td></tr>')
    if bids and asks:
        spread = asks[0][0] - bids[0][0]
        mid = (asks[0][0] + bids[0][0]) / 2
        bps = 1e4 * spread / mid if mid else float("nan")
        rows.append(f'<tr class="spread"><td class="l">spread</td><td>{fmt(spread, price_dp)}</td>'
                    f'<td colspan="2">mid {fmt(mid, price_dp + 1)} · {fmt(bps, 1)} bp</td></tr>')
    else:
        rows.append('<tr class="spread"><td class="l">spread</td>'
                    '<td colspan="3" class="muted">one side empty</td></tr>')
    for (price, amount), cum in zip(bids, cum_b, strict=True):
        w = 100.0 * cum / top
        rows.append(f'<tr class="bid-row" style="background:linear-gradient(to left, rgba(10,125,59,.13) {w:.1f}%,'
                    f' transparent {w:.1f}%)"><td class="l bid">bid</td><td class="bid price">{fmt(price, price_dp)}'
                    f'</td><td>{fmt(amount, amount_dp)}</td><td>{fmt(cum, amount_dp)}</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)


def step_points(xs: Sequence[float], ys: Sequence[float], mode: str) -> tuple[list[float], list[float]]:
    """The corners of a step line through (``xs``, ``ys``), ``xs`` ascending: with ``"after"`` each y
    holds from its x to the next x; with ``"before"`` each y holds from the previous x to its own."""
    px: list[float] = []
    py: list[float] = []
    n = len(xs)
    for i in range(n):
        if mode == "after":
            px.append(xs[i])
            py.append(ys[i])
            if i + 1 < n:
                px.append(xs[i + 1])
                py.append(ys[i])
        else:
            if i > 0:
                px.append(xs[i - 1])
                py.append(ys[i])
            px.append(xs[i])
            py.append(ys[i])
    return px, py


def depth_data(bids: Sequence[Level], asks: Sequence[Level]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Column data of a depth chart (``price``, ``cum``): the cumulative size on each side as step
    corners, prices ascending. Bids: the size sold down to a price; asks: bought up to a price.

    The steps are computed here and drawn with plain ``varea``/``line`` glyphs: BokehJS 3.9's
    ``varea_step`` hangs the browser tab when its source is empty (before the first book arrives).
    """
    bx, by = step_points([p for p, _ in reversed(bids)], list(reversed(cumulate(bids))), "before")
    ax, ay = step_points([p for p, _ in asks], cumulate(asks), "after")
    return {"price": bx, "cum": by}, {"price": ax, "cum": ay}


# ---------------------------------------------------------------- candles
UP_COLOR, DOWN_COLOR = "#0a7d3b", "#c62828"
RESOLUTION_LABELS = {"1": "1m", "3": "3m", "5": "5m", "10": "10m", "15": "15m", "30": "30m", "60": "1h",
                     "120": "2h", "180": "3h", "360": "6h", "720": "12h", "1D": "1D"}
"""Deribit's candle resolutions (its ``resolution`` values) -> the label a trader reads."""


def candle_data(candles: Sequence[Candle], period_ms: int) -> dict[str, Any]:
    """Column data of a candlestick chart: ``x`` (the period's middle, ms), ``w`` (a body's width),
    ``open, high, low, close, volume``, ``top``/``bottom`` of the body and its ``color`` (up:
    close >= open)."""
    half = period_ms / 2
    cols: dict[str, list[Any]] = {k: [] for k in ("x", "w", "open", "high", "low", "close", "volume", "top",
                                                   "bottom", "color")}
    for c in candles:
        up = c.close >= c.open
        for k, v in (("x", c.tick + half), ("w", period_ms * 0.7), ("open", c.open), ("high", c.high),
                     ("low", c.low), ("close", c.close), ("volume", c.volume), ("top", max(c.open, c.close)),
                     ("bottom", min(c.open, c.close)), ("color", UP_COLOR if up else DOWN_COLOR)):
            cols[k].append(v)
    return cols


def candle_window(candles: Sequence[Candle], period_ms: int, min_periods: int = 30) -> tuple[float, float] | None:
    """The time axis of a candle chart: from the first candle (at least ``min_periods`` periods
    before the newest, so a young series still has proper candles) to the end of the newest."""
    if not candles:
        return None
    end = candles[-1].tick + period_ms
    return float(min(candles[0].tick, end - min_periods * period_ms)), float(end + period_ms / 2)


def candle_status_html(candles: Sequence[Candle], resolution: str, inst: Instrument | None,
                       state: str = "live") -> str:
    """One line over the chart: the resolution, how many candles, and the newest one's OHLCV."""
    label = RESOLUTION_LABELS.get(resolution, resolution)
    if not candles:
        what = "waiting for candles…" if state != "error" else "no candles"
        return (f'<div class="candles" data-resolution="{esc(resolution)}"><b>{esc(label)}</b> '
                f'<span class="muted">{what}</span></div>')
    last = candles[-1]
    dp = price_decimals(inst)
    stamp = "%Y-%m-%d %H:%M" if resolution != "1D" else "%Y-%m-%d"
    when = datetime.fromtimestamp(last.tick / 1000, UTC).strftime(stamp)
    parts = " ".join(f'<span>{k} <b>{fmt(v, dp)}</b></span>' for k, v in
                     (("O", last.open), ("H", last.high), ("L", last.low), ("C", last.close)))
    count = f'{len(candles)} candle{"" if len(candles) == 1 else "s"}'
    return (f'<div class="candles counters" data-resolution="{esc(resolution)}"><b>{esc(label)}</b> '
            f'<span>{count}</span> <span class="muted">{when} UTC</span> {parts} '
            f'<span>vol <b>{fmt_compact(last.volume)}</b></span></div>')


# ---------------------------------------------------------------- ticker, trades, book state
def _stat(key: str, value: str, cls: str = "") -> str:
    return f'<div class="stat"><div class="k">{esc(key)}</div><div class="v {cls}">{value}</div></div>'


def ticker_html(t: Ticker | None, inst: Instrument | None) -> str:
    """Last, mark, index, funding, open interest, 24h volume; IV and greeks for options."""
    if t is None:
        return '<div class="muted">waiting for the ticker…</div>'
    dp = price_decimals(inst)
    is_option = inst is not None and inst.kind.startswith("option")
    stats = t.stats
    items = [
        _stat("last", fmt(t.last_price, dp)),
        _stat("mark", fmt(t.mark_price, dp)),
        _stat("index", fmt(t.index_price, 2)),
        _stat("best bid", fmt(t.best_bid_price, dp), "bid"),
        _stat("best ask", fmt(t.best_ask_price, dp), "ask"),
    ]
    if t.current_funding is not None or t.funding_8h is not None:
        items.append(_stat("funding", fmt(None if t.current_funding is None else t.current_funding * 100, 4, pct=True)))
        items.append(_stat("funding 8h", fmt(None if t.funding_8h is None else t.funding_8h * 100, 4, pct=True)))
    items.append(_stat("open interest", fmt_compact(t.open_interest)))
    vol = stats.volume if stats is not None else None
    vol_usd = stats.volume_usd if stats is not None else None
    items.append(_stat("24h volume", fmt_compact(vol)))
    if vol_usd is not None:
        items.append(_stat("24h volume USD", fmt_compact(vol_usd)))
    if stats is not None and stats.price_change is not None:
        cls = "buy" if stats.price_change >= 0 else "sell"
        items.append(_stat("24h change", fmt(stats.price_change, 2, sign=True, pct=True), cls))
    if is_option:
        items.append(_stat("mark IV", fmt(t.mark_iv, 2, pct=True)))
        items.append(_stat("bid / ask IV", f"{fmt(t.bid_iv, 1)} / {fmt(t.ask_iv, 1)}"))
        items.append(_stat("underlying", fmt(t.underlying_price, 2)))
        g = t.greeks
        if g is not None:
            items.append(_stat("delta", fmt(g.delta, 4)))
            items.append(_stat("gamma", fmt(g.gamma, 6)))
            items.append(_stat("vega", fmt(g.vega, 3)))
            items.append(_stat("theta", fmt(g.theta, 3)))
    return f'<div class="stats ticker">{"".join(items)}</div>'


def trades_html(trades: Iterable[PublicTrade], inst: Instrument | None, n: int = 15) -> str:
    """The ``n`` most recent trades as an HTML table (time, side, price, amount)."""
    dp, adp = price_decimals(inst), amount_decimals(inst)
    rows = ['<table class="dk trades"><thead><tr><th class="l">time</th><th class="l">side</th><th>price</th>'
            '<th>amount</th></tr></thead><tbody>']
    count = 0
    for tr in trades:
        if count >= n:
            break
        count += 1
        cls = "buy" if tr.direction == "buy" else "sell"
        rows.append(f'<tr><td class="l">{hhmmss(tr.timestamp)}</td><td class="l {cls}">{esc(tr.direction)}</td>'
                    f'<td class="{cls}">{fmt(tr.price, dp)}</td><td>{fmt(tr.amount, adp)}</td></tr>')
    if not count:
        rows.append('<tr><td colspan="4" class="c muted">no trades yet</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)


def book_state_html(state: str, counters: Mapping[str, Any]) -> str:
    """A coloured badge for the book's state (live / syncing / resyncing / stale) and its counters."""
    parts = "".join(f'<span>{esc(k)} <b>{esc(v)}</b></span>' for k, v in counters.items())
    return (f'<div class="bookstate"><span class="badge state-{esc(state)}" data-state="{esc(state)}">'
            f'{esc(state)}</span><span class="counters">{parts}</span></div>')


def message_html(text: str, kind: str = "info") -> str:
    """A status line: ``kind`` is ok, err, info or warn."""
    return f'<div class="msg {esc(kind)}">{esc(text)}</div>'


# ---------------------------------------------------------------- options
def strike_of(name: str) -> float | None:
    """The strike of an option name (``BTC-27MAR26-100000-C`` -> 100000.0); None for other names."""
    parts = name.split("-")
    if len(parts) == 4:
        try:
            return float(parts[2].replace("d", "."))
        except ValueError:
            return None
    return None


def chain_rows(tickers: Mapping[str, Ticker]) -> list[dict[str, Any]]:
    """One row per strike: ``strike`` and call/put ``bid, ask, mark, iv, delta, oi`` (None when absent)."""
    by_strike: dict[float, dict[str, Any]] = {}
    for name, t in tickers.items():
        strike = strike_of(name)
        if strike is None:
            continue
        side = "call" if name.endswith("-C") else "put"
        row = by_strike.setdefault(strike, {"strike": strike})
        row[f"{side}_name"] = name
        row[f"{side}_bid"] = t.best_bid_price or None
        row[f"{side}_ask"] = t.best_ask_price or None
        row[f"{side}_mark"] = t.mark_price
        row[f"{side}_iv"] = t.mark_iv
        row[f"{side}_bid_iv"] = t.bid_iv or None
        row[f"{side}_ask_iv"] = t.ask_iv or None
        row[f"{side}_delta"] = t.greeks.delta if t.greeks is not None else None
        row[f"{side}_oi"] = t.open_interest
        if t.underlying_price:
            row["underlying"] = t.underlying_price
    return [by_strike[k] for k in sorted(by_strike)]


CHAIN_COLS = (("oi", "OI", "oi"), ("delta", "Δ", 3), ("iv", "IV", 1), ("bid", "bid", "p"), ("mark", "mark", "p"),
              ("ask", "ask", "p"))


def chain_html(rows: Sequence[Mapping[str, Any]], *, price_dp: int = 4, atm: float | None = None) -> str:
    """Calls on the left, the strike in the middle, puts on the right; the at-the-money row marked."""
    atm_strike = None
    if atm is not None and rows:
        atm_strike = min((r["strike"] for r in rows), key=lambda s: abs(s - atm))

    def cell(row: Mapping[str, Any], side: str, key: str, how: Any) -> str:
        v = row.get(f"{side}_{key}")
        if how == "p":
            cls = {"bid": "bid", "ask": "ask"}.get(key, "")
            return f'<td class="{cls}">{fmt(v, price_dp)}</td>'
        if how == "oi":
            return f"<td>{fmt_compact(v)}</td>"
        return f"<td>{fmt(v, how)}</td>"

    head_calls = "".join(f"<th>{label}</th>" for _, label, _ in CHAIN_COLS)
    head_puts = "".join(f"<th>{label}</th>" for _, label, _ in reversed(CHAIN_COLS))
    out = ['<table class="dk chain"><thead><tr><th colspan="6" class="c">calls</th><th></th>'
           '<th colspan="6" class="c">puts</th></tr>',
           f'<tr>{head_calls}<th class="c">strike</th>{head_puts}</tr></thead><tbody>']
    for row in rows:
        cls = ' class="atm"' if row["strike"] == atm_strike else ""
        calls = "".join(cell(row, "call", k, how) for k, _, how in CHAIN_COLS)
        puts = "".join(cell(row, "put", k, how) for k, _, how in reversed(CHAIN_COLS))
        out.append(f'<tr{cls}>{calls}<td class="strike">{fmt(row["strike"], 0)}</td>{puts}</tr>')
    if not rows:
        out.append('<tr><td colspan="13" class="c muted">waiting for the chain…</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def smile_data(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Columns of the IV smile: mark IV of calls and puts by strike, and bid/ask IV points."""
    out: dict[str, dict[str, Any]] = {}
    for side in ("call", "put"):
        pts = [(r["strike"], r.get(f"{side}_iv")) for r in rows]
        out[side] = {"strike": [s for s, v in pts if v is not None], "iv": [v for _, v in pts if v is not None]}
        quotes = [(r["strike"], r.get(f"{side}_bid_iv"), r.get(f"{side}_ask_iv")) for r in rows]
        out[f"{side}_quotes"] = {
            "strike": [s for s, b, a in quotes if b is not None and a is not None],
            "bid_iv": [b for _, b, a in quotes if b is not None and a is not None],
            "ask_iv": [a for _, b, a in quotes if b is not None and a is not None],
        }
    return out


def atm_iv(points: Sequence[tuple[float, float]], forward: float) -> float | None:
    """IV at ``forward`` interpolated linearly between the strikes around it (``points`` = (strike, iv))."""
    pts = sorted(p for p in points if p[1] is not None and math.isfinite(p[1]))
    if not pts:
        return None
    if forward <= pts[0][0]:
        return pts[0][1]
    if forward >= pts[-1][0]:
        return pts[-1][1]
    for (k0, v0), (k1, v1) in itertools.pairwise(pts):
        if k0 <= forward <= k1:
            if k1 == k0:
                return v0
            return v0 + (v1 - v0) * (forward - k0) / (k1 - k0)
    return None


def term_structure(summaries: Iterable[Any], expiries: Mapping[str, int], now_ms: int | None = None,
                   ) -> dict[str, list[Any]]:
    """ATM mark IV per expiry from option book summaries (OTM side: puts below the forward, calls
    above): columns ``days``, ``iv``, ``expiry``, ordered by expiry."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    groups: dict[str, dict[str, Any]] = {}
    for s in summaries:
        name = s.instrument_name
        parts = name.split("-")
        if len(parts) != 4 or s.mark_iv is None:
            continue
        g = groups.setdefault(parts[1], {"points": {}, "fwd": None})
        strike = strike_of(name)
        if strike is None:
            continue
        if s.underlying_price:
            g["fwd"] = s.underlying_price
        g["points"].setdefault(strike, {})[parts[3]] = s.mark_iv
    rows: list[tuple[int, str, float, float]] = []
    for code, g in groups.items():
        fwd = g["fwd"]
        if fwd is None or code not in expiries:
            continue
        pts = []
        for strike, ivs in g["points"].items():
            side = "P" if strike < fwd else "C"
            iv = ivs.get(side, ivs.get("C" if side == "P" else "P"))
            if iv is not None:
                pts.append((strike, iv))
        iv = atm_iv(pts, fwd)
        if iv is None:
            continue
        exp_ms = expiries[code]
        rows.append((exp_ms, code, max((exp_ms - now_ms) / 86_400_000, 0.0), iv))
    rows.sort()
    return {"expiry": [r[1] for r in rows], "days": [r[2] for r in rows], "iv": [r[3] for r in rows]}


# ---------------------------------------------------------------- trading
ORDER_COLUMNS = ["order_id", "instrument", "side", "type", "amount", "filled", "price", "state", "tif", "flags",
                 "label"]
NUMERIC_ORDER_COLUMNS = ("amount", "filled", "price")
TIF_SHORT = {"good_til_cancelled": "GTC", "good_til_day": "GTD", "fill_or_kill": "FOK", "immediate_or_cancel": "IOC"}


def orders_table(orders: Iterable[Order]) -> dict[str, list[Any]]:
    """Columns of the open-orders table (newest first)."""
    cols: dict[str, list[Any]] = {c: [] for c in ORDER_COLUMNS}
    for o in sorted(orders, key=lambda o: (o.creation_timestamp, o.order_id), reverse=True):
        flags = [f for f, on in (("post-only", o.post_only), ("reduce-only", o.reduce_only)) if on]
        cols["order_id"].append(o.order_id)
        cols["instrument"].append(o.instrument_name)
        cols["side"].append(o.direction)
        cols["type"].append(o.order_type)
        cols["amount"].append(o.amount)
        cols["filled"].append(o.filled_amount or 0.0)
        cols["price"].append(o.limit_price)
        cols["state"].append(o.order_state)
        cols["tif"].append(TIF_SHORT.get(o.time_in_force, o.time_in_force))
        cols["flags"].append(", ".join(flags))
        cols["label"].append(o.label)
    return cols


POSITION_COLUMNS = ["instrument", "size", "avg price", "mark", "floating PnL", "realized PnL", "total PnL",
                    "delta", "gamma", "vega", "theta", "liq. price"]
NUMERIC_POSITION_COLUMNS = tuple(POSITION_COLUMNS[1:])


def positions_table(positions: Iterable[Position]) -> dict[str, list[Any]]:
    """The positions as Tabulator columns (one list per column)."""
    cols: dict[str, list[Any]] = {c: [] for c in POSITION_COLUMNS}
    for p in sorted(positions, key=lambda p: p.instrument_name):
        if p.is_flat and not p.realized_profit_loss:
            continue
        for key, value in (("instrument", p.instrument_name), ("size", p.size), ("avg price", p.average_price),
                           ("mark", p.mark_price), ("floating PnL", p.floating_profit_loss),
                           ("realized PnL", p.realized_profit_loss), ("total PnL", p.total_profit_loss),
                           ("delta", p.delta), ("gamma", p.gamma), ("vega", p.vega), ("theta", p.theta),
                           ("liq. price", p.estimated_liquidation_price)):
            cols[key].append(value)
    return cols


def account_html(summaries: Iterable[AccountSummary]) -> str:
    """Balance, equity, margins, PnL and greeks per currency."""
    fields = (("balance", "balance"), ("equity", "equity"), ("available_funds", "available"),
              ("initial_margin", "initial margin"), ("maintenance_margin", "maint. margin"),
              ("total_pl", "total PnL"), ("session_upl", "session UPL"), ("delta_total", "delta"),
              ("options_gamma", "gamma"), ("options_vega", "vega"), ("options_theta", "theta"))
    head = "".join(f"<th>{label}</th>" for _, label in fields)
    out = [f'<table class="dk account"><thead><tr><th class="l">currency</th>{head}</tr></thead><tbody>']
    n = 0
    for s in summaries:
        n += 1
        cells = "".join(f"<td>{fmt(getattr(s, key), 4)}</td>" for key, _ in fields)
        out.append(f'<tr><td class="l"><b>{esc(s.currency)}</b></td>{cells}</tr>')
    if not n:
        out.append(f'<tr><td colspan="{len(fields) + 1}" class="c muted">waiting for the account…</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)
